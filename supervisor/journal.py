"""The event journal: the last N events on disk, for `dockyard events --since`.

Theory of operation
-------------------
Two append-only files, ``events.0`` (older) and ``events.1`` (current), each a sequence of
msgpack envelope maps. When the current file holds half the budget, it becomes the older one
(the previous older one is dropped) and a new current file starts: at least N/2 and at most N
events are kept, and no write ever rewrites an existing file. Writes are buffered and flushed
per event (no fsync per event: an event journal that survives a daemon crash but not a power
cut is the trade docker makes too; see docs/architecture.md).

The journal remembers only lifecycle events (the ``events`` channel: container., daemon.,
image. topics), never log lines, so its size does not depend on how chatty containers are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack


class Journal:
    def __init__(self, directory: Path, capacity: int = 10_000):
        if capacity < 2:
            raise ValueError("journal capacity must be at least 2")
        self.directory = directory
        self.half = capacity // 2
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._older = directory / "events.0"
        self._current = directory / "events.1"
        self._count, good_size = self._scan(self._current)
        self._file = open(self._current, "ab")
        if self._file.tell() > good_size:
            self._file.truncate(good_size)  # drop a record torn by a crash, so appends stay readable

    def last_seq(self) -> int:
        """The seq of the newest journaled event, 0 when the journal is empty."""
        last = 0
        for path in (self._older, self._current):
            for event in self._read(path):
                last = event.get("seq", last)
        return last

    def append(self, event: dict[str, Any]) -> None:
        if self._count >= self.half:
            self._rotate()
        self._file.write(msgpack.packb(event, use_bin_type=True))
        self._file.flush()
        self._count += 1

    def replay(self, since: float | None = None, until: float | None = None,
               after_seq: int | None = None) -> Iterator[dict[str, Any]]:
        """Journaled events with since <= ts <= until and seq > after_seq, oldest first."""
        self._file.flush()
        for path in (self._older, self._current):
            for event in self._read(path):
                if after_seq is not None and event.get("seq", 0) <= after_seq:
                    continue
                ts = event.get("ts", 0)
                if since is not None and ts < since:
                    continue
                if until is not None and ts > until:
                    return
                yield event

    def after(self, after_seq: int, last_seq: int) -> tuple[list[dict[str, Any]], int]:
        """A cursor's replay: the journaled events after ``after_seq``, and how many events
        after it (up to ``last_seq``, the newest published) the journal no longer holds."""
        events = list(self.replay(after_seq=after_seq))
        first = self.first_seq()
        oldest_kept = first if first else last_seq + 1
        return events, max(0, oldest_kept - after_seq - 1)

    def first_seq(self) -> int:
        """The seq of the oldest journaled event, 0 when the journal is empty: a replay
        after a seq below ``first_seq() - 1`` lost the events in between."""
        self._file.flush()
        for path in (self._older, self._current):
            for event in self._read(path):
                return int(event.get("seq", 0))
        return 0

    def close(self) -> None:
        self._file.close()

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self._current, self._older)
        self._file = open(self._current, "ab")
        self._count = 0

    @staticmethod
    def _scan(path: Path) -> tuple[int, int]:
        """How many whole records the file holds, and where the last one ends."""
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            return 0, 0
        count = end = 0
        with handle:
            unpacker = msgpack.Unpacker(handle, raw=False, strict_map_key=True)
            try:
                for _ in unpacker:
                    count += 1
                    end = unpacker.tell()
            except (msgpack.UnpackException, ValueError):
                pass
        return count, end

    @staticmethod
    def _read(path: Path) -> Iterator[dict[str, Any]]:
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            return
        with handle:
            unpacker = msgpack.Unpacker(handle, raw=False, strict_map_key=True)
            try:
                for event in unpacker:
                    if isinstance(event, dict):
                        yield event
            except (msgpack.UnpackException, ValueError):
                return  # a torn last record after a crash: everything before it is good
