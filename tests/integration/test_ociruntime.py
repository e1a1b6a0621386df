"""``dockyard-runtime`` (the OCI runtime CLI, docs/runtime.md) on the real kernel: a busybox
bundle made with ``dockyard-runtime spec`` driven through create/start/state/exec/kill/delete
and run, the console socket, hooks, pause/resume; and podman driving it with
``--runtime``. Each test's containers live in a private ``--root`` and under a cgroup
parent of their own, both removed at the end."""

from __future__ import annotations

import array
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, cgroup_dirs, mounts_under, try_rmdir
from tests.rootfs import build_rootfs
from tests.tools import require

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not ROOT, reason="needs root")]

RUNTIME = str(Path(sys.executable).with_name("dockyard-runtime"))
TIMEOUT = 30


class Runtime:
    """dockyard-runtime with a private --root, and bundles whose cgroups are under ``parent``."""

    def __init__(self, base: Path):
        self.base = base
        self.root = base / "state"
        self.parent = "dyrt-" + secrets.token_hex(4)

    def __call__(self, *args: str, check: bool = True, **options) -> subprocess.CompletedProcess:
        options.setdefault("capture_output", True)
        result = subprocess.run([RUNTIME, "--root", str(self.root), *args], text=True, timeout=TIMEOUT, **options)
        if check:
            assert result.returncode == 0, f"{' '.join(args)}: rc {result.returncode}: {result.stderr}"
        return result

    def detached(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """A command whose container keeps its stdio (create, run --detach): into files, not
        pipes, which would stay open as long as the container runs."""
        with open(self.base / "out.log", "a+") as out, open(self.base / "err.log", "w+") as err:
            result = subprocess.run([RUNTIME, "--root", str(self.root), *args], stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL, timeout=TIMEOUT)
            err.seek(0)
            result.stderr = err.read()
        if check:
            assert result.returncode == 0, f"{' '.join(args)}: rc {result.returncode}: {result.stderr}"
        return result

    def bundle(self, name: str, args: list[str], **changes) -> Path:
        """A bundle from ``dockyard-runtime spec`` over a busybox rootfs (writable root, no
        terminal), with ``args`` and the top-level ``changes``; its cgroup under our parent."""
        directory = self.base / name
        build_rootfs(directory / "rootfs")
        self("spec", "--bundle", str(directory))
        config = json.loads((directory / "config.json").read_text())
        config["process"]["args"] = args
        config["process"]["terminal"] = False
        config["root"]["readonly"] = False
        config["linux"]["cgroupsPath"] = f"/{self.parent}/{name}"
        for key, value in changes.items():
            config[key] = value
        (directory / "config.json").write_text(json.dumps(config))
        return directory

    def state(self, container_id: str) -> dict:
        return json.loads(self("state", container_id).stdout)

    def wait_status(self, container_id: str, status: str) -> dict:
        deadline = time.monotonic() + TIMEOUT
        while (state := self.state(container_id))["status"] != status:
            assert time.monotonic() < deadline, f"{container_id} stayed {state['status']}, never {status}"
            time.sleep(0.02)
        return state

    def clean(self) -> None:
        for container_id in self("list", "-q", check=False).stdout.split():
            self("delete", "--force", container_id, check=False)
        for hierarchy in cgroup_dirs(self.parent):
            for child in sorted(Path(hierarchy).glob("*/"), reverse=True):
                try_rmdir(child)
            try_rmdir(Path(hierarchy))


@pytest.fixture
def runtime(tmp_path):
    instance = Runtime(tmp_path)
    yield instance
    instance.clean()
    assert cgroup_dirs(instance.parent) == [], "the runtime left cgroups behind"
    assert not list(instance.root.glob("*/")) if instance.root.exists() else True


def wait_for_file(path: Path) -> str:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path.read_text()


def test_run_prints_and_exits_with_the_container_code_and_leaves_nothing(runtime):
    bundle = runtime.bundle("b", ["sh", "-c", "echo hello; hostname; cat /proc/self/cgroup | grep -c memory; exit 3"])
    result = runtime("run", "--bundle", str(bundle), "one", check=False)
    assert result.returncode == 3, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["hello", "dockyard"]
    assert runtime("list", "-q").stdout == ""
    assert cgroup_dirs(f"{runtime.parent}/b") == []


def test_create_waits_for_start_then_state_exec_ps_kill_delete(runtime):
    bundle = runtime.bundle("b", ["sh", "-c", "echo started > /started; trap 'exit 0' TERM; "
                                              "while true; do sleep 0.05; done"])
    pid_file = runtime.base / "pid"
    runtime.detached("create", "--bundle", str(bundle), "--pid-file", str(pid_file), "web")
    state = runtime.state("web")
    assert state["status"] == "created" and state["pid"] == int(pid_file.read_text())
    assert state["bundle"] == str(bundle) and state["ociVersion"]
    assert not (bundle / "rootfs" / "started").exists(), "the process ran before start"
    assert (runtime.root / "web" / "exec.fifo").exists()

    runtime("start", "web")
    assert wait_for_file(bundle / "rootfs" / "started") == "started\n"
    assert runtime.state("web")["status"] == "running"
    assert not (runtime.root / "web" / "exec.fifo").exists()
    assert runtime("start", "web", check=False).returncode == 1

    result = runtime("exec", "web", "sh", "-c", "cat /started; echo $$; exit 4", check=False)
    assert result.returncode == 4 and result.stdout.splitlines()[0] == "started"
    assert state["pid"] in json.loads(runtime("ps", "--format", "json", "web").stdout)
    assert "web" in runtime("list").stdout

    refused = runtime("delete", "web", check=False)
    assert refused.returncode == 1 and "not stopped" in refused.stderr
    runtime("kill", "web", "TERM")
    assert runtime.wait_status("web", "stopped")["pid"] == 0
    runtime("delete", "web")
    gone = runtime("state", "web", check=False)
    assert gone.returncode == 1 and 'container "web" does not exist' in gone.stderr
    assert cgroup_dirs(f"{runtime.parent}/b") == []


def test_errors_are_logged_as_json_lines_for_containerd(runtime):
    log = runtime.base / "log.json"
    result = runtime("--log", str(log), "--log-format", "json", "kill", "nothing", "KILL", check=False)
    assert result.returncode == 1
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and entry["msg"] == 'container "nothing" does not exist' and entry["time"]
    assert 'container "nothing" does not exist' in result.stderr
    refused = runtime("--systemd-cgroup", "list", check=False)
    assert refused.returncode == 1 and "cgroupfs" in refused.stderr


def test_a_missing_command_fails_create_and_leaves_nothing(runtime):
    bundle = runtime.bundle("b", ["no-such-command"])
    result = runtime.detached("create", "--bundle", str(bundle), "bad", check=False)
    assert result.returncode != 0
    assert 'exec: "no-such-command": executable file not found in $PATH' in result.stderr
    assert not (runtime.root / "bad").exists()
    assert cgroup_dirs(f"{runtime.parent}/b") == []


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                if text.encode() in file.read():
                    found.append(int(entry))
        except (OSError, ValueError):
            pass
    return found


def test_a_limit_the_kernel_refuses_fails_create_after_stage_0_is_forked_and_leaves_nothing(runtime):
    # Stage 0 is forked before the limits are written (launch.InitStage): a write the kernel
    # refuses must still leave no process, cgroup or state behind.
    bundle = runtime.bundle("b", ["true"])
    config = json.loads((bundle / "config.json").read_text())
    config["linux"].setdefault("resources", {})["cpu"] = {"cpus": str(os.cpu_count() + 63)}
    (bundle / "config.json").write_text(json.dumps(config))
    container_id = "refused-" + secrets.token_hex(4)
    result = runtime.detached("create", "--bundle", str(bundle), container_id, check=False)
    assert result.returncode == 1
    assert "cpuset.cpus" in result.stderr
    assert not (runtime.root / container_id).exists()
    assert cgroup_dirs(f"{runtime.parent}/b") == []
    assert processes_mentioning(container_id) == []


def test_a_cgroups_path_that_is_not_a_string_is_refused_before_anything_is_made(runtime):
    bundle = runtime.bundle("b", ["true"])
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["cgroupsPath"] = 5
    (bundle / "config.json").write_text(json.dumps(config))
    result = runtime.detached("create", "--bundle", str(bundle), "numbered", check=False)
    assert result.returncode == 1
    assert "config.json: linux.cgroupsPath 5 is not a string" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (runtime.root / "numbered").exists()


def test_the_attach_warm_up_writes_our_pid_into_our_own_v2_cgroup_and_moves_nothing():
    from supervisor.ociruntime.warmup import AttachWarmUp

    before = Path("/proc/self/cgroup").read_text()
    unified = [line for line in before.splitlines() if line.startswith("0::")]
    if not unified:
        pytest.skip("no cgroup v2 hierarchy on this host")
    warm_up = AttachWarmUp(unified[0] + "\n")  # as on a host whose cgroups are all v2
    assert warm_up.wait(TIMEOUT), "the warm-up's write never finished"
    assert warm_up.path, "no cgroup.procs of our own v2 cgroup could be opened"
    assert str(os.getpid()) in Path(warm_up.path).read_text().split()
    assert Path("/proc/self/cgroup").read_text() == before


def test_there_is_no_warm_up_on_a_host_with_v1_hierarchies():
    # Stage 0 moves itself through v1 tasks files (no grace period): a warm-up would only
    # hold cgroup_mutex through one while the runtime makes the cgroups.
    from supervisor.ociruntime.warmup import AttachWarmUp

    text = Path("/proc/self/cgroup").read_text()
    if all(line.startswith("0::") for line in text.splitlines()):
        pytest.skip("cgroup v2 only on this host")
    warm_up = AttachWarmUp()
    assert (warm_up.path, warm_up.finished) == ("", None)


def test_an_abandoned_stage_0_is_killed_and_reaped():
    from supervisor.ociruntime.launch import InitStage

    stage = InitStage()  # forked: importing the stage, then waiting for its config
    assert Path(f"/proc/{stage.pid}").exists()
    stage.abandon()
    with pytest.raises(ChildProcessError):
        os.waitpid(stage.pid, os.WNOHANG)


def test_the_container_is_in_its_cgroups_from_its_first_instruction(runtime):
    # Stage 0 joins them before it forks pid 1: /proc/self/cgroup of the container's own
    # process (no cgroup namespace in this bundle) names its cgroup in every hierarchy the
    # runtime manages (on a hybrid host, the v1 ones: the v2 tree there has no controller).
    bundle = runtime.bundle("b", ["cat", "/proc/self/cgroup"])
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["namespaces"] = [entry for entry in config["linux"]["namespaces"] if entry["type"] != "cgroup"]
    (bundle / "config.json").write_text(json.dumps(config))
    result = runtime("run", "--bundle", str(bundle), "born-in")
    lines = [line for line in result.stdout.splitlines() if line]
    managed = [line for line in lines if not line.startswith("0::")] or lines  # hybrid: the v1 ones
    assert managed
    for line in managed:
        assert line.endswith(f":/{runtime.parent}/b"), line


def test_a_user_namespace_gets_its_id_maps_and_the_fifo_still_opens(runtime):
    # The container's root is not the host's: the bundle must be reachable by others (as with
    # runc), and pytest's tmp dirs are 0700; the state dir stays private (the FIFO is passed).
    reachable = Path(tempfile.mkdtemp(prefix="dyrt-userns-", dir="/tmp"))
    os.chmod(reachable, 0o711)
    runtime.base, base = reachable, runtime.base
    try:
        bundle = runtime.bundle("b", ["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u"])
    finally:
        runtime.base = base
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["namespaces"].append({"type": "user"})
    mapping = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    config["linux"]["uidMappings"] = config["linux"]["gidMappings"] = mapping
    (bundle / "config.json").write_text(json.dumps(config))
    try:
        result = runtime("run", "--bundle", str(bundle), "userns")
    finally:
        shutil.rmtree(reachable, ignore_errors=True)
    assert [line.split() for line in result.stdout.splitlines()] == [["0", "200000", "65536"]] * 2 + [["0"]]


def test_a_new_cgroup_namespace_is_rooted_at_the_container_s_cgroups(runtime):
    # pid 1 is built while the runtime moves it into its cgroups; with a new cgroup namespace
    # it waits for the move first (cgroup_sync) and unshares it then, rooted there.
    bundle = runtime.bundle("b", ["cat", "/proc/self/cgroup"])
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["namespaces"] = [entry for entry in config["linux"]["namespaces"] if entry["type"] != "cgroup"]
    config["linux"]["namespaces"].append({"type": "cgroup"})
    (bundle / "config.json").write_text(json.dumps(config))
    lines = runtime("run", "--bundle", str(bundle), "cgns").stdout.splitlines()
    assert lines and all(line.endswith(":/") for line in lines), lines


def test_pid_1_is_in_the_container_s_cgroups_once_create_returns(runtime):
    bundle = runtime.bundle("b", ["true"])
    runtime.detached("create", "--bundle", str(bundle), "made")
    pid = runtime.state("made")["pid"]
    v1 = [line for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if line.split(":")[1]]
    assert v1 and all(line.endswith(f":/{runtime.parent}/b") for line in v1), v1
    runtime("delete", "--force", "made")


def test_the_default_cgroup_parent_goes_with_its_last_container():
    from supervisor.ociruntime.cgroups import BundleCgroup

    parent = "dyrt-parent-" + secrets.token_hex(4)
    first, second = (BundleCgroup.for_bundle("", name, default_parent="/" + parent) for name in ("one", "two"))
    assert BundleCgroup.for_bundle(f"/{parent}/three", "three").parents == []  # a caller's parent is not ours
    try:
        first.create()
        second.create()
        first.remove()
        assert cgroup_dirs(f"{parent}/one") == [] and cgroup_dirs(f"{parent}/two") != []
        second.remove()
        assert cgroup_dirs(parent) == []
    finally:
        for directory in cgroup_dirs(parent):
            for child in Path(directory).glob("*/"):
                try_rmdir(child)
            try_rmdir(Path(directory))


def test_run_without_a_cgroups_path_leaves_no_empty_default_parent(runtime):
    bundle = runtime.bundle("b", ["true"])
    config = json.loads((bundle / "config.json").read_text())
    del config["linux"]["cgroupsPath"]
    (bundle / "config.json").write_text(json.dumps(config))
    container_id = "dyrt-default-" + secrets.token_hex(4)
    runtime("run", "--bundle", str(bundle), container_id)
    assert cgroup_dirs(f"dockyard-runtime/{container_id}") == []
    for directory in cgroup_dirs("dockyard-runtime"):  # gone, or kept by another runtime's container
        assert list(Path(directory).glob("*/")), f"{directory} was left empty"


def test_hooks_run_with_the_state_on_stdin_in_their_order(runtime):
    record = runtime.base / "hooks.log"
    def hook(name: str) -> dict:
        return {"path": "/bin/sh", "args": ["sh", "-c", f"echo {name} $(cat | grep -o '\"status\":\"[a-z]*\"') >> {record}"]}
    hooks = {kind: [hook(kind)] for kind in ("createRuntime", "prestart", "poststart", "poststop")}
    bundle = runtime.bundle("b", ["true"], hooks=hooks)
    runtime("run", "--bundle", str(bundle), "hooked")
    assert record.read_text().splitlines() == [
        'createRuntime "status":"creating"', 'prestart "status":"created"', 'poststart "status":"running"',
        'poststop "status":"stopped"']


def test_pause_freezes_and_resume_thaws(runtime):
    bundle = runtime.bundle("b", ["sh", "-c", "while true; do date +%s%N > /tick; sleep 0.05; done"])
    runtime.detached("run", "--detach", "--bundle", str(bundle), "p")
    wait_for_file(bundle / "rootfs" / "tick")
    runtime("pause", "p")
    assert runtime.state("p")["status"] == "paused"
    assert runtime("pause", "p", check=False).returncode == 1
    runtime("resume", "p")
    assert runtime.state("p")["status"] == "running"
    runtime("delete", "--force", "p")


def receive_console(path: Path, received: dict) -> threading.Thread:
    """Accept one connection on the console socket at ``path`` and read what its pty says."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(TIMEOUT)

    def serve():
        with server:
            connection, _ = server.accept()
            with connection:
                message, ancillary, _, _ = connection.recvmsg(1024, socket.CMSG_SPACE(4))
            master = array.array("i", ancillary[0][2])[0]
            received["name"] = message.decode()
            output = b""
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the slave side is closed
                    break
                if not chunk:
                    break
                output += chunk
            os.close(master)
            received["output"] = output.decode()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_a_terminal_comes_through_the_console_socket(runtime):
    bundle = runtime.bundle("b", ["sh", "-c", "tty; stty size"])
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = True
    config["process"]["consoleSize"] = {"height": 30, "width": 100}
    (bundle / "config.json").write_text(json.dumps(config))
    received: dict = {}
    socket_path = runtime.base / "console.sock"
    thread = receive_console(socket_path, received)
    runtime.detached("create", "--bundle", str(bundle), "--console-socket", str(socket_path), "tty")
    runtime("start", "tty")
    thread.join(TIMEOUT)
    assert received["name"].startswith("/dev/pts/")
    assert received["output"].split() == [received["name"], "30", "100"]
    runtime.wait_status("tty", "stopped")
    runtime("delete", "tty")


# --- podman --runtime dockyard-runtime --------------------------------------------------------


@pytest.fixture
def podman_store(runtime, busybox_tar):
    """A private podman store with the busybox image as localhost/bb:1; containers under our
    cgroup parent."""
    require("podman", "script")
    directory = Path(tempfile.mkdtemp(prefix="dyrt-", dir="/tmp"))

    def podman(*args: str, check: bool = True, terminal: bool = False) -> subprocess.CompletedProcess:
        command = ["podman", "--root", f"{directory}/root", "--runroot", f"{directory}/run", "--storage-driver", "vfs",
                   "--cgroup-manager", "cgroupfs", "--events-backend", "none", "--runtime", RUNTIME, *args]
        if terminal:  # a real terminal on podman's side: script(1) gives it one
            command = ["script", "-qec", subprocess.list2cmdline(command), "/dev/null"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if check:
            assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr}"
        return result

    podman("import", str(busybox_tar), "localhost/bb:1")
    podman.run_options = ["--cgroup-parent", f"/{runtime.parent}", "--network", "none",  # type: ignore[attr-defined]
                          "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
    yield podman
    podman("rm", "--all", "--force", check=False)
    for mount in sorted(mounts_under(directory), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    shutil.rmtree(directory, ignore_errors=True)


def test_podman_runs_execs_stops_and_removes_a_container(podman_store):
    podman = podman_store
    options = podman.run_options
    assert podman("run", "--rm", *options, "localhost/bb:1", "sh", "-c", "echo from podman; exit 0").stdout \
        == "from podman\n"
    assert podman("run", "--rm", *options, "localhost/bb:1", "sh", "-c", "exit 5", check=False).returncode == 5
    podman("run", "-d", "--name", "web", *options, "localhost/bb:1", "sh", "-c",
           "trap 'exit 7' TERM; while true; do sleep 0.05; done")
    assert podman("exec", "web", "sh", "-c", "echo exec $(hostname)").stdout.startswith("exec ")
    assert podman("inspect", "--format", "{{.State.Status}}", "web").stdout.strip() == "running"
    podman("stop", "-t", "10", "web")
    assert podman("inspect", "--format", "{{.State.ExitCode}}", "web").stdout.strip() == "7"
    podman("rm", "web")
    assert podman("ps", "-aq").stdout == ""


def test_podman_run_t_gets_a_terminal_through_the_console_socket(podman_store):
    podman = podman_store
    result = podman("run", "--rm", "-t", *podman.run_options, "localhost/bb:1", "sh", "-c",
                    "tty; test -t 0 && echo stdin-is-a-tty", terminal=True)
    lines = result.stdout.replace("\r", "").split("\n")
    assert lines[0].startswith("/dev/pts/") and "stdin-is-a-tty" in lines


# --- containerd: ctr run --runc-binary dockyard-runtime (through containerd-shim-runc-v2) ------


@pytest.fixture
def containerd(runtime):
    """A private containerd (its own root, state, sockets; no CRI plugin), and ctr on it."""
    require("containerd", "ctr")
    directory = Path(tempfile.mkdtemp(prefix="dyctd-", dir="/tmp"))
    socket_path = directory / "containerd.sock"
    (directory / "config.toml").write_text(f"""version = 2
root = "{directory}/root"
state = "{directory}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{socket_path}"
[ttrpc]
  address = "{socket_path}.ttrpc"
[debug]
  address = "{directory}/debug.sock"
""")
    log = open(directory / "containerd.log", "w")
    server = subprocess.Popen(["containerd", "--config", str(directory / "config.toml")], stdout=log, stderr=log)

    def ctr(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["ctr", "--address", str(socket_path), "-n", "dytest", *args], capture_output=True,
                                text=True, timeout=60, stdin=subprocess.DEVNULL)
        if check:
            assert result.returncode == 0, f"ctr {' '.join(args)}: {result.stderr}"
        return result

    deadline = time.monotonic() + TIMEOUT
    while ctr("version", check=False).returncode != 0:
        assert server.poll() is None and time.monotonic() < deadline, (directory / "containerd.log").read_text()
        time.sleep(0.05)
    try:
        yield ctr
    finally:
        for task in ctr("task", "ls", "-q", check=False).stdout.split():
            ctr("task", "kill", "-s", "KILL", task, check=False)
            ctr("task", "delete", "-f", task, check=False)
        for container in ctr("container", "ls", "-q", check=False).stdout.split():
            ctr("container", "delete", container, check=False)
        server.terminate()
        server.wait(TIMEOUT)
        log.close()
        for mount in sorted(mounts_under(directory), reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


def test_containerd_runs_execs_kills_and_deletes_through_the_runc_shim(runtime, containerd):
    rootfs = build_rootfs(runtime.base / "rootfs")
    binary = ("--runc-binary", RUNTIME)
    one = containerd("run", "--rm", *binary, "--cgroup", f"/{runtime.parent}/one", "--rootfs", str(rootfs), "one",
                     "sh", "-c", "echo hi from containerd; exit 3", check=False)
    assert one.returncode == 3 and one.stdout == "hi from containerd\n", one.stderr
    containerd("run", "-d", *binary, "--cgroup", f"/{runtime.parent}/two", "--rootfs", str(rootfs), "two",
               "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.05; done")
    assert "RUNNING" in containerd("task", "ls").stdout
    assert containerd("task", "exec", "--exec-id", "e1", "two", "sh", "-c", "echo exec ok").stdout == "exec ok\n"
    containerd("task", "kill", "two")
    deadline = time.monotonic() + TIMEOUT
    while "STOPPED" not in containerd("task", "ls").stdout:
        assert time.monotonic() < deadline, "the task never stopped"
        time.sleep(0.02)
    containerd("task", "delete", "two")
    containerd("container", "delete", "two")
    assert containerd("task", "ls", "-q").stdout == ""
