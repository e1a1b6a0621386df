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

Walking a live container's files
--------------------------------
A running container changes its upper dir while ``diff``, ``commit``, ``export`` and ``cp``
read it, and it may do so to attack the daemon (CVE-2018-15664): it swaps a directory
``/data/sub`` with a symlink ``/data/link -> /`` in a tight loop (``renameat2`` with
``RENAME_EXCHANGE``). A symlink in the upper dir is resolved by the host against the
*host's* root, so a walk that names ``<upper>/data/sub/etc/shadow`` after having seen
``sub`` as a directory reads the host's file whenever the swap falls in between. Checking
first (``lstat``) and acting after, by path, cannot be made safe. So every walk here holds
the directory it is in as an fd and never resolves more than one name, never following it:

1. a directory is listed through its own fd; each name is opened relative to it with
   ``O_PATH | O_NOFOLLOW`` (:func:`~supervisor.images.tarsafe.open_entry`): that pins the
   inode that is at the name at that instant, a symlink included;
2. everything else is read through that fd: its type and metadata (``fstat``), a file's
   contents (reopened through ``/proc/self/fd``: the same inode; a device or FIFO is never
   opened), a symlink's target (``readlinkat`` with an empty name), xattrs, and a
   directory's entries (``openat(fd, ".")``, then step 1 again).

By induction every directory the walk holds was reached from the upper dir (or a layer)
through real directory entries only, so nothing outside it is ever read; what the
container renames meanwhile is read as it was at the instant its name was opened: a
directory swapped away after it was opened is still read as that directory, a name that
is a symlink when it is opened is read as that symlink. A name that vanishes between the
listing and the opening is skipped; a file that shrinks while it is read is padded with
zeros (its size was taken when it was opened). Both are counted in :class:`WalkWarnings`,
which the daemon logs and returns to the client; neither is an error. The same walk serves
the lower layers, which never change. Freezing the container (docker pauses it for
``commit``) would not be enough alone: ``cp`` into a stopped container's upper dir has
nothing to freeze, and a frozen container's symlinks still point at the host.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from supervisor.errors import ImageError
from supervisor.images.tarsafe import (
    OPAQUE_MARKER,
    OPAQUE_XATTR,
    OVERLAY_XATTR_PREFIX,
    WHITEOUT_PREFIX,
    entry_path,
    open_contents,
    open_entry,
    open_listing,
    read_link,
)

#: overlayfs features a layer cannot express: a commit refuses an upper dir that uses them.
UNSUPPORTED_OVERLAY_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy")


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


# --- the filesystem shell: fd-relative walks ------------------------------------------------


class WalkWarnings:
    """What a walk of a live container's files could not take whole: an entry that vanished
    between the listing of its directory and its opening (skipped), a file that shrank while
    it was read (its end padded with zeros). Every one is counted; the first :attr:`LIMIT`
    are kept for the message."""

    LIMIT = 10

    def __init__(self) -> None:
        self.count = 0
        self.notes: list[str] = []

    def note(self, path: str, what: str) -> None:
        self.count += 1
        if len(self.notes) < self.LIMIT:
            self.notes.append(f"{path} {what}")

    def messages(self) -> list[str]:
        """One line per kept note, and how many more there were."""
        more = self.count - len(self.notes)
        return self.notes + ([f"and {more} more"] if more else [])


_VANISHED = "vanished while it was read: skipped"


@dataclass(frozen=True)
class Entry:
    """One entry met by a walk, pinned (see "Walking a live container's files").

    Attributes:
        path: absolute in the container ("/etc/hosts").
        fd: an ``O_PATH`` fd of the inode that was at the name when the walk opened it,
            never followed; valid until the walk moves on. Read it with
            :func:`~supervisor.images.tarsafe.open_contents`, ``open_listing``, ``read_link``
            and :func:`entry_xattrs`.
        info: that inode's ``fstat``.
    """

    path: str
    fd: int
    info: os.stat_result


def entry_xattrs(fd: int, *, keep_overlay: bool = False) -> dict[str, bytes]:
    """The extended attributes of the inode an ``O_PATH`` fd pins (``trusted.overlay.*``
    only with ``keep_overlay``), sorted by name."""
    path = entry_path(fd)
    try:
        names = os.listxattr(path)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.ENODATA):
            return {}
        raise
    found = {}
    for name in sorted(names):
        if name.startswith(OVERLAY_XATTR_PREFIX) and not keep_overlay:
            continue
        try:
            found[name] = os.getxattr(path, name)
        except OSError:
            continue  # removed meanwhile
    return found


