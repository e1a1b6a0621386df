"""The runtime against the real kernel (root): namespaces, overlayfs, mounts, capabilities,
users, cgroups. Every test cleans up its processes, cgroups and directories, also when it
fails, and checks that no mount of it shows up on the host."""

from __future__ import annotations

import functools
import os
import signal
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from supervisor import seccomp
from supervisor.runtime import cgroups, libc, seccomp_bpf
from supervisor.runtime.protocol import DEFAULT_CAPABILITIES
from supervisor.runtime.spawn import ContainerProcess, ForkServer, LaunchConfig, LaunchError
from tests.rootfs import GROUP, PASSWD, build_rootfs
from tests.runtime_helpers import children_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, overlayfs, cgroups"),
    pytest.mark.usefixtures("subreaper"),  # tests/conftest.py
]

ID = "feedc0de" * 8
ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
TIMEOUT = 30
DOCKER_DEFAULT_CAPS = 0xA80425FB  # CapEff of a root process under docker's default set


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_rootfs(tmp_path_factory.mktemp("image") / "rootfs")


async def launch(config: LaunchConfig, **options: object) -> ContainerProcess:
    """Launch with a fork server of its own (the one launcher, as in the daemon), stopped
    again once the container runs: the container is our child, not the server's."""
    async with ForkServer() as server:
        return await server.launch(config, **options)  # type: ignore[arg-type]


@pytest.fixture
def layout(tmp_path: Path):
    """upper, work and merged dirs of one container; checks no mount of it leaks."""
    dirs = {name: tmp_path / name for name in ("upper", "work", "merged")}
    for path in dirs.values():
        path.mkdir()
    yield dirs
    assert host_mounts_under(tmp_path) == []


@pytest.fixture
def cgroup_backend():
    """The host's backend, under a parent of this test run that is removed afterwards (the
    tests remove their own cgroups; a leftover one makes this rmdir fail)."""
    backend = cgroups.detect(parent=f"dockyard-test-{os.getpid()}")
    yield backend
    if isinstance(backend, cgroups.CgroupV1):
        parents = [os.path.join(hierarchy, backend.parent) for hierarchy in backend.hierarchies()]
    else:
        parents = [os.path.join(backend.root, backend.parent)]
    for parent in parents:
        if os.path.isdir(parent):
            os.rmdir(parent)


def host_mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mounts") as mounts:
        return [line for line in mounts if str(path) in line]


def config_for(image: Path | tuple[Path, ...], layout: dict, argv: tuple[str, ...], **overrides: object) -> LaunchConfig:
    lower = image if isinstance(image, tuple) else (image,)
    values: dict = dict(
        container_id=ID, lower=tuple(map(str, lower)), upper=str(layout["upper"]), work=str(layout["work"]),
        rootfs=str(layout["merged"]), argv=argv, env=ENV,
    )
    values.update(overrides)
    return LaunchConfig(**values)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


async def read_all(stream: trio.lowlevel.FdStream, sink: list[bytes]) -> None:
    while chunk := await stream.receive_some():
        sink.append(chunk)


async def finish(process: ContainerProcess) -> None:
    """Kill (if still running), reap and close: for finally blocks."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            with trio.move_on_after(TIMEOUT):
                await process.wait()
        process.close()


async def run(config: LaunchConfig, launcher=launch) -> Result:
    """Launch (with a fork server of its own, or ``launcher``, e.g. a test's server), collect, wait."""
    with trio.fail_after(TIMEOUT):
        process = await launcher(config)
        try:
            out: list[bytes] = []
            err: list[bytes] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all, process.stdout, out)
                nursery.start_soon(read_all, process.stderr, err)
            code = await process.wait()
        finally:
            await finish(process)
    return Result(code, b"".join(out).decode(), b"".join(err).decode())


async def sh(image: Path, layout: dict, script: str, **overrides: object) -> Result:
    return await run(config_for(image, layout, ("sh", "-c", script), **overrides))


