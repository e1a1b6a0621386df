"""Unit tests of the runtime (no root): secure_join, user lookup, PATH lookup, the launch
config, the cgroup backends on a fake tree, and the fork server's launch against scripted
stage 0s (``tests/fake_forkserver.py``)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.errors import InvalidArgument, StartError
from supervisor.runtime import cgroups, linux
from supervisor.runtime.protocol import DEFAULT_CAPABILITIES, MASKED_PATHS, READONLY_PATHS
from supervisor.runtime.linux import InitError, look_path, resolve_user, secure_join
from supervisor.runtime.spawn import (
    FORK_SERVER_SCRIPT,
    ContainerProcess,
    ForkServer,
    LaunchConfig,
    LaunchError,
    become_subreaper,
)

ID = "0123456789abcdef" * 4


# --- secure_join ---------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A root with the kinds of links a hostile image can hold."""
    root = tmp_path / "root"
    for directory in ("etc", "real/sub", "a/b"):
        (root / directory).mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "proc").symlink_to("/etc")  # absolute: must stay inside
    (root / "up").symlink_to("/../../../../")  # absolute with ..: the root
    (root / "a" / "b" / "rel").symlink_to("../../../../../etc")  # relative, climbing out
    (root / "d").symlink_to("real")
    (root / "chain1").symlink_to("chain2")
    (root / "chain2").symlink_to("/d/sub")
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    (root / "self").symlink_to("self")
    (root / "dangling").symlink_to("/nowhere/at/all")
    (root / "host").symlink_to(str(tmp_path / "outside"))  # a host path, taken inside
    return root


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", ""),
        ("", ""),
        ("/etc/passwd", "/etc/passwd"),
        ("etc//./passwd", "/etc/passwd"),
        ("/proc", "/etc"),
        ("/proc/passwd", "/etc/passwd"),
        ("/up", ""),
        ("/up/etc", "/etc"),
        ("/../../../etc", "/etc"),
        ("/a/b/rel/passwd", "/etc/passwd"),
        ("/d/sub", "/real/sub"),
        ("/chain1/x", "/real/sub/x"),
        ("/d/../etc", "/etc"),  # '..' applies to the link's target, as the kernel does
        ("/missing/deeper/../file", "/missing/file"),
        ("/dangling/x", "/nowhere/at/all/x"),
        ("/etc/passwd/x", "/etc/passwd/x"),  # ENOTDIR: kept, the caller's mkdir will fail
    ],
)
def test_secure_join_stays_inside_root(tree: Path, path: str, expected: str) -> None:
    assert secure_join(str(tree), path) == str(tree) + expected


def test_secure_join_takes_host_paths_inside_root(tree: Path, tmp_path: Path) -> None:
    assert secure_join(str(tree), "/host/x") == f"{tree}{tmp_path}/outside/x"


def test_secure_join_trailing_slash_on_root(tree: Path) -> None:
    assert secure_join(f"{tree}/", "/proc") == f"{tree}/etc"
    assert secure_join("/", "/etc/../etc") == "/etc"


@pytest.mark.parametrize("path", ["/loop1", "/self/x", "/loop2/../etc"])
def test_secure_join_refuses_symlink_loops(tree: Path, path: str) -> None:
    with pytest.raises(OSError) as caught:
        secure_join(str(tree), path)
    assert caught.value.errno == errno.ELOOP


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["..", ".", "", "etc", "proc", "up", "a", "b", "rel", "d", "chain1", "host", "x"]), max_size=12))
def test_secure_join_never_leaves_root(tmp_path_factory: pytest.TempPathFactory, parts: list[str]) -> None:
    root = _hostile_root(tmp_path_factory)
    result = secure_join(str(root), "/".join(parts))
    assert result == str(root) or result.startswith(str(root) + "/")
    assert "/../" not in result + "/"


_HOSTILE: dict[str, Path] = {}


def _hostile_root(factory: pytest.TempPathFactory) -> Path:
    if "root" not in _HOSTILE:
        root = factory.mktemp("hostile")
        (root / "etc").mkdir()
        (root / "a" / "b").mkdir(parents=True)
        (root / "proc").symlink_to("/etc")
        (root / "up").symlink_to("/../../..")
        (root / "a" / "b" / "rel").symlink_to("../../../../..")
        (root / "d").symlink_to("..")
        (root / "chain1").symlink_to("d/up/a")
        (root / "host").symlink_to("/tmp")
        _HOSTILE["root"] = root
    return _HOSTILE["root"]


