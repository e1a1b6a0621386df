"""The tools under test, each a context manager that sets itself up in a private workspace
and removes everything it made on exit (also on failure).

* :class:`Workspace` - the temp dir, the busybox rootfs tar and the OCI bundle.
* :class:`HostState` - what the anchors leave on the host outside the workspace (cgroups,
  netavark's iptables chains and bridge, /etc/docker/key.json ...): snapshot, then undo.
* :class:`Dockyard`, :class:`Podman`, :class:`Docker` - the CLIs, with one interface
  (:class:`CliTool`): command lines for ``run --rm``, ``run -d``, ``rm -f``, ``ps``, and the
  processes that hold memory for a running container.
* :class:`OciTimer` - ``runc run`` / ``crun run`` timed from a helper process.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.bench import procs
from tests.rootfs import build_rootfs, build_rootfs_tar

REPO = Path(__file__).resolve().parents[2]
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: cgroups the anchors create at the top of each hierarchy; removed if they were not there.
ANCHOR_CGROUPS = ("docker", "libpod_parent")
#: cgroup parents given to the dockyard daemon and API under test; removed too (and reported
#: when dockyard left them behind).
BENCH_CGROUP_PREFIX = "dockyard-bench-"
#: Paths the anchors create outside their workspace; removed if they were not there.
ANCHOR_PATHS = (
    "/etc/docker/key.json", "/run/libpod", "/run/containers", "/var/lib/containers",
    "/run/runc", "/run/crun", "/var/run/docker.sock",
)
UNIFIED = "/sys/fs/cgroup/unified"



def terminate(process: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM a daemon we started, then SIGKILL it if it is still there after ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

class BenchError(Exception):
    """A tool could not be set up; the message says which and why."""


# --- workspace and host state -----------------------------------------------------------


class Workspace:
    """A private temp dir with the busybox rootfs as a tar (for import) and as an OCI bundle
    (for runc/crun). Everything the tools store lives below it."""

    def __init__(self, parent: str | None = None):
        self.path = Path(tempfile.mkdtemp(prefix="dockyard-bench.", dir=parent))
        self.tar = self.path / "base.tar"
        self.bundle = self.path / "bundle"

    def __enter__(self) -> Workspace:
        os.chmod(self.path, 0o755)
        build_rootfs_tar(self.tar)
        build_rootfs(self.bundle / "rootfs")
        spec = subprocess.run(["runc", "spec", "--bundle", str(self.bundle)], capture_output=True, text=True)
        if spec.returncode != 0:
            raise BenchError(f"runc spec failed: {spec.stderr.strip()}")
        config_path = self.bundle / "config.json"
        config = json.loads(config_path.read_text())
        config["process"]["terminal"] = False
        config["process"]["args"] = ["true"]
        config_path.write_text(json.dumps(config, indent=1))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        unmount_below(self.path)
        shutil.rmtree(self.path, ignore_errors=True)

    def sub(self, name: str) -> Path:
        path = self.path / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def unmount_below(path: Path) -> list[str]:
    """Lazily unmount every mount point at or below ``path``, deepest first."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(path) or point.startswith(str(path) + "/"):
            mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    return mounts


def kill_mentioning(needle: str) -> list[int]:
    """SIGKILL every process whose command line holds ``needle`` (a workspace path: only
    processes this run started carry it). Returns their pids."""
    me = os.getpid()
    pids = [p.pid for p in procs.process_table().values() if needle in p.cmdline and p.pid != me]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


