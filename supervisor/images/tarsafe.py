"""Safe extraction of a root filesystem tar: nothing is ever written outside the target.

Theory of operation
-------------------
The archive is read as a stream (``tarfile`` mode ``"r|"``), so a pipe or stdin works. The
compression (gzip, bzip2, xz or none) is sniffed from the first bytes and undone by
:class:`_ArchiveReader`, which also hashes the *uncompressed* bytes as tarfile reads them:
that sha256 is the layer's diff id (OCI ``rootfs.diff_ids``), taken over the whole stream,
trailing padding included. We decompress ourselves rather than use ``"r|*"`` because only
then do we see the uncompressed bytes to hash.

Every member name goes through :func:`member_path` first, a pure function: a leading ``/``
is stripped (docker does the same: ``/etc/hosts`` means ``etc/hosts``), the name is
normalised lexically, and anything that still climbs out (``../x``, ``/a/../../x``), or
holds a NUL, is refused. The result is a tuple of plain components: no ``""``, ``"."`` or
``".."``, no ``"/"`` inside a component.

Why nothing is written through a symbolic link (the proof)
    The target is opened once as a directory fd. To reach the parent of a member we walk
    its components one at a time with ``os.open(component, O_DIRECTORY | O_NOFOLLOW,
    dir_fd=parent_fd)``; a missing component is created with ``mkdir(component,
    dir_fd=parent_fd)`` and then opened the same way. Each call gets a single component,
    so the kernel resolves exactly one name in a directory we already hold; ``O_NOFOLLOW``
    makes it fail (``ENOTDIR``/``ELOOP``) when that name is a symlink, and ``O_DIRECTORY``
    when it is anything but a directory. By induction every fd we hold refers to a real
    directory reached from the target through real directory entries only: never a
    symlink and never ``..`` (there is none left after :func:`member_path`). The final
    component is then created relative to that fd, again never followed: an existing
    entry is unlinked first (``unlinkat`` does not follow), files are opened with
    ``O_CREAT | O_EXCL | O_NOFOLLOW``, symlinks and FIFOs are made with ``symlinkat`` /
    ``mkfifoat``, hard links with ``linkat`` without ``AT_SYMLINK_FOLLOW``, and metadata
    is set on an fd (``fchown``, ``fchmod``, ``futimens``, ``fsetxattr``) or with
    ``follow_symlinks=False``. ``os.path.realpath`` is never used: an absolute symlink in
    the target (``bin/sh -> /bin/busybox``) would resolve against the *host*.

    Symlinks themselves may point anywhere: they are data, resolved later inside the
    container. This is stricter than docker, which follows in-root symlinks in a parent
    path (it extracts inside a chroot); tar writers never record a path through a
    symlink, so a member that goes through one is refused, wherever the link points.

Hard links must name an *earlier* non-directory member (GNU tar's and docker's rule), so
they can only share an inode that this archive created inside the target. Character and
block devices are skipped and counted (the container gets its own ``/dev``); a hard link
to a skipped device is skipped too. FIFOs are created.

As root, numeric owners are preserved (names in the header are ignored, as docker does);
then the mode, with setuid/setgid/sticky bits (``chown`` clears setuid, so ``chmod``
comes after it); then xattrs from ``SCHILY.xattr.*`` pax records (after ``chown``, which
clears ``security.capability``); then mtimes. Directory metadata is applied at the end,
deepest first, because creating children changes a directory's mtime and a read-only
directory would stop them being created. An xattr the filesystem refuses with
``ENOTSUP``/``EPERM`` is skipped and counted, as docker does.

Layers (``whiteouts=True``)
    An image layer marks deletions with AUFS-style whiteouts, as docker and OCI do:
    ``dir/.wh.NAME`` deletes ``NAME`` from the layers below, ``dir/.wh..wh..opq`` hides
    everything below ``dir``. Each layer is unpacked into its own directory, used as an
    overlay lower dir, so they become overlayfs whiteouts: a 0/0 character device at
    ``dir/NAME``, and the ``trusted.overlay.opaque=y`` xattr on ``dir``. xattrs in the
    ``trusted.overlay.`` namespace in an archive are never set (they would steer overlayfs,
    e.g. ``redirect``); they are skipped and counted.

Decompression bombs: a compressed stream that inflates more than :data:`BOMB_RATIO` times
once past :data:`BOMB_FLOOR` bytes is refused (gzip cannot exceed about 1032:1 by design; only
a stream of almost nothing but zeros comes near it: a real layer is far below). A full disk is an ordinary error: the caller discards the
partial tree, so either way nothing is left behind.

A truncated or corrupt archive is an error. Python's tarfile silently ends the archive at
a short or invalid header (and at a missing end-of-archive block); we record why it
stopped and accept only a zero block. On error the target holds a partial tree: the caller
(:mod:`supervisor.images.store`) extracts into a temporary directory and discards it.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from supervisor.errors import ImageError

CHUNK = 1 << 20
XATTR_PREFIX = "SCHILY.xattr."
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OVERLAY_XATTR_PREFIX = "trusted.overlay."
OPAQUE_XATTR = "trusted.overlay.opaque"
#: A compressed stream inflating more than BOMB_RATIO times, past BOMB_FLOOR bytes, is refused.
BOMB_RATIO = 1000
BOMB_FLOOR = 16 << 20
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_IMPLIED_DIRECTORY_MODE = 0o755

_MAGIC_GZIP = b"\x1f\x8b"
_MAGIC_BZIP2 = b"BZh"
_MAGIC_XZ = b"\xfd7zXZ\x00"
_MAGIC_ZSTD = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class ExtractReport:
    """What :func:`extract` did.

    Attributes:
        diff_id: ``"sha256:<hex>"`` of the uncompressed tar stream.
        size: length in bytes of the uncompressed tar stream.
        files: members written (directories, files, links, FIFOs).
        skipped_devices: character/block devices (and hard links to them) not created.
        skipped_xattrs: extended attributes the filesystem refused (ENOTSUP/EPERM), and
            ``trusted.overlay.*`` ones from the archive, which are never set.
        whiteouts: ``.wh.`` members turned into overlay whiteouts or opaque directories.
    """

    diff_id: str
    size: int
    files: int
    skipped_devices: int
    skipped_xattrs: int = 0
    whiteouts: int = 0


class UnsafeMember(Exception):
    """A member that must not be extracted; the message says why (no member name)."""


def member_path(name: str) -> tuple[str, ...]:
    """The components of a member name below the target, or :class:`UnsafeMember`.

    ``/etc/hosts`` and ``./etc//hosts`` give ``("etc", "hosts")``; ``.`` and ``/`` give
    ``()`` (the target itself); ``../x``, ``a/../../x`` and ``/../x`` are refused.
    """
    if "\x00" in name:
        raise UnsafeMember("the name contains a NUL byte")
    normal = posixpath.normpath(name.lstrip("/"))
    if normal == ".." or normal.startswith("../"):
        raise UnsafeMember("the path climbs out of the target with '..'")
    if normal == ".":
        return ()
    return tuple(normal.split("/"))


def extract(
    fileobj: BinaryIO,
    dest: Path | int,
    *,
    whiteouts: bool = False,
    copy_to: BinaryIO | None = None,
    bomb_ratio: int = BOMB_RATIO,
    bomb_floor: int = BOMB_FLOOR,
) -> ExtractReport:
    """Extract a (possibly compressed) tar stream into the existing directory ``dest``.

    Args:
        fileobj: a readable binary stream; only ``read`` is used, so a pipe works.
        dest: the target directory (or an fd of it); it should be private to the caller.
        whiteouts: unpack an image layer: ``.wh.`` members become overlay whiteouts.
        copy_to: receives the uncompressed tar stream as it is read (the layer blob).
        bomb_ratio, bomb_floor: see :data:`BOMB_RATIO`.

    Returns:
        An :class:`ExtractReport` with the diff id and size of the uncompressed stream.

    Raises:
        ImageError: the archive is hostile, truncated, corrupt or cannot be written; its
            ``details`` carry ``member`` (when known) and ``reason``. ``dest`` may then
            hold a partial tree.
    """
    reader = _ArchiveReader(fileobj, copy_to=copy_to, bomb_ratio=bomb_ratio, bomb_floor=bomb_floor)
    header_errors: list[tarfile.HeaderError] = []
    if isinstance(dest, int):
        root_fd = os.dup(dest)
    else:
        root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        extractor = _Extractor(root_fd, whiteouts=whiteouts)
        try:
            tar = tarfile.open(
                fileobj=reader,  # type: ignore[arg-type]
                mode="r|",
                tarinfo=_recording_tarinfo(header_errors),
                encoding="utf-8",
                errors="surrogateescape",
            )
        except tarfile.TarError as exc:
            raise ImageError(f"cannot import the archive: {exc}", reason=str(exc)) from exc
        with tar:
            members = iter(tar)
            while True:
                try:
                    member = next(members)
                except StopIteration:
                    break
                except tarfile.TarError as exc:
                    raise ImageError(f"cannot import the archive: {exc}", reason=str(exc)) from exc
                extractor.extract_member(tar, member)
        _check_end(header_errors)
        extractor.finish()
        reader.drain()
    finally:
        os.close(root_fd)
    return ExtractReport(
        diff_id=f"sha256:{reader.sha256.hexdigest()}",
        size=reader.size,
        files=extractor.files,
        skipped_devices=extractor.skipped_devices,
        skipped_xattrs=extractor.skipped_xattrs,
        whiteouts=extractor.whiteouts,
    )


def _check_end(header_errors: list[tarfile.HeaderError]) -> None:
    """Accept the end of the archive only if tarfile stopped at a zero block."""
    end = header_errors[-1] if header_errors else None
    if isinstance(end, tarfile.EOFHeaderError):
        return
    if end is None or isinstance(end, tarfile.EmptyHeaderError):
        reason = "the stream ended without the end-of-archive block (truncated?)"
    elif isinstance(end, tarfile.TruncatedHeaderError):
        reason = "the stream ended inside a header (truncated)"
    else:
        reason = f"a header is corrupt ({end})"
    raise ImageError(f"cannot import the archive: {reason}", reason=reason)


def _recording_tarinfo(header_errors: list[tarfile.HeaderError]) -> type[tarfile.TarInfo]:
    """A TarInfo class that records why tarfile stopped reading headers.

    ``TarFile.next`` swallows a short or invalid header after the first member and treats
    it as the end of the archive; the recorded error lets :func:`_check_end` tell a real
    end (a zero block) from a truncated stream.
    """

    class RecordingTarInfo(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
            try:
                return super().fromtarfile(tarfile_)
            except tarfile.HeaderError as exc:
                header_errors.append(exc)
                raise

    return RecordingTarInfo


class _Replay:
    """A read-only stream that returns ``prefix`` before the rest of ``fileobj``."""

    def __init__(self, prefix: bytes, fileobj: BinaryIO):
        self._prefix = prefix
        self._fileobj = fileobj

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size is None or size < 0:
                data, self._prefix = self._prefix + self._fileobj.read(), b""
                return data
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return self._fileobj.read(size)


class _Counter:
    """Counts the compressed bytes read from the source (for the bomb check)."""

    def __init__(self, fileobj: BinaryIO):
        self._fileobj = fileobj
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._fileobj.read(size)
        self.count += len(data)
        return data


class _ArchiveReader:
    """The uncompressed tar stream, hashed and counted as it is read."""

    def __init__(
        self, fileobj: BinaryIO, *, copy_to: BinaryIO | None = None, bomb_ratio: int = BOMB_RATIO,
        bomb_floor: int = BOMB_FLOOR,
    ):
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._copy_to = copy_to
        self._bomb_ratio = bomb_ratio
        self._bomb_floor = bomb_floor
        self._compressed: _Counter | None = None
        prefix = b""
        while len(prefix) < len(_MAGIC_XZ):
            chunk = self._guarded(fileobj.read, len(_MAGIC_XZ) - len(prefix))
            if not chunk:
                break
            prefix += chunk
        raw: Any = _Replay(prefix, fileobj)
        if prefix.startswith((_MAGIC_GZIP, _MAGIC_BZIP2, _MAGIC_XZ)):
            raw = self._compressed = _Counter(raw)
        self._stream: BinaryIO
        if prefix.startswith(_MAGIC_GZIP):
            self._stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
        elif prefix.startswith(_MAGIC_BZIP2):
            self._stream = bz2.BZ2File(raw)  # type: ignore[arg-type]
        elif prefix.startswith(_MAGIC_XZ):
            self._stream = lzma.LZMAFile(raw)  # type: ignore[arg-type]
        elif prefix.startswith(_MAGIC_ZSTD):
            raise ImageError("cannot import the archive: zstd compression is not supported", reason="zstd")
        else:
            self._stream = raw  # type: ignore[assignment]

    def read(self, size: int = -1) -> bytes:
        data = self._guarded(self._stream.read, size)
        self.sha256.update(data)
        self.size += len(data)
        if self._copy_to is not None and data:
            self._copy_to.write(data)
        compressed = self._compressed
        if (
            compressed is not None
            and self.size > self._bomb_floor
            and self.size > self._bomb_ratio * max(compressed.count, 1)
        ):
            reason = (
                f"decompression bomb: {self.size} bytes inflated from {compressed.count} "
                f"(more than {self._bomb_ratio}:1)"
            )
            raise ImageError(f"cannot import the archive: {reason}", reason=reason)
        return data

    def drain(self) -> None:
        """Read to the end so that the diff id covers the whole stream."""
        while self.read(CHUNK):
            pass

    @staticmethod
    def _guarded(read, size: int) -> bytes:  # type: ignore[no-untyped-def]
        try:
            return read(size)
        except (EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ImageError(f"cannot read the archive: {reason}", reason=reason) from exc


class _Extractor:
    """Writes members below ``root_fd``, never through a symlink (see the module docstring)."""

    def __init__(self, root_fd: int, *, whiteouts: bool = False):
        self._root_fd = root_fd
        self._layer = whiteouts
        self.whiteouts = 0
        self._as_root = os.geteuid() == 0
        self._written: set[tuple[str, ...]] = set()  # non-directory members, for hard links
        self._devices: set[tuple[str, ...]] = set()
        self._directories: dict[tuple[str, ...], tarfile.TarInfo] = {}
        self.files = 0
        self.skipped_devices = 0
        self.skipped_xattrs = 0

    # --- members ----------------------------------------------------------------------

    def extract_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        try:
            self._extract(tar, member)
        except UnsafeMember as exc:
            raise _member_error(member, str(exc)) from None
        except ImageError as exc:  # the stream failed while reading this member's data
            raise _member_error(member, exc.details.get("reason", exc.message)) from exc
        except tarfile.TarError as exc:
            raise _member_error(member, f"cannot read its data: {exc}") from exc
        except (OSError, ValueError, OverflowError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise _member_error(member, reason) from exc

    def _extract(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = member_path(member.name)
        if member.ischr() or member.isblk():
            self.skipped_devices += 1
            self._devices.add(parts)
            return
        if not parts and not member.isdir():
            raise UnsafeMember("only a directory may stand for the target itself")
        if self._layer and parts and parts[-1].startswith(WHITEOUT_PREFIX):
            self._whiteout(parts)
            return
        if member.islnk():
            self._hard_link(member, parts)
            return
        if not (member.isdir() or member.isreg() or member.issym() or member.isfifo()):
            raise UnsafeMember(f"unsupported member type {member.type!r}")
        if member.issym() and "\x00" in member.linkname:
            raise UnsafeMember("the symlink target contains a NUL byte")

        if member.isdir():
            self._directory(parts, member)
            return
        parent_fd = self._open_parent(parts, create=True)
        try:
            name = parts[-1]
            self._remove_existing(parent_fd, name)
            if member.isreg():
                self._regular_file(tar, member, parent_fd, name)
            elif member.issym():
                os.symlink(member.linkname, name, dir_fd=parent_fd)
                self._symlink_metadata(member, parent_fd, name)
            else:
                os.mkfifo(name, 0o600, dir_fd=parent_fd)
                fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
                try:
                    self._metadata(member, fd)
                finally:
                    os.close(fd)
        finally:
            os.close(parent_fd)
        self._devices.discard(parts)
        self._written.add(parts)
        self.files += 1

    def _whiteout(self, parts: tuple[str, ...]) -> None:
        """``.wh..wh..opq`` makes its directory opaque; ``.wh.NAME`` a whiteout for NAME."""
        name = parts[-1]
        if name == OPAQUE_MARKER:
            fd = self._open_or_make_directory(parts[:-1])
            try:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
            self.whiteouts += 1
            return
        target = name[len(WHITEOUT_PREFIX) :]
        if target in ("", ".", "..") or target.startswith(WHITEOUT_PREFIX):
            raise UnsafeMember(f"invalid whiteout {name!r}")
        parent_fd = self._open_parent(parts, create=True)
        try:
            self._remove_existing(parent_fd, target)
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=parent_fd)
        finally:
            os.close(parent_fd)
        self._written.discard(parts[:-1] + (target,))
        self.whiteouts += 1

    def _directory(self, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
        if parts:
            parent_fd = self._open_parent(parts, create=True)
            try:
                name = parts[-1]
                try:
                    existing = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                except FileNotFoundError:
                    existing = None
                if existing is not None and not stat.S_ISDIR(existing.st_mode):
                    os.unlink(name, dir_fd=parent_fd)
                    existing = None
                if existing is None:
                    os.mkdir(name, 0o700, dir_fd=parent_fd)
            finally:
                os.close(parent_fd)
        self._written.discard(parts)
        self._devices.discard(parts)
        self._directories.pop(parts, None)
        self._directories[parts] = member  # metadata later, in finish()
        self.files += 1

    def _regular_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent_fd: int, name: str) -> None:
        fd = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent_fd
        )
        try:
            source = tar.extractfile(member)
            if source is not None:
                with os.fdopen(fd, "wb", closefd=False) as target:
                    shutil.copyfileobj(source, target, CHUNK)
            self._metadata(member, fd)
        finally:
            os.close(fd)

    def _hard_link(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        try:
            target = member_path(member.linkname)
        except UnsafeMember as exc:
            raise UnsafeMember(f"hard link target {member.linkname!r} is unsafe: {exc}") from None
        if target in self._devices:
            self.skipped_devices += 1
            self._devices.add(parts)
            return
        if target not in self._written:
            raise UnsafeMember(f"hard link target {member.linkname!r} is not an earlier member of the archive")
        if target == parts:
            return  # a link to itself: the file is already there
        target_parent_fd = self._open_parent(target, create=False)
        try:
            parent_fd = self._open_parent(parts, create=True)
            try:
                self._remove_existing(parent_fd, parts[-1])
                os.link(
                    target[-1], parts[-1], src_dir_fd=target_parent_fd, dst_dir_fd=parent_fd, follow_symlinks=False
                )
            finally:
                os.close(parent_fd)
        finally:
            os.close(target_parent_fd)
        self._written.add(parts)
        self.files += 1

    def finish(self) -> None:
        """Apply directory metadata, deepest first, now that their contents are written."""
        for parts in sorted(self._directories, key=len, reverse=True):
            member = self._directories[parts]
            try:
                fd = self._open_directory(parts)
            except (OSError, UnsafeMember):
                continue  # replaced or removed by a later member: nothing to set
            try:
                self._metadata(member, fd)
            except OSError as exc:
                raise _member_error(member, exc.strerror or str(exc)) from exc
            finally:
                os.close(fd)
        self._directories.clear()

    # --- paths ------------------------------------------------------------------------

    def _open_parent(self, parts: tuple[str, ...], *, create: bool) -> int:
        """An fd of the directory that holds ``parts[-1]``, walked without following links."""
        return open_directory(self._root_fd, parts[:-1], create=create, what="its parent ")

    def _open_or_make_directory(self, parts: tuple[str, ...]) -> int:
        """An fd of the directory ``parts``, made (0755) if missing, never through a link."""
        return open_directory(self._root_fd, parts, create=True)

    def _open_directory(self, parts: tuple[str, ...]) -> int:
        return open_directory(self._root_fd, parts)

    @staticmethod
    def _remove_existing(parent_fd: int, name: str) -> None:
        """A later member replaces an earlier one of the same name (tar semantics)."""
        try:
            existing = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(existing.st_mode):
            shutil.rmtree(name, dir_fd=parent_fd)  # fd-based in 3.11: does not follow symlinks
        else:
            os.unlink(name, dir_fd=parent_fd)

    # --- metadata ---------------------------------------------------------------------

    def _metadata(self, member: tarfile.TarInfo, fd: int) -> None:
        if self._as_root:
            os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        for name, value in _xattrs(member):
            if name.startswith(OVERLAY_XATTR_PREFIX):
                self.skipped_xattrs += 1
                continue
            try:
                os.setxattr(fd, name, value)
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise
                self.skipped_xattrs += 1
        os.utime(fd, ns=(_nanoseconds(member.mtime),) * 2)

    def _symlink_metadata(self, member: tarfile.TarInfo, parent_fd: int, name: str) -> None:
        if self._as_root:
            os.chown(name, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)
        xattrs = _xattrs(member)
        if xattrs:
            # os.setxattr has no dir_fd; /proc/self/fd/N is the directory we hold, and the
            # last component is not followed.
            path = f"/proc/self/fd/{parent_fd}/{name}"
            for xattr, value in xattrs:
                if xattr.startswith(OVERLAY_XATTR_PREFIX):
                    self.skipped_xattrs += 1
                    continue
                try:
                    os.setxattr(path, xattr, value, follow_symlinks=False)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTSUP, errno.EPERM, errno.ENOENT):
                        raise
                    self.skipped_xattrs += 1
        os.utime(name, ns=(_nanoseconds(member.mtime),) * 2, dir_fd=parent_fd, follow_symlinks=False)


def _xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    return [
        (key[len(XATTR_PREFIX) :], value.encode("utf-8", "surrogateescape"))
        for key, value in member.pax_headers.items()
        if key.startswith(XATTR_PREFIX)
    ]


def _nanoseconds(mtime: float) -> int:
    return int(round(mtime * 1_000_000_000)) if isinstance(mtime, float) else int(mtime) * 1_000_000_000


def _member_error(member: tarfile.TarInfo, reason: str) -> ImageError:
    return ImageError(f"cannot import member {member.name!r}: {reason}", member=member.name, reason=reason)


# --- fd-relative primitives ------------------------------------------------------------------
# The extractor's walk (see "Why nothing is written through a symbolic link" above), shared
# with the readers of a live container's files (supervisor.images.changes, .containerfs; see
# "Walking a live container's files" in changes.py): a name is only ever looked up in a
# directory already held as an fd, one component at a time, and never followed.

_ENTRY_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def open_directory(root_fd: int, parts: Sequence[str], *, create: bool = False, what: str = "") -> int:
    """An fd of the directory ``parts`` below ``root_fd``, reached one component at a time
    with ``O_DIRECTORY | O_NOFOLLOW``, so never through a symlink.

    Args:
        create: make a missing component (0755, whatever the umask).
        what: put before the path in the error (``"its parent "``).

    Raises:
        UnsafeMember: a component is a symlink or not a directory (the message names it).
        FileNotFoundError: a component is missing (without ``create``).
    """
    fd = os.dup(root_fd)
    try:
        for depth, component in enumerate(parts, start=1):
            try:
                next_fd = _open_component(fd, component, create)
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                prefix = "/".join(parts[:depth])
                mode = os.stat(component, dir_fd=fd, follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    raise UnsafeMember(f"{what}{prefix!r} is a symbolic link") from None
                raise UnsafeMember(f"{what}{prefix!r} is not a directory") from None
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_component(fd: int, component: str, create: bool) -> int:
    try:
        return os.open(component, _DIRECTORY_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(component, _IMPLIED_DIRECTORY_MODE, dir_fd=fd)
    except FileExistsError:  # made meanwhile (a running container): open what is there
        return os.open(component, _DIRECTORY_FLAGS, dir_fd=fd)
    next_fd = os.open(component, _DIRECTORY_FLAGS, dir_fd=fd)
    os.fchmod(next_fd, _IMPLIED_DIRECTORY_MODE)  # regardless of the umask
    return next_fd


def open_entry(dir_fd: int, name: str) -> int | None:
    """An ``O_PATH`` fd of the entry ``name`` of the directory ``dir_fd``, not followed even
    when it is a symlink, or None when there is no such entry. The fd pins the inode that is
    at the name now: whatever happens to the name later, what is read through the fd (with
    the functions below) is that inode."""
    try:
        return os.open(name, _ENTRY_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def entry_path(entry_fd: int) -> str:
    """A path to the inode an ``O_PATH`` fd pins, for calls that take no fd (``getxattr`` of
    a symlink). ``/proc/self/fd/N`` is a magic link: it leads to that inode itself, even a
    symlink, and never on through it."""
    return f"/proc/self/fd/{entry_fd}"


def open_contents(entry_fd: int) -> int:
    """A readable fd of the regular file an ``O_PATH`` fd pins (the same inode, reopened
    through :func:`entry_path`, not whatever is at its name now).

    Raises:
        ValueError: the inode is not a regular file (opening a device node could act on the
            host's hardware; a FIFO could block).
    """
    if not stat.S_ISREG(os.fstat(entry_fd).st_mode):
        raise ValueError("only a regular file is opened for its contents")
    return os.open(entry_path(entry_fd), os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)


def open_listing(entry_fd: int) -> int:
    """A readable fd of the directory an ``O_PATH`` fd pins (``.`` relative to it), for
    ``os.listdir`` and as the ``dir_fd`` of its entries.

    Raises:
        NotADirectoryError: the inode is not a directory.
    """
    return os.open(".", _DIRECTORY_FLAGS, dir_fd=entry_fd)


def read_link(entry_fd: int) -> str:
    """The target of the symlink an ``O_PATH`` fd pins (``readlinkat`` with an empty name)."""
    return os.readlink("", dir_fd=entry_fd)


def decompressed(fileobj: BinaryIO, *, bomb_ratio: int = BOMB_RATIO, bomb_floor: int = BOMB_FLOOR) -> Any:
    """A readable stream of ``fileobj`` with its gzip, bzip2 or xz compression undone (or
    as it is), refusing a decompression bomb; read errors are ImageErrors."""
    return _ArchiveReader(fileobj, bomb_ratio=bomb_ratio, bomb_floor=bomb_floor)