# --- users, PATH, exec errors ------------------------------------------------------------------

PASSWD = """root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nohome:x:1001:1001:::/bin/sh
# a comment
broken line
"""
GROUP = """root:x:0:
wheel:x:10:app,other
app:x:1000:
audio:x:29:other,app
"""


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", (0, 0, (0,), "/root")),
        ("0", (0, 0, (0,), "/root")),
        ("app", (1000, 1000, (1000, 10, 29), "/home/app")),
        ("1000", (1000, 1000, (1000, 10, 29), "/home/app")),
        ("1000:1000", (1000, 1000, (1000,), "/home/app")),
        ("app:wheel", (1000, 10, (10,), "/home/app")),
        ("4242", (4242, 0, (0,), "/")),
        ("4242:77", (4242, 77, (77,), "/")),
        ("nohome", (1001, 1001, (1001,), "/")),
    ],
)
def test_resolve_user(spec: str, expected: tuple) -> None:
    assert resolve_user(spec, PASSWD, GROUP) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuchuser", "unable to find user nosuchuser: no matching entries in passwd file"),
        ("app:nosuchgroup", "unable to find group nosuchgroup: no matching entries in group file"),
    ],
)
def test_resolve_user_unknown_names(spec: str, message: str) -> None:
    with pytest.raises(InitError) as caught:
        resolve_user(spec, PASSWD, GROUP)
    assert caught.value.message == message
    assert caught.value.exit_code == 125


def test_resolve_user_without_files() -> None:
    assert resolve_user("", "", "") == (0, 0, (0,), "/")


def test_look_path(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for directory in (first, second):
        directory.mkdir()
    (first / "tool").write_text("not executable")
    (first / "dir").mkdir()
    (second / "tool").write_text("#!/bin/sh\n")
    (second / "tool").chmod(0o755)
    path_value = f"{first}:{second}"
    assert look_path("tool", path_value) == f"{second}/tool"
    assert look_path("./relative", path_value) == "./relative"
    for name in ("dir", "missing"):
        with pytest.raises(InitError) as caught:
            look_path(name, path_value)
        assert caught.value.exit_code == 127
        assert caught.value.message == f'exec: "{name}": executable file not found in $PATH'


@pytest.mark.parametrize(
    ("number", "code", "text"),
    [
        (errno.ENOENT, 127, "no such file or directory"),
        (errno.ENOTDIR, 127, "not a directory"),
        (errno.EACCES, 126, "permission denied"),
        (errno.ENOEXEC, 126, "exec format error"),
        (errno.EISDIR, 126, "is a directory"),
    ],
)
def test_exec_error(number: int, code: int, text: str) -> None:
    error = linux.exec_error("/etc", OSError(number, os.strerror(number)))
    assert (error.exit_code, error.message) == (code, f'exec: "/etc": {text}')


def test_capability_mask_is_dockers_default() -> None:
    assert linux.capability_mask(DEFAULT_CAPABILITIES) == 0xA80425FB  # CapEff under docker
    with pytest.raises(InitError, match="CAP_NOPE"):
        linux.capability_mask(["CAP_NOPE"])


@pytest.mark.parametrize("document", ['{"a": [1, 2.5, "\\u00e9", null, true, false, {}]}', ' [] ', '"x"', "-0.5e3"])
def test_loads_matches_json(document: str) -> None:
    assert linux.loads(document) == json.loads(document)


@pytest.mark.parametrize("document", ["", "{", '{"a": 1} x', "nope"])
def test_loads_refuses_what_json_refuses(document: str) -> None:
    with pytest.raises(ValueError):
        json.loads(document)
    with pytest.raises(ValueError):
        linux.loads(document)


def test_quote_matches_json() -> None:
    text = 'a "quoted" \\ line\nwith é and \x00'
    assert json.loads(linux.quote(text)) == text


RUNTIME_DIR = os.path.dirname(FORK_SERVER_SCRIPT)
# The init stage as the fork server runs it (linux.py imported by path), in a fresh process.
INIT_STAGE = f"import sys; sys.path.insert(0, {RUNTIME_DIR!r}); import linux; linux.run_init_stage()"


def test_init_stage_imports_only_the_standard_library() -> None:
    """Start-up time: no trio, zmq, our package, nor the re/enum-importing modules."""
    code = f"import sys; sys.path.insert(0, {RUNTIME_DIR!r}); import linux; print(' '.join(sorted(sys.modules)))"
    modules = set(subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert {"linux", "ctypes"} <= modules
    assert not modules & {"trio", "zmq", "structlog", "msgpack", "supervisor", "re", "enum", "json", "socket", "signal",
                          "dataclasses", "protocol"}


def test_init_stage_reports_a_bad_config_on_the_status_pipe() -> None:
    config_read, config_write = os.pipe()
    status_read, status_write = os.pipe()
    os.write(config_write, b"not json")
    os.close(config_write)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5) for fd in (config_read, status_write)]  # clear of 3 and 4
    pid = os.posix_spawn(
        sys.executable, [sys.executable, "-I", "-S", "-c", INIT_STAGE], {},
        file_actions=[(os.POSIX_SPAWN_DUP2, high[0], 3), (os.POSIX_SPAWN_DUP2, high[1], 4)],
    )
    for fd in (config_read, status_write, *high):
        os.close(fd)
    with os.fdopen(status_read, "rb") as status:
        report = json.loads(status.read())
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 125
    assert report["exit_code"] == 125
    assert report["error"].startswith("read the config: invalid JSON")


