"""A tar member's metadata, set on what :mod:`~supervisor.images.tarsafe` created: the numeric
owner (as root), the mode with its setuid/setgid/sticky bits (after ``chown``, which clears
setuid), the ``SCHILY.xattr.*`` pax records (after ``chown``, which clears
``security.capability``), then the mtimes. Everything goes through an fd we hold, or names
one component below a directory fd with ``follow_symlinks=False``: never through a link.

An xattr in the ``trusted.overlay.`` namespace is never set (it would steer overlayfs, e.g.
``redirect``), and one the filesystem refuses (ENOTSUP, EPERM) is skipped, as docker does:
both are counted, the count returned to the extractor's report."""

from __future__ import annotations

import errno
import os
import tarfile
from collections.abc import Callable

from supervisor.images.whiteouts import OVERLAY_XATTR_PREFIX

XATTR_PREFIX = "SCHILY.xattr."


def apply(member: tarfile.TarInfo, fd: int, *, as_root: bool) -> int:
    """Set ``member``'s metadata on the open file or directory ``fd``; returns the xattrs skipped."""
    if as_root:
        os.fchown(fd, member.uid, member.gid)
    os.fchmod(fd, member.mode & 0o7777)
    skipped = _set_xattrs(member, lambda name, value: os.setxattr(fd, name, value), (errno.ENOTSUP, errno.EPERM))
    os.utime(fd, ns=(nanoseconds(member.mtime),) * 2)
    return skipped


def apply_to_symlink(member: tarfile.TarInfo, parent_fd: int, name: str, *, as_root: bool) -> int:
    """Set the symlink ``name`` in ``parent_fd``'s metadata (no mode: a link has none); returns
    the xattrs skipped."""
    if as_root:
        os.chown(name, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)
    # os.setxattr has no dir_fd; /proc/self/fd/N is the directory we hold, and the last
    # component is not followed.
    path = f"/proc/self/fd/{parent_fd}/{name}"
    skipped = _set_xattrs(member, lambda xattr, value: os.setxattr(path, xattr, value, follow_symlinks=False),
                          (errno.ENOTSUP, errno.EPERM, errno.ENOENT))
    os.utime(name, ns=(nanoseconds(member.mtime),) * 2, dir_fd=parent_fd, follow_symlinks=False)
    return skipped


def xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    """The member's extended attributes, from its ``SCHILY.xattr.*`` pax records."""
    return [
        (key[len(XATTR_PREFIX) :], value.encode("utf-8", "surrogateescape"))
        for key, value in member.pax_headers.items()
        if key.startswith(XATTR_PREFIX)
    ]


def nanoseconds(mtime: float) -> int:
    return int(round(mtime * 1_000_000_000)) if isinstance(mtime, float) else int(mtime) * 1_000_000_000


def _set_xattrs(member: tarfile.TarInfo, setxattr: Callable[[str, bytes], None], tolerated: tuple[int, ...]) -> int:
    skipped = 0
    for name, value in xattrs(member):
        if name.startswith(OVERLAY_XATTR_PREFIX):
            skipped += 1
            continue
        try:
            setxattr(name, value)
        except OSError as exc:
            if exc.errno not in tolerated:
                raise
            skipped += 1
    return skipped
