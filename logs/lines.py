"""Split a byte stream into log lines, sans-IO.

Containers write arbitrary chunks; log events carry lines. A line longer than ``max_line``
is cut into pieces flagged ``partial`` (the last piece of the line is not), so a consumer can
join them back; the final bytes of a stream without a newline come out as a last,
newline-less line at :meth:`LineSplitter.flush`.
"""

from __future__ import annotations

MAX_LINE = 64 * 1024


class LineSplitter:
    __slots__ = ("_pending", "max_line")

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> list[tuple[bytes, bool]]:
        """Lines completed by ``chunk``, each as (bytes including its newline, partial)."""
        out: list[tuple[bytes, bool]] = []
        pending = self._pending
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            if pending:
                pending += chunk[start : end + 1]
                self._emit(bytes(pending), out)
                pending.clear()
            else:
                self._emit(chunk[start : end + 1], out)
            start = end + 1
        pending += chunk[start:]
        while len(pending) >= self.max_line:
            out.append((bytes(pending[: self.max_line]), True))
            del pending[: self.max_line]
        return out

    def flush(self) -> list[tuple[bytes, bool]]:
        if not self._pending:
            return []
        line = bytes(self._pending)
        self._pending.clear()
        return [(line, False)]

    def _emit(self, line: bytes, out: list[tuple[bytes, bool]]) -> None:
        limit = self.max_line
        if len(line) <= limit:
            out.append((line, False))
            return
        for offset in range(0, len(line), limit):
            piece = line[offset : offset + limit]
            out.append((piece, offset + limit < len(line)))