# --- LaunchConfig ----------------------------------------------------------------------------------


def make_config(**overrides: object) -> LaunchConfig:
    values: dict = dict(
        container_id=ID, lower=("/l/top", "/l/base"), upper="/c/upper", work="/c/work", rootfs="/c/merged",
        argv=("sh", "-c", "echo hi"), env=("PATH=/bin", "A=b=c"),
    )
    values.update(overrides)
    return LaunchConfig(**values)


def test_launch_config_json_round_trip() -> None:
    config = make_config(user="app:wheel", hostname="web", cwd="/srv", cgroup_procs=["/sys/fs/cgroup/pids/d/x/cgroup.procs"])
    document = json.loads(config.to_json())
    assert document["id"] == ID
    assert "container_id" not in document
    assert document["lower"] == ["/l/top", "/l/base"]
    assert document["capabilities"] == list(DEFAULT_CAPABILITIES)
    assert document["masked_paths"] == list(MASKED_PATHS)
    assert document["readonly_paths"] == list(READONLY_PATHS)
    assert LaunchConfig.from_json(config.to_json()) == config
    assert config.cgroup_procs == ("/sys/fs/cgroup/pids/d/x/cgroup.procs",)  # list stored as tuple
    assert linux.loads(config.to_json().decode()) == document  # what the init stage reads


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"container_id": "abc"}, "container_id"),
        ({"lower": ()}, "lower"),
        ({"lower": "/l/top"}, "lower"),
        ({"lower": ("relative",)}, "lower"),
        ({"lower": ("/a,b",)}, "lower"),
        ({"upper": "/a:b"}, "upper"),
        ({"work": ["/w"]}, "work"),
        ({"rootfs": "merged"}, "rootfs"),
        ({"argv": ()}, "argv"),
        ({"argv": ("a\x00b",)}, "argv"),
        ({"env": ("NOEQUALS",)}, "env"),
        ({"cwd": "srv"}, "cwd"),
        ({"user": "a b"}, "user"),
        ({"hostname": "-bad"}, "hostname"),
        ({"capabilities": ("CAP_NOPE",)}, "capabilities"),
        ({"masked_paths": ("proc/kcore",)}, "masked_paths"),
    ],
)
def test_launch_config_refuses_bad_values(overrides: dict, field: str) -> None:
    with pytest.raises(InvalidArgument, match=f"launch config.{field}"):
        make_config(**overrides)


def test_launch_config_from_json_refuses_unknown_fields() -> None:
    document = json.loads(make_config().to_json())
    document["privileged"] = True
    with pytest.raises(InvalidArgument, match="privileged"):
        LaunchConfig.from_json(json.dumps(document))


# --- cgroups on a fake tree --------------------------------------------------------------------------


