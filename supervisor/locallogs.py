"""Containers' output stored by the Supervisor's own process: an embedded Supervisor's logs.

The daemon leaves its containers' logs to the log collector worker (workers/logcollector.py):
the collector stores what the bus carries and acknowledges it, and a container whose buffer
is full (blocking mode, 4 MiB) waits for those acknowledgements. An embedded Supervisor has no
bus and no collector, so by default (``Supervisor(log_store="local")``) it does the
collector's job itself: each record is written to the same store (logs/store.py,
``<root>/logs/<id>/``, rotated by the container's ``max-size`` and ``max-file``) as it is cut,
and acknowledged at once. Nothing then waits for anyone::

    pump ─▶ ContainerLog._add ─▶ publish (the event callback)
                              └▶ keep(log, record) ─▶ LogWriter.append ─▶ ack: buffer freed

With ``log_store="none"`` :func:`discard` is the keeper: records are acknowledged without
being stored (the event callback is their only reader).

Writes go to the page cache, on the trio thread, as the collector's do; :meth:`sync_forever`
fsyncs what was written about once a second, in a thread (docs/logs.md, "Durability"). A
record that cannot be written (a full disk) is acknowledged anyway, logged, and counted as
dropped (the container's ``inspect`` counts and a ``container.<id>.logs-dropped`` event): the
container is never held up by a store that fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import trio

from logs.errors import LogError
from logs.format import DROPPED, STREAM_NAMES, Record
from logs.store import END, LogReader, LogWriter, container_directory, count_lines
from logs.writer import fsync_quietly

#: Seconds between two fsyncs of what was written.
SYNC_INTERVAL = 1.0

#: dropped(container id, stream name, lines, bytes): as supervisor.logbuffer.Dropped.
Dropped = Callable[[str, str, int, int], None]


def discard(log: Any, record: Record) -> None:
    """The keeper of ``log_store="none"``: the record is let go (acknowledged) unstored."""


class LocalLogStore:
    """Writes each container's records into its log as they are cut (the keeper of
    ``log_store="local"``). One writer per container, opened on its first record."""

    def __init__(self, root: Path, dropped: Dropped, log: Any):
        self.root = Path(root)
        self._dropped = dropped
        self.log = log
        self.writers: dict[str, LogWriter] = {}
        self.failures = 0  # records that could not be written

    def keep(self, container_log: Any, record: Record) -> None:
        """Store ``record`` of ``container_log`` (a ContainerLog: its id and options)."""
        container_id = container_log.id
        try:
            writer = self.writers.get(container_id)
            if writer is None:
                options = container_log.options
                writer = LogWriter(container_directory(self.root, container_id), options.max_size, options.max_file)
                self.writers[container_id] = writer
            writer.append((record,))
        except (OSError, LogError) as exc:
            self._failed(container_id, record, exc)

    def _failed(self, container_id: str, record: Record, exc: Exception) -> None:
        self.failures += 1
        writer = self.writers.pop(container_id, None)
        if writer is not None:  # opened again (and recovered) for the next record
            try:
                writer.close()
            except OSError:
                pass
        stream = STREAM_NAMES[record.stream]
        self.log.error("cannot store a container's output; it is dropped", container=container_id, stream=stream,
                       bytes=len(record.payload), error=getattr(exc, "message", None) or str(exc))
        self._dropped(container_id, stream, count_lines(record), len(record.payload))

    def forget(self, container_id: str) -> None:
        """Close the container's log (it is about to be deleted: ``rm``)."""
        writer = self.writers.pop(container_id, None)
        if writer is not None:
            writer.close()

    async def sync_forever(self, interval: float = SYNC_INTERVAL) -> None:
        while True:
            await trio.sleep(interval)
            fds = [fd for writer in self.writers.values() for fd in writer.take_dirty()]
            if fds:
                await trio.to_thread.run_sync(fsync_quietly, fds)

    def close(self) -> None:
        """Sync and close every log (the Supervisor stops)."""
        for container_id in list(self.writers):
            try:
                self.forget(container_id)
            except OSError as exc:
                self.log.error("cannot sync a container's log", container=container_id, error=str(exc))


async def read_records(directory: Path, dropped_message: Callable[[str, tuple[int, int, int, int]], bytes],
                       max_bytes: int = 4 << 20) -> AsyncIterator[tuple[str, float, bytes]]:
    """Every record of the log in ``directory``, oldest first, as (stream name, unix time,
    bytes), read ``max_bytes`` at a time in a thread. A range of lost output comes as the
    text ``dropped_message(stream, (first, last, lines, bytes))`` says."""
    reader = LogReader(directory)
    position = reader.start()
    while True:
        page = await trio.to_thread.run_sync(reader.read, position, max_bytes)
        for record in page.records:
            stream = STREAM_NAMES[record.stream]
            if record.flags & DROPPED:
                yield stream, record.ts, dropped_message(stream, record.dropped)
            else:
                yield stream, record.ts, bytes(record.payload)
        position = page.position
        if page.status == END:
            return