# --- namespaces and the root filesystem ----------------------------------------------------------


async def test_pid_1_and_hostname(image: Path, layout: dict) -> None:
    result = await sh(image, layout, "echo $$; hostname; cat /proc/sys/kernel/hostname", hostname="web-1")
    assert result == Result(0, "1\nweb-1\nweb-1\n", "")
    assert os.uname().nodename != "web-1"


async def test_hostname_defaults_to_the_short_id(image: Path, layout: dict) -> None:
    assert (await sh(image, layout, "hostname")).stdout == ID[:12] + "\n"


async def test_root_shows_only_the_image(image: Path, layout: dict) -> None:
    result = await sh(image, layout, "ls -A /")
    assert result.stdout.split() == sorted(os.listdir(image))


async def test_writes_go_to_the_upper_dir_only(image: Path, layout: dict) -> None:
    before = (image / "etc" / "passwd").read_text()
    script = "echo new > /etc/new && echo more >> /etc/passwd && rm /bin/true && cat /etc/new"
    result = await sh(image, layout, script)
    assert result == Result(0, "new\n", "")
    assert (image / "etc" / "passwd").read_text() == before
    assert not (image / "etc" / "new").exists()
    assert (image / "bin" / "true").is_symlink()
    assert (layout["upper"] / "etc" / "new").read_text() == "new\n"
    assert (layout["upper"] / "etc" / "passwd").read_text() == before + "more\n"
    assert os.listdir(layout["merged"]) == []  # the overlay only ever existed inside


async def test_a_held_mount_namespace_keeps_the_overlay_mounted_after_pid_1_exits(image: Path, layout: dict) -> None:
    """hold_mounts: the overlay's unmount (a sync of the upper dir's whole filesystem) waits
    for the supervisor to let the namespace go, not for pid 1's exit."""
    import subprocess

    config = config_for(image, layout, ("sh", "-c", "echo kept > /kept"), network_sync=True)
    with trio.fail_after(TIMEOUT):
        process = await launch(config, hold_mounts=True)
        try:
            assert await process.wait() == 0
            namespace = process.take_mount_namespace()
        finally:
            await finish(process)
    assert namespace >= 0 and process.take_mount_namespace() == -1
    try:
        assert os.readlink(f"/proc/self/fd/{namespace}").startswith("mnt:")
        assert os.readlink(f"/proc/self/fd/{namespace}") != os.readlink("/proc/self/ns/mnt")
        # pid 1 is gone; its root, the overlay, is still mounted in the namespace.
        inside = subprocess.run(["nsenter", f"--mount=/proc/{os.getpid()}/fd/{namespace}", "cat", "/kept"],
                                capture_output=True, text=True, timeout=30)
        assert (inside.returncode, inside.stdout) == (0, "kept\n"), inside.stderr
    finally:
        await trio.to_thread.run_sync(os.close, namespace)
    assert host_mounts_under(layout["merged"]) == []


async def test_stdout_stderr_stdin_and_fds(image: Path, layout: dict) -> None:
    result = await sh(image, layout, "echo out; echo err >&2; cat; ls /proc/self/fd")
    assert result.stdout.split("\n")[0] == "out"
    assert result.stderr == "err\n"
    assert result.stdout.split()[1:] == ["0", "1", "2", "3"]  # 3: ls's own directory fd


async def test_loopback_is_up_and_alone(image: Path, layout: dict) -> None:
    result = await sh(image, layout, "ls /sys/class/net; cat /sys/class/net/lo/flags")
    assert result.stdout.split() == ["lo", "0x9"]  # IFF_UP | IFF_LOOPBACK


