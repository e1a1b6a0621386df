"""A container's changes: ``diff`` lines, the layer tar of ``commit``, and the merged view
of layers that ``export`` and ``cp`` read.

Theory of operation
-------------------
A container's root filesystem is an overlay: read-only layer directories (lower dirs, top
first) under the container's upper dir. Everything the container changed is in the upper
dir, in overlayfs' own notation:

    overlayfs (upper dir)                       image layer tar (OCI / docker)
    ---------------------------------------     -----------------------------------------
    a file, link, dir, ... at its path          the same member
    a 0/0 character device ``dir/NAME``         an empty file ``dir/.wh.NAME`` (a whiteout)
    xattr ``trusted.overlay.opaque=y`` on dir   the dir, then an empty ``dir/.wh..wh..opq``

so a commit is one walk of the upper dir (its cost follows the size of the change, never
of the image), and the layer tar is unpacked back into overlay notation by
:func:`supervisor.images.tarsafe.extract` with ``whiteouts=True``. dockyard relies on
overlayfs' defaults ``redirect_dir=off`` and ``metacopy=off``: an upper dir that uses
either (``trusted.overlay.redirect`` / ``.metacopy`` xattrs) cannot be expressed as a layer
and is refused with a clear error.

The pure parts, :func:`compute_diff` and :func:`whiteout_name`, work on plain records and
callables (no filesystem), so they are tested without root; :class:`LayerView` and
:func:`walk_upper` are the thin filesystem shell around them.

Diff lines follow ``docker diff``: ``A`` added, ``C`` changed, ``D`` deleted, sorted by
path. A directory is ``C`` when anything below it changed (every ancestor, not only the
parent) or its own mode, owner or mtime changed. A directory deleted and made again
(overlay marks it opaque) is ``C``, and each entry of the layers below that is no longer
there is ``D``.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from supervisor.errors import ImageError
from supervisor.images.tarsafe import OPAQUE_MARKER, OPAQUE_XATTR, OVERLAY_XATTR_PREFIX, WHITEOUT_PREFIX

#: overlayfs features a layer cannot express: a commit refuses an upper dir that uses them.
UNSUPPORTED_OVERLAY_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy")
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


# --- pure helpers -------------------------------------------------------------------------


def whiteout_name(name: str) -> str:
    """The tar member name of the whiteout of ``name``: ``dir/x`` -> ``dir/.wh.x``."""
    head, _, tail = name.rpartition("/")
    return f"{head}/{WHITEOUT_PREFIX}{tail}" if head else f"{WHITEOUT_PREFIX}{tail}"


def opaque_marker(directory: str) -> str:
    """The tar member that makes ``directory`` opaque: ``dir/.wh..wh..opq``."""
    return f"{directory}/{OPAQUE_MARKER}" if directory else OPAQUE_MARKER


def is_whiteout(info: os.stat_result) -> bool:
    """overlayfs' whiteout: a character device with device number 0/0."""
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == 0


@dataclass(frozen=True)
class Meta:
    """What ``diff`` compares of a directory present above and below."""

    kind: str  # "dir", "file", "symlink", "other"
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0

    @classmethod
    def of(cls, info: os.stat_result) -> Meta:
        if stat.S_ISDIR(info.st_mode):
            kind = "dir"
        elif stat.S_ISREG(info.st_mode):
            kind = "file"
        elif stat.S_ISLNK(info.st_mode):
            kind = "symlink"
        else:
            kind = "other"
        return cls(kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_mtime_ns)


@dataclass(frozen=True)
class UpperEntry:
    """One entry of the upper dir, for :func:`compute_diff`.

    Attributes:
        path: absolute in the container ("/etc/hosts").
        meta: its metadata; None for a whiteout.
        opaque: a directory marked opaque (deleted and made again).
    """

    path: str
    meta: Meta | None
    opaque: bool = False


