"""The log store: one directory per container of append-only segments with a sparse index
(the format is in :mod:`logs.format`).

:class:`LogWriter` is used by one process only, the log collector: it appends records, rotates
segments at ``max_size`` keeping ``max_file`` of them (a segment is larger than ``max_size`` only
when it holds one record, bigger than the limit: records are never split), and, when it opens a log, recovers from
a crash (a torn last record is cut off, each stream's last seq is found from the last segment's
header and index). :class:`LogReader` is used by anyone (the daemon answers ``logs.read`` with
it) while the writer writes: it never sees a record before the whole of it is there, and it
follows a rotation (a segment is final once the next one exists).

Durability (docs/logs.md): records are written with ``writev`` (page cache) and the collector
acknowledges them to the supervisor once written, so a killed collector loses nothing; the
writer fsyncs a segment when it rotates and when :meth:`LogWriter.sync` is called (the
collector calls it about once a second), so a machine crash loses at most about a second.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from logs.atomic import write_atomic
from logs.errors import CorruptLog
from logs.format import (
    DROPPED,
    INDEX_ENTRY,
    INDEX_INTERVAL,
    MAX_RECORD,
    PARTIAL,
    RECORD_HEADER,
    SEGMENT_HEADER,
    STDERR,
    STDOUT,
    Incomplete,
    IndexEntry,
    Record,
    SegmentHeader,
    VERSION,
    parse_index,
    parse_record,
    record_header,
)

#: The store's directory under the daemon's state root: <root>/logs/<container id>/.
LOGS_DIR = "logs"
SEGMENT_NAME = re.compile(r"^(\d{8})\.log\Z")
HEADER_END = SEGMENT_HEADER.size
#: iovecs per writev (Linux allows 1024).
WRITEV_BATCH = 512


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


def _open(path: Path, flags: int) -> int:
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


def count_lines(record: Record) -> int:
    """Lines that end in ``record``: its newlines, plus a stream's last line without one."""
    if record.flags & DROPPED:
        return 0
    payload = record.payload
    if not isinstance(payload, bytes):  # a view of the buffer it was read into (the supervisor's)
        payload = bytes(payload)
    lines = payload.count(b"\n")
    if not record.flags & PARTIAL and payload and not payload.endswith(b"\n"):
        lines += 1
    return lines


# --- writing ---------------------------------------------------------------------------------