class HostState:
    """Snapshot what the anchors may add outside the workspace, and undo only their additions.

    Known additions (docker's and podman's cgroups, netavark's iptables chains and
    ``podman0`` bridge, /etc/docker/key.json, /run/libpod ...) are removed when they were not
    there before; any other new top-level cgroup is reported, never removed (it may belong to
    someone else on this machine).
    """

    def __init__(self) -> None:
        self.cgroups = self._cgroups()
        self.chains = {table: self._chains(table) for table in ("filter", "nat")}
        self.links = self._links()
        self.paths = {path for path in ANCHOR_PATHS if os.path.lexists(path)}
        self.forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        self.report: list[str] = []

    @staticmethod
    def _cgroups() -> set[str]:
        found = set()
        for controller in CGROUP_ROOT.iterdir():
            if controller.is_dir():
                for child in controller.iterdir():
                    if child.is_dir():
                        found.add(str(child))
        return found

    @staticmethod
    def _chains(table: str) -> set[str]:
        out = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        return {line.split()[1] for line in out.splitlines() if line.startswith("-N ")}

    @staticmethod
    def _links() -> set[str]:
        return set(os.listdir("/sys/class/net"))

    def restore(self) -> list[str]:
        report = self.report
        for path in sorted(self._cgroups() - self.cgroups):
            name = Path(path).name
            # Only this run's (its pid ends the name): another bench run on this machine
            # may have made its own meanwhile, with its containers still running.
            ours = name.startswith(BENCH_CGROUP_PREFIX) and name.endswith(f"-{os.getpid()}")
            if ours:
                leftovers = _cgroups_below(Path(path))
                if leftovers:
                    report.append(f"dockyard left {len(leftovers)} container cgroups in {path}; removed")
                alive = _kill_cgroup_tree(Path(path))
                if alive:
                    report.append(f"dockyard left {alive} processes running in {path}; killed")
            if name in ANCHOR_CGROUPS or ours:
                for directory in _cgroups_below(Path(path)):
                    _rmdir(directory)
                if not _rmdir(Path(path)):
                    report.append(f"cgroup {path} is still busy; left in place")
            else:
                report.append(f"new cgroup {path} (not made by an anchor; left in place)")
        for table in ("filter", "nat"):
            for chain in sorted(self._chains(table) - self.chains[table]):
                if chain.startswith("NETAVARK"):
                    self._drop_chain(table, chain)
        for link in sorted(self._links() - self.links):
            if link in ("podman0",) or link.startswith("veth"):
                subprocess.run(["ip", "link", "del", link], capture_output=True)
            else:
                report.append(f"new network link {link} left in place")
        for path in ANCHOR_PATHS:
            if path not in self.paths and os.path.lexists(path):
                if os.path.isdir(path) and not os.path.islink(path):
                    unmount_below(Path(path))
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        if forwarding != self.forwarding:
            Path("/proc/sys/net/ipv4/ip_forward").write_text(self.forwarding)
            report.append(f"net.ipv4.ip_forward was set to {forwarding} by an anchor; put back to {self.forwarding}")
        return report

    @staticmethod
    def _drop_chain(table: str, chain: str) -> None:
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        for line in rules.splitlines():
            words = shlex.split(line)
            if line.startswith("-A ") and "-j" in words and words[words.index("-j") + 1] == chain:
                subprocess.run(["iptables", "-t", table, "-D", *words[1:]], capture_output=True)
        subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True)
        subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True)


