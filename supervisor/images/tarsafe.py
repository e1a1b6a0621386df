"""Safe extraction of a root filesystem tar: nothing is ever written outside the target.

Theory of operation
-------------------
The archive is read as a stream (``tarfile`` mode ``"r|"``), so a pipe or stdin works. The
compression is undone by :class:`~supervisor.images.tarstream.ArchiveReader`, which also
hashes the *uncompressed* bytes as tarfile reads them: that sha256 is the layer's diff id
(OCI ``rootfs.diff_ids``). This module owns the members: their names, their types and
how each is written; the walk it writes through is :mod:`~supervisor.images.fdwalk`'s.

Every member name goes through :func:`member_path` first, a pure function: a leading ``/``
is stripped (docker does the same: ``/etc/hosts`` means ``etc/hosts``), the name is
normalised lexically, and anything that still climbs out (``../x``, ``/a/../../x``), or
holds a NUL, is refused. The result is a tuple of plain components: no ``""``, ``"."`` or
``".."``, no ``"/"`` inside a component.

Why nothing is written through a symbolic link (the proof)
    The target is opened once as a directory fd. To reach the parent of a member we walk
    its components one at a time (:func:`~supervisor.images.fdwalk.open_directory`) with ``os.open(component, O_DIRECTORY | O_NOFOLLOW,
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
``ENOTSUP``/``EPERM`` is skipped and counted, as docker does. The metadata is set by
:mod:`~supervisor.images.tarmeta`.

Layers (``whiteouts=True``)
    An image layer marks deletions with AUFS-style whiteouts, as docker and OCI do:
    ``dir/.wh.NAME`` deletes ``NAME`` from the layers below, ``dir/.wh..wh..opq`` hides
    everything below ``dir``. Each layer is unpacked into its own directory, used as an
    overlay lower dir, so they become overlayfs whiteouts: a 0/0 character device at
    ``dir/NAME``, and the ``trusted.overlay.opaque=y`` xattr on ``dir``. xattrs in the
    ``trusted.overlay.`` namespace in an archive are never set (they would steer overlayfs,
    e.g. ``redirect``); they are skipped and counted.

Decompression bombs are refused (:mod:`~supervisor.images.tarstream`). A full disk is an
ordinary error: the caller discards the partial tree, so either way nothing is left behind.

A truncated or corrupt archive is an error. Python's tarfile silently ends the archive at
a short or invalid header (and at a missing end-of-archive block); we record why it
stopped and accept only a zero block. On error the target holds a partial tree: the caller
(:mod:`supervisor.images.store`) extracts into a temporary directory and discards it.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from supervisor.errors import ImageError
from supervisor.images import tarmeta
# Some of these are only re-exported: they lived here before fdwalk, tarstream and whiteouts.
from supervisor.images.fdwalk import UnsafeMember, open_directory
from supervisor.images.fdwalk import entry_path, open_contents, open_entry, open_listing, read_link  # noqa: F401
from supervisor.images.tarsplit import TarSplitWriter
from supervisor.images.tarstream import BOMB_FLOOR, BOMB_RATIO, CHUNK, ArchiveReader, decompressed  # noqa: F401
from supervisor.images.whiteouts import OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX



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
    split: TarSplitWriter | None = None,
    bomb_ratio: int = BOMB_RATIO,
    bomb_floor: int = BOMB_FLOOR,
    keep_owners: bool = True,
) -> ExtractReport:
    """Extract a (possibly compressed) tar stream into the existing directory ``dest``.

    Args:
        fileobj: a readable binary stream; only ``read`` is used, so a pipe works.
        dest: the target directory (or an fd of it); it should be private to the caller.
        whiteouts: unpack an image layer: ``.wh.`` members become overlay whiteouts.
        copy_to: receives the uncompressed tar stream as it is read (the layer blob).
        split: records the stream as raw bytes and references to the regular files
            unpacked (:mod:`~supervisor.images.tarsplit`); it receives the stream instead
            of ``copy_to``. The caller closes it.
        bomb_ratio, bomb_floor: see :data:`BOMB_RATIO`.
        keep_owners: as root, give each member the tar's numeric owner (an image); False
            leaves everything the caller's (``docker cp`` into a container, as docker).

    Returns:
        An :class:`ExtractReport` with the diff id and size of the uncompressed stream.

    Raises:
        ImageError: the archive is hostile, truncated, corrupt or cannot be written; its
            ``details`` carry ``member`` (when known) and ``reason``. ``dest`` may then
            hold a partial tree.
    """
    if split is not None:
        copy_to = split  # type: ignore[assignment]
    reader = ArchiveReader(fileobj, copy_to=copy_to, bomb_ratio=bomb_ratio, bomb_floor=bomb_floor)
    header_errors: list[tarfile.HeaderError] = []
    if isinstance(dest, int):
        root_fd = os.dup(dest)
    else:
        root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        extractor = _Extractor(root_fd, whiteouts=whiteouts, split=split, keep_owners=keep_owners)
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


class _Extractor:
    """Writes members below ``root_fd``, never through a symlink (see the module docstring)."""

    def __init__(self, root_fd: int, *, whiteouts: bool = False, split: TarSplitWriter | None = None,
                 keep_owners: bool = True):
        self._root_fd = root_fd
        self._split = split
        self._layer = whiteouts
        self.whiteouts = 0
        self._as_root = keep_owners and os.geteuid() == 0
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
            self._remove_existing(parent_fd, name, parts)
            if member.isreg():
                self._regular_file(tar, member, parent_fd, name, parts)
            elif member.issym():
                os.symlink(member.linkname, name, dir_fd=parent_fd)
                self.skipped_xattrs += tarmeta.apply_to_symlink(member, parent_fd, name, as_root=self._as_root)
            else:
                os.mkfifo(name, 0o600, dir_fd=parent_fd)
                fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
                try:
                    self.skipped_xattrs += tarmeta.apply(member, fd, as_root=self._as_root)
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
            self._remove_existing(parent_fd, target, parts[:-1] + (target,))
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
                    if not self._keep_referenced(parent_fd, name, parts, directory=False):
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

    def _regular_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent_fd: int, name: str,
                      parts: tuple[str, ...]) -> None:
        fd = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent_fd
        )
        try:
            if self._split is not None and member.size > 0 and not member.issparse():
                # Before its content is read: the writer references it instead of keeping it.
                self._split.content(member.offset_data, member.size, parts)
            source = tar.extractfile(member)
            if source is not None:
                with os.fdopen(fd, "wb", closefd=False) as target:
                    shutil.copyfileobj(source, target, CHUNK)
            self.skipped_xattrs += tarmeta.apply(member, fd, as_root=self._as_root)
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
                self._remove_existing(parent_fd, parts[-1], parts)
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
                self.skipped_xattrs += tarmeta.apply(member, fd, as_root=self._as_root)
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

    def _remove_existing(self, parent_fd: int, name: str, parts: tuple[str, ...]) -> None:
        """A later member replaces an earlier one of the same name (tar semantics)."""
        try:
            existing = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if self._keep_referenced(parent_fd, name, parts, directory=stat.S_ISDIR(existing.st_mode)):
            return  # moved aside: nothing left to remove
        if stat.S_ISDIR(existing.st_mode):
            shutil.rmtree(name, dir_fd=parent_fd)  # fd-based in 3.11: does not follow symlinks
        else:
            os.unlink(name, dir_fd=parent_fd)

    def _keep_referenced(self, parent_fd: int, name: str, parts: tuple[str, ...], *, directory: bool) -> bool:
        """Before ``parts`` is removed: move the files the tar-split references there (or
        below, for a directory) aside, so the layer's stream can still be regenerated.
        True when ``parts`` itself was moved (it is gone)."""
        if self._split is None:
            return False
        if not directory:  # a file: referenced itself or not at all (no scan of every reference)
            if parts not in self._split.references:
                return False
            self._split.keep(parent_fd, name, parts)
            return True
        for path in self._split.referenced_under(parts):
            if path == parts:
                self._split.keep(parent_fd, name, path)
                return True
            holder = self._open_parent(path, create=False)
            try:
                self._split.keep(holder, path[-1], path)
            finally:
                os.close(holder)
        return False


def _member_error(member: tarfile.TarInfo, reason: str) -> ImageError:
    return ImageError(f"cannot import member {member.name!r}: {reason}", member=member.name, reason=reason)
