"""The bus operations of the logs: what the log collector asks (``logs.status``, ``logs.ack``,
``logs.replay``) and what any client asks (``logs.read``). Schemas in docs/logs.md.

``logs.read`` reads the store's files itself (in a thread): the collector is the only writer,
and the reader never sees half a record (logs/store.py).

Whether a collector is there at all (the daemon's ``logcollector`` worker runs, or one run on
its own made the collector's requests lately) decides whether ``logs.read`` waits for it, and
what it and ``daemon.info`` say about output no collector has stored (issue 15: without a
collector, ``dockyard logs`` printed nothing and exited 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from logs.errors import LogError
from logs.format import DROPPED, STREAM_NAMES, STREAMS, dropped_message
from logs.store import END, UNTIL, LogReader
from supervisor import operations as ops
from supervisor.errors import DockyardError, InvalidArgument

#: The most a logs.read answer carries (a bus frame holds 8 MiB).
READ_BYTES = 4 << 20
#: The longest a following logs.read waits for new records before it answers with none.
FOLLOW_WAIT = 30.0
#: The longest a first logs.read waits for a collector that makes no progress to store what
#: was written before it (it waits as long as the collector keeps storing).
STORED_WAIT = 5.0
#: A ``logs -f`` counts as reading live (the pumps hold lines back for the short window only:
#: supervisor/logpump.py) while its request waits, and this long after it answered, for its
#: next request to come.
FOLLOW_GRACE = 1.0


class LogReadError(DockyardError):
    code = "invalid_state"


def unstored_map(log: Any, through: dict[int, int] | None, collector: bool) -> dict[str, Any] | None:
    """``ContainerLog.unstored`` with what a reader needs to explain it: whether a collector
    is there, and whether the container is held up waiting for it (blocking mode)."""
    unstored = log.unstored(through) if log is not None else None
    if unstored is not None:
        unstored.update(collector=collector, blocked=log.waiting)
    return unstored


class LogHandlers:
    def __init__(self, supervisor: Any, workers: Callable[[], dict] = dict):
        self.sup = supervisor
        self.workers = workers

    def collector_present(self) -> bool:
        """The daemon's own log collector runs, or one run on its own asked lately."""
        worker = self.workers().get("logcollector")
        return bool(worker and worker.get("running")) or self.sup.logs.collector.recent()

    def table(self) -> dict[str, Any]:
        return {
            ops.LOGS_STATUS: self.status,
            ops.LOGS_ACK: self.ack,
            ops.LOGS_REPLAY: self.replay,
            ops.LOGS_READ: self.read,
        }

    async def status(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container?} -> {containers: [{id, name, running, options: {mode, max-buffer-size,
        max-size, max-file}, streams: {stdout: {last, acked, buffered}, stderr: ...}, blocked}]}.
        ``last`` is the last seq given out since the daemon started (0: none yet); ``blocked``:
        the buffer is full and the container's output is not being read (blocking mode)."""
        ref = args["container"]
        if not ref:
            self.sup.logs.collector.seen()  # the collector's poll (workers/logcollector.py)
        containers = [self.sup.get(ref)] if ref else self.sup.list(all=True)
        rows = []
        for container in containers:
            log = self.sup.logs.get(container.id)
            streams = log.status() if log is not None else {
                name: {"last": 0, "acked": 0, "buffered": 0} for name in STREAMS}
            rows.append({"id": container.id, "name": container.name, "running": container.status.running,
                         "options": container.spec.log_options.to_map(), "streams": streams,
                         "blocked": log is not None and log.waiting})
        return {"containers": rows}

    async def ack(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{acks: {container id: {stdout?: seq, stderr?: seq}}} -> {}: the collector stored
        every record up to these seqs; the buffer frees them. Unknown ids are ignored."""
        acks = args["acks"]
        self.sup.logs.collector.seen()
        for container_id, streams in acks.items():
            log = self.sup.logs.get(container_id) if isinstance(container_id, str) else None
            if log is None or not isinstance(streams, dict):
                continue
            for name, seq in streams.items():
                if name in STREAMS and isinstance(seq, int) and not isinstance(seq, bool):
                    log.ack(STREAMS[name], seq)
        return {}

    async def replay(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container: id, stream: "stdout"|"stderr", from: seq, max_bytes?} ->
        {records: [[seq, ts, data, partial]], lost: [first, last, lines, bytes] | null, last}.
        ``lost``: records from ``from`` on that the buffer no longer has (counted as dropped,
        and published as container.<id>.logs-dropped)."""
        container = self.sup.get(args["container"])
        stream, start, max_bytes = args["stream"], args["from"], args["max_bytes"]
        self.sup.logs.collector.seen()
        log = self.sup.logs.get(container.id)
        if log is None:
            return {"records": [], "lost": None, "last": 0}
        return log.replay(STREAMS[stream], start, max_bytes)

    async def read(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, since?: unix s, until?: unix s, tail?: lines, follow?: bool,
        cursor?: [segment, offset], wait?: s} -> {records: [[stream, ts, data, flags]],
        cursor, done, unstored}.

        Ask again with the returned ``cursor`` (and the same other arguments) until ``done``.
        ``tail`` applies to a first request (no cursor). With ``follow``, a request at the end
        waits (up to ``wait`` seconds) for more; ``done`` comes once the container is not
        running and every record it wrote is stored, or no collector is there to store it.
        A ``flags`` of 2 marks lost output: its ``data`` says how much, for people.

        ``unstored`` ({records, bytes, since, collector, blocked} or null): in a first answer
        (no cursor), what the container wrote before the request and no collector stored; in
        the last answer of a follow, what it wrote and no collector stored. Otherwise null.
        """
        container = self.sup.get(args["container"])
        since = args["since"]
        until = args["until"]
        tail = args["tail"]
        follow = args["follow"]
        cursor = args["cursor"]
        wait = min(float(args["wait"] if args["wait"] is not None else FOLLOW_WAIT), FOLLOW_WAIT)
        # Times are shown to the microsecond (-t): a time copied from there selects its record.
        since = since - 5e-7 if since is not None else None
        until = until + 5e-7 if until is not None else None
        if cursor is not None and (len(cursor) != 2 or not all(type(n) is int and n >= 0 for n in cursor)):
            raise InvalidArgument(f"{ops.LOGS_READ}: argument 'cursor' must be [segment, offset] as returned by "
                                  f"{ops.LOGS_READ}",
                                  argument="cursor")
        log = self.sup.logs.get(container.id)
        if log is None:
            return await self._read(container, since, until, tail, follow, cursor, wait)
        if cursor is None:
            # Lines the pumps hold back become records first: a read sees every line written
            # before it (docs/logs.md, "Output a line at a time"). A follower's next requests
            # need not: the pumps hold lines back for the short window while it follows.
            log.flush()
            await trio.lowlevel.checkpoint()  # a pump that was busy reads (and takes at once) now
        if not follow:
            return await self._read(container, since, until, tail, follow, cursor, wait)
        log.followers += 1
        try:
            return await self._read(container, since, until, tail, follow, cursor, wait)
        finally:
            log.followers -= 1
            log.followed_until = trio.current_time() + FOLLOW_GRACE

    async def _read(self, container: Any, since: float | None, until: float | None,
                    tail: int | None, follow: bool, cursor: Any, wait: float) -> dict[str, Any]:
        reader = LogReader(self.sup.logs.directory(container.id))
        skip = 0
        collector = self.collector_present()
        unstored = None
        try:
            if cursor is not None:
                position = (cursor[0], cursor[1])
            elif tail is not None:
                position, skip = await trio.to_thread.run_sync(reader.tail_position, tail, since, until)
            elif since is not None:
                position = await trio.to_thread.run_sync(reader.seek_time, since)
            else:
                position = reader.start()
            log = self.sup.logs.get(container.id)
            if cursor is None and log is not None:
                # Read your writes: what the container wrote before this request is shown,
                # once the collector stored it (or after STORED_WAIT, if it is away).
                # It waits as long as the collector makes progress, and gives up once it
                # made none for STORED_WAIT (stopped, or away). Without a collector there
                # is nothing to wait for.
                target = {code: buffer.last for code, buffer in log.streams.items()}
                progress, idle_since = -1, trio.current_time()
                while collector and any(log.streams[code].acked < last for code, last in target.items()):
                    acked = sum(buffer.acked for buffer in log.streams.values())
                    if acked > progress:
                        progress, idle_since = acked, trio.current_time()
                    elif trio.current_time() - idle_since >= STORED_WAIT:
                        break
                    await log.wait_changed(0.5)
                collector = self.collector_present()
                unstored = unstored_map(log, target, collector)
                if unstored is not None and until is not None and (unstored["since"] or 0) > until:
                    unstored = None  # all of it after --until: not what was asked for
            deadline = trio.current_time() + wait
            while True:
                log = self.sup.logs.get(container.id)
                # Looked at before the read: if it holds now, the read sees every record
                # that will ever be stored (without a collector, none will be).
                settled = not container.status.running and (log is None or log.settled()
                                                            or not self.collector_present())
                page = await trio.to_thread.run_sync(reader.read, position, READ_BYTES, since, until, skip)
                skip = 0
                position = page.position
                if page.records or page.status != END or not follow or settled:
                    break
                remaining = deadline - trio.current_time()
                if remaining <= 0:
                    break
                if log is not None:
                    await log.wait_changed(min(remaining, 0.5))
                else:
                    await trio.sleep(min(remaining, 0.5))
        except LogError as exc:
            raise LogReadError(f"cannot read the logs of container {container.name}: {exc.message}",
                               container=container.id) from None
        done = page.status == UNTIL or (page.status == END and (not follow or settled))
        if done and follow and cursor is not None:
            unstored = unstored_map(self.sup.logs.get(container.id), None, self.collector_present())
        return {
            "records": [_wire(record) for record in page.records],
            "cursor": list(position),
            "done": done,
            "unstored": unstored,
        }


def _wire(record: Any) -> list[Any]:
    if record.flags & DROPPED:
        first, last, lines, size = record.dropped
        return [record.stream, record.ts, dropped_message(STREAM_NAMES[record.stream], first, last, lines, size),
                record.flags]
    return [record.stream, record.ts, record.payload, record.flags]