def compute_diff(
    upper: Iterable[UpperEntry],
    lower: Callable[[str], Meta | None],
    lower_children: Callable[[str], Iterable[str]],
) -> list[tuple[str, str]]:
    """``docker diff`` lines as ``(kind, path)``, sorted by path.

    Args:
        upper: the upper dir's entries, each directory before its contents.
        lower: the metadata of a path in the merged view of the layers below, or None.
        lower_children: the names in a directory of that merged view.
    """
    changes: dict[str, str] = {}
    hidden: set[str] = set()  # upper dirs whose contents do not merge with the layers below
    replaced: set[str] = set()  # entries below an opaque dir: deleted, unless made again

    def below(path: str) -> Meta | None:
        parent = _parent(path)
        while parent != "/":
            if parent in hidden:
                return None
            parent = _parent(parent)
        return lower(path)

    def touch_ancestors(path: str) -> None:
        parent = _parent(path)
        while parent != "/" and parent not in changes:
            changes[parent] = "C"
            parent = _parent(parent)

    for entry in upper:
        old = below(entry.path)
        if entry.path in replaced and entry.meta is not None:  # made again in an opaque dir: it was there before
            changes[entry.path] = "C"
            if entry.meta.kind == "dir":
                hidden.add(entry.path)
            continue
        if entry.meta is None:  # a whiteout
            if old is not None:
                changes[entry.path] = "D"
                touch_ancestors(entry.path)
            continue
        if entry.meta.kind == "dir":
            if old is None or old.kind != "dir":
                hidden.add(entry.path)
                changes[entry.path] = "A" if old is None else "C"
                touch_ancestors(entry.path)
            elif entry.opaque:
                hidden.add(entry.path)
                changes[entry.path] = "C"
                touch_ancestors(entry.path)
                for name in lower_children(entry.path):
                    child = _join(entry.path, name)
                    replaced.add(child)
                    changes.setdefault(child, "D")
            elif old != entry.meta:
                changes[entry.path] = "C"
                touch_ancestors(entry.path)
            continue
        changes[entry.path] = "A" if old is None else "C"
        touch_ancestors(entry.path)
    return sorted(((kind, path) for path, kind in changes.items()), key=lambda change: change[1])


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"


# --- the filesystem shell: layers as a merged view ------------------------------------------


