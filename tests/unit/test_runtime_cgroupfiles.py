"""supervisor/runtime/cgroupfiles.py on a plain directory tree: the writes, the join and the
removal that the daemon's backends, the init stage and the OCI runtime share (the EBUSY
retry needs a real cgroup: tests/integration/test_runtime_cgroupfiles.py)."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest

from supervisor.runtime import cgroupfiles


def test_write_puts_the_value_into_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pids.max"
    path.write_text("")
    cgroupfiles.write(str(path), "20")
    assert path.read_text() == "20"


def test_join_writes_the_pid_into_each_file_and_names_the_one_that_refused(tmp_path: Path) -> None:
    first, missing, last = tmp_path / "a.procs", tmp_path / "gone" / "cgroup.procs", tmp_path / "c.procs"
    first.write_text("")
    last.write_text("")
    cgroupfiles.join([str(first), str(last)], 4242)
    assert (first.read_text(), last.read_text()) == ("4242", "4242")
    last.write_text("")
    with pytest.raises(OSError) as raised:
        cgroupfiles.join([str(first), str(missing), str(last)], 77)
    assert (raised.value.errno, raised.value.filename) == (errno.ENOENT, str(missing))
    assert last.read_text() == ""  # nothing after the file that refused


def test_remove_directory(tmp_path: Path) -> None:
    deadline = time.monotonic() + 10
    busy_calls = []
    cgroupfiles.remove_directory(str(tmp_path / "never-made"), deadline, on_busy=lambda: busy_calls.append(1))
    empty = tmp_path / "empty"
    empty.mkdir()
    cgroupfiles.remove_directory(str(empty), deadline)
    assert not empty.exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "file").write_text("x")
    with pytest.raises(OSError) as raised:  # not EBUSY: no retry, at once
        cgroupfiles.remove_directory(str(full), deadline, on_busy=lambda: busy_calls.append(1))
    assert raised.value.errno == errno.ENOTEMPTY
    assert busy_calls == []
