"""Writing container files as tar archives: the layer tar of ``commit`` (from the upper dir,
in image-layer notation) and the plain tar of ``export`` and ``cp`` out (from the merged
view).

Apart from the walks (:mod:`~supervisor.images.fdwalk`, :mod:`~supervisor.images.layerview`)
and from ``diff`` (:mod:`~supervisor.images.changes`) because it is the only part that
produces tar members: numeric owners, xattrs as PAX ``SCHILY.xattr.*`` records, ns mtimes,
hard links kept as links, sockets skipped as docker does. Every entry arrives pinned as an
fd (:class:`~supervisor.images.fdwalk.Entry`) and is read through it, so what a racing
container renames meanwhile is never followed; a file that grows while it is archived is
cut at the size it had when it was opened, one that shrinks is padded with zeros and noted
in the :class:`~supervisor.images.fdwalk.WalkWarnings`.

The upper dir becomes a layer in one walk (its cost follows the size of the change, never
of the image), converting overlayfs' whiteouts and opaque directories to the tar's (see
:mod:`~supervisor.images.whiteouts`). dockyard relies on overlayfs' defaults
``redirect_dir=off`` and ``metacopy=off``: an upper dir that uses either cannot be expressed
as a layer and is refused with a clear error.
"""

from __future__ import annotations

import os
import stat
import tarfile
from typing import BinaryIO, Callable

from supervisor.errors import ImageError
from supervisor.images.fdwalk import Entry, WalkWarnings, entry_xattrs, open_contents, read_link, walk_tree
from supervisor.images.layerview import LayerView
from supervisor.images.tarmeta import XATTR_PREFIX
from supervisor.images.whiteouts import (
    OPAQUE_XATTR,
    OVERLAY_XATTR_PREFIX,
    UNSUPPORTED_OVERLAY_XATTRS,
    is_whiteout,
    opaque_marker,
    whiteout_name,
)


#: (uid, gid) on the host -> (uid, gid) in the tar.
Owners = Callable[[int, int], tuple[int, int]]


class _TarWriter:
    """Adds filesystem entries to a PAX tar: numeric owners, xattrs, ns mtimes, hard links."""

    def __init__(self, output: BinaryIO, owner: tuple[int, int] | None = None,
                 warnings: WalkWarnings | None = None, owners: Owners | None = None):
        self.tar = tarfile.open(fileobj=output, mode="w|", format=tarfile.PAX_FORMAT)
        self._owner = owner
        self._owners = owners
        self._inodes: dict[tuple[int, int], str] = {}
        self._warnings = warnings if warnings is not None else WalkWarnings()
        self.skipped_sockets = 0

    def add(self, name: str, entry: Entry, *, xattrs: dict[str, bytes] | None = None) -> None:
        info = entry.info
        member = tarfile.TarInfo(name)
        member.mode = stat.S_IMODE(info.st_mode)
        member.uid, member.gid = self._owner or (
            self._owners(info.st_uid, info.st_gid) if self._owners else (info.st_uid, info.st_gid))
        member.uname = member.gname = ""
        member.mtime = _mtime(info)
        pax = {f"{XATTR_PREFIX}{key}": value.decode("utf-8", "surrogateescape") for key, value in (xattrs or {}).items()}
        if pax:
            member.pax_headers = pax
        mode = info.st_mode
        if stat.S_ISREG(mode):
            key = (info.st_dev, info.st_ino)
            if info.st_nlink > 1 and key in self._inodes:
                member.type = tarfile.LNKTYPE
                member.linkname = self._inodes[key]
                self.tar.addfile(member)
                return
            if info.st_nlink > 1:
                self._inodes[key] = name
            with os.fdopen(open_contents(entry.fd), "rb") as source:
                member.size = os.fstat(source.fileno()).st_size
                contents = _Exactly(source, member.size)
                self.tar.addfile(member, contents)
            if contents.padded:
                self._warnings.note(entry.path, f"shrank while it was read: its last {contents.padded} bytes "
                                    "are zeros")
            return
        if stat.S_ISDIR(mode):
            member.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(mode):
            member.type = tarfile.SYMTYPE
            member.linkname = read_link(entry.fd)
        elif stat.S_ISFIFO(mode):
            member.type = tarfile.FIFOTYPE
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            member.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            member.devmajor, member.devminor = os.major(info.st_rdev), os.minor(info.st_rdev)
        else:  # a socket: not archivable, as in docker
            self.skipped_sockets += 1
            return
        self.tar.addfile(member)

    def add_empty(self, name: str, info: os.stat_result) -> None:
        member = tarfile.TarInfo(name)
        member.mode = 0o600
        member.mtime = _mtime(info)
        self.tar.addfile(member)

    def close(self) -> None:
        self.tar.close()


