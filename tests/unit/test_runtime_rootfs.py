"""supervisor/runtime/rootfs.py without root: :func:`secure_join` against the links a hostile
image can hold, and the ``--device`` entries of the launch config. The mounts themselves are
tested on the real kernel (tests/integration/test_runtime.py)."""

from __future__ import annotations

import errno
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.runtime.libc import InitError
from supervisor.runtime.rootfs import parse_device, secure_join

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


def test_parse_device_reads_the_launch_configs_entries() -> None:
    assert parse_device("c 7 0 0660 /dev/loop0") == (stat.S_IFCHR | 0o660, 7, 0, "/dev/loop0")
    assert parse_device("b 8 1 644 /dev/sda1") == (stat.S_IFBLK | 0o644, 8, 1, "/dev/sda1")


@pytest.mark.parametrize("entry", ["c 7 0 0660", "p 7 0 0660 /dev/x", "c 7 0 0660 /etc/x", "c x 0 0660 /dev/x", "c 7 0 9 /dev/x"])
def test_parse_device_refuses_bad_entries(entry: str) -> None:
    with pytest.raises(InitError, match="invalid device entry"):
        parse_device(entry)


# --- volumes: the host-side open of a source and the copy-up (issue 17) -------------------------


def test_a_mount_source_with_a_symlink_anywhere_on_its_path_is_refused(tmp_path: Path):
    from supervisor.runtime.rootfs import open_source

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    import os

    fd = open_source(str(tmp_path / "real"))
    os.close(fd)
    for path in (tmp_path / "link", tmp_path / "link" / "."):
        with pytest.raises(InitError) as caught:
            open_source(str(path))
        assert f'open the mount source "{path}"' in caught.value.message
        assert getattr(caught.value, "errno", None) == errno.ELOOP


def test_copy_up_copies_the_image_directory_into_an_empty_volume_only(tmp_path: Path):
    import os

    from supervisor.runtime.rootfs import copy_up

    image, volume = tmp_path / "image", tmp_path / "volume"
    (image / "sub").mkdir(parents=True)
    (image / "sub" / "f").write_text("data")
    (image / "sub" / "f").chmod(0o640)
    (image / "link").symlink_to("/etc/passwd")  # copied as a link, never followed
    os.mkfifo(image / "fifo", 0o600)
    image.chmod(0o750)
    volume.mkdir()
    copy_up(str(image), str(volume), "/srv")
    assert (volume / "sub" / "f").read_text() == "data"
    assert stat.S_IMODE((volume / "sub" / "f").stat().st_mode) == 0o640
    assert stat.S_IMODE(volume.stat().st_mode) == 0o750
    assert os.readlink(volume / "link") == "/etc/passwd"
    assert stat.S_ISFIFO((volume / "fifo").lstat().st_mode)
    assert (volume / "sub" / "f").stat().st_mtime_ns == (image / "sub" / "f").stat().st_mtime_ns
    (image / "new").write_text("later")
    copy_up(str(image), str(volume), "/srv")  # a volume with data keeps it as it is
    assert not (volume / "new").exists()
    copy_up(str(tmp_path / "missing"), str(tmp_path / "volume"), "/srv")  # nothing in the image: nothing to do