def free_subnet(first: int = 250) -> str:
    """A /24 of 10.213.0.0/16 no route of this host uses (from 10.213.<first>.0 down): two
    bridges with one subnet would take each other's traffic (another daemon on this
    machine may hold 10.213.250.0/24)."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    used = {line.split()[0] for line in routes.splitlines() if line.strip()}
    for third in range(first, 0, -1):
        subnet = f"10.213.{third}.0/24"
        if subnet not in used and f"local 10.213.{third}.1" not in routes:
            return subnet
    raise BenchError("no free /24 of 10.213.0.0/16 for the bench's bridge")


def _cgroups_below(path: Path) -> list[Path]:
    """The cgroups below ``path``, deepest first; one that goes away meanwhile (its
    container was just removed) is skipped, not an error."""
    found = [Path(root) for root, _, _ in os.walk(path, topdown=False)]
    return [directory for directory in found if directory != path]


def _kill_cgroup_tree(path: Path) -> int:
    """SIGKILL every process in the cgroup ``path`` and below; returns how many there were."""
    pids = set()
    for procs_file in [path / "cgroup.procs", *(child / "cgroup.procs" for child in _cgroups_below(path))]:
        try:
            pids |= {int(pid) for pid in procs_file.read_text().split()}
        except OSError:
            continue
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if pids:
        procs.wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), timeout=10)
    return len(pids)


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


# --- the CLIs ---------------------------------------------------------------------------


class CliTool:
    """What every figure needs from a container CLI. Subclasses fill the command lines."""

    name = "tool"
    #: The process names that count as this tool's per-container helper, for the table.
    helper_label = ""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.env = dict(os.environ)
        self.unavailable = ""  # "not available: <reason>" once setup failed

    # command lines
    def cli(self) -> list[str]:
        raise NotImplementedError

    def run_rm(self, network_none: bool = True, cmd: Sequence[str] = ("true",)) -> list[str]:
        raise NotImplementedError

    def run_detached(self, cmd: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def remove(self, ids: Sequence[str]) -> list[str]:
        return [*self.cli(), "rm", "-f", *ids]

    def ps(self) -> list[str]:
        return [*self.cli(), "ps"]

    def running_ids(self) -> list[str]:
        result = procs.timed([*self.cli(), "ps", "-q", "--no-trunc"], env=self.env, timeout=120)
        return result.stdout.split() if result.ok else []

    def remove_all(self) -> None:
        ids = procs.timed([*self.cli(), "ps", "-a", "-q", "--no-trunc"], env=self.env, timeout=120).stdout.split()
        for start in range(0, len(ids), 100):
            procs.timed(self.remove(ids[start : start + 100]), env=self.env, timeout=300)

    # timing helpers
    def time(self, argv: Sequence[str], timeout: float = 120) -> procs.Timed:
        return procs.timed(argv, env=self.env, timeout=timeout)

    # memory
    def daemons(self) -> dict[str, int]:
        """name -> pid of the long-lived processes whose growth counts per container."""
        return {}

    def helpers(self, ids: Sequence[str]) -> list[int]:
        """Pids of the per-container helper processes (conmon, shims) of ``ids``."""
        return []

    def __enter__(self) -> CliTool:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        pass


class Podman(CliTool):
    name = "podman"
    helper_label = "conmon"
    RUN_FLAGS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")

    def __init__(self, workspace: Workspace):
        super().__init__(workspace)
        base = workspace.sub("podman")
        self.globals = [
            "podman", "--root", str(base / "root"), "--runroot", str(base / "run"),
            "--tmpdir", str(base / "tmp"), "--network-config-dir", str(base / "networks"),
            "--volumepath", str(base / "volumes"), "--runtime", "runc",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file",
        ]

    def cli(self) -> list[str]:
        return list(self.globals)

    def run_rm(self, network_none: bool = True, cmd: Sequence[str] = ("true",)) -> list[str]:
        network = ["--network", "none"] if network_none else []
        return [*self.globals, "run", "--rm", *network, *self.RUN_FLAGS, "base", *cmd]

    def run_detached(self, cmd: Sequence[str]) -> list[str]:
        return [*self.globals, "run", "-d", "--network", "none", *self.RUN_FLAGS, "base", *cmd]

    def remove(self, ids: Sequence[str]) -> list[str]:
        # -t 0: sleep as pid 1 ignores SIGTERM; docker's rm -f kills at once too.
        return [*self.globals, "rm", "-f", "-t", "0", *ids]

    def __enter__(self) -> Podman:
        imported = self.time([*self.globals, "import", str(self.workspace.tar), "base"], timeout=120)
        if not imported.ok:
            raise BenchError(f"podman import: {imported.failure(['podman', 'import'])}")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.remove_all()
        self.time([*self.globals, "rmi", "-a", "-f"], timeout=120)
        self.time([*self.globals, "system", "reset", "-f"], timeout=120)

    def helpers(self, ids: Sequence[str]) -> list[int]:
        found = procs.mentioning(procs.process_table(), ids, comm="conmon")
        return [pid for pids in found.values() for pid in pids]


class Docker(CliTool):
    """A private dockerd (own data root, exec root, socket, pidfile; no bridge, no iptables),
    stopped by its pid at the end. The client is the one packaged with dockerd."""

    name = "docker"
    helper_label = "containerd-shim"

    def __init__(self, workspace: Workspace):
        super().__init__(workspace)
        base = workspace.sub("docker")
        self.base = base
        self.socket = base / "docker.sock"
        self.pidfile = base / "dockerd.pid"
        self.client = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else (shutil.which("docker") or "docker")
        self.env["DOCKER_CONFIG"] = str(workspace.sub("docker/client-config"))
        self.process: subprocess.Popen | None = None

    def cli(self) -> list[str]:
        return [self.client, "-H", f"unix://{self.socket}"]

    def run_rm(self, network_none: bool = True, cmd: Sequence[str] = ("true",)) -> list[str]:
        if not network_none:
            raise BenchError("docker runs with --bridge=none here: only --network none works")
        return [*self.cli(), "run", "--rm", "--network", "none", "base", *cmd]

    def run_detached(self, cmd: Sequence[str]) -> list[str]:
        return [*self.cli(), "run", "-d", "--network", "none", "base", *cmd]

    def daemon_argv(self) -> list[str]:
        return [
            "dockerd", "--data-root", str(self.base / "data"), "-H", f"unix://{self.socket}",
            "--iptables=false", "--bridge=none", "--exec-root", str(self.base / "exec"),
            "--pidfile", str(self.pidfile),
        ]

    def __enter__(self) -> Docker:
        log = open(self.base / "dockerd.log", "wb")
        self.process = subprocess.Popen(self.daemon_argv(), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        up = procs.wait_for(
            lambda: self.process.poll() is not None
            or (self.socket.exists() and self.time([*self.cli(), "version"], timeout=10).ok),
            timeout=60, interval=0.2,
        )
        if not up or self.process.poll() is not None:
            tail = (self.base / "dockerd.log").read_text(errors="replace").strip().splitlines()[-3:]
            self._stop()
            raise BenchError(f"dockerd did not come up: {' | '.join(tail)}")
        imported = self.time([*self.cli(), "import", str(self.workspace.tar), "base"])
        if not imported.ok:
            self._stop()
            raise BenchError(imported.failure(["docker", "import"]))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.remove_all()
                self.time([*self.cli(), "rmi", "-f", "base"])
        finally:
            self._stop()

    def _stop(self) -> None:
        if self.process is None:
            return
        terminate(self.process)
        # shims outlive dockerd by design; theirs carry our exec root in their command line.
        kill_mentioning(str(self.base))

    def daemons(self) -> dict[str, int]:
        assert self.process is not None
        table = procs.process_table()
        found = {"dockerd": self.process.pid}
        for pid in procs.descendants(table, self.process.pid):
            if table[pid].comm == "containerd":
                found["containerd"] = pid
        return found

    def helpers(self, ids: Sequence[str]) -> list[int]:
        found = procs.mentioning(procs.process_table(), ids, comm="containerd-shim")
        return [pid for pids in found.values() for pid in pids]


class Dockyard(CliTool):
    """A private dockyard daemon (``dockyard daemon --root --run``) and its CLI."""

    name = "dockyard"
    helper_label = "helpers"

    def __init__(self, workspace: Workspace, venv: Path = REPO / ".venv"):
        super().__init__(workspace)
        self.executable = str(venv / "bin" / "dockyard")
        self.root = workspace.sub("dockyard/root")
        self.run_dir = workspace.sub("dockyard/run")
        self.env["DOCKYARD_ROOT"] = str(self.root)
        self.env["DOCKYARD_RUN"] = str(self.run_dir)
        self.process: subprocess.Popen | None = None
        self.exit_code: int | None = None
        self.cgroup_parent = f"{BENCH_CGROUP_PREFIX}daemon-{os.getpid()}"

    def cli(self) -> list[str]:
        return [self.executable]

    def run_rm(self, network_none: bool = True, cmd: Sequence[str] = ("true",)) -> list[str]:
        network = ["--network", "none"] if network_none else []
        return [self.executable, "run", "--rm", *network, "base", *cmd]

    def run_detached(self, cmd: Sequence[str]) -> list[str]:
        return [self.executable, "run", "-d", "--network", "none", "base", *cmd]

    def __enter__(self) -> Dockyard:
        if not os.path.exists(self.executable):
            raise BenchError(f"{self.executable} is missing (run scripts/setup.sh)")
        self.start_daemon()
        imported = self.time([self.executable, "import", str(self.workspace.tar), "base"])
        if not imported.ok:
            self._stop()
            raise BenchError(f"dockyard import: {imported.failure(['dockyard', 'import'])}")
        return self

    def start_daemon(self, extra: Sequence[str] = ()) -> None:
        """Start the daemon (``extra``: more flags) and wait until it answers."""
        argv = [self.executable, "daemon", "--root", str(self.root), "--run", str(self.run_dir), *extra]
        if "--cgroup-parent" in self.time([self.executable, "daemon", "--help"], timeout=20).stdout:
            argv += ["--cgroup-parent", self.cgroup_parent]  # ours alone, and removed at the end
        if "--bridge-name" in self.time([self.executable, "daemon", "--help"], timeout=20).stdout:
            # Our own bridge and subnet (removed at the daemon's shutdown), never the default.
            argv += ["--bridge-name", f"dyb-{os.getpid() % 0xFFFFFF:06x}", "--bridge-subnet", free_subnet()]
        log = open(self.workspace.path / "dockyard-daemon.log", "wb")
        self.process = subprocess.Popen(
            argv,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env, start_new_session=True,
        )
        log.close()
        socket = self.run_dir / "control.sock"
        up = procs.wait_for(
            lambda: self.process.poll() is not None
            or (socket.exists() and self.time([self.executable, "ps"], timeout=10).ok),
            timeout=30, interval=0.1,
        )
        if not up or self.process.poll() is not None:
            reason = self.log_tail() or f"exit code {self.process.poll()}"
            self._stop()
            raise BenchError(f"dockyard daemon did not become ready: {reason}")

    def keeper_pid(self) -> int | None:
        """The container keeper's pid while one runs (live restore)."""
        try:
            pid = int((self.run_dir / "keeper.lock").read_text().strip() or 0)
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                return pid if b"keeper.py" in cmdline.read() else None
        except (OSError, ValueError):
            return None

    def held_mb(self) -> float:
        """Memory of the output spools (memfds) the keeper holds: not in any process's PSS."""
        pid = self.keeper_pid()
        total = 0
        if pid is not None:
            for fd in os.listdir(f"/proc/{pid}/fd") if os.path.isdir(f"/proc/{pid}/fd") else []:
                try:
                    if "memfd:dockyard-spool" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                        total += os.stat(f"/proc/{pid}/fd/{fd}").st_blocks * 512
                except OSError:
                    pass
        return total / (1 << 20)

    def log_tail(self, lines: int = 3) -> str:
        path = self.workspace.path / "dockyard-daemon.log"
        text = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
        return " | ".join(text[-lines:])

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.remove_all()
        finally:
            self._stop()

    def _stop(self) -> None:
        if self.process is None:
            return
        terminate(self.process)
        self.exit_code = self.process.returncode
        leftovers = kill_mentioning(str(self.workspace.path / "dockyard"))
        if leftovers:
            print(f"bench: dockyard left {len(leftovers)} processes behind; killed", file=sys.stderr)

    def has_command(self, command: str) -> bool:
        return self.time([self.executable, command, "--help"], timeout=20).ok

    def container_pids(self, ids: Sequence[str]) -> dict[str, int]:
        """id -> State.Pid, from one ``dockyard inspect ID...`` (a JSON list, docker's shape)."""
        result = self.time([self.executable, "inspect", *ids])
        if not result.ok:
            return {}
        data = json.loads(result.stdout)
        pids = {}
        for entry in data if isinstance(data, list) else [data]:
            pid = (entry.get("State") or {}).get("Pid")
            if pid:
                pids[entry.get("Id", "")] = int(pid)
        return pids

    def daemons(self) -> dict[str, int]:
        assert self.process is not None
        found = {"dockyard daemon": self.process.pid}
        keeper = self.keeper_pid()
        if keeper is not None:  # live restore: it holds every container
            found["keeper"] = keeper
        return found

    def helpers(self, ids: Sequence[str]) -> list[int]:
        """Processes that exist for the containers but are not their processes: children of
        the daemon outside the containers' trees, and anything else naming a container id."""
        assert self.process is not None
        table = procs.process_table()
        container_pids = self.container_pids(ids)
        if len(container_pids) < len(ids):
            raise BenchError(f"`dockyard inspect` gave State.Pid for {len(container_pids)} of {len(ids)} containers")
        inside: set[int] = set()
        for pid in container_pids.values():
            inside |= {pid} | procs.descendants(table, pid)
        helpers = procs.descendants(table, self.process.pid) - inside
        for pids in procs.mentioning(table, ids).values():
            helpers |= set(pids) - inside
        helpers.discard(self.keeper_pid())  # counted as a daemon (its growth)
        return sorted(helpers)


