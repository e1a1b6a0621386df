"""One stream's unacknowledged log records, sans-IO: :class:`StreamBuffer`.

Apart from :mod:`supervisor.logbuffer` (which cuts, numbers, publishes and waits) because
it is the bookkeeping alone, with no trio and no bus: which records are held until the log
collector acknowledges them, which were evicted (non-blocking mode) and, when the collector
asks for a range it no longer holds, exactly how many lines and bytes were lost. So every
count a user sees in ``inspect`` and ``container.<id>.logs-dropped`` is tested without I/O.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

from logs.format import Record
from logs.store import count_lines

#: A replay answer carries about this much (a bus frame may hold 8 MiB).
REPLAY_BYTES = 4 << 20
#: Evicted records remembered one by one (for exact counts) before they are lumped together.
EVICTED_TRACKED = 100_000


class StreamBuffer:
    """One stream's unacknowledged records, sans-IO. Seqs are gap-free from 1."""

    def __init__(self, last: int = 0):
        self.last = last  # the last seq given out
        self.acked = last  # the collector stored everything up to here
        self.records: deque[Record] = deque()  # seqs contiguous, ending at self.last
        self.bytes = 0
        # Evicted and not yet acknowledged: (seq, lines, bytes), oldest first, contiguous,
        # ending just before records[0]; beyond EVICTED_TRACKED the oldest are lumped into
        # self._lumped = [first seq, last seq, lines, bytes].
        self.evicted: deque[tuple[int, int, int]] = deque()
        self._lumped: list[int] | None = None

    def append(self, record: Record) -> None:
        self.records.append(record)
        self.bytes += len(record.payload)

    def first_buffered(self) -> int:
        return self.records[0].seq if self.records else self.last + 1

    def ack(self, seq: int) -> int:
        """The collector stored through ``seq``; returns the bytes freed."""
        seq = min(seq, self.last)
        if seq <= self.acked:
            return 0
        self.acked = seq
        freed = 0
        records = self.records
        while records and records[0].seq <= seq:
            freed += len(records.popleft().payload)
        self.bytes -= freed
        while self.evicted and self.evicted[0][0] <= seq:
            self.evicted.popleft()
        if self._lumped is not None and self._lumped[1] <= seq:
            self._lumped = None
        return freed

    def evict_oldest(self) -> int:
        """Drop the oldest buffered record (non-blocking mode); returns its size."""
        record = self.records.popleft()
        size = len(record.payload)
        self.bytes -= size
        if len(self.evicted) >= EVICTED_TRACKED:
            seq, lines, count = self.evicted.popleft()
            if self._lumped is None:
                self._lumped = [seq, seq, lines, count]
            else:
                self._lumped[1:] = [seq, self._lumped[2] + lines, self._lumped[3] + count]
        self.evicted.append((record.seq, count_lines(record), size))
        return size

    def replay(self, start: int, max_bytes: int = REPLAY_BYTES) -> tuple[list[Record], tuple[int, int, int, int] | None]:
        """Records from seq ``start`` on (about ``max_bytes``, at least one), and the range
        before them that is gone, as (first, last, lines, bytes), or None.

        The lost range is settled: it is treated as acknowledged from now on.
        """
        start = max(start, 1)
        first = self.first_buffered()
        lost = None
        if start < first:
            lines = size = 0
            if self._lumped is not None and self._lumped[1] >= start:
                lines, size = self._lumped[2], self._lumped[3]  # lumped: counted whole
            for seq, seq_lines, seq_bytes in self.evicted:
                if seq >= start:
                    lines += seq_lines
                    size += seq_bytes
            lost = (start, first - 1, lines, size)
            self.evicted.clear()
            self._lumped = None
            self.acked = max(self.acked, first - 1)
            start = first
        out: list[Record] = []
        total = 0
        if self.records and start <= self.last:
            for record in islice(self.records, start - first, None):
                out.append(record)
                total += len(record.payload)
                if total >= max_bytes:
                    break
        return out, lost
