"""Writing a container's log: :class:`LogWriter`, used by one process only, the log
collector (:mod:`workers.logcollector`).

It appends records, rotates segments at ``max_size`` keeping ``max_file`` of them (a
segment is larger than ``max_size`` only when it holds one record, bigger than the limit:
records are never split), and, when it opens a log, recovers from a crash (a torn last
record is cut off, each stream's last seq is found from the last segment's header and
index). Apart from the reader (:mod:`logs.reader`) because only the collector writes, and
:meth:`LogWriter.append` is the collector's hot loop (docs/logs.md "The data path and what
it costs"): nothing here runs per record but what that loop needs.

Durability (docs/logs.md): records are written with ``writev`` (page cache) and the collector
acknowledges them to the supervisor once written, so a killed collector loses nothing; the
writer fsyncs a segment when it rotates and when :meth:`LogWriter.sync` is called (the
collector calls it about once a second), so a machine crash loses at most about a second.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from logs.atomic import write_atomic
from logs.errors import CorruptLog
from logs.format import INDEX_ENTRY, INDEX_INTERVAL, STDERR, STDOUT, Incomplete, IndexEntry
from logs.format import Record, SegmentHeader, VERSION, parse_index, parse_record, record_header
from logs.segments import HEADER_END, index_path, list_segments, open_store_file, read_all, segment_path

#: iovecs per writev (Linux allows 1024).
WRITEV_BATCH = 512


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
        fd = open_store_file(path, os.O_RDWR)
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
        index_fd = open_store_file(index_path(self.directory, number), os.O_RDWR | os.O_CREAT)
        entries = parse_index(read_all(index_fd), size)
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


def fsync_quietly(fds: list[int]) -> None:
    """fsync each of ``fds`` (what :meth:`LogWriter.take_dirty` gave, run in a thread by the
    periodic sync of the collector and of an embedded Supervisor); an fd that a rotation
    closed meanwhile was synced by that rotation."""
    for fd in fds:
        try:
            os.fsync(fd)
        except OSError:
            pass