@pytest.fixture
def v1_root(tmp_path: Path) -> Path:
    """Like a systemd host: cpu and cpuacct co-mounted behind symlinks, a named systemd
    hierarchy, an empty unified mount, no blkio."""
    root = tmp_path / "cgroup"
    for name in ("cpu,cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "systemd", "unified"):
        (root / name).mkdir(parents=True)
    (root / "cpu").symlink_to("cpu,cpuacct")
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    (root / "cpuset" / "cpuset.cpus").write_text("0-3\n")
    (root / "cpuset" / "cpuset.mems").write_text("0\n")
    return root


def test_detect(tmp_path: Path, v1_root: Path) -> None:
    assert isinstance(cgroups.detect(str(v1_root)), cgroups.CgroupV1)
    v2_root = tmp_path / "v2"
    v2_root.mkdir()
    (v2_root / "cgroup.controllers").write_text("cpu memory pids\n")
    backend = cgroups.detect(str(v2_root), parent="mine")
    assert isinstance(backend, cgroups.CgroupV2)
    assert backend.parent == "mine"


def test_v1_creates_one_dir_per_hierarchy(v1_root: Path) -> None:
    group = cgroups.CgroupV1(str(v1_root), parent="dy").create("c1")
    expected = [v1_root / name / "dy" / "c1" for name in ("cpu", "cpuset", "memory", "pids", "devices", "freezer")]
    assert [Path(p) for p in group.paths] == expected
    assert all(path.is_dir() for path in expected)
    assert not (v1_root / "systemd" / "dy").exists()
    assert not (v1_root / "unified" / "dy").exists()
    assert group.procs_files == tuple(f"{p}/cgroup.procs" for p in group.paths)


def test_v1_copies_cpuset_into_new_dirs(v1_root: Path) -> None:
    cgroups.CgroupV1(str(v1_root), parent="dy").create("c1")
    for directory in (v1_root / "cpuset" / "dy", v1_root / "cpuset" / "dy" / "c1"):
        assert (directory / "cpuset.cpus").read_text() == "0-3"
        assert (directory / "cpuset.mems").read_text() == "0"
    assert not (v1_root / "memory" / "dy" / "cpuset.cpus").exists()


def test_v1_open_and_remove(v1_root: Path) -> None:
    backend = cgroups.CgroupV1(str(v1_root), parent="dy")
    backend.create("c1")
    backend.create("c2")
    for file in (v1_root / "cpuset" / "dy" / "c1").iterdir():  # cgroupfs files go with rmdir; these do not
        file.unlink()
    group = backend.open("c1")
    group.remove()
    assert not any((v1_root / name / "dy" / "c1").exists() for name in ("cpu", "cpuset", "memory", "pids"))
    assert (v1_root / "pids" / "dy" / "c2").is_dir()
    group.remove()  # again: missing dirs are fine
    assert backend.open("never-created").pids() == []


def test_v2_creates_and_enables_controllers(tmp_path: Path) -> None:
    root = tmp_path / "v2"
    (root / "dy").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    (root / "dy" / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "dy" / "cgroup.subtree_control").write_text("")
    backend = cgroups.CgroupV2(str(root), parent="dy")
    group = backend.create("c1")
    assert group.paths == (str(root / "dy" / "c1"),)
    assert (root / "dy" / "c1").is_dir()
    assert (root / "dy" / "cgroup.subtree_control").read_text().split() == ["+cpu", "+memory", "+pids"]
    backend.open("c1").remove()
    assert not (root / "dy" / "c1").exists()


def test_v2_without_controller_files(tmp_path: Path) -> None:
    group = cgroups.CgroupV2(str(tmp_path), parent="dy").create("c1")
    assert Path(group.paths[0]).is_dir()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
def test_cgroup_names_are_single_components(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidArgument):
        cgroups.CgroupV2(str(tmp_path)).create(name)


def test_pids_and_kill_all(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        group = cgroups.CgroupV2(str(tmp_path), parent="dy").create("c1")
        Path(group.procs_files[0]).write_text(f"{sleeper.pid}\n")
        assert group.pids() == [sleeper.pid]
        group.kill_all()
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        group.kill_all()  # a pid that is gone is fine
    finally:
        sleeper.kill()
        sleeper.wait()


# --- the handshake against scripted stage 0s (tests/fake_forkserver.py) ----------------------------


FAKE_FORK_SERVER = Path(__file__).parent.parent / "fake_forkserver.py"


@pytest.fixture
def subreaper():
    become_subreaper()
    yield
    linux.set_child_subreaper(False)


def fake_init(tmp_path: Path, body: str, name: str = "fake-python") -> str:
    """An executable shell script ``name`` in ``tmp_path`` with ``body``."""
    script = tmp_path / name
    script.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return str(script)


def scripted_server(tmp_path: Path, stage0: str) -> ForkServer:
    """A ForkServer whose stage 0 is the executable ``stage0`` instead of the init stage."""
    python = fake_init(tmp_path, f"exec {sys.executable} -I -S {FAKE_FORK_SERVER} {RUNTIME_DIR} {stage0}\n", "server")
    return ForkServer(python=python)


async def launch_scripted(tmp_path: Path, body: str, config: LaunchConfig | None = None) -> ContainerProcess:
    """Launch ``config`` with a stage 0 running the shell script ``body``; the server is
    stopped again before this returns (the container, if any, is our child)."""
    return await launch_with(tmp_path, fake_init(tmp_path, body, "stage0"), config)


async def launch_with(tmp_path: Path, stage0: str, config: LaunchConfig | None = None) -> ContainerProcess:
    async with scripted_server(tmp_path, stage0) as server:
        return await server.launch(config or make_config())


def inheritable_fds() -> list[int]:
    found = []
    for fd in range(5, 256):
        try:
            if not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                found.append(fd)
        except OSError:
            pass
    return found


def with_child(child_script: str, after: str = "") -> str:
    """A fake stage 0 that forks a "container" (``child_script``), reports its pid, runs
    ``after`` and exits. The child waits for stage 0 to be gone (EOF on a fifo) before it
    runs, so that stage 0 (a shell) cannot reap it first, as the real one never does."""
    return f"""\
        fifo="$(dirname "$0")/stage0-gone"; mkfifo "$fifo"
        sh -c 'read line < "$0"; {child_script}' "$fifo" 4>&- &
        exec 6>"$fifo"
        echo "{{\\"pid\\": $!}}" >&4
        {after}
    """


def assert_no_child(pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


async def test_launch_requires_a_subreaper(tmp_path: Path) -> None:
    linux.set_child_subreaper(False)
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
    assert inheritable_fds()  # the test runner's, and one of ours: the fork server closes them
    with pytest.raises(LaunchError) as caught:
        await launch_with(tmp_path, str(script), config)
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


def assert_no_children() -> None:
    """No child of ours is left, running or unreaped."""
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


async def test_container_process_wait_and_signal(tmp_path: Path, subreaper: None) -> None:
    body = """\
        sleep 60 4>&- &
        echo "{\\"pid\\": $!}" >&4
    """
    process = await launch_scripted(tmp_path, body)
    try:
        with open(f"/proc/{process.pid}/stat") as stat:
            assert int(stat.read().rpartition(")")[2].split()[19]) == process.start_time
        process.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            codes = [await process.wait(), await process.wait()]
        assert codes == [137, 137]
        process.send_signal(signal.SIGTERM)  # exited: no error
        assert_no_child(process.pid)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        process.close()


async def test_container_process_wait_from_two_tasks(tmp_path: Path, subreaper: None) -> None:
    process = await launch_scripted(tmp_path, with_child("exit 5"))
    codes: list[int] = []

    async def waiter() -> None:
        codes.append(await process.wait())

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                nursery.start_soon(waiter)
        assert codes == [5, 5]
    finally:
        process.close()


# --- the fork server (no root: stage 0 fails at its first step, joining the cgroup) -----------


@pytest.fixture
async def server(subreaper: None):
    server = ForkServer()
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()
    assert_no_children()


def open_fds(pid: int) -> list[int]:
    return sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))


def children_of(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            found += [int(child) for child in children.read().split()]
    return found


def test_fork_server_imports_only_the_standard_library() -> None:
    directory = os.path.dirname(FORK_SERVER_SCRIPT)
    code = f"import sys; sys.path.insert(0, {directory!r}); import forkserver; print(' '.join(sorted(sys.modules)))"
    modules = set(subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert {"forkserver", "linux", "ctypes", "select"} <= modules
    assert not modules & {"trio", "zmq", "structlog", "msgpack", "supervisor", "re", "enum", "json", "socket", "signal"}


async def test_fork_server_is_a_clean_child_and_not_a_subreaper(server: ForkServer) -> None:
    assert server.pid is not None
    with open(f"/proc/{server.pid}/stat") as stat:
        assert int(stat.read().rpartition(")")[2].split()[1]) == os.getpid()
    assert open_fds(server.pid) == [0, 1, 2, 3]  # nothing inherited beyond its control socket
    with open(f"/proc/{server.pid}/status") as status:
        assert status_field(status.read(), "SigIgn") & 1 << (signal.SIGINT - 1)  # Ctrl-C is for the daemon
    # (that it is no subreaper shows in the integration tests: pid 1 is re-parented to us)


def status_field(text: str, name: str) -> int:
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith(name + ":")), 16)


async def test_fork_server_passes_stage0_errors_through(server: ForkServer, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-cgroup" / "cgroup.procs")
    for _ in range(3):
        with pytest.raises(LaunchError) as caught:
            with trio.fail_after(10):
                await server.launch(make_config(cgroup_procs=(missing,)))
        assert caught.value.exit_code == 125
        assert caught.value.message == f'cannot start container {ID[:12]}: join the cgroup: write "{missing}": no such file or directory'
    assert open_fds(server.pid) == [0, 1, 2, 3]
    assert children_of(server.pid) == []  # every stage 0 reaped
    assert children_of(os.getpid()) == [server.pid]


async def test_fork_server_launches_in_parallel(server: ForkServer, tmp_path: Path) -> None:
    errors: list[str] = []

    async def one(index: int) -> None:
        missing = str(tmp_path / f"cgroup-{index}" / "cgroup.procs")
        with pytest.raises(LaunchError) as caught:
            await server.launch(make_config(cgroup_procs=(missing,)))
        errors.append(caught.value.message)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for index in range(20):
                nursery.start_soon(one, index)
    assert sorted(errors) == sorted(
        f'cannot start container {ID[:12]}: join the cgroup: write "{tmp_path}/cgroup-{index}/cgroup.procs": no such file or directory'
        for index in range(20)
    )
    assert open_fds(server.pid) == [0, 1, 2, 3]
    assert children_of(server.pid) == []


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


async def test_fork_server_restarts_after_sigkill(server: ForkServer, tmp_path: Path) -> None:
    first = server.pid
    assert first is not None
    await kill_and_wait(first)
    missing = str(tmp_path / "no-such-cgroup" / "cgroup.procs")
    with pytest.raises(LaunchError, match="join the cgroup"):  # a new server, working
        with trio.fail_after(10):
            await server.launch(make_config(cgroup_procs=(missing,)))
    assert server.pid not in (None, first)
    assert children_of(os.getpid()) == [server.pid]  # the old one reaped


async def test_fork_server_death_fails_the_launch_in_flight(server: ForkServer, tmp_path: Path) -> None:
    fifo = blocking_cgroup(tmp_path)
    dead = server.pid
    assert dead is not None
    caught: list[LaunchError] = []

    async def launch_one() -> None:
        with pytest.raises(LaunchError) as error:
            await server.launch(make_config(cgroup_procs=(fifo,)))
        caught.append(error.value)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(launch_one)
            stage0 = await wait_for_a_stage0(server)
            os.kill(dead, signal.SIGKILL)
    assert caught[0].exit_code == 125
    assert caught[0].message == f"cannot start container {ID[:12]}: the fork server died"
    assert not os.path.exists(f"/proc/{stage0}")  # killed and reaped (it had become our child)
    assert children_of(os.getpid()) == []  # the dead server reaped too; the next launch starts one


async def test_fork_server_cancelled_launch_leaves_nothing(server: ForkServer, tmp_path: Path) -> None:
    fifo = blocking_cgroup(tmp_path)
    with trio.move_on_after(20) as timeout:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.launch, make_config(cgroup_procs=(fifo,)))
            stage0 = await wait_for_a_stage0(server)
            nursery.cancel_scope.cancel()
    assert not timeout.cancelled_caught
    assert not os.path.exists(f"/proc/{stage0}")
    assert children_of(server.pid) == []
    assert open_fds(server.pid) == [0, 1, 2, 3]


async def test_fork_server_that_cannot_start(tmp_path: Path, subreaper: None) -> None:
    server = ForkServer(python=fake_init(tmp_path, "exit 2"))
    with pytest.raises(LaunchError, match="cannot start the fork server .*: it was not ready"):
        await server.start()
    with pytest.raises(LaunchError, match="cannot start the fork server"):
        await ForkServer(python=str(tmp_path / "no-python")).start()
    assert_no_children()
