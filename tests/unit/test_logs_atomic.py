"""logs/atomic.py: the one atomic write (the container records, the image and registry
layouts, the auth file, network files, exported tars and log segments go through it)."""

from __future__ import annotations

import os
import stat

import pytest

from logs import atomic
from logs.atomic import atomic_file, fsync_directory, write_atomic


@pytest.fixture
def fsyncs(monkeypatch):
    """The paths fsynced, in order (the real fsync still runs)."""
    calls: list[str] = []
    real = os.fsync

    def recording(fd):
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", recording)
    return calls


def test_writes_the_content_with_exactly_the_mode_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "open", b"content", durable=False, mode=0o644)
        write_atomic(tmp_path / "secret", b"secret", durable=False, mode=0o600)
    finally:
        os.umask(old)
    assert (tmp_path / "open").read_bytes() == b"content"
    assert stat.S_IMODE((tmp_path / "open").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["open", "secret"]


def test_replaces_an_existing_file_and_its_mode(tmp_path):
    target = tmp_path / "record.json"
    target.write_bytes(b"old content, longer than the new one")
    target.chmod(0o666)
    write_atomic(target, b"new", durable=True, mode=0o600)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_str_path_works_too(tmp_path):
    write_atomic(str(tmp_path / "leases.json"), b"{}", durable=False, mode=0o644)
    assert (tmp_path / "leases.json").read_bytes() == b"{}"


def test_durable_fsyncs_the_file_then_its_directory(tmp_path, fsyncs):
    target = tmp_path / "record.json"
    write_atomic(target, b"x", durable=True, mode=0o600)
    assert len(fsyncs) == 2
    assert os.path.basename(fsyncs[0]).startswith(".record.json.")  # the file, before its rename
    assert fsyncs[1] == str(tmp_path)


def test_not_durable_fsyncs_nothing(tmp_path, fsyncs):
    write_atomic(tmp_path / "leases.json", b"x", durable=False, mode=0o644)
    with atomic_file(tmp_path / "export.tar", durable=False, mode=0o644) as stream:
        stream.write(b"x")
    assert fsyncs == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "index.json"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes", durable=True, mode=0o644)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["index.json"]


def test_an_error_in_a_streamed_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "export.tar"
    with pytest.raises(RuntimeError, match="source vanished"):
        with atomic_file(target, durable=False, mode=0o644) as stream:
            stream.write(b"first half")
            raise RuntimeError("source vanished")
    assert os.listdir(tmp_path) == []


def test_the_temporary_file_is_removed_when_the_rename_fails(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_bytes(b"")
    with pytest.raises(IsADirectoryError):
        write_atomic(target, b"x", durable=True, mode=0o644)
    assert os.listdir(tmp_path) == ["taken"]


def test_a_missing_directory_is_an_error_that_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        write_atomic(tmp_path / "missing" / "file", b"x", durable=False, mode=0o644)


def test_fsync_directory_refuses_a_file(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    fsync_directory(tmp_path)
    with pytest.raises(NotADirectoryError):
        fsync_directory(tmp_path / "file")
