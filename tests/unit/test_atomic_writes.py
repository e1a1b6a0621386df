"""Each place that writes a file through logs.atomic keeps its guarantee: durable (the file
before its rename, then its directory, fsynced) or not, and its mode. The write itself is
tested in test_logs_atomic.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from logs.store import LogWriter, segment_path
from supervisor.images.store import ImageStore
from supervisor.network import Leases
from supervisor.registry import layout as registry_layout
from supervisor.registry.auth import Credentials, CredentialStore
from supervisor.store import RECORD, ContainerStore


@pytest.fixture
def fsynced(monkeypatch) -> list[str]:
    """The paths fsynced, in order (the real fsync still runs)."""
    calls: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return calls


def durable(path: Path, fsynced: list[str]) -> bool:
    """``path``'s temporary file was fsynced, then its directory."""
    temporary = [i for i, name in enumerate(fsynced) if os.path.basename(name).startswith(f".{path.name}.")]
    return bool(temporary) and str(path.parent) in fsynced[temporary[-1] + 1:]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask():
    """Modes are exact: a umask that would take bits away changes nothing."""
    old = os.umask(0o077)
    yield
    os.umask(old)


def test_a_container_record_is_durable_and_private(tmp_path: Path, fsynced: list[str]) -> None:
    ContainerStore(tmp_path / "containers").save("abc", {"Id": "abc"})
    path = tmp_path / "containers" / "abc" / RECORD
    assert durable(path, fsynced) and mode(path) == 0o600


def test_the_image_store_files_are_durable_and_readable(tmp_path: Path, fsynced: list[str]) -> None:
    store = ImageStore(tmp_path / "root")
    path = store.dir / "oci-layout"
    assert durable(path, fsynced) and mode(path) == 0o644


def test_a_pull_s_layout_is_not_durable(tmp_path: Path, fsynced: list[str]) -> None:
    """A staging area: the image store syncs what it takes from it (an fsync here would
    flush every blob of the pull)."""
    registry_layout.init_layout(tmp_path / "pull")
    blob = registry_layout.write_blob_bytes(tmp_path / "pull", "sha256:" + "ab" * 32, b"{}")
    assert fsynced == []
    assert mode(tmp_path / "pull" / "oci-layout") == 0o644 and mode(blob) == 0o644


def test_the_auth_file_is_durable_and_private(tmp_path: Path, fsynced: list[str]) -> None:
    path = tmp_path / "auth" / "auth.json"
    CredentialStore(path).save("registry.example", Credentials("me", "secret"))
    assert durable(path, fsynced) and mode(path) == 0o600


def test_leases_are_not_durable(tmp_path: Path, fsynced: list[str]) -> None:
    """See Leases: after a power loss no container runs, so no lease matters."""
    leases = Leases(str(tmp_path / "net" / "leases.json"), "10.99.0.0/24")
    leases.allocate("c1")
    leases.save()
    assert fsynced == []
    assert mode(tmp_path / "net" / "leases.json") == 0o644


def test_a_new_log_segment_is_durable_and_private(tmp_path: Path, fsynced: list[str]) -> None:
    writer = LogWriter(tmp_path / "log", max_size=1 << 20, max_file=3)
    try:
        path = segment_path(tmp_path / "log", writer.number)
        assert durable(path, fsynced) and mode(path) == 0o600
    finally:
        writer.close()
