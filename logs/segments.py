"""The log store's directory: where a container's log lives, how its segments and their
indexes are named and listed, and how a store file is opened (never through a symlink,
only a regular file).

Apart from the writer (:mod:`logs.writer`) and the reader (:mod:`logs.reader`) because both
need exactly the same names and the same refusal of anything but a regular file, and
neither should import the other: the collector writes, the daemon reads.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from logs.errors import CorruptLog
from logs.format import SEGMENT_HEADER

#: The store's directory under the daemon's state root: <root>/logs/<container id>/.
LOGS_DIR = "logs"
SEGMENT_NAME = re.compile(r"^(\d{8})\.log\Z")
HEADER_END = SEGMENT_HEADER.size


def container_directory(root: Path, container_id: str) -> Path:
    """Where one container's log lives (the id is checked: it names a directory)."""
    if not re.fullmatch(r"[0-9a-f]{64}", container_id):
        raise ValueError(f"not a container id: {container_id!r}")
    return Path(root) / LOGS_DIR / container_id


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"{number:08d}.log"


def index_path(directory: Path, number: int) -> Path:
    return directory / f"{number:08d}.idx"


def list_segments(directory: Path) -> list[int]:
    """The segment numbers in ``directory``, oldest first (nothing if it does not exist)."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(m.group(1)) for m in map(SEGMENT_NAME.match, names) if m and int(m.group(1)) > 0)


def open_store_file(path: Path, flags: int) -> int:
    """Open a store file without following a symlink; refuse anything but a regular file."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: a symlink
            raise CorruptLog(str(path), 0, "a symbolic link, not a segment") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CorruptLog(str(path), 0, "not a regular file")
    return fd


def read_all(fd: int) -> bytes:
    """The whole of an open store file (an index)."""
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""
