"""Safe tar extraction: a real rootfs survives intact, hostile archives write nothing outside."""

from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import io
import lzma
import os
import posixpath
import stat
import tarfile
import threading
from pathlib import Path

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from supervisor.errors import ImageError
from supervisor.images.tarsafe import UnsafeMember, extract, member_path
from tests.rootfs import BUSYBOX, snapshot, tar_bytes

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="preserving owners (chown) needs root")
MTIME = 1_600_000_000


def member(
    name, kind=tarfile.REGTYPE, *, mode=0o644, uid=0, gid=0, mtime=MTIME, linkname="", pax=None, devmajor=0, devminor=0
):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = mtime
    info.linkname = linkname
    info.devmajor, info.devminor = devmajor, devminor
    if pax:
        info.pax_headers = dict(pax)
    return info


def file(name, data=b"data", **kwargs):
    return (member(name, **kwargs), data)


def directory(name, **kwargs):
    kwargs.setdefault("mode", 0o755)
    return (member(name, tarfile.DIRTYPE, **kwargs), None)


def symlink(name, target, **kwargs):
    return (member(name, tarfile.SYMTYPE, linkname=target, mode=0o777, **kwargs), None)


def hardlink(name, target, **kwargs):
    return (member(name, tarfile.LNKTYPE, linkname=target, **kwargs), None)


def extract_bytes(data: bytes, dest: Path):
    return extract(io.BytesIO(data), dest)


@pytest.fixture
def sandbox(tmp_path):
    """``outside/`` holds a secret file and, three levels down, the target ``dest``: any
    escape (``..``, a symlink out) lands in ``outside`` and changes its snapshot."""
    outside = tmp_path / "outside"
    dest = outside / "a" / "b" / "dest"
    dest.mkdir(parents=True)
    (outside / "secret").write_text("secret")
    return outside, dest


# --- member names (pure) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, parts",
    [
        ("etc/hosts", ("etc", "hosts")),
        ("./etc//hosts/", ("etc", "hosts")),
        ("/etc/hosts", ("etc", "hosts")),
        ("//etc/./hosts", ("etc", "hosts")),
        ("a/../b", ("b",)),
        (".", ()),
        ("/", ()),
        ("", ()),
    ],
)
def test_member_path_strips_leading_slash_and_normalises(name, parts):
    assert member_path(name) == parts


@pytest.mark.parametrize("name", ["..", "../x", "a/../../x", "/../x", "/abs/../../x", "./..", "a\x00b"])
def test_member_path_refuses_escapes_and_nul(name):
    with pytest.raises(UnsafeMember):
        member_path(name)


@given(st.lists(st.sampled_from(["a", "b", ".", "..", "", "/"]), max_size=12))
def test_member_path_never_leaves_the_target(components):
    name = "/".join(components)
    try:
        parts = member_path(name)
    except UnsafeMember:
        return
    assert all(part not in ("", ".", "..") and "/" not in part for part in parts)
    joined = posixpath.normpath(posixpath.join("/dest", *parts))
    assert joined == "/dest" or joined.startswith("/dest/")


# --- a real root filesystem -------------------------------------------------------------