async def test_dev(image: Path, layout: dict) -> None:
    script = (
        "ls -l /dev | awk '{print $1, $NF}' | tail -n +2; "
        "stat -c '%a %n' /dev/shm; grep -E ' /dev/(pts|shm|mqueue) ' /proc/self/mounts | cut -d' ' -f2,3; "
        "head -c 3 /dev/zero | wc -c; echo x > /dev/null && echo null-ok"
    )
    result = await sh(image, layout, script)
    lines = result.stdout.splitlines()
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        assert f"crw-rw-rw- {name}" in lines
    for name, target in (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("core", "/proc/kcore")):
        assert lines.count(f"lrwxrwxrwx {target}") >= 1, name
    assert "1777 /dev/shm" in lines
    assert {"/dev/pts devpts", "/dev/shm tmpfs", "/dev/mqueue mqueue"} <= set(lines)
    assert lines[-2:] == ["3", "null-ok"]


async def test_sys_is_read_only(image: Path, layout: dict) -> None:
    result = await sh(image, layout, "grep ' /sys ' /proc/self/mounts | cut -d' ' -f4")
    assert result.stdout.split(",")[0] == "ro"


MS_SHARED = 1 << 20


async def test_mounts_do_not_propagate_to_a_shared_host_mount(image: Path, tmp_path: Path) -> None:
    """With the container's dirs on a shared mount (as / is under systemd), the overlay and
    the rest must stay in the container's mount namespace."""
    shared = tmp_path / "shared"
    shared.mkdir()
    libc.mount("tmpfs", str(shared), "tmpfs", 0, "size=64m")
    try:
        libc.mount(None, str(shared), None, MS_SHARED)
        layout = {name: shared / name for name in ("upper", "work", "merged")}
        for path in layout.values():
            path.mkdir()
        config = config_for(image, layout, ("sh", "-c", "echo ready; exec sleep 1000"))
        with trio.fail_after(TIMEOUT):
            process = await launch(config)
            try:
                assert await process.stdout.receive_some() == b"ready\n"
                assert [line.split()[1] for line in host_mounts_under(shared)] == [str(shared)]
            finally:
                await finish(process)
    finally:
        libc.umount2(str(shared), libc.MNT_DETACH)


async def test_symlinked_mount_points_stay_inside_the_rootfs(image: Path, layout: dict, tmp_path: Path) -> None:
    """An image whose /proc is a link climbing out to a host path: proc must be mounted at
    that path inside the rootfs, and nothing created on the host."""
    escape = tmp_path / "escaped"
    top = tmp_path / "top"
    top.mkdir()
    (top / "proc").symlink_to("/../../../../../../.." + str(escape))
    result = await sh((top, image), layout, "cat /proc/1/comm; readlink /proc")
    assert result.stdout.split("\n")[0] == "sh"
    assert not escape.exists()
    assert (layout["upper"] / str(escape).lstrip("/")).is_dir()  # the mount point, made inside


# --- exit codes and launch errors ------------------------------------------------------------


@pytest.mark.parametrize(("argv", "code"), [(("true",), 0), (("false",), 1), (("sh", "-c", "exit 7"), 7)])
async def test_exit_codes(image: Path, layout: dict, argv: tuple[str, ...], code: int) -> None:
    assert (await run(config_for(image, layout, argv))).exit_code == code


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (("nosuchcmd",), 127, 'exec: "nosuchcmd": executable file not found in $PATH'),
        (("/bin/nosuchcmd",), 127, 'exec: "/bin/nosuchcmd": no such file or directory'),
        (("/etc",), 126, 'exec: "/etc": permission denied'),
        (("/etc/passwd",), 126, 'exec: "/etc/passwd": permission denied'),
    ],
)
async def test_exec_failures(image: Path, layout: dict, argv: tuple[str, ...], code: int, message: str) -> None:
    with pytest.raises(LaunchError) as caught:
        await run(config_for(image, layout, argv))
    assert caught.value.exit_code == code
    assert caught.value.message == f"cannot start container {ID[:12]}: {message}"