# --- runc / crun from a helper ----------------------------------------------------------


class OciTimer:
    """A helper process (:mod:`tests.bench.oci_timer`) that runs and times OCI runtime
    commands on request. crun's helper lives in a private mount namespace without the
    (empty) cgroup2 hierarchy, because crun refuses hybrid cgroups with a non-empty
    ``cgroup.controllers`` there; the same helper code times runc, so both pay the same
    fork/exec cost."""

    def __init__(self, runtime: str, workspace: Workspace):
        self.runtime = runtime
        self.workspace = workspace
        self.state = workspace.sub(f"{runtime}-state")
        self.process: subprocess.Popen | None = None
        self.count = 0
        self.note = ""
        self.cpu_samples: list[float] = []  # CPU seconds of each successful run (oci_timer.py)

    def __enter__(self) -> OciTimer:
        if shutil.which(self.runtime) is None:
            raise BenchError(f"{self.runtime} is not installed")
        helper = [sys.executable, "-m", "tests.bench.oci_timer"]
        if self.runtime == "crun" and self._hybrid_with_controllers():
            helper = ["unshare", "--mount", "--propagation", "private", *helper, "--umount", UNIFIED]
            self.note = (f"crun refuses this hybrid cgroup layout ({UNIFIED}/cgroup.controllers is not empty); "
                         f"timed in a private mount namespace without {UNIFIED}")
        self.process = subprocess.Popen(helper, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=str(REPO), start_new_session=True)
        ready = self.process.stdout.readline()
        if not ready.startswith("ready"):
            self.__exit__()
            raise BenchError(f"{self.runtime} timer helper failed: {ready.strip() or 'no answer'}")
        first = self.run_once()
        if first is None:
            self.__exit__()
            raise BenchError(f"`{' '.join(self.argv('probe'))}` failed: {self.last_error}")
        self.cpu_samples.clear()  # the probe is not a sample
        return self

    def _hybrid_with_controllers(self) -> bool:
        controllers = Path(UNIFIED) / "cgroup.controllers"
        return controllers.exists() and bool(controllers.read_text().strip())

    def argv(self, container_id: str) -> list[str]:
        return [self.runtime, "--root", str(self.state), "run", "--bundle", str(self.workspace.bundle), container_id]

    def run_once(self) -> float | None:
        """Seconds for one ``<runtime> run`` of the bundle (it deletes the container on exit),
        or None on failure (reason in ``last_error``)."""
        assert self.process is not None and self.process.stdin is not None
        self.count += 1
        container_id = f"dockyard-bench-{self.runtime}-{os.getpid()}-{self.count}"
        self.process.stdin.write(json.dumps({"argv": self.argv(container_id)}) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline() or '{"returncode": -1, "stderr": "helper died"}')
        if answer["returncode"] != 0:
            self.last_error = answer.get("stderr", "").strip()
            subprocess.run([self.runtime, "--root", str(self.state), "delete", "-f", container_id], capture_output=True)
            return None
        self.cpu_samples.append(answer.get("cpu_seconds", 0.0))
        return answer["seconds"]

    def __exit__(self, *exc_info: Any) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                procs.kill_group(self.process.pid)
                self.process.wait()
        for container_id in os.listdir(self.state) if self.state.exists() else ():
            subprocess.run([self.runtime, "--root", str(self.state), "delete", "-f", container_id], capture_output=True)


def versions() -> dict[str, str]:
    """The versions of everything measured, for the report."""

    def first_line(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return "not installed"
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "?"

    client = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
    return {
        "runc": first_line(["runc", "--version"]),
        "crun": first_line(["crun", "--version"]),
        "podman": first_line(["podman", "--version"]),
        "conmon": first_line(["conmon", "--version"]),
        "docker": first_line([client, "--version"]),
        "dockerd": first_line(["dockerd", "--version"]),
        "containerd": first_line(["containerd", "--version"]),
        "python": sys.version.split()[0],
        "dockyard": first_line(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
    }