class _Exactly:
    """A file that yields exactly ``size`` bytes: a file that grows while it is archived
    (a running container) is cut, one that shrinks is padded with zeros (``padded`` counts
    them)."""

    def __init__(self, source: BinaryIO, size: int):
        self._source = source
        self._left = size
        self.padded = 0

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._source.read(size)
        if len(data) < size:
            self.padded += size - len(data)
            data += b"\0" * (size - len(data))
        self._left -= len(data)
        return data


def _mtime(info: os.stat_result) -> int | float:
    seconds, nanoseconds = divmod(info.st_mtime_ns, 1_000_000_000)
    return seconds if nanoseconds == 0 else info.st_mtime_ns / 1e9


def write_layer(upper: str, output: BinaryIO, warnings: WalkWarnings | None = None,
                owners: Owners | None = None) -> None:
    """Write the upper dir ``upper`` as an image layer tar (see the module docstring);
    ``owners`` turns a file's host ids into the tar's (a remapped container's: the ids its
    processes saw, ``supervisor.userns.IdMapping.from_host``).

    Raises:
        ImageError: the upper dir uses an overlay feature a layer cannot express.
    """
    warnings = warnings if warnings is not None else WalkWarnings()
    writer = _TarWriter(output, warnings=warnings, owners=owners)
    for entry in walk_tree(upper, warnings):
        name = entry.path.lstrip("/")
        if is_whiteout(entry.info):
            writer.add_empty(whiteout_name(name), entry.info)
            continue
        xattrs = entry_xattrs(entry.fd, keep_overlay=True)
        overlay = {k: v for k, v in xattrs.items() if k.startswith(OVERLAY_XATTR_PREFIX)}
        for key in UNSUPPORTED_OVERLAY_XATTRS:
            if key in overlay:
                raise ImageError(
                    f"cannot commit {entry.path}: overlayfs marked it with {key} (redirect_dir or metacopy is on); "
                    "dockyard needs both off",
                    path=entry.path,
                    reason=key,
                )
        writer.add(name, entry, xattrs={k: v for k, v in xattrs.items() if k not in overlay})
        if stat.S_ISDIR(entry.info.st_mode) and overlay.get(OPAQUE_XATTR) == b"y":
            writer.add_empty(opaque_marker(name), entry.info)
    writer.close()


def write_tree(view: LayerView, path: str, output: BinaryIO, *, prefix: str = "",
               owner: tuple[int, int] | None = None, warnings: WalkWarnings | None = None,
               owners: Owners | None = None) -> None:
    """Write the merged view below ``path`` as a plain tar (``export``, ``cp`` out):
    no whiteouts, each entry from the layer where it is visible. Members are named
    relative to ``path``, under ``prefix`` (``"name"`` for ``cp``); ``owner`` replaces
    every entry's uid and gid, ``owners`` translates them (as in :func:`write_layer`)."""
    warnings = warnings if warnings is not None else WalkWarnings()
    writer = _TarWriter(output, owner, warnings, owners)
    base = path.rstrip("/")
    for entry in view.walk(path, warnings):
        relative = entry.path[len(base) :].lstrip("/")
        name = "/".join(part for part in (prefix, relative) if part)
        if not name:
            continue  # the root itself: export writes no "." entry, as docker
        writer.add(name, entry, xattrs=entry_xattrs(entry.fd))
    writer.close()