class LayerView:
    """The merged view of overlay layer directories (top first), read without mounting.

    ``lookup`` and ``children`` follow overlayfs: the topmost entry of a name wins, a
    whiteout hides the name below, a directory merges with the directories of the same
    name below it down to the first opaque one (included) or the first non-directory.
    """

    def __init__(self, layers: Iterable[str]):
        self.layers = tuple(layers)

    def _sources(self, path: str) -> tuple[list[str], os.stat_result | None]:
        """The layer directories that make up ``path`` (if a directory) and the stat of
        the entry that wins (None when it does not exist in the merged view)."""
        directories = list(self.layers)
        info: os.stat_result | None = None
        for component in [c for c in path.split("/") if c]:
            found: list[str] = []
            info = None
            for base in directories:
                candidate = os.path.join(base, component)
                try:
                    entry = os.lstat(candidate)
                except FileNotFoundError:
                    continue
                except NotADirectoryError:
                    continue
                if is_whiteout(entry):
                    break
                if info is None:
                    info = entry
                if not stat.S_ISDIR(info.st_mode):
                    break
                if not stat.S_ISDIR(entry.st_mode):
                    break
                found.append(candidate)
                if _is_opaque(candidate):
                    break
            if info is None:
                return [], None
            directories = found
        if info is None:  # the root
            return directories, os.lstat(self.layers[0]) if self.layers else None
        return directories, info

    def resolve(self, path: str, *, follow_last: bool = False) -> str:
        """``path`` with the symlinks in it resolved inside this root (as the container
        would see them, never towards the host), ``..`` included; at most 40 links.

        Raises:
            FileNotFoundError: a component is missing or is not a directory.
        """
        parts = [c for c in path.split("/") if c not in ("", ".")]
        resolved: list[str] = []
        links = 0
        while parts:
            component = parts.pop(0)
            if component == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = "/" + "/".join([*resolved, component])
            _, info = self._sources(candidate)
            if info is None:
                raise FileNotFoundError(errno.ENOENT, "no such file or directory", candidate)
            if stat.S_ISLNK(info.st_mode) and (parts or follow_last):
                links += 1
                if links > 40:
                    raise FileNotFoundError(errno.ELOOP, "too many levels of symbolic links", candidate)
                target = os.readlink(self._real(candidate))
                if target.startswith("/"):
                    resolved = []
                parts = [c for c in target.split("/") if c not in ("", ".")] + parts
                continue
            if parts and not stat.S_ISDIR(info.st_mode):
                raise FileNotFoundError(errno.ENOTDIR, "not a directory", candidate)
            resolved.append(component)
        return "/" + "/".join(resolved)

    def lookup(self, path: str) -> Meta | None:
        _, info = self._sources(path)
        return None if info is None else Meta.of(info)

    def children(self, path: str) -> list[str]:
        return [name for name, _ in self.entries(path)]

    def entries(self, path: str) -> list[tuple[str, str]]:
        """``(name, real path of the winning entry)`` for each name in the directory."""
        directories, info = self._sources(path)
        if info is None or not stat.S_ISDIR(info.st_mode):
            return []
        return self._merge(directories)

    @staticmethod
    def _merge(directories: list[str]) -> list[tuple[str, str]]:
        winners: dict[str, str | None] = {}
        for base in directories:
            try:
                names = os.listdir(base)
            except OSError:
                continue
            for name in names:
                if name in winners:
                    continue
                real = os.path.join(base, name)
                try:
                    entry = os.lstat(real)
                except OSError:
                    continue
                winners[name] = None if is_whiteout(entry) else real
        return sorted((name, real) for name, real in winners.items() if real is not None)

    def walk(self, path: str = "/") -> Iterator[tuple[str, str]]:
        """Every entry below ``path`` as ``(container path, real path)``, each directory
        before its contents (the directory itself first)."""
        directories, info = self._sources(path)
        if info is None:
            return
        yield path, directories[0] if stat.S_ISDIR(info.st_mode) else self._real(path)
        if stat.S_ISDIR(info.st_mode):
            yield from self._walk_directory(path, directories)

    def _walk_directory(self, path: str, directories: list[str]) -> Iterator[tuple[str, str]]:
        for name, real in self._merge(directories):
            child = _join(path, name)
            yield child, real
            if os.path.isdir(real) and not os.path.islink(real):
                sub: list[str] = []
                for base in directories:
                    candidate = os.path.join(base, name)
                    try:
                        entry = os.lstat(candidate)
                    except OSError:
                        continue
                    if not stat.S_ISDIR(entry.st_mode):
                        break
                    sub.append(candidate)
                    if _is_opaque(candidate):
                        break
                yield from self._walk_directory(child, sub)

    def _real(self, path: str) -> str:
        parent = _parent(path)
        name = path.rsplit("/", 1)[1]
        return dict(self.entries(parent))[name]


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def walk_upper(upper: str) -> Iterator[UpperEntry]:
    """The upper dir's entries for :func:`compute_diff` (directories first, sorted)."""
    for path, real, info in _walk(upper):
        if is_whiteout(info):
            yield UpperEntry(path, None)
        else:
            opaque = stat.S_ISDIR(info.st_mode) and _is_opaque(real)
            yield UpperEntry(path, Meta.of(info), opaque)


def _walk(root: str, path: str = "/") -> Iterator[tuple[str, str, os.stat_result]]:
    """``(container path, real path, lstat)`` below ``root``, sorted, directories first."""
    real_dir = root if path == "/" else os.path.join(root, path.lstrip("/"))
    try:
        names = sorted(os.listdir(real_dir))
    except FileNotFoundError:
        return
    for name in names:
        real = os.path.join(real_dir, name)
        info = os.lstat(real)
        child = _join(path, name)
        yield child, real, info
        if stat.S_ISDIR(info.st_mode):
            yield from _walk(root, child)


def container_diff(upper: str, lower_layers: Iterable[str]) -> list[tuple[str, str]]:
    """``docker diff`` of a container from its upper dir and its image's layers (top first)."""
    view = LayerView(lower_layers)
    return compute_diff(walk_upper(upper), view.lookup, view.children)


# --- tar writers ----------------------------------------------------------------------------


