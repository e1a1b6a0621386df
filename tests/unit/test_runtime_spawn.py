"""supervisor/runtime/spawn.py without root: the supervisor's side of the handshake, against
the real fork server with scripted stage 0s that misbehave on purpose
(``tests/fake_forkserver.py``, ``tests/runtime_helpers.py``)."""

from __future__ import annotations

import fcntl
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from supervisor.errors import StartError
from supervisor.runtime import libc
from supervisor.runtime.spawn import LaunchError
from tests.runtime_helpers import (
    ID,
    assert_no_children,
    fake_init,
    launch_scripted,
    launch_with,
    make_config,
    scripted_server,
    with_child,
)


def inheritable_fds() -> list[int]:
    found = []
    for fd in range(5, 256):
        try:
            if not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                found.append(fd)
        except OSError:
            pass
    return found


async def test_launch_requires_a_subreaper(tmp_path: Path) -> None:
    libc.set_child_subreaper(False)
    with pytest.raises(RuntimeError, match="become_subreaper"):
        await scripted_server(tmp_path, fake_init(tmp_path, "exit 0", "stage0")).launch(make_config())


async def test_launch_gives_the_init_stage_fds_0_to_4(tmp_path: Path, subreaper: None) -> None:
    seen = tmp_path / "seen"
    python = f"""\
        #!{sys.executable}
        import os, sys
        def is_open(fd):
            try:
                os.fstat(fd)
                return True
            except OSError:
                return False
        fds = [fd for fd in range(5, 256) if is_open(fd)]
        config = b""
        while chunk := os.read(3, 65536):
            config += chunk
        with open({str(seen)!r}, "w") as out:
            out.write(repr((sys.argv[1:], os.readlink("/proc/self/fd/0"), fds, config.decode())))
        os.write(4, b'{{"error": "fake stage: stop here", "exit_code": 125}}\\n')
        sys.exit(125)
    """
    script = tmp_path / "stage0"
    script.write_text(textwrap.dedent(python))
    script.chmod(0o755)
    config = make_config()
    # an inheritable descriptor of our own (the test runner may have none): the server closes it
    planted_read, planted_write = os.pipe()
    os.set_inheritable(planted_read, True)
    try:
        assert planted_read in inheritable_fds()
        with pytest.raises(LaunchError) as caught:
            await launch_with(tmp_path, str(script), config)
    finally:
        os.close(planted_read)
        os.close(planted_write)
    assert caught.value.exit_code == 125
    assert "fake stage: stop here" in caught.value.message
    argv, stdin, other_fds, received = eval(seen.read_text())  # noqa: S307 - our own repr
    assert argv == []
    assert stdin == "/dev/null"
    assert other_fds == []  # nothing of the launch, the server or the test runner leaks
    assert json.loads(received) == json.loads(config.to_json())


async def test_launch_init_dies_before_reporting(tmp_path: Path, subreaper: None) -> None:
    with pytest.raises(LaunchError) as caught:
        await launch_scripted(tmp_path, "cat <&3 >/dev/null; exit 3\n")
    assert caught.value.exit_code == 125
    assert "exited with status 3 before reporting a pid" in caught.value.message
    assert isinstance(caught.value, StartError)


async def test_launch_garbage_on_the_status_pipe(tmp_path: Path, subreaper: None) -> None:
    with pytest.raises(LaunchError) as caught:
        await launch_scripted(tmp_path, "echo 'hello there' >&4\n")
    assert caught.value.exit_code == 125
    assert "malformed status" in caught.value.message and "hello there" in caught.value.message


async def test_launch_never_adopts_a_pid_that_is_not_its_child(tmp_path: Path, subreaper: None) -> None:
    with pytest.raises(LaunchError, match="pid 1, which is not its child") as caught:
        await launch_scripted(tmp_path, "echo '{\"pid\": 1}' >&4\n")
    assert caught.value.exit_code == 125


async def test_launch_stage0_error_passes_through(tmp_path: Path, subreaper: None) -> None:
    body = """echo '{"error": "join the cgroup: write \\"/x\\": no such file or directory", "exit_code": 125}' >&4; exit 125\n"""
    with pytest.raises(LaunchError) as caught:
        await launch_scripted(tmp_path, body)
    assert caught.value.message == f'cannot start container {ID[:12]}: join the cgroup: write "/x": no such file or directory'
    assert caught.value.details["reason"].startswith("join the cgroup")


async def test_launch_reaps_a_container_that_failed_to_exec(tmp_path: Path, subreaper: None) -> None:
    body = with_child("exit 126", """echo '{"error": "exec: \\"/etc\\": permission denied", "exit_code": 126}' >&4""")
    with pytest.raises(LaunchError) as caught:
        await launch_scripted(tmp_path, body)
    assert caught.value.exit_code == 126
    assert caught.value.message.endswith('exec: "/etc": permission denied')
    assert_no_children()