async def test_command_is_looked_up_in_the_container_path(image: Path, layout: dict) -> None:
    with pytest.raises(LaunchError) as caught:
        await run(config_for(image, layout, ("true",), env=("PATH=/nonexistent",)))
    assert caught.value.exit_code == 127
    assert (await run(config_for(image, layout, ("/bin/true",), env=("PATH=/nonexistent",)))).exit_code == 0


async def test_overlay_failure_is_a_clear_125(image: Path, layout: dict, tmp_path: Path) -> None:
    with pytest.raises(LaunchError) as caught:
        await run(config_for((tmp_path / "no-such-layer", image), layout, ("true",)))
    assert caught.value.exit_code == 125
    assert f'mount overlay on "{layout["merged"]}"' in caught.value.message
    assert "no such file or directory" in caught.value.message


async def test_sigkill_gives_137_and_takes_the_namespace_down(image: Path, layout: dict, cgroup_backend) -> None:
    group = cgroup_backend.create(ID)
    try:
        config = config_for(image, layout, ("sh", "-c", "sleep 1000 & sleep 1000 & echo started; wait"), cgroup_procs=group.procs_files)
        with trio.fail_after(TIMEOUT):
            process = await launch(config)
            try:
                assert await process.stdout.receive_some() == b"started\n"
                assert len(group.pids()) == 3
                process.send_signal(signal.SIGKILL)
                assert await process.wait() == 137
                assert await process.wait() == 137
                process.send_signal(signal.SIGKILL)  # exited: no error
                assert group.pids() == []  # every process of the pid namespace died with pid 1
            finally:
                await finish(process)
    finally:
        group.kill_all()
        group.remove()


async def test_sigterm_reaches_a_pid_1_that_handles_it(image: Path, layout: dict) -> None:
    config = config_for(image, layout, ("sh", "-c", "trap 'echo term; exit 3' TERM; echo ready; while :; do sleep 0.1; done"))
    with trio.fail_after(TIMEOUT):
        process = await launch(config)
        try:
            assert await process.stdout.receive_some() == b"ready\n"
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 3
        finally:
            await finish(process)


# --- security -------------------------------------------------------------------------------------


def status_fields(text: str) -> dict[str, str]:
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


async def test_capabilities_and_no_new_privs(image: Path, layout: dict) -> None:
    fields = status_fields((await run(config_for(image, layout, ("cat", "/proc/self/status")))).stdout)
    assert int(fields["CapEff"], 16) == DOCKER_DEFAULT_CAPS
    assert int(fields["CapPrm"], 16) == DOCKER_DEFAULT_CAPS
    assert int(fields["CapBnd"], 16) == DOCKER_DEFAULT_CAPS
    assert int(fields["CapInh"], 16) == 0
    assert int(fields["CapAmb"], 16) == 0
    assert fields["NoNewPrivs"] == "0"  # docker's default: setuid works (docs/security.md)
    assert fields["Seccomp"] == "0"  # a launch config without a program has no filter
    assert int(fields["SigIgn"], 16) == 0  # python's SIGPIPE and posix_spawn's 32/33 reset


@pytest.mark.parametrize("no_new_privileges", [False, True])
async def test_the_seccomp_program_is_loaded_in_either_order(image: Path, layout: dict, no_new_privileges: bool) -> None:
    """Without no_new_privs the filter goes in before the capabilities are dropped (it needs
    CAP_SYS_ADMIN then), with it after: both give the payload the filter (runc's order)."""
    program = seccomp_bpf.compiled(seccomp.default_profile_text(), frozenset(DEFAULT_CAPABILITIES)).hex()
    script = "grep -E 'NoNewPrivs|Seccomp:' /proc/self/status; unshare -U true 2>&1; echo rc=$?"
    result = await sh(image, layout, script, seccomp=program, no_new_privileges=no_new_privileges, user="1000")
    lines = result.stdout.split("\n")
    assert lines[0].split() == ["NoNewPrivs:", str(int(no_new_privileges))]
    assert lines[1].split() == ["Seccomp:", "2"]
    assert "Operation not permitted" in lines[2] and lines[3] == "rc=1", result.stdout


