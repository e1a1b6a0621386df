"""Atomic file writes: a reader sees the old file or the new one, whole, never a torn one.

The one implementation of "write a temporary file beside the target, rename it over the
target" for the whole of dockyard (container records, the image and registry layouts, the
auth file, network leases and /etc files, exported tars, log segment headers). It lives
in ``logs/`` because ``logs`` is the lowest package that writes files: the log store
needs it, and ``logs`` may not import ``supervisor``, while ``supervisor`` may import
``logs``. It imports the standard library only (the CLI imports it too).

``durable`` says whether the write must survive a power loss as well as a crash of the
process: True fsyncs the file before the rename and the directory after it; False leaves
both to the page cache (for files whose loss on a power cut does not matter, or that a
later sync covers, and where an fsync would flush far more than the file: ext4 commits
its whole journal).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: str | os.PathLike[str], data: bytes, *, durable: bool, mode: int) -> None:
    """Replace ``path`` with a file holding ``data`` and permissions exactly ``mode``.

    Args:
        path: the file to write; its directory must exist.
        data: the whole content.
        durable: fsync the file and its directory (see the module docstring).
        mode: the file's permission bits, whatever the umask.

    Raises:
        OSError: the write failed; ``path`` is as it was and no temporary file is left.
    """
    with atomic_file(path, durable=durable, mode=mode) as stream:
        stream.write(data)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, durable: bool, mode: int) -> Iterator[BinaryIO]:
    """A binary file to write that replaces ``path`` when the block ends without an error
    (for content streamed in parts, such as a tar). On an error, or if the block raises,
    the temporary file is removed and ``path`` is left as it was.

    Raises:
        OSError: with ``filename`` ``path`` itself when ``path`` cannot be created or replaced
            (its directory is missing or not writable, or it is a directory); an error of the
            content written (a source that vanished, say) passes through as it is.

    The temporary file is ``.<name>.<random>.tmp`` beside ``path`` (the same filesystem,
    so the rename is atomic), created exclusively and without following a link.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
    try:
        with open(fd, "wb") as stream:
            os.fchmod(fd, mode)  # os.open applied the umask
            yield stream
            stream.flush()
            if durable:
                os.fsync(fd)
        try:
            os.replace(temporary, path)
        except OSError as exc:
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durable:
        fsync_directory(path.parent)


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so that the names created, renamed or removed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
