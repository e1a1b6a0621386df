"""Walking a directory tree that someone else may be changing, through directory
descriptors only, never following a symlink: the primitives the safe tar extractor writes
with (:mod:`~supervisor.images.tarsafe`) and the readers of a live container's files (the
merged view of :mod:`~supervisor.images.layerview`, ``diff`` in
:mod:`~supervisor.images.changes`, the tar writers of :mod:`~supervisor.images.tarwrite`,
``cp`` in :mod:`~supervisor.images.containerfs`) walk with.

They are apart so that the one property all of those rely on (a name is only ever looked
up in a directory already held as an fd, one component at a time, and never followed) is
written, and can be checked, in one place (issue 25).

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
   ``O_PATH | O_NOFOLLOW`` (:func:`open_entry`): that pins the inode
   that is at the name at that instant, a symlink included;
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from supervisor.images.whiteouts import OVERLAY_XATTR_PREFIX

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_IMPLIED_DIRECTORY_MODE = 0o755
_ENTRY_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeMember(Exception):
    """A path that must not be walked or written (a component is a symbolic link or not a
    directory), or a tar member that must not be extracted; the message says why."""


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
    def step(fd: int, depth: int, component: str) -> int:
        try:
            return _open_component(fd, component, create)
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            prefix = "/".join(parts[:depth])
            mode = os.stat(component, dir_fd=fd, follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                raise UnsafeMember(f"{what}{prefix!r} is a symbolic link") from None
            raise UnsafeMember(f"{what}{prefix!r} is not a directory") from None

    return descend(root_fd, parts, step)


def descend(start_fd: int, parts: Sequence[str], step: Callable[[int, int, str], int]) -> int:
    """Hand over hand from ``start_fd`` down ``parts``: ``step(fd, depth, component)`` opens
    the next directory relative to ``fd`` (one component, never followed) and returns its fd;
    each fd is closed once the next one is held, and the one held when ``step`` raises. The
    caller keeps ``start_fd``; the fd returned (a dup of it for no parts) is the caller's."""
    fd = os.dup(start_fd)
    try:
        for depth, component in enumerate(parts, start=1):
            next_fd = step(fd, depth, component)
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_component(fd: int, component: str, create: bool) -> int:
    try:
        return os.open(component, DIRECTORY_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(component, _IMPLIED_DIRECTORY_MODE, dir_fd=fd)
    except FileExistsError:  # made meanwhile (a running container): open what is there
        return os.open(component, DIRECTORY_FLAGS, dir_fd=fd)
    next_fd = os.open(component, DIRECTORY_FLAGS, dir_fd=fd)
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
    return os.open(".", DIRECTORY_FLAGS, dir_fd=entry_fd)


def read_link(entry_fd: int) -> str:
    """The target of the symlink an ``O_PATH`` fd pins (``readlinkat`` with an empty name)."""
    return os.readlink("", dir_fd=entry_fd)


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


VANISHED = "vanished while it was read: skipped"


@dataclass(frozen=True)
class Entry:
    """One entry met by a walk, pinned (see "Walking a live container's files").

    Attributes:
        path: absolute in the container ("/etc/hosts").
        fd: an ``O_PATH`` fd of the inode that was at the name when the walk opened it,
            never followed; valid until the walk moves on. Read it with
            :func:`open_contents`, :func:`open_listing`, :func:`read_link` and
            :func:`entry_xattrs`.
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


def walk_tree(root: str, warnings: WalkWarnings) -> Iterator[Entry]:
    """Every entry below the directory ``root`` (not itself), sorted, directories first."""
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        yield from walk_directory(root_fd, "/", warnings)
    finally:
        os.close(root_fd)


def walk_directory(listing_fd: int, path: str, warnings: WalkWarnings) -> Iterator[Entry]:
    """Every entry below the directory ``listing_fd`` (named ``path``), as :func:`walk_tree`."""
    for name in sorted(os.listdir(listing_fd)):
        child = join(path, name)
        fd = open_entry(listing_fd, name)
        if fd is None:
            warnings.note(child, VANISHED)
            continue
        try:
            info = os.fstat(fd)
            yield Entry(child, fd, info)
            if stat.S_ISDIR(info.st_mode):
                listing = open_listing(fd)
                try:
                    yield from walk_directory(listing, child, warnings)
                finally:
                    os.close(listing)
        finally:
            os.close(fd)


def join(directory: str, name: str) -> str:
    """The path of ``name`` in the directory ``directory`` (``/`` included)."""
    return f"{directory.rstrip('/')}/{name}"