async def test_without_cap_sys_admin_mount_fails(image: Path, layout: dict) -> None:
    result = await sh(image, layout, "mount -t tmpfs none /tmp; echo rc=$?")
    assert result.stdout == "rc=1\n"
    assert "permission denied" in result.stderr.lower() or "not permitted" in result.stderr


async def test_custom_capabilities(image: Path, layout: dict) -> None:
    fields = status_fields((await sh(image, layout, "cat /proc/self/status", capabilities=("CAP_NET_ADMIN", "CAP_KILL"))).stdout)
    assert int(fields["CapEff"], 16) == int(fields["CapBnd"], 16) == (1 << 12) | (1 << 5)


async def test_masked_paths(image: Path, layout: dict) -> None:
    script = "test -c /proc/keys && echo keys-masked; ls -A /sys/firmware | wc -l; test -e /proc/kcore && test ! -c /proc/kcore && echo kcore-open; true"
    result = await sh(image, layout, script)
    assert os.path.isfile("/proc/keys") and os.listdir("/sys/firmware")  # what is hidden exists on the host
    assert result.stdout.split() == ["keys-masked", "0"]


async def test_readonly_paths(image: Path, layout: dict) -> None:
    script = "echo x > /proc/sys/kernel/domainname; echo rc=$?; echo comm > /proc/self/comm && echo proc-rw"
    result = await sh(image, layout, script)
    assert result.stdout == "rc=1\nproc-rw\n"
    assert "Read-only file system" in result.stderr


async def test_numeric_user(image: Path, layout: dict) -> None:
    result = await sh(image, layout, "id -u; id -g; id -G; echo $HOME; grep CapEff /proc/self/status", user="1000:1000")
    assert result.stdout.split() == ["1000", "1000", "1000", "/home/app", "CapEff:", "0000000000000000"]


async def test_named_user_and_home(image: Path, layout: dict) -> None:
    assert "app:x:1000:1000:app:/home/app:/bin/sh" in PASSWD and "app:x:1000:" in GROUP
    result = await sh(image, layout, "id -un; id -u; echo $HOME; touch ~/mine && stat -c %u ~/mine", user="app")
    assert result.stdout.split() == ["app", "1000", "/home/app", "1000"]


async def test_home_from_env_wins(image: Path, layout: dict) -> None:
    result = await sh(image, layout, "echo $HOME", env=(*ENV, "HOME=/elsewhere"))
    assert result.stdout == "/elsewhere\n"


async def test_unknown_user_is_a_125(image: Path, layout: dict) -> None:
    with pytest.raises(LaunchError) as caught:
        await sh(image, layout, "true", user="nosuchuser")
    assert caught.value.exit_code == 125
    assert caught.value.message.endswith("unable to find user nosuchuser: no matching entries in passwd file")


async def test_working_dir_is_created(image: Path, layout: dict) -> None:
    result = await sh(image, layout, "pwd; stat -c '%a %u' .", cwd="/srv/app", user="app")
    assert result.stdout == "/srv/app\n755 0\n"
    assert not (image / "srv").exists()


# --- cgroups ---------------------------------------------------------------------------------------