def test_busybox_rootfs_extracts_intact(busybox_tar, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    with open(busybox_tar, "rb") as source:
        report = extract(source, dest)
    data = busybox_tar.read_bytes()
    with tarfile.open(busybox_tar) as tar:
        members = tar.getmembers()
    assert report.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert report.size == len(data)
    assert report.files == len(members)
    assert report.skipped_devices == 0
    busybox = dest / "bin" / "busybox"
    assert busybox.read_bytes() == Path(BUSYBOX).read_bytes()
    assert stat.S_IMODE(busybox.stat().st_mode) == 0o755
    assert os.readlink(dest / "bin" / "sh") == "busybox"
    assert stat.S_IMODE((dest / "tmp").lstat().st_mode) == 0o1777
    assert (dest / "etc" / "passwd").read_text().startswith("root:x:0:0:")
    if ROOT:
        assert (dest / "home" / "app").stat().st_uid == 1000


def _pipe(payload: bytes):
    """A real pipe, like stdin: not seekable, short reads. Returns (reader, writer thread)."""
    read_fd, write_fd = os.pipe()

    def write():
        try:
            with open(write_fd, "wb") as writer:
                writer.write(payload)
        except BrokenPipeError:
            pass

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return open(read_fd, "rb"), thread


COMPRESSORS = {
    "plain": lambda data: data,
    "gzip": lambda data: gzip.compress(data, compresslevel=1),
    "bzip2": lambda data: bz2.compress(data, compresslevel=1),
    "xz": lambda data: lzma.compress(data, preset=0),
    "zstd": lambda data: zstandard.ZstdCompressor(level=1).compress(data),
}


@functools.lru_cache(maxsize=None)
def compressed(path: Path, kind: str) -> bytes:
    return COMPRESSORS[kind](path.read_bytes())


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_compressed_stream_from_a_pipe_has_the_diff_id_of_the_plain_tar(busybox_tar, tmp_path, kind):
    plain = busybox_tar.read_bytes()
    dest = tmp_path / "dest"
    dest.mkdir()
    reader, writer = _pipe(compressed(busybox_tar, kind))
    with reader:
        report = extract(reader, dest)
    writer.join(timeout=30)
    assert report.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    assert report.size == len(plain)
    assert (dest / "bin" / "busybox").read_bytes() == Path(BUSYBOX).read_bytes()


def test_diff_id_covers_the_whole_stream_including_trailing_padding(tmp_path):
    data = tar_bytes([file("a")]) + bytes(10240)
    dest = tmp_path / "dest"
    dest.mkdir()
    report = extract_bytes(data, dest)
    assert report.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert report.size == len(data)


# --- metadata ---------------------------------------------------------------------------


def test_modes_special_bits_links_fifos_and_mtimes_survive(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    data = tar_bytes([
        directory("tmp", mode=0o1777, mtime=MTIME + 1),
        directory("bin"),
        file("bin/su", b"su", mode=0o4755),
        file("bin/wall", b"wall", mode=0o2755),
        hardlink("bin/su-again", "bin/su"),
        directory("ro", mode=0o555, mtime=MTIME + 2),
        file("ro/inside", b"x", mode=0o400, mtime=MTIME + 3),
        symlink("bin/sh", "/bin/busybox", mtime=MTIME + 4),
        (member("run/fifo", tarfile.FIFOTYPE, mode=0o640), None),
        file("/etc/hostname", b"box\n"),
    ])
    report = extract_bytes(data, dest)
    assert report.files == 10  # "run" and "etc" are implied, not members

    def mode(path):
        return stat.S_IMODE(path.lstat().st_mode)

    assert mode(dest / "tmp") == 0o1777
    assert mode(dest / "bin/su") == 0o4755
    assert mode(dest / "bin/wall") == 0o2755
    assert mode(dest / "ro") == 0o555 and mode(dest / "ro/inside") == 0o400
    assert (dest / "bin/su-again").stat().st_ino == (dest / "bin/su").stat().st_ino
    assert (dest / "bin/su").stat().st_nlink == 2
    assert os.readlink(dest / "bin/sh") == "/bin/busybox"  # absolute symlinks are kept as-is
    assert stat.S_ISFIFO((dest / "run/fifo").lstat().st_mode) and mode(dest / "run/fifo") == 0o640
    assert (dest / "etc/hostname").read_bytes() == b"box\n"  # leading "/" stripped
    assert mode(dest / "run") == 0o755  # an implied parent
    assert (dest / "tmp").stat().st_mtime == MTIME + 1
    assert (dest / "ro").stat().st_mtime == MTIME + 2  # set after its child was written
    assert (dest / "ro/inside").stat().st_mtime == MTIME + 3
    assert (dest / "bin/sh").lstat().st_mtime == MTIME + 4


@needs_root
def test_numeric_owners_are_preserved_and_chown_does_not_clear_setuid(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    data = tar_bytes([
        directory("home/app", uid=1000, gid=1000, mode=0o750),
        file("bin/tool", b"t", uid=1000, gid=5, mode=0o6755),
        symlink("home/link", "app", uid=1000, gid=1000),
        file("nobody", b"n", uid=65534, gid=65534),
    ])
    extract_bytes(data, dest)
    app = (dest / "home/app").lstat()
    assert (app.st_uid, app.st_gid, stat.S_IMODE(app.st_mode)) == (1000, 1000, 0o750)
    tool = (dest / "bin/tool").lstat()
    assert (tool.st_uid, tool.st_gid, stat.S_IMODE(tool.st_mode)) == (1000, 5, 0o6755)
    link = (dest / "home/link").lstat()
    assert (link.st_uid, link.st_gid) == (1000, 1000)
    assert (dest / "nobody").lstat().st_uid == 65534


def test_xattrs_from_pax_records_are_set(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    probe = tmp_path / "probe"
    probe.write_text("")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        pytest.skip("the test filesystem has no user xattrs")
    data = tar_bytes([file("f", pax={"SCHILY.xattr.user.dockyard": "value"})])
    report = extract_bytes(data, dest)
    assert os.getxattr(dest / "f", "user.dockyard") == b"value"
    assert report.skipped_xattrs == 0


def test_devices_are_skipped_and_counted(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    data = tar_bytes([
        (member("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3), None),
        (member("dev/sda", tarfile.BLKTYPE, mode=0o660, devmajor=8, devminor=0), None),
        hardlink("dev/null-again", "dev/null"),
        file("etc/kept"),
    ])
    report = extract_bytes(data, dest)
    assert report.skipped_devices == 3
    assert report.files == 1
    assert not (dest / "dev").exists()
    assert (dest / "etc/kept").read_bytes() == b"data"


def test_later_members_replace_earlier_ones_without_following_them(sandbox):
    outside, dest = sandbox
    before = snapshot(outside, exclude=dest)
    data = tar_bytes([
        symlink("passwd", str(outside / "secret")),
        file("passwd", b"replaced"),  # must replace the link, not write through it
        symlink("d", str(outside)),
        directory("d"),  # a real directory in place of the link
        file("d/f", b"inside"),
        directory("x"),
        file("x/child"),
        file("x", b"now a file"),
    ])
    extract_bytes(data, dest)
    assert snapshot(outside, exclude=dest) == before
    assert (dest / "passwd").read_bytes() == b"replaced" and not (dest / "passwd").is_symlink()
    assert (dest / "d").is_dir() and not (dest / "d").is_symlink()
    assert (dest / "d/f").read_bytes() == b"inside"
    assert (dest / "x").read_bytes() == b"now a file"


# --- hostile archives -------------------------------------------------------------------


def _hostile(outside: Path):
    """(test id, members, the member the error must name, a word of the reason)."""
    return [
        ("dotdot", [file("../escape")], "../escape", "climbs out"),
        ("abs-dotdot", [file("/abs/../../x")], "/abs/../../x", "climbs out"),
        ("root-dotdot", [file("/../x")], "/../x", "climbs out"),
        ("deep-dotdot", [file("a/../../../../secret", b"pwned")], "a/../../../../secret", "climbs out"),
        ("symlink-abs-then-write", [symlink("evil", str(outside)), file("evil/pwned")], "evil/pwned", "symbolic link"),
        ("symlink-up-then-write", [symlink("evil", "../../.."), file("evil/pwned")], "evil/pwned", "symbolic link"),
        ("symlink-up-then-dir", [symlink("evil", "../../.."), directory("evil/dir")], "evil/dir", "symbolic link"),
        ("symlink-up-then-deep-write", [symlink("evil", "../../.."), file("evil/a/b")], "evil/a/b", "symbolic link"),
        (
            "symlink-deep-then-write",
            [directory("a"), symlink("a/b", "../../../.."), file("a/b/c/d")],
            "a/b/c/d",
            "'a/b' is a symbolic link",
        ),
        (
            "symlink-then-hardlink",
            [file("f"), symlink("evil", str(outside)), hardlink("evil/link", "f")],
            "evil/link",
            "symbolic link",
        ),
        (
            "symlink-then-fifo",
            [symlink("evil", str(outside)), (member("evil/fifo", tarfile.FIFOTYPE), None)],
            "evil/fifo",
            "symbolic link",
        ),
        ("hardlink-etc-passwd", [hardlink("passwd", "/etc/passwd")], "passwd", "not an earlier member"),
        ("hardlink-outside", [hardlink("link", "../../../secret")], "link", "climbs out"),
        ("hardlink-forward", [hardlink("link", "later"), file("later")], "link", "not an earlier member"),
        ("hardlink-to-directory", [directory("d"), hardlink("link", "d")], "link", "not an earlier member"),
        ("nul-in-name", [file("ok", pax={"path": "a\x00b"})], "a\x00b", "NUL"),
        ("nul-in-symlink", [symlink("s", "x", pax={"linkpath": "/etc\x00x"})], "s", "NUL"),
        ("file-as-parent", [file("f"), file("f/child")], "f/child", "not a directory"),
        ("root-as-file", [file("./")], "./", "only a directory"),
        ("unknown-type", [(member("weird", b"Z"), None)], "weird", "unsupported member type"),
    ]


@pytest.mark.parametrize("case", range(len(_hostile(Path("/x")))), ids=[c[0] for c in _hostile(Path("/x"))])
def test_hostile_archive_is_refused_and_writes_nothing_outside(sandbox, case):
    outside, dest = sandbox
    _, members, bad_member, reason = _hostile(outside)[case]
    passwd_links = os.stat("/etc/passwd").st_nlink
    before = snapshot(outside, exclude=dest)
    with pytest.raises(ImageError) as caught:
        extract_bytes(tar_bytes(members), dest)
    assert caught.value.details["member"] == bad_member
    assert repr(bad_member) in caught.value.message
    assert reason in caught.value.message
    assert snapshot(outside, exclude=dest) == before
    assert os.stat("/etc/passwd").st_nlink == passwd_links


# --- truncated and corrupt streams ------------------------------------------------------


def _member_offsets(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def _cuts(data: bytes) -> dict[str, bytes]:
    members = _member_offsets(data)
    busybox = next(m for m in members if m.name == "bin/busybox")
    later = members[len(members) // 2]
    last = members[-1]
    end_of_last = last.offset_data + -(-last.size // 512) * 512
    return {
        "inside-file-data": data[: busybox.offset_data + busybox.size // 2],
        "at-a-header-boundary": data[: later.offset],
        "inside-a-header": data[: later.offset + 100],
        "no-end-of-archive-block": data[:end_of_last],
        "garbage-header": data[:end_of_last] + b"\xff" * 512 + bytes(1024),
        "empty": b"",
    }


@pytest.mark.parametrize(
    "cut",
    ["inside-file-data", "at-a-header-boundary", "inside-a-header", "no-end-of-archive-block", "garbage-header", "empty"],
)
def test_truncated_or_corrupt_tar_is_an_error(busybox_tar, sandbox, cut):
    outside, dest = sandbox
    before = snapshot(outside, exclude=dest)
    with pytest.raises(ImageError):
        extract_bytes(_cuts(busybox_tar.read_bytes())[cut], dest)
    assert snapshot(outside, exclude=dest) == before


def test_complete_tar_without_padding_is_accepted(busybox_tar, tmp_path):
    """The control for the cuts above: one zero block right after the last member is a valid end."""
    data = busybox_tar.read_bytes()
    last = _member_offsets(data)[-1]
    end_of_last = last.offset_data + -(-last.size // 512) * 512
    dest = tmp_path / "dest"
    dest.mkdir()
    report = extract_bytes(data[: end_of_last + 512], dest)
    assert report.files == len(_member_offsets(data))


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz", "zstd"])
def test_truncated_compressed_stream_is_an_error(busybox_tar, tmp_path, kind):
    dest = tmp_path / "dest"
    dest.mkdir()
    packed = compressed(busybox_tar, kind)
    with pytest.raises(ImageError, match="cannot"):
        extract_bytes(packed[: len(packed) - 64], dest)


def test_read_error_of_the_source_is_an_image_error(busybox_tar, tmp_path):
    class Failing(io.RawIOBase):
        def __init__(self, data):
            self._data = io.BytesIO(data)

        def readable(self):
            return True

        def read(self, size=-1):
            if self._data.tell() > 100_000:
                raise OSError(5, "Input/output error")
            return self._data.read(size)

    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ImageError, match="Input/output error"):
        extract(Failing(busybox_tar.read_bytes()), dest)


def test_a_layer_with_a_dot_slash_root_entry_unpacks(tmp_path):
    # GNU tar -C dir . writes "./" first: the target itself, as a directory.
    root = tarfile.TarInfo("./")
    root.type = tarfile.DIRTYPE
    root.mode = 0o755
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.addfile(root)
        info = tarfile.TarInfo("./etc/hostname")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"box"))
    target = tmp_path / "layer"
    target.mkdir()
    extract(io.BytesIO(data.getvalue()), target, whiteouts=True)
    assert (target / "etc" / "hostname").read_bytes() == b"box"
