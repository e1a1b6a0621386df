"""The log collector: stores every container's output in the log store (logs/), gap-free and
without duplicates, whatever happened to it or to the bus meanwhile.

Theory of operation
-------------------
::

    collector                                         daemon
    SUB log. + container.   ── bus.sync ───────────▶  (every record published from now on reaches us)
    logs.status ───────────────────────────────────▶  each container's last seq per stream
    for each stream whose store is behind:
      logs.replay {from: stored + 1} ──────────────▶  buffered records (+ the range it lost)
      write them (both streams merged by time)
    then, for each live log.<id>.<stream> {seq, ts, data, partial}:
      seq <= stored          a duplicate (already written in a replay): skip
      seq == stored + 1      write it
      seq >  stored + 1      a gap (the bus dropped some): replay the gap first, then write
    after writing:  logs.ack {acks: {id: {stdout, stderr}}} ─▶ the supervisor frees its buffer
    container.<id>.destroy: close the container's files, delete its log

The store, not memory, says what is stored: a restarted collector opens each log, which finds
each stream's last seq on disk (logs/store.py). Records are acknowledged only once written, so
a collector killed at any moment restarts without a gap (the supervisor still has what was not
acknowledged) and without a duplicate (what is on disk is skipped). A replayed range the
supervisor no longer has (non-blocking mode) is stored as a marker record with its counts.

Writes go to the page cache; every ``SYNC_INTERVAL`` seconds the collector fsyncs what it
wrote (docs/logs.md, "Durability").
"""

from __future__ import annotations

import heapq
import os
import re
import shutil
from typing import Any

import trio

from bus.client import AsyncClient
from bus.errors import RemoteError
from logs.format import PARTIAL, STDERR, STDOUT, STREAM_NAMES, STREAMS, Record, dropped_marker
from logs.options import LogOptions
from logs.store import LogWriter, container_directory
from logs.writer import fsync_quietly
from supervisor import operations as ops

SYNC_INTERVAL = 1.0
#: How often the collector asks the supervisor whether a stream is ahead of the store. Live
#: events show a gap only when a later one arrives: this finds the end of a stream whose
#: last events the bus dropped (a subscriber over its high-water mark) and nothing followed.
CATCH_UP_INTERVAL = 1.0
#: ... but only while something happens: a log event came since the previous look, or the
#: store was behind the supervisor then. Otherwise only this often, which still tells the
#: daemon a collector is there (it counts one for 10 s after a request) and finds, late, a
#: stream whose events all went missing (no event came to stir the collector).
IDLE_CATCH_UP_INTERVAL = 5.0
_LOG_TOPIC = re.compile(r"^log\.([0-9a-f]{64})\.(stdout|stderr)\Z")
_DESTROY_TOPIC = re.compile(r"^container\.([0-9a-f]{64})\.destroy\Z")