class _TarWriter:
    """Adds filesystem entries to a PAX tar: numeric owners, xattrs, ns mtimes, hard links."""

    def __init__(self, output: BinaryIO, owner: tuple[int, int] | None = None):
        self.tar = tarfile.open(fileobj=output, mode="w|", format=tarfile.PAX_FORMAT)
        self._owner = owner
        self._inodes: dict[tuple[int, int], str] = {}
        self.skipped_sockets = 0

    def add(self, name: str, real: str, info: os.stat_result, *, xattrs: dict[str, bytes] | None = None) -> None:
        member = tarfile.TarInfo(name)
        member.mode = stat.S_IMODE(info.st_mode)
        member.uid, member.gid = self._owner or (info.st_uid, info.st_gid)
        member.uname = member.gname = ""
        member.mtime = _mtime(info)
        pax = {f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape") for key, value in (xattrs or {}).items()}
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
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as source:
                member.size = os.fstat(source.fileno()).st_size
                self.tar.addfile(member, _Exactly(source, member.size))
            return
        if stat.S_ISDIR(mode):
            member.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(mode):
            member.type = tarfile.SYMTYPE
            member.linkname = os.readlink(real)
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
    (a running container) is cut, one that shrinks is padded with zeros."""

    def __init__(self, source: BinaryIO, size: int):
        self._source = source
        self._left = size

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._source.read(size)
        if len(data) < size:
            data += b"\0" * (size - len(data))
        self._left -= len(data)
        return data


def _mtime(info: os.stat_result) -> int | float:
    seconds, nanoseconds = divmod(info.st_mtime_ns, 1_000_000_000)
    return seconds if nanoseconds == 0 else info.st_mtime_ns / 1e9


def _xattrs(real: str, *, keep_overlay: bool = False) -> dict[str, bytes]:
    try:
        names = os.listxattr(real, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.ENODATA):
            return {}
        raise
    found = {}
    for name in sorted(names):
        if name.startswith(OVERLAY_XATTR_PREFIX) and not keep_overlay:
            continue
        try:
            found[name] = os.getxattr(real, name, follow_symlinks=False)
        except OSError:
            continue
    return found


def write_layer(upper: str, output: BinaryIO) -> None:
    """Write the upper dir ``upper`` as an image layer tar (see the module docstring).

    Raises:
        ImageError: the upper dir uses an overlay feature a layer cannot express.
    """
    writer = _TarWriter(output)
    for path, real, info in _walk(upper):
        name = path.lstrip("/")
        if is_whiteout(info):
            writer.add_empty(whiteout_name(name), info)
            continue
        overlay = {k: v for k, v in _xattrs(real, keep_overlay=True).items() if k.startswith(OVERLAY_XATTR_PREFIX)}
        for key in UNSUPPORTED_OVERLAY_XATTRS:
            if key in overlay:
                raise ImageError(
                    f"cannot commit {path}: overlayfs marked it with {key} (redirect_dir or metacopy is on); "
                    "dockyard needs both off",
                    path=path,
                    reason=key,
                )
        writer.add(name, real, info, xattrs=_xattrs(real))
        if stat.S_ISDIR(info.st_mode) and overlay.get(OPAQUE_XATTR) == b"y":
            writer.add_empty(opaque_marker(name), info)
    writer.close()


def write_tree(view: LayerView, path: str, output: BinaryIO, *, prefix: str = "",
               owner: tuple[int, int] | None = None) -> None:
    """Write the merged view below ``path`` as a plain tar (``export``, ``cp`` out):
    no whiteouts, each entry from the layer where it is visible. Members are named
    relative to ``path``, under ``prefix`` (``"name"`` for ``cp``); ``owner`` replaces
    every entry's uid and gid."""
    writer = _TarWriter(output, owner)
    base = path.rstrip("/")
    for container_path, real in view.walk(path):
        relative = container_path[len(base) :].lstrip("/")
        name = "/".join(part for part in (prefix, relative) if part)
        if not name:
            continue  # the root itself: export writes no "." entry, as docker
        info = os.lstat(real)
        writer.add(name, real, info, xattrs=_xattrs(real))
    writer.close()