class LogWriter:
    """Appends one container's records. Not thread-safe; one writer per directory."""

    def __init__(self, directory: Path, max_size: int, max_file: int):
        self.directory = Path(directory)
        self.max_size = max_size
        self.max_file = max_file
        self.last = {STDOUT: 0, STDERR: 0}  # last stored seq per stream
        self.max_ts = 0.0
        self.truncated = 0  # bytes of a torn tail cut off when the log was opened
        self.number = 0
        self.size = 0
        self._fd = -1
        self._index_fd = -1
        self._index_offset = 0  # offset of this segment's last index entry; 0: none yet
        self._dirty = False
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        numbers = list_segments(self.directory)
        if numbers:
            self._recover(numbers[-1])
        else:
            self._create(1)

    # recovery

    def _recover(self, number: int) -> None:
        path = segment_path(self.directory, number)
        fd = _open(path, os.O_RDWR)
        try:
            header = SegmentHeader.parse(os.pread(fd, HEADER_END, 0), str(path))
        except CorruptLog:
            os.close(fd)
            # Unusable: keep it for a reader's error message, carry on in a new segment. The
            # supervisor's replay then tells what it still has; the rest is reported lost.
            self.number = number
            self._create(number + 1)
            return
        size = os.fstat(fd).st_size
        index_fd = _open(index_path(self.directory, number), os.O_RDWR | os.O_CREAT)
        entries = parse_index(_read_all(index_fd), size)
        start = entries[-1] if entries else IndexEntry(HEADER_END, header.max_ts, header.last_stdout, header.last_stderr)
        last = {STDOUT: start.last_stdout, STDERR: start.last_stderr}
        max_ts = start.max_ts_before
        offset = start.offset
        data = os.pread(fd, size - offset, offset) if size > offset else b""
        position = 0
        while position < len(data):
            try:
                record = parse_record(data, position, str(path), offset, header.version)
            except (Incomplete, CorruptLog):
                break
            last[record.stream] = record.seq
            max_ts = max(max_ts, record.ts)
            position += record.size
        end = offset + position
        if end < size:
            os.ftruncate(fd, end)
            self.truncated = size - end
        entries = [e for e in entries if e.offset < end]
        os.ftruncate(index_fd, len(entries) * INDEX_ENTRY.size)
        if not entries and end > HEADER_END:  # the index was lost: its first entry is known
            first = IndexEntry(HEADER_END, header.max_ts, header.last_stdout, header.last_stderr)
            os.pwrite(index_fd, first.pack(), 0)
            entries = [first]
        os.lseek(fd, end, os.SEEK_SET)
        os.lseek(index_fd, 0, os.SEEK_END)
        self._fd, self._index_fd = fd, index_fd
        self.number, self.size, self.last, self.max_ts = number, end, last, max_ts
        self._index_offset = entries[-1].offset if entries else 0
        if header.version != VERSION:  # written by an older dockyard: new records go in a new segment
            self._rotate()

    def _create(self, number: int) -> None:
        """A new segment (header written to a temporary name, fsynced, renamed: a segment
        never exists without its whole header)."""
        path = segment_path(self.directory, number)
        index_fd = os.open(index_path(self.directory, number),
                           os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            write_atomic(path, SegmentHeader(self.last[STDOUT], self.last[STDERR], self.max_ts).pack(),
                         durable=True, mode=0o600)
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            os.lseek(fd, 0, os.SEEK_END)
        except BaseException:
            os.close(index_fd)
            raise
        self._fd, self._index_fd = fd, index_fd
        self.number, self.size, self._index_offset = number, HEADER_END, 0

    # appending

    def append(self, records: Iterable[Record]) -> int:
        """Write records in order (rotating as needed); returns the bytes written."""
        iov: list[bytes] = []
        pending = written = 0
        for record in records:
            size = record.size
            # What max-size promises (docs/logs.md): a record that would take the segment past
            # it starts a new segment. A record is never split, so the one segment larger than
            # max_size is one that holds a single record bigger than the whole limit.
            if self.size + size > self.max_size and self.size > HEADER_END:
                self._writev(iov)
                iov = []
                self._rotate()
            if not self._index_offset or self.size - self._index_offset >= INDEX_INTERVAL:
                entry = IndexEntry(self.size, self.max_ts, self.last[STDOUT], self.last[STDERR])
                os.write(self._index_fd, entry.pack())
                self._index_offset = self.size
            iov.append(record_header(record.ts, record.stream, record.seq, record.flags, record.payload))
            iov.append(record.payload)
            self.size += size
            written += size
            self.last[record.stream] = record.seq
            if record.ts > self.max_ts:
                self.max_ts = record.ts
            pending += 1
            if pending >= WRITEV_BATCH:
                self._writev(iov)
                iov, pending = [], 0
        self._writev(iov)
        return written

    def _writev(self, iov: list[bytes]) -> None:
        if not iov:
            return
        self._dirty = True
        while iov:
            done = os.writev(self._fd, iov)
            while iov and done >= len(iov[0]):
                done -= len(iov[0])
                iov.pop(0)
            if iov and done:
                iov[0] = iov[0][done:]

    def _rotate(self) -> None:
        os.fsync(self._fd)
        os.fsync(self._index_fd)
        os.close(self._fd)
        os.close(self._index_fd)
        self._fd = self._index_fd = -1
        self._dirty = False
        self._create(self.number + 1)
        for number in list_segments(self.directory):
            if number <= self.number - self.max_file:
                for path in (segment_path(self.directory, number), index_path(self.directory, number)):
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        pass

    def take_dirty(self) -> tuple[int, ...]:
        """The fds written to since the last call, for an fsync elsewhere (a thread)."""
        if not self._dirty or self._fd < 0:
            return ()
        self._dirty = False
        return (self._fd, self._index_fd)

    def sync(self) -> None:
        if self._dirty and self._fd >= 0:
            os.fsync(self._fd)
            os.fsync(self._index_fd)
            self._dirty = False

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                os.close(self._index_fd)
                self._fd = self._index_fd = -1


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


# --- reading ---------------------------------------------------------------------------------

#: A place in a log: (segment number, byte offset of a record in it).
Position = tuple[int, int]

MORE, END, UNTIL = "more", "end", "until"


@dataclass
class Page:
    records: list[Record]
    position: Position  # where the next read starts
    status: str  # MORE: stopped at max_bytes; END: read all there is; UNTIL: passed ``until``


class LogReader:
    """Queries one container's log while the collector may be appending to it."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def segments(self) -> list[int]:
        return list_segments(self.directory)

    def start(self) -> Position:
        numbers = self.segments()
        return (numbers[0] if numbers else 1, HEADER_END)

    def end(self) -> Position:
        numbers = self.segments()
        if not numbers:
            return (1, HEADER_END)
        number = numbers[-1]
        path = segment_path(self.directory, number)
        offset = self.index(number)[-1].offset
        fd = _open(path, os.O_RDONLY)
        try:
            for at, record in _records_in(fd, str(path), offset):
                offset = at + record.size
        finally:
            os.close(fd)
        return (number, offset)

    def last_seqs(self) -> dict[int, int]:
        """Each stream's last stored seq (0 for none), from the last segment's header, index
        and the records after its last index entry."""
        numbers = self.segments()
        if not numbers:
            return {STDOUT: 0, STDERR: 0}
        number = numbers[-1]
        entry = self.index(number)[-1]
        last = {STDOUT: entry.last_stdout, STDERR: entry.last_stderr}
        path = segment_path(self.directory, number)
        fd = _open(path, os.O_RDONLY)
        try:
            for _, record in _records_in(fd, str(path), entry.offset):
                last[record.stream] = record.seq
        finally:
            os.close(fd)
        return last

    def header(self, number: int) -> SegmentHeader:
        path = segment_path(self.directory, number)
        fd = _open(path, os.O_RDONLY)
        try:
            return SegmentHeader.parse(os.pread(fd, HEADER_END, 0), str(path))
        finally:
            os.close(fd)

    def index(self, number: int) -> list[IndexEntry]:
        """The segment's index, with at least the entry of its first record."""
        path = segment_path(self.directory, number)
        fd = _open(path, os.O_RDONLY)
        try:
            header = SegmentHeader.parse(os.pread(fd, HEADER_END, 0), str(path))
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        first = IndexEntry(HEADER_END, header.max_ts, header.last_stdout, header.last_stderr)
        try:
            index_fd = _open(index_path(self.directory, number), os.O_RDONLY)
        except (FileNotFoundError, CorruptLog):
            return [first]
        try:
            entries = parse_index(_read_all(index_fd), size)
        finally:
            os.close(index_fd)
        if not entries or entries[0].offset != HEADER_END:
            return [first]
        return entries

    def seek_time(self, since: float) -> Position:
        """A position at or before the first record with ts >= since (records before it are
        all older), found through the segment headers and the index."""
        numbers = self.segments()
        if not numbers:
            return (1, HEADER_END)
        chosen = numbers[0]
        for number in numbers:
            try:
                if self.header(number).max_ts < since:
                    chosen = number
                else:
                    break
            except CorruptLog:
                continue
        entries = self.index(chosen)
        low, high = 0, len(entries) - 1
        while low < high:  # the last entry with max_ts_before < since (max_ts_before never decreases)
            middle = (low + high + 1) // 2
            if entries[middle].max_ts_before < since:
                low = middle
            else:
                high = middle - 1
        return (chosen, entries[low].offset)

    def read(self, position: Position, max_bytes: int = 4 << 20, since: float | None = None,
             until: float | None = None, skip_lines: int = 0, stop: Position | None = None) -> Page:
        """Records from ``position`` on, about ``max_bytes`` of them (at least one), filtered
        by time; ``skip_lines`` drops the first lines of the first record (``--tail``);
        ``stop`` ends the read at that position (exclusive).

        Raises CorruptLog for a segment whose bytes are not records.
        """
        number, offset = position
        records: list[Record] = []
        budget = max_bytes
        while True:
            numbers = self.segments()
            if number not in numbers:
                later = [n for n in numbers if n > number]
                if not later:
                    return Page(records, (number, offset), END)
                number, offset = later[0], HEADER_END  # rotated away before we got to it
            path = segment_path(self.directory, number)
            fd = _open(path, os.O_RDONLY)
            try:
                SegmentHeader.parse(os.pread(fd, HEADER_END, 0), str(path))
                offset = max(offset, HEADER_END)
                while True:
                    progress = False
                    for at, record in _records_in(fd, str(path), offset, budget + RECORD_HEADER.size):
                        if stop is not None and (number, at) >= stop:
                            return Page(records, (number, at), UNTIL)
                        progress = True
                        offset = at + record.size
                        if since is not None and record.ts < since:
                            continue
                        if until is not None and record.ts > until:
                            return Page(records, (number, at), UNTIL)
                        if skip_lines:
                            record = _skip_lines(record, skip_lines)
                            skip_lines = 0
                        records.append(record)
                        budget -= record.size
                        if budget <= 0:
                            return Page(records, (number, offset), MORE)
                    # Every complete record is read. The segment is final once a later one
                    # exists (the writer closes a segment before it creates the next).
                    later = [n for n in self.segments() if n > number]
                    if not later:
                        return Page(records, (number, offset), END)
                    if os.fstat(fd).st_size > offset:
                        if progress:
                            continue  # written to just before the rotation: read the rest
                        raise CorruptLog(str(path), offset, "the segment ends inside a record")
                    break
            finally:
                os.close(fd)
            number, offset = later[0], HEADER_END

    def tail_position(self, lines: int, since: float | None = None, until: float | None = None) -> tuple[Position, int]:
        """Where the last ``lines`` lines (of the records in [since, until]) start: a position
        and how many lines of the record there to skip. Walks the index blocks from the end."""
        numbers = self.segments()
        if lines <= 0 or not numbers:
            return self.end(), 0
        needed = lines
        found_at: Position | None = None  # the answer, once the count is reached
        for number in reversed(numbers):
            path = segment_path(self.directory, number)
            entries = self.index(number)
            fd = _open(path, os.O_RDONLY)
            try:
                bounds = [entry.offset for entry in entries] + [os.fstat(fd).st_size]
                for block in range(len(entries) - 1, -1, -1):
                    found = []
                    for at, record in _records_in(fd, str(path), bounds[block], bounds[block + 1] - bounds[block]):
                        if at >= bounds[block + 1]:
                            break
                        if (since is None or record.ts >= since) and (until is None or record.ts <= until):
                            found.append((at, record))
                    for at, record in reversed(found):
                        if found_at is not None:
                            # The line found starts in the PARTIAL pieces before it, if any.
                            if not (record.flags & PARTIAL and record.stream == stream):
                                return found_at, 0
                            found_at = (number, at)
                            continue
                        count = count_lines(record)
                        if count > needed:
                            return (number, at), count - needed
                        needed -= count
                        if needed == 0:
                            found_at, stream = (number, at), record.stream
            finally:
                os.close(fd)
        if found_at is not None:
            return found_at, 0
        return self.start(), 0


def _records_in(fd: int, where: str, offset: int, chunk: int = 4 << 20):
    """(offset, record) of each complete record of an open segment from ``offset`` on; stops
    at the end of the file or at a record not yet wholly written. Raises CorruptLog."""
    version = SegmentHeader.parse(os.pread(fd, HEADER_END, 0), where).version
    size = os.fstat(fd).st_size
    while offset < size:
        data = os.pread(fd, min(size - offset, max(chunk, RECORD_HEADER.size + MAX_RECORD)), offset)
        position = 0
        while position < len(data):
            try:
                record = parse_record(data, position, where, offset, version)
            except Incomplete:
                break
            yield offset + position, record
            position += record.size
        if not position:
            return
        offset += position


def _skip_lines(record: Record, count: int) -> Record:
    payload = record.payload
    position = 0
    for _ in range(count):
        position = payload.find(b"\n", position) + 1
        if position == 0:
            position = len(payload)
            break
    return Record(record.ts, record.stream, record.seq, record.flags, payload[position:])