class Collector:
    def __init__(self, root: Any, client: Any, log: Any):
        self.root = root
        self.client = client
        self.log = log
        self.writers: dict[str, LogWriter] = {}
        self.unacked: set[str] = set()
        self._progress = trio.Event()
        self.written = 0  # records written (for the log line at exit)
        self._writing = trio.Lock()  # live events and catch-ups take turns at the writers
        # Each stream's last seq given out, as the previous periodic catch-up saw it.
        self._given_out: dict[tuple[str, int], int] = {}
        # A log event came, or the store was behind, since the last periodic catch-up.
        self.stirred = False

    # --- containers -----------------------------------------------------------------------

    async def writer(self, container_id: str, options: dict[str, Any] | None = None) -> LogWriter | None:
        """The container's log, opened (and recovered) on first use; None for a container
        the daemon does not know (removed)."""
        writer = self.writers.get(container_id)
        if writer is not None:
            return writer
        if options is None:
            try:
                status = await self.client.request(ops.LOGS_STATUS, {"container": container_id})
            except RemoteError as error:
                if error.code == "not_found":
                    return None
                raise
            options = status["containers"][0]["options"]
        settings = LogOptions.from_map(options)
        writer = LogWriter(container_directory(self.root, container_id), settings.max_size, settings.max_file)
        if writer.truncated:
            self.log.warning("cut a torn record off a log", container=container_id, bytes=writer.truncated)
        self.writers[container_id] = writer
        return writer

    def forget(self, container_id: str) -> None:
        writer = self.writers.pop(container_id, None)
        if writer is not None:
            writer.close()
        self.unacked.discard(container_id)
        shutil.rmtree(container_directory(self.root, container_id), ignore_errors=True)

    # --- catching up ----------------------------------------------------------------------

    async def catch_up(self, periodic: bool = False) -> None:
        """Store whatever the supervisor gave out that the store does not have. ``periodic``:
        only what it had given out by the previous periodic call and is still not here (the
        rest is most likely on its way as live events: replaying it would send it twice)."""
        async with self._writing:
            await self._catch_up(periodic)

    async def catch_up_forever(self) -> None:
        """A periodic catch-up every CATCH_UP_INTERVAL while something happens, every
        IDLE_CATCH_UP_INTERVAL otherwise (an idle daemon is not asked for every container's
        status each second)."""
        quiet = 0.0
        while True:
            await trio.sleep(CATCH_UP_INTERVAL)
            quiet += CATCH_UP_INTERVAL
            if self.stirred or quiet >= IDLE_CATCH_UP_INTERVAL:
                self.stirred, quiet = False, 0.0
                await self.catch_up(periodic=True)

    async def _catch_up(self, periodic: bool = False) -> None:
        status = await self.client.request(ops.LOGS_STATUS, {})
        given_out, self._given_out = self._given_out, {}
        for row in status["containers"]:
            container_id = row["id"]
            behind = any(row["streams"][name]["last"] > 0 for name in STREAMS)
            directory = container_directory(self.root, container_id)
            if not behind and not directory.exists():
                continue
            writer = await self.writer(container_id, row["options"])
            assert writer is not None
            missing = []
            for name, code in STREAMS.items():
                last = row["streams"][name]["last"]
                self._given_out[(container_id, code)] = last
                if last > writer.last[code]:  # on its way, or lost on the bus: look again soon
                    self.stirred = True
                overdue = given_out.get((container_id, code), 0) if periodic else last
                if last > writer.last[code] and overdue > writer.last[code]:
                    missing.append(await self.fetch(container_id, code, writer.last[code] + 1, last, writer))
            records = list(heapq.merge(*missing, key=lambda r: r.ts)) if missing else []
            if records:
                writer.append(records)
                self.written += len(records)
                self.log.info("caught up", container=container_id, records=len(records))
            self.mark(container_id)

    async def fetch(self, container_id: str, stream: int, start: int, end: int, writer: LogWriter) -> list[Record]:
        """Records ``start..end`` (at least) of a stream from the supervisor's buffer; a range
        it no longer has comes back as a DROPPED marker."""
        records: list[Record] = []
        while start <= end:
            reply = await self.client.request(
                ops.LOGS_REPLAY, {"container": container_id, "stream": STREAM_NAMES[stream], "from": start})
            lost = reply["lost"]
            if lost:
                first, last, lines, size = lost
                following = reply["records"][0][1] if reply["records"] else None
                ts = following if following is not None else max(writer.max_ts, records[-1].ts if records else 0.0)
                records.append(dropped_marker(ts, stream, first, last, lines, size))
                self.log.warning("log output was lost", container=container_id, stream=STREAM_NAMES[stream],
                                 lines=lines, bytes=size)
                start = last + 1
            for seq, ts, data, partial in reply["records"]:
                records.append(Record(ts, stream, seq, PARTIAL if partial else 0, data))
                start = seq + 1
            if not reply["records"] and not lost:
                break  # the supervisor has nothing more (it restarted): nothing to wait for
        return records

    # --- live ---------------------------------------------------------------------------------

    async def handle(self, envelope: Any) -> None:
        async with self._writing:
            await self._handle(envelope)

    async def _handle(self, envelope: Any) -> None:
        match = _LOG_TOPIC.match(envelope.topic)
        if match is None:
            destroyed = _DESTROY_TOPIC.match(envelope.topic)
            if destroyed is not None:
                self.forget(destroyed.group(1))
            return
        container_id, code = match.group(1), STREAMS[match.group(2)]
        self.stirred = True
        data = envelope.data
        try:
            seq, ts, payload, partial = int(data["seq"]), float(data["ts"]), data["data"], bool(data["partial"])
        except (KeyError, TypeError, ValueError):
            self.log.warning("skipped a malformed log event", topic=envelope.topic)
            return
        if not isinstance(payload, (bytes, memoryview)):
            self.log.warning("skipped a malformed log event", topic=envelope.topic)
            return
        writer = await self.writer(container_id)
        if writer is None or seq <= writer.last[code]:
            return  # a removed container, or a duplicate of what a replay stored
        if seq > writer.last[code] + 1:
            gap = await self.fetch(container_id, code, writer.last[code] + 1, seq - 1, writer)
            writer.append(gap)
            self.written += len(gap)
            if seq <= writer.last[code]:
                self.mark(container_id)
                return
        writer.append((Record(ts, code, seq, PARTIAL if partial else 0, payload),))
        self.written += 1
        self.mark(container_id)

    def mark(self, container_id: str) -> None:
        self.unacked.add(container_id)
        self._progress.set()

    async def ack_forever(self) -> None:
        """Tell the supervisor what is stored, as soon as there is something new (one request
        in flight: what is written meanwhile goes in the next one)."""
        while True:
            await self._progress.wait()
            self._progress = trio.Event()
            acks = {}
            for container_id in self.unacked:
                writer = self.writers.get(container_id)
                if writer is not None:
                    acks[container_id] = {"stdout": writer.last[STDOUT], "stderr": writer.last[STDERR]}
            self.unacked.clear()
            if acks:
                await self.client.request(ops.LOGS_ACK, {"acks": acks})

    async def sync_forever(self) -> None:
        while True:
            await trio.sleep(SYNC_INTERVAL)
            fds = [fd for writer in self.writers.values() for fd in writer.take_dirty()]
            if fds:
                await trio.to_thread.run_sync(fsync_quietly, fds)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


async def serve(ctx: Any) -> None:
    async with AsyncClient(ctx.run_dir, source=f"logcollector:{os.getpid()}") as client:
        collector = Collector(ctx.root, client, ctx.log)
        try:
            async with client.subscribe(["log.", "container."]) as events:
                await collector.catch_up()
                ctx.log.info("log collector ready", containers=len(collector.writers))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(collector.ack_forever)
                    nursery.start_soon(collector.sync_forever)
                    nursery.start_soon(collector.catch_up_forever)
                    async for envelope in events:
                        await collector.handle(envelope)
        finally:
            collector.close()