def _is_opaque(listing_fd: int) -> bool:
    try:
        return os.getxattr(listing_fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


class _Node:
    """A name of the merged view, opened: ``fd`` (``O_PATH``) and ``info`` of the entry that
    wins, and ``directories``, readable fds of the layer directories that merge into it when
    it is a directory (top first). Owns its fds until :meth:`close`."""

    def __init__(self, fd: int, info: os.stat_result, directories: list[int]):
        self.fd = fd
        self.info = info
        self.directories = directories

    def close(self) -> None:
        for fd in (self.fd, *self.directories):
            os.close(fd)


def _child(directories: list[int], name: str) -> _Node | None:
    """The entry ``name`` of the merged directory ``directories`` (top first), opened: the
    topmost one wins, a whiteout hides the layers below, a directory merges with the
    directories of the same name below it down to the first opaque one (included) or the
    first non-directory. None when no layer has it or a whiteout hides it."""
    winner: _Node | None = None
    try:
        for directory in directories:
            fd = open_entry(directory, name)
            if fd is None:
                continue
            info = os.fstat(fd)
            if is_whiteout(info) or (winner is not None and not stat.S_ISDIR(info.st_mode)):
                os.close(fd)
                break
            if winner is None:
                winner = _Node(fd, info, [])
                if not stat.S_ISDIR(info.st_mode):
                    break
                winner.directories.append(open_listing(fd))
            else:
                try:
                    winner.directories.append(open_listing(fd))
                finally:
                    os.close(fd)
            if _is_opaque(winner.directories[-1]):
                break
    except BaseException:
        if winner is not None:
            winner.close()
        raise
    return winner


def _present(directories: list[int], name: str) -> bool:
    for directory in directories:
        try:
            os.stat(name, dir_fd=directory, follow_symlinks=False)
            return True
        except FileNotFoundError:
            continue
    return False


class LayerView:
    """The merged view of overlay layer directories (top first), read without mounting.

    ``lookup`` and ``children`` follow overlayfs (see :func:`_child`). Every name is looked
    up in a directory held as an fd and never followed, so a layer that changes meanwhile
    (a running container's upper dir) is read as it is at each instant, never through a
    symlink towards the host.
    """

    def __init__(self, layers: Iterable[str]):
        self.layers = tuple(layers)

    @contextmanager
    def _root(self) -> Iterator[_Node | None]:
        """The root of the merged view: the top layer's entry, every layer's directory."""
        directories: list[int] = []
        node = None
        try:
            for layer in self.layers:
                try:
                    directories.append(os.open(layer, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
                except FileNotFoundError:
                    continue
            if directories:
                node = _Node(os.open(".", os.O_PATH | os.O_CLOEXEC, dir_fd=directories[0]),
                             os.fstat(directories[0]), directories)
            yield node
        finally:
            if node is not None:
                node.close()
            else:
                for fd in directories:
                    os.close(fd)

    @contextmanager
    def open(self, path: str) -> Iterator[Entry | None]:
        """The entry at ``path`` (symlinks in it are not followed), or None."""
        with self._root() as root:
            node = None if root is None else _descend(root, path)
            try:
                yield None if node is None else Entry(path, node.fd, node.info)
            finally:
                if node is not None and node is not root:
                    node.close()

    def lookup(self, path: str) -> Meta | None:
        with self.open(path) as entry:
            return None if entry is None else Meta.of(entry.info)

    def children(self, path: str) -> list[str]:
        """The names in the directory ``path`` (none if it is not one), sorted."""
        with self._root() as root:
            node = None if root is None else _descend(root, path)
            if node is None:
                return []
            try:
                names = set()
                for directory in node.directories:
                    names.update(os.listdir(directory))
                return sorted(name for name in names if _visible(node.directories, name))
            finally:
                if node is not root:
                    node.close()

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
            with self.open(candidate) as entry:
                if entry is None:
                    raise FileNotFoundError(errno.ENOENT, "no such file or directory", candidate)
                is_link = stat.S_ISLNK(entry.info.st_mode)
                if is_link and (parts or follow_last):
                    target = read_link(entry.fd)
                elif parts and not stat.S_ISDIR(entry.info.st_mode):
                    raise FileNotFoundError(errno.ENOTDIR, "not a directory", candidate)
                else:
                    resolved.append(component)
                    continue
            links += 1
            if links > 40:
                raise FileNotFoundError(errno.ELOOP, "too many levels of symbolic links", candidate)
            if target.startswith("/"):
                resolved = []
            parts = [c for c in target.split("/") if c not in ("", ".")] + parts
        return "/" + "/".join(resolved)

    def walk(self, path: str = "/", warnings: WalkWarnings | None = None) -> Iterator[Entry]:
        """Every entry at and below ``path``, each directory before its contents, the
        names of a directory sorted. An entry that vanishes before it is opened is skipped
        and noted in ``warnings``."""
        warnings = warnings if warnings is not None else WalkWarnings()
        with self._root() as root:
            node = None if root is None else _descend(root, path)
            if node is None:
                return
            try:
                yield Entry(path, node.fd, node.info)
                yield from _walk_merged(path, node.directories, warnings)
            finally:
                if node is not root:
                    node.close()


def _descend(root: _Node, path: str) -> _Node | None:
    """The node at ``path`` below ``root`` (``root`` itself for ``/``; the caller closes any
    other), or None."""
    node = root
    for component in [c for c in path.split("/") if c]:
        child = _child(node.directories, component) if stat.S_ISDIR(node.info.st_mode) else None
        if node is not root:
            node.close()
        if child is None:
            return None
        node = child
    return node


def _visible(directories: list[int], name: str) -> bool:
    """Whether the topmost entry of ``name`` is there and not a whiteout."""
    for directory in directories:
        try:
            info = os.stat(name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            continue
        return not is_whiteout(info)
    return False


def _walk_merged(path: str, directories: list[int], warnings: WalkWarnings) -> Iterator[Entry]:
    names: set[str] = set()
    for directory in directories:
        names.update(os.listdir(directory))
    for name in sorted(names):
        child_path = _join(path, name)
        node = _child(directories, name)
        if node is None:
            if not _present(directories, name):  # not a whiteout: it was there a moment ago
                warnings.note(child_path, _VANISHED)
            continue
        try:
            yield Entry(child_path, node.fd, node.info)
            yield from _walk_merged(child_path, node.directories, warnings)
        finally:
            node.close()


def walk_upper(upper: str, warnings: WalkWarnings | None = None) -> Iterator[UpperEntry]:
    """The upper dir's entries for :func:`compute_diff` (directories first, sorted)."""
    for entry in _walk(upper, warnings if warnings is not None else WalkWarnings()):
        if is_whiteout(entry.info):
            yield UpperEntry(entry.path, None)
        elif stat.S_ISDIR(entry.info.st_mode):
            listing = open_listing(entry.fd)
            try:
                yield UpperEntry(entry.path, Meta.of(entry.info), _is_opaque(listing))
            finally:
                os.close(listing)
        else:
            yield UpperEntry(entry.path, Meta.of(entry.info))


def _walk(root: str, warnings: WalkWarnings) -> Iterator[Entry]:
    """Every entry below the directory ``root`` (not itself), sorted, directories first."""
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        yield from _walk_directory(root_fd, "/", warnings)
    finally:
        os.close(root_fd)


def _walk_directory(listing_fd: int, path: str, warnings: WalkWarnings) -> Iterator[Entry]:
    for name in sorted(os.listdir(listing_fd)):
        child = _join(path, name)
        fd = open_entry(listing_fd, name)
        if fd is None:
            warnings.note(child, _VANISHED)
            continue
        try:
            info = os.fstat(fd)
            yield Entry(child, fd, info)
            if stat.S_ISDIR(info.st_mode):
                listing = open_listing(fd)
                try:
                    yield from _walk_directory(listing, child, warnings)
                finally:
                    os.close(listing)
        finally:
            os.close(fd)


def container_diff(upper: str, lower_layers: Iterable[str],
                   warnings: WalkWarnings | None = None) -> list[tuple[str, str]]:
    """``docker diff`` of a container from its upper dir and its image's layers (top first)."""
    view = LayerView(lower_layers)
    return compute_diff(walk_upper(upper, warnings), view.lookup, view.children)


# --- tar writers ----------------------------------------------------------------------------


class _TarWriter:
    """Adds filesystem entries to a PAX tar: numeric owners, xattrs, ns mtimes, hard links."""

    def __init__(self, output: BinaryIO, owner: tuple[int, int] | None = None,
                 warnings: WalkWarnings | None = None):
        self.tar = tarfile.open(fileobj=output, mode="w|", format=tarfile.PAX_FORMAT)
        self._owner = owner
        self._inodes: dict[tuple[int, int], str] = {}
        self._warnings = warnings if warnings is not None else WalkWarnings()
        self.skipped_sockets = 0

    def add(self, name: str, entry: Entry, *, xattrs: dict[str, bytes] | None = None) -> None:
        info = entry.info
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


def write_layer(upper: str, output: BinaryIO, warnings: WalkWarnings | None = None) -> None:
    """Write the upper dir ``upper`` as an image layer tar (see the module docstring).

    Raises:
        ImageError: the upper dir uses an overlay feature a layer cannot express.
    """
    warnings = warnings if warnings is not None else WalkWarnings()
    writer = _TarWriter(output, warnings=warnings)
    for entry in _walk(upper, warnings):
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
               owner: tuple[int, int] | None = None, warnings: WalkWarnings | None = None) -> None:
    """Write the merged view below ``path`` as a plain tar (``export``, ``cp`` out):
    no whiteouts, each entry from the layer where it is visible. Members are named
    relative to ``path``, under ``prefix`` (``"name"`` for ``cp``); ``owner`` replaces
    every entry's uid and gid."""
    warnings = warnings if warnings is not None else WalkWarnings()
    writer = _TarWriter(output, owner, warnings)
    base = path.rstrip("/")
    for entry in view.walk(path, warnings):
        relative = entry.path[len(base) :].lstrip("/")
        name = "/".join(part for part in (prefix, relative) if part)
        if not name:
            continue  # the root itself: export writes no "." entry, as docker
        writer.add(name, entry, xattrs=entry_xattrs(entry.fd))
    writer.close()
