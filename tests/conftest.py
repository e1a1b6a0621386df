"""Fixtures shared by the whole suite: the busybox rootfs, and private daemons driven through
the real CLI. Integration tests need root; they are skipped (with the reason) without it."""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import settings

from tests.rootfs import build_rootfs_tar
from tests.tools import require

# No timed assertions, Hypothesis' included: its default deadline (200 ms an example) failed
# a codec test on a loaded machine. Slow examples are still reported, never failed.
settings.register_profile("dockyard", deadline=None)
settings.load_profile("dockyard")

ROOT = os.geteuid() == 0
DOCKYARD = str(Path(sys.executable).with_name("dockyard"))


def pytest_collection_modifyitems(config, items):
    if ROOT:
        return
    skip = pytest.mark.skip(reason="integration tests need root and the real kernel")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Collect garbage after each integration test, so an object it leaked (an unclosed socket's
    ResourceWarning, an error under filterwarnings) fails that test, not whichever one runs when the
    collector happens to pass."""
    yield
    if "integration" in item.keywords:
        gc.collect()


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory) -> Path:
    return build_rootfs_tar(tmp_path_factory.mktemp("image") / "busybox.tar")


def cgroup_dirs(parent: str) -> list[str]:
    found = []
    base = Path("/sys/fs/cgroup")
    for hierarchy in [base, *base.iterdir()] if base.exists() else []:
        candidate = hierarchy / parent
        if candidate.is_dir():
            found.append(str(candidate))
    return found


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mounts") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(str(path))]


class Daemon:
    """A private dockyard daemon with its own root, run dir and cgroup parent."""

    def __init__(self, base: Path, args: Sequence[str] = (), launcher: Sequence[str] = ()):
        self.args = list(args)  # more flags for `dockyard daemon` (--config, --workers, ...)
        # Live restore is the daemon's default, but a test that does not ask for it gets a
        # daemon whose stop stops its containers (and its keeper), as the suite expects.
        if not any(arg.startswith("--live-restore") for arg in self.args):
            self.args.append("--live-restore=false")
        self.launcher = list(launcher)  # a command that execs its arguments (the daemon's command line)
        self.root = base / "root"
        self.run_dir = base / "run"
        self.log_path = base / "daemon.log"
        self.cgroup_parent = f"dockyard-test-{secrets.token_hex(4)}"
        self.bridge, self.subnet = private_bridge()
        self.process: subprocess.Popen | None = None
        self.env = {**os.environ, "DOCKYARD_RUN": str(self.run_dir)}

    def start(self, timeout: float = 20.0) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [*self.launcher, DOCKYARD, "daemon", "--root", str(self.root), "--run", str(self.run_dir),
             "--cgroup-parent", self.cgroup_parent, "--bridge-name", self.bridge, "--bridge-subnet", self.subnet,
             *self.args],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=self.env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            if (self.run_dir / "control.sock").exists() and self.cli("info").returncode == 0:
                return
            time.sleep(0.05)  # polls the readiness condition itself, bounded by the deadline
        raise RuntimeError(f"daemon not ready after {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str, input: bytes | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run([DOCKYARD, *args], input=input, capture_output=True, timeout=timeout, env=self.env)

    def out(self, *args: str, **kwargs) -> str:
        """Run the CLI, insist on success, return its stdout as text."""
        result = self.cli(*args, **kwargs)
        assert result.returncode == 0, f"dockyard {' '.join(args)} -> {result.returncode}\n{result.stderr.decode()}"
        return result.stdout.decode()

    def keeper_pid(self) -> int | None:
        """The pid of the run dir's container keeper while one runs (live restore)."""
        try:
            pid = int((self.run_dir / "keeper.lock").read_text().strip() or 0)
        except (OSError, ValueError):
            return None
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                return pid if b"keeper.py" in cmdline.read() else None
        except OSError:
            return None

    def cleanup(self) -> None:
        """Whatever a failing test left: stop the daemon, kill leftovers, remove cgroups."""
        if self.process is not None and self.process.poll() is None:
            self.stop()
        keeper = self.keeper_pid()
        if keeper is not None:  # a live-restore test that failed: its containers go below
            os.kill(keeper, signal.SIGKILL)
        for directory in cgroup_dirs(self.cgroup_parent):
            for sub in sorted(Path(directory).glob("*/"), reverse=True):
                kill_cgroup(sub)
                try_rmdir(sub)
            try_rmdir(Path(directory))
        remove_link(self.bridge)


_SUBNETS = itertools.count(secrets.randbelow(256))


def private_bridge() -> tuple[str, str]:
    """A bridge name and a /24 of 10.213.0.0/16 for one private daemon. The /24s of one run
    follow each other from a random start, so no two daemons of a run share an address, and
    runs side by side are unlikely to."""
    return f"dyt-{secrets.token_hex(3)}", f"10.213.{next(_SUBNETS) % 256}.0/24"


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def remove_link(name: str) -> None:
    """Delete a link a failed test left (the daemon removes its bridge when it stops)."""
    if link_exists(name):
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def kill_cgroup(path: Path) -> None:
    try:
        pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def try_rmdir(path: Path) -> None:
    deadline = time.monotonic() + 5
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)


@contextlib.contextmanager
def private_daemon(base: Path, busybox_tar: Path, *args: str, launcher: Sequence[str] = ()) -> Iterator[Daemon]:
    """A started daemon (with ``args`` besides its private paths, started through ``launcher``
    if given: a command that execs its arguments) that has the busybox image as `base`;
    stopped at the end, which must leave nothing behind."""
    base.mkdir(parents=True, exist_ok=True)
    instance = Daemon(base, args, launcher)
    try:
        instance.start()
        instance.out("import", str(busybox_tar), "base")
        yield instance
        assert instance.stop() == 0, instance.log()
        assert mounts_under(base) == [], "mounts left behind"
        assert cgroup_dirs(instance.cgroup_parent) == [], "cgroups left behind"
        assert not link_exists(instance.bridge), f"bridge {instance.bridge} left behind"
    finally:
        instance.cleanup()


@pytest.fixture
def daemon(tmp_path, busybox_tar):
    if not ROOT:
        pytest.skip("needs root")
    with private_daemon(tmp_path, busybox_tar) as instance:
        yield instance


@pytest.fixture
def subreaper():
    """This test process a child subreaper (a launch's pid 1 becomes its child), undone after."""
    from supervisor.runtime import libc
    from supervisor.runtime.process import become_subreaper

    become_subreaper()
    yield
    libc.set_child_subreaper(False)


@pytest.fixture
async def fork_server(subreaper):
    """A started fork server (the one launcher, as in the daemon); stopping it must leave no
    child of this process, running or unreaped."""
    from supervisor.runtime.spawn import ForkServer

    server = ForkServer()
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


@pytest.fixture
def podman_dir():
    """A private, throw-away podman store (a short path: podman limits its run root to 50
    bytes); its containers' cgroups (and conmon's) go under a cgroup removed at the end.
    For the tests that run podman beside dockyard (images, security)."""
    require("podman", "runc")
    directory = Path(tempfile.mkdtemp(prefix="dy-podman-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
    for hierarchy in cgroup_dirs(directory.name):
        for child in sorted(Path(hierarchy).glob("*/"), reverse=True):
            try_rmdir(child)
        try_rmdir(Path(hierarchy))
    assert cgroup_dirs(directory.name) == [], "podman left cgroups behind"