async def test_cgroup_is_joined_then_removed(image: Path, layout: dict, cgroup_backend) -> None:
    group = cgroup_backend.create(ID)
    try:
        assert all(os.path.isdir(path) for path in group.paths)
        config = config_for(image, layout, ("sh", "-c", "while read -r line; do echo $line; done < /proc/self/cgroup; exec sleep 1000"), cgroup_procs=group.procs_files)
        with trio.fail_after(TIMEOUT):
            process = await launch(config)
            try:
                inside = b""
                while inside.count(b"\n") < len(group.paths):
                    inside += await process.stdout.receive_some()
                assert group.pids() == [process.pid]  # the shell printed with builtins only: no child
                with open(f"/proc/{process.pid}/cgroup") as host_view:
                    assert f"/{cgroup_backend.parent}/{ID}\n" in host_view.read()
                for line in inside.decode().splitlines():  # the cgroup namespace is rooted there
                    assert line.endswith(":/"), line
            finally:
                await finish(process)
        assert group.pids() == []
    finally:
        group.kill_all()
        group.remove()
    assert not any(os.path.exists(path) for path in group.paths)


async def test_cgroup_join_failure_is_a_125(image: Path, layout: dict, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-cgroup" / "cgroup.procs")
    with pytest.raises(LaunchError) as caught:
        await run(config_for(image, layout, ("true",), cgroup_procs=(missing,)))
    assert caught.value.exit_code == 125
    assert caught.value.message.endswith(f'join the cgroup: write "{missing}": no such file or directory')


async def test_nothing_is_left_behind(image: Path, layout: dict, tmp_path: Path) -> None:
    """Mounts and processes of a container vanish with it, whatever way it ended."""
    await sh(image, layout, "true")
    with pytest.raises(LaunchError):
        await sh(image, layout, "true", user="nosuchuser")
    assert host_mounts_under(tmp_path) == []
    assert stat.S_ISDIR(os.stat(layout["merged"]).st_mode) and os.listdir(layout["merged"]) == []
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # no child left, running or unreaped


# --- through the fork server ---------------------------------------------------------------------


def many_layouts(tmp_path: Path, count: int) -> list[dict]:
    layouts = []
    for index in range(count):
        dirs = {name: tmp_path / f"c{index}" / name for name in ("upper", "work", "merged")}
        for path in dirs.values():
            path.mkdir(parents=True)
        layouts.append(dirs)
    return layouts


async def test_fork_server_runs_20_containers_at_once(image: Path, tmp_path: Path, fork_server: ForkServer) -> None:
    results: dict[int, Result] = {}

    async def one(index: int, layout: dict) -> None:
        script = f"echo out $$ {index}; echo err {index} >&2; ls /proc/self/fd; exit {index}"
        results[index] = await run(launcher=fork_server.launch, config=config_for(image, layout, ("sh", "-c", script), hostname=f"c{index}"))

    async with trio.open_nursery() as nursery:
        for index, layout in enumerate(many_layouts(tmp_path, 20)):
            nursery.start_soon(one, index, layout)
    for index in range(20):
        assert results[index].exit_code == index
        assert results[index].stdout.split() == ["out", "1", str(index), "0", "1", "2", "3"]
        assert results[index].stderr == f"err {index}\n"
    assert sorted(int(fd) for fd in os.listdir(f"/proc/{fork_server.pid}/fd")) == [0, 1, 2, 3]  # no container fd
    assert children_of(fork_server.pid) == []  # no stage 0 left, running or zombie
    assert host_mounts_under(tmp_path) == []


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (("nosuchcmd",), 127, 'exec: "nosuchcmd": executable file not found in $PATH'),
        (("/etc",), 126, 'exec: "/etc": permission denied'),
    ],
)
async def test_fork_server_exec_failures(image: Path, layout: dict, fork_server: ForkServer, argv: tuple[str, ...], code: int, message: str) -> None:
    with pytest.raises(LaunchError) as caught:
        await run(launcher=fork_server.launch, config=config_for(image, layout, argv))
    assert caught.value.exit_code == code
    assert caught.value.message == f"cannot start container {ID[:12]}: {message}"
    assert children_of(os.getpid()) == [fork_server.pid]  # pid 1 of the failed container reaped


