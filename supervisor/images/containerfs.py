"""A container's filesystem seen from the host: ``export``, and ``cp`` in both directions.

Reading (``export``, ``cp CONTAINER:SRC``) never mounts anything: the merged view of the
container's upper dir over its image's layers is read in user space
(:class:`~supervisor.images.layerview.LayerView`), the same way for running and stopped
containers, by fd-relative walks that a running container cannot redirect by renaming its
files ("Walking a live container's files" in :mod:`supervisor.images.fdwalk`). Symlinks in
a container path resolve inside the container's root, never towards the host.

Writing (``cp SRC CONTAINER:DEST``) goes where the container will see it:

- running: into the container's own mount of its root, ``/proc/<pid>/root``. The target
  directory is opened with ``openat2(RESOLVE_IN_ROOT)``, so the kernel resolves every
  symlink and ``..`` inside the container's root; the tar is then unpacked relative to
  that fd by :mod:`supervisor.images.tarsafe`, which never follows a link.
- stopped: into its upper dir. The target's ancestors are first copied up (made in the
  upper dir with the lower directory's owner, mode, xattrs and mtime, as overlayfs would),
  walked one component at a time from the upper dir's fd without following a link
  (:func:`~supervisor.images.fdwalk.open_directory`, the extractor's own walk), and a
  whiteout that the copy replaces by a directory makes that directory opaque, so what was
  deleted does not come back.

A target that changes between its look-up and the copy is a ``conflict`` error that says
so, never an internal one.

Files copied in are owned by root (0:0), as ``docker cp`` without ``-a``: the container's
root, the mapped uid on the host, under ``--userns-remap`` (the ids are translated both
ways then: ``owners``/``to_host``).
"""

from __future__ import annotations

import ctypes
import os
import posixpath
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from supervisor.errors import Conflict, InvalidArgument, NotFound
from supervisor.images.fdwalk import UnsafeMember, WalkWarnings, descend, entry_xattrs, open_directory
from supervisor.images.layerview import LayerView
from supervisor.images.tarsafe import extract
from supervisor.images.tarwrite import Owners, write_tree
from supervisor.images.whiteouts import OPAQUE_XATTR, is_whiteout

