"""supervisor/runtime/cgroupfiles.py on the host's real cgroups: a process joined by its pid,
and the removal of a cgroup that still holds one (EBUSY until it is gone)."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

import pytest

from supervisor.runtime import cgroupfiles

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: cgroups"),
]

CGROUP = Path("/sys/fs/cgroup")
TIMEOUT = 30


@pytest.fixture
def cgroup_dir():
    """A new cgroup of this test (the pids hierarchy on v1, the v2 tree otherwise), removed
    afterwards with whatever is left in it killed."""
    base = CGROUP / "pids" if (CGROUP / "pids" / "cgroup.procs").exists() else CGROUP
    if not (base / "cgroup.procs").exists():
        pytest.skip("no pids hierarchy and no cgroup v2 tree at /sys/fs/cgroup")
    path = base / f"dockyard-test-cgroupfiles-{os.getpid()}"
    path.mkdir()
    try:
        yield path
    finally:
        if path.exists():
            for pid in (path / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            cgroupfiles.remove_directory(str(path), time.monotonic() + TIMEOUT)


def test_a_busy_cgroup_is_removed_once_its_process_is_gone(cgroup_dir: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        cgroupfiles.join([str(cgroup_dir / "cgroup.procs")], sleeper.pid)
        assert (cgroup_dir / "cgroup.procs").read_text().split() == [str(sleeper.pid)]
        with pytest.raises(OSError) as raised:  # the deadline has passed: no retry
            cgroupfiles.remove_directory(str(cgroup_dir), time.monotonic())
        assert raised.value.errno == errno.EBUSY
        assert cgroup_dir.is_dir()

        def kill_and_reap() -> None:
            calls.append(1)
            sleeper.kill()
            sleeper.wait(TIMEOUT)

        calls: list[int] = []
        cgroupfiles.remove_directory(str(cgroup_dir), time.monotonic() + TIMEOUT, on_busy=kill_and_reap)
        assert not cgroup_dir.exists()
        assert calls  # it was busy, then retried
    finally:
        sleeper.kill()
        sleeper.wait(TIMEOUT)


def _join_self_in_a_child(procs_files: list[str]) -> tuple[int, str]:
    """Fork a one-thread child that runs ``join_self(procs_files)``, reports "ok" or the
    error on a pipe, then waits to be killed; returns its pid and the report."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            try:
                cgroupfiles.join_self(procs_files)
                os.write(write_end, b"ok")
            except OSError as exc:
                os.write(write_end, f"{exc.filename}: {exc.strerror}".encode())
            os.close(write_end)
            time.sleep(600)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        return pid, reader.read().decode()


def _reap(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


def test_a_process_of_one_thread_moves_itself_into_its_cgroup(cgroup_dir: Path) -> None:
    # On v1 through the directory's tasks file ("0": the calling thread, no global lock),
    # on v2 (no tasks file) through cgroup.procs: either way the whole process is there.
    pid, report = _join_self_in_a_child([str(cgroup_dir / "cgroup.procs")])
    try:
        assert report == "ok"
        assert (cgroup_dir / "cgroup.procs").read_text().split() == [str(pid)]
        assert any(line.endswith("/" + cgroup_dir.name) for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
    finally:
        _reap(pid)


def test_joining_a_missing_cgroup_names_the_file_and_moves_nothing(cgroup_dir: Path) -> None:
    missing = cgroup_dir / "missing"
    before = Path("/proc/self/cgroup").read_text()
    pid, report = _join_self_in_a_child([str(missing / "cgroup.procs")])
    try:
        assert report.startswith(str(missing / "cgroup.procs") + ": ")
        assert Path(f"/proc/{pid}/cgroup").read_text() == before
    finally:
        _reap(pid)
