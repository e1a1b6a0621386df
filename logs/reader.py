"""Reading a container's log: :class:`LogReader`, used by anyone (the daemon answers
``logs.read`` with it) while the collector writes.

It never sees a record before the whole of it is there, and it follows a rotation (a
segment is final once the next one exists). Apart from the writer (:mod:`logs.writer`)
because the reader runs in other processes than the writer and shares nothing with it but
the format (:mod:`logs.format`) and the directory's names (:mod:`logs.segments`); its
loops (:meth:`LogReader.read`, :func:`_records_in`) are the read side's hot path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from logs.errors import CorruptLog
from logs.format import DROPPED, MAX_RECORD, PARTIAL, RECORD_HEADER, STDERR, STDOUT
from logs.format import Incomplete, IndexEntry, Record, SegmentHeader, parse_index, parse_record
from logs.segments import HEADER_END, index_path, list_segments, open_store_file, read_all, segment_path

#: A place in a log: (segment number, byte offset of a record in it).
Position = tuple[int, int]

MORE, END, UNTIL = "more", "end", "until"


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
        fd = open_store_file(path, os.O_RDONLY)
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
        fd = open_store_file(path, os.O_RDONLY)
        try:
            for _, record in _records_in(fd, str(path), entry.offset):
                last[record.stream] = record.seq
        finally:
            os.close(fd)
        return last

    def header(self, number: int) -> SegmentHeader:
        path = segment_path(self.directory, number)
        fd = open_store_file(path, os.O_RDONLY)
        try:
            return SegmentHeader.parse(os.pread(fd, HEADER_END, 0), str(path))
        finally:
            os.close(fd)

    def index(self, number: int) -> list[IndexEntry]:
        """The segment's index, with at least the entry of its first record."""
        path = segment_path(self.directory, number)
        fd = open_store_file(path, os.O_RDONLY)
        try:
            header = SegmentHeader.parse(os.pread(fd, HEADER_END, 0), str(path))
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        first = IndexEntry(HEADER_END, header.max_ts, header.last_stdout, header.last_stderr)
        try:
            index_fd = open_store_file(index_path(self.directory, number), os.O_RDONLY)
        except (FileNotFoundError, CorruptLog):
            return [first]
        try:
            entries = parse_index(read_all(index_fd), size)
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
            fd = open_store_file(path, os.O_RDONLY)
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
            fd = open_store_file(path, os.O_RDONLY)
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
