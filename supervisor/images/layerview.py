"""The merged view of overlay layer directories, read without mounting: what ``export``,
``cp`` (both ways) and ``diff`` see of a container's files.

Apart from :mod:`~supervisor.images.changes` (which computes ``diff`` from it) and
:mod:`~supervisor.images.tarwrite` (which writes it as a tar) because it is the one place
that knows overlayfs' merge rules: the topmost entry of a name wins, a whiteout (see
:mod:`~supervisor.images.whiteouts`) hides the layers below, a directory merges with the
directories of the same name below it down to the first opaque one. Every name is looked
up with :mod:`~supervisor.images.fdwalk`'s primitives, so a layer that changes meanwhile (a
running container's upper dir) is read as it is at each instant, never through a symlink
towards the host (see "Walking a live container's files" there).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from supervisor.images.fdwalk import VANISHED, Entry, WalkWarnings, join, open_entry, open_listing, read_link
from supervisor.images.whiteouts import OPAQUE_XATTR, is_whiteout


@dataclass(frozen=True)
class Meta:
    """What :meth:`LayerView.lookup` tells of an entry, and ``diff`` compares of a directory
    present above and below."""

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


def is_opaque(listing_fd: int) -> bool:
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
            if is_opaque(winner.directories[-1]):
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
        child_path = join(path, name)
        node = _child(directories, name)
        if node is None:
            if not _present(directories, name):  # not a whiteout: it was there a moment ago
                warnings.note(child_path, VANISHED)
            continue
        try:
            yield Entry(child_path, node.fd, node.info)
            yield from _walk_merged(child_path, node.directories, warnings)
        finally:
            node.close()
