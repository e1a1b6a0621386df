"""supervisor/runtime/forkserver.py and spawn.ForkServer without root: the server's own
state (fds, children, signals), its restarts and its death, launches in parallel and
cancelled. No root: stage 0 fails at its first step, joining the cgroup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from supervisor.runtime.spawn import FORK_SERVER_SCRIPT, ForkServer, LaunchError
from tests.runtime_helpers import ID, assert_no_children, children_of, fake_init, make_config, open_fds


def test_fork_server_imports_only_the_standard_library() -> None:
    directory = os.path.dirname(FORK_SERVER_SCRIPT)
    code = f"import sys; sys.path.insert(0, {directory!r}); import forkserver; print(' '.join(sorted(sys.modules)))"
    modules = set(subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True).stdout.split())
    ours = {"cgroupfiles", "cgroupfs", "console", "ctypes_lite", "forkserver", "init_stage", "jsonlite", "libc", "namespaces",
            "nsenter", "rootfs", "security", "userns"}
    assert ours | {"_ctypes", "select"} <= modules
    assert not modules & {"trio", "zmq", "structlog", "msgpack", "supervisor", "re", "enum", "json", "socket", "signal",
                          "ctypes"}
    # Nothing but the standard library beside the stage's own modules (a new module of the
    # stage must be added above, knowingly: the server imports it at every start).
    assert {name.split(".")[0] for name in modules} - set(sys.stdlib_module_names) - {"__main__"} == ours


async def test_fork_server_is_a_clean_child_and_not_a_subreaper(fork_server: ForkServer) -> None:
    assert fork_server.pid is not None
    with open(f"/proc/{fork_server.pid}/stat") as stat:
        assert int(stat.read().rpartition(")")[2].split()[1]) == os.getpid()
    assert open_fds(fork_server.pid) == [0, 1, 2, 3]  # nothing inherited beyond its control socket
    with open(f"/proc/{fork_server.pid}/status") as status:
        assert status_field(status.read(), "SigIgn") & 1 << (signal.SIGINT - 1)  # Ctrl-C is for the daemon
    # (that it is no subreaper shows in the integration tests: pid 1 is re-parented to us)


def status_field(text: str, name: str) -> int:
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith(name + ":")), 16)


async def test_fork_server_passes_stage0_errors_through(fork_server: ForkServer, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-cgroup" / "cgroup.procs")
    for _ in range(3):
        with pytest.raises(LaunchError) as caught:
            with trio.fail_after(10):
                await fork_server.launch(make_config(cgroup_procs=(missing,)))
        assert caught.value.exit_code == 125
        assert caught.value.message == f'cannot start container {ID[:12]}: join the cgroup: write "{missing}": no such file or directory'
    assert open_fds(fork_server.pid) == [0, 1, 2, 3]
    assert children_of(fork_server.pid) == []  # every stage 0 reaped
    assert children_of(os.getpid()) == [fork_server.pid]


async def test_fork_server_launches_in_parallel(fork_server: ForkServer, tmp_path: Path) -> None:
    errors: list[str] = []

    async def one(index: int) -> None:
        missing = str(tmp_path / f"cgroup-{index}" / "cgroup.procs")
        with pytest.raises(LaunchError) as caught:
            await fork_server.launch(make_config(cgroup_procs=(missing,)))
        errors.append(caught.value.message)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for index in range(20):
                nursery.start_soon(one, index)
    assert sorted(errors) == sorted(
        f'cannot start container {ID[:12]}: join the cgroup: write "{tmp_path}/cgroup-{index}/cgroup.procs": no such file or directory'
        for index in range(20)
    )
    assert open_fds(fork_server.pid) == [0, 1, 2, 3]
    assert children_of(fork_server.pid) == []


async def kill_and_wait(pid: int) -> None:
    """SIGKILL a process and wait until it has exited (it is not reaped)."""
    pidfd = os.pidfd_open(pid)
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        with trio.fail_after(10):
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


def blocking_cgroup(tmp_path: Path) -> str:
    """A FIFO in place of cgroup.procs: stage 0 blocks opening it until someone reads it."""
    fifo = str(tmp_path / "cgroup.procs")
    os.mkfifo(fifo)
    return fifo


async def wait_for_a_stage0(server: ForkServer) -> int:
    with trio.fail_after(10):
        while not children_of(server.pid):
            await trio.sleep(0.01)  # polling /proc: no event to wait on from outside
    [stage0] = children_of(server.pid)
    return stage0


async def test_fork_server_restarts_after_sigkill(fork_server: ForkServer, tmp_path: Path) -> None:
    first = fork_server.pid
    assert first is not None
    await kill_and_wait(first)
    missing = str(tmp_path / "no-such-cgroup" / "cgroup.procs")
    with pytest.raises(LaunchError, match="join the cgroup"):  # a new server, working
        with trio.fail_after(10):
            await fork_server.launch(make_config(cgroup_procs=(missing,)))
    assert fork_server.pid not in (None, first)
    assert children_of(os.getpid()) == [fork_server.pid]  # the old one reaped


async def test_fork_server_death_fails_the_launch_in_flight(fork_server: ForkServer, tmp_path: Path) -> None:
    fifo = blocking_cgroup(tmp_path)
    dead = fork_server.pid
    assert dead is not None
    caught: list[LaunchError] = []

    async def launch_one() -> None:
        with pytest.raises(LaunchError) as error:
            await fork_server.launch(make_config(cgroup_procs=(fifo,)))
        caught.append(error.value)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(launch_one)
            stage0 = await wait_for_a_stage0(fork_server)
            os.kill(dead, signal.SIGKILL)
    assert caught[0].exit_code == 125
    assert caught[0].message == f"cannot start container {ID[:12]}: the fork server died"
    assert not os.path.exists(f"/proc/{stage0}")  # killed and reaped (it had become our child)
    assert children_of(os.getpid()) == []  # the dead server reaped too; the next launch starts one


async def test_fork_server_cancelled_launch_leaves_nothing(fork_server: ForkServer, tmp_path: Path) -> None:
    fifo = blocking_cgroup(tmp_path)
    with trio.move_on_after(20) as timeout:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fork_server.launch, make_config(cgroup_procs=(fifo,)))
            stage0 = await wait_for_a_stage0(fork_server)
            nursery.cancel_scope.cancel()
    assert not timeout.cancelled_caught
    assert not os.path.exists(f"/proc/{stage0}")
    assert children_of(fork_server.pid) == []
    assert open_fds(fork_server.pid) == [0, 1, 2, 3]


async def test_fork_server_that_cannot_start(tmp_path: Path, subreaper: None) -> None:
    server = ForkServer(python=fake_init(tmp_path, "exit 2"))
    with pytest.raises(LaunchError, match="cannot start the fork server .*: it was not ready"):
        await server.start()
    with pytest.raises(LaunchError, match="cannot start the fork server"):
        await ForkServer(python=str(tmp_path / "no-python")).start()
    assert_no_children()