async def test_fork_server_runtime_failure_is_a_125(image: Path, layout: dict, fork_server: ForkServer) -> None:
    with pytest.raises(LaunchError) as caught:
        await run(launcher=fork_server.launch, config=config_for(image, layout, ("true",), user="nosuchuser"))
    assert caught.value.exit_code == 125
    assert caught.value.message.endswith("unable to find user nosuchuser: no matching entries in passwd file")


async def test_fork_server_pid_1_is_our_child(image: Path, layout: dict, fork_server: ForkServer, cgroup_backend) -> None:
    """pid 1 is re-parented to us (the server is no subreaper) and joined its cgroup."""
    group = cgroup_backend.create(ID)
    try:
        config = config_for(image, layout, ("sh", "-c", "echo ready; exec sleep 1000"), cgroup_procs=group.procs_files)
        with trio.fail_after(TIMEOUT):
            process = await fork_server.launch(config)
            try:
                assert await process.stdout.receive_some() == b"ready\n"
                assert children_of(os.getpid()) == sorted([fork_server.pid, process.pid])
                assert group.pids() == [process.pid]
                process.send_signal(signal.SIGKILL)
                assert await process.wait() == 137
            finally:
                await finish(process)
    finally:
        group.kill_all()
        group.remove()


async def test_fork_server_restarted_after_sigkill(image: Path, layout: dict, fork_server: ForkServer) -> None:
    first = fork_server.pid
    assert first is not None
    pidfd = os.pidfd_open(first)
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        with trio.fail_after(TIMEOUT):
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    assert await run(launcher=fork_server.launch, config=config_for(image, layout, ("sh", "-c", "echo again"))) == Result(0, "again\n", "")
    assert fork_server.pid not in (None, first)
    assert children_of(os.getpid()) == [fork_server.pid]


# --- the network sync point (network_sync, launch's prepare hook) ----------------------------------


async def test_payload_waits_for_prepare_and_sees_its_work(image: Path, layout: dict, tmp_path: Path) -> None:
    """pid 1 execs only after prepare(pid) returned: prepare sees the init stage, not the
    payload, and what it does (here: a file in the generated /etc dir) is there for it."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "hosts").write_text("10.9.9.9\tgenerated\n")
    # The files exist before the launch (the daemon writes them first); pid 1 bind-mounts
    # them while prepare runs, so prepare changes one in place (same inode).
    (etc / "hostname").write_text("before-prepare\n")
    seen: list[str] = []

    async def prepare(pid: int) -> None:
        seen.append(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode())
        (etc / "hostname").write_text("from-prepare\n")

    init_layer = tmp_path / "init"  # the mount points, as the daemon's init layer has them
    (init_layer / "etc").mkdir(parents=True)
    for name in ("hosts", "hostname", "resolv.conf"):
        (init_layer / "etc" / name).touch()
    config = config_for((init_layer, image), layout, ("cat", "/etc/hosts", "/etc/hostname"), network_sync=True,
                        etc_dir=str(etc))
    result = await run(config, functools.partial(launch, prepare=prepare))
    assert result == Result(0, "10.9.9.9\tgenerated\nfrom-prepare\n", "")
    assert seen and "python" in seen[0]  # still the init stage when prepare ran
    assert not (Path(layout["upper"]) / "etc").exists()  # bind mounts over the init layer: nothing in upper


async def test_a_failing_prepare_kills_the_container(image: Path, layout: dict) -> None:
    async def prepare(pid: int) -> None:
        raise LaunchError("cannot connect it: no bridge")

    config = config_for(image, layout, ("true",), network_sync=True)
    with trio.fail_after(TIMEOUT), pytest.raises(LaunchError, match="no bridge"):
        await launch(config, prepare=prepare)


async def test_host_network_mode_keeps_the_host_namespace(image: Path, layout: dict) -> None:
    result = await sh(image, layout, "readlink /proc/1/ns/net", network_namespace="host")
    assert result.stdout.strip() == os.readlink("/proc/self/ns/net")