_SYS_OPENAT2 = 437  # the same number on x86_64 and arm64
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_in_root(root_fd: int, path: str, flags: int) -> int:
    """openat2(root_fd, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)."""
    libc = ctypes.CDLL(None, use_errno=True)
    how = _OpenHow(flags | os.O_CLOEXEC, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(_SYS_OPENAT2, root_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(fd)


def export(upper: str, layers: Iterable[str], output: BinaryIO, warnings: WalkWarnings | None = None,
           owners: Owners | None = None) -> None:
    """The container's whole filesystem as a tar (``docker export``); what changed while it
    was read goes to ``warnings``; ``owners`` gives a remapped container's files the ids its
    processes see (``tarwrite.write_layer``)."""
    write_tree(LayerView([upper, *layers]), "/", output, warnings=warnings, owners=owners)


def copy_out(container: str, upper: str, layers: Iterable[str], source: str, output: BinaryIO,
             warnings: WalkWarnings | None = None, top: str = "", owners: Owners | None = None) -> str:
    """A tar of ``source`` in the container, its members under the source's base name
    (``top`` instead, when ``source`` is ``/`` of a volume's view); what changed while it was
    read goes to ``warnings``.

    Returns:
        That base name (``rootfs`` for ``/``).

    Raises:
        NotFound: the path does not exist in the container.
    """
    view = LayerView([upper, *layers])
    try:
        resolved = view.resolve(source)
    except FileNotFoundError:
        resolved = None
    if resolved is None or view.lookup(resolved) is None:
        raise NotFound(f"cannot copy from container {container}: no such file or directory: {source}",
                       container=container, path=source)
    name = posixpath.basename(resolved.rstrip("/")) or top or "rootfs"
    if source.endswith("/.") or source == ".":
        name = ""
    write_tree(view, resolved, output, prefix=name, warnings=warnings, owners=owners)
    return name


def copy_in(container: str, upper: str, layers: Iterable[str], pid: int, source: Path, dest: str,
            scratch: Path, warnings: WalkWarnings | None = None, to_host: Owners | None = None) -> str:
    """Copy the host path ``source`` to ``dest`` in the container (``docker cp`` rules:
    into ``dest`` if it is a directory, else as ``dest``).

    Args:
        pid: the container's pid 1 while it runs, else 0.
        scratch: a directory of the daemon's for the intermediate tar.
        warnings: receives what changed in ``source`` while it was read.
        to_host: a remapped container's ids to the host's (``IdMapping.to_host``): the copy
            belongs to its root, the directories copied up keep their owners as it sees them.

    Returns:
        The container path written.
    """
    where = f"cannot copy to container {container}"
    if not source.exists() and not source.is_symlink():
        raise InvalidArgument(f"{where}: no such file or directory on the host: {source}", path=str(source))
    if not dest.startswith("/"):
        dest = "/" + dest
    view = LayerView([upper, *layers])
    try:
        target = view.resolve(dest, follow_last=True)
        meta = view.lookup(target)
    except FileNotFoundError:
        meta = None
    if meta is not None and meta.kind == "dir":
        directory, name = target, source.name
    else:
        if dest.endswith("/"):
            raise InvalidArgument(f"{where}: {dest} is not a directory", path=dest)
        if meta is not None and source.is_dir() and not source.is_symlink():
            raise InvalidArgument(f"{where}: cannot overwrite the file {dest} with a directory", path=dest)
        parent, name = posixpath.split(dest.rstrip("/"))
        try:
            directory = view.resolve(parent or "/", follow_last=True)
        except FileNotFoundError:
            directory = None
        if directory is None or (view.lookup(directory) or _NONE).kind != "dir":
            raise InvalidArgument(f"{where}: {parent or '/'} is not a directory in the container", path=dest)
    if not name or name in (".", ".."):
        raise InvalidArgument(f"{where}: cannot name the copy {name!r}", path=dest)
    with tempfile.TemporaryFile(dir=scratch) as archive:
        root = to_host(0, 0) if to_host else (0, 0)
        write_tree(LayerView([str(source.parent)]), "/" + source.name, archive, prefix=name, owner=root,
                   warnings=warnings)
        archive.seek(0)
        if pid:
            _extract_running(container, pid, directory, archive)
        else:
            _extract_stopped(container, view, upper, directory, name, source.is_dir() and not source.is_symlink(),
                             archive, to_host)
    return posixpath.join(directory, name)


def _same(uid: int, gid: int) -> tuple[int, int]:
    return uid, gid


class _Meta:
    kind = ""


_NONE = _Meta()


def _extract_running(container: str, pid: int, directory: str, archive: BinaryIO) -> None:
    root_fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = open_in_root(root_fd, directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:  # the container changed it since it was looked up
        raise Conflict(f"cannot copy to container {container}: {directory} changed while it was copied to "
                       f"({exc.strerror})", container=container, path=directory) from None
    finally:
        os.close(root_fd)
    try:
        extract(archive, fd)
    finally:
        os.close(fd)


def _extract_stopped(container: str, view: LayerView, upper: str, directory: str, name: str, is_dir: bool,
                     archive: BinaryIO, to_host: Owners | None = None) -> None:
    directory_fd = _copy_up(container, view, upper, directory, to_host)
    try:
        try:
            existing = os.stat(name, dir_fd=directory_fd, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None and is_whiteout(existing) and is_dir:
            # The directory was deleted: its old contents must stay hidden.
            os.unlink(name, dir_fd=directory_fd)
            os.mkdir(name, 0o755, dir_fd=directory_fd)
            fd = open_directory(directory_fd, [name])
            try:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
        extract(archive, directory_fd)
    finally:
        os.close(directory_fd)


def _copy_up(container: str, view: LayerView, upper: str, directory: str, to_host: Owners | None = None) -> int:
    """An fd of ``directory`` in the upper dir, it and its ancestors made real directories
    there first, each with the metadata of the merged view's (what overlayfs' copy-up does).
    Walked one component at a time from the upper dir's fd, never through a symlink."""
    components = [c for c in directory.split("/") if c]

    def step(fd: int, depth: int, component: str) -> int:
        path = "/" + "/".join(components[:depth])
        try:
            return open_directory(fd, [component])
        except FileNotFoundError:
            return _copy_up_directory(container, view, fd, component, path, to_host)
        except UnsafeMember as exc:
            raise Conflict(f"cannot copy to container {container}: {path} changed while it was copied to "
                           f"({exc} in its upper dir)", container=container, path=path) from None

    upper_fd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return descend(upper_fd, components, step)
    finally:
        os.close(upper_fd)


def _copy_up_directory(container: str, view: LayerView, parent_fd: int, name: str, path: str,
                       to_host: Owners | None = None) -> int:
    with view.open(path) as lower:
        if lower is None or not stat.S_ISDIR(lower.info.st_mode):
            raise Conflict(f"cannot copy to container {container}: {path} changed while it was copied to "
                           "(no longer a directory)", container=container, path=path)
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        fd = open_directory(parent_fd, [name])
        try:
            # From an image layer (the upper dir has no such directory): the image's ids.
            os.fchown(fd, *(to_host or _same)(lower.info.st_uid, lower.info.st_gid))
            os.fchmod(fd, stat.S_IMODE(lower.info.st_mode))
            for xattr, value in entry_xattrs(lower.fd).items():
                os.setxattr(fd, xattr, value)
            os.utime(fd, ns=(lower.info.st_atime_ns, lower.info.st_mtime_ns))
        except BaseException:
            os.close(fd)
            raise
        return fd
