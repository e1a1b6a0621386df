"""The supervisor's side of the logs: a container's output becomes numbered records, published
on the bus and kept in a bounded buffer until the log collector says it stored them.

Theory of operation
-------------------
::

    pipe / pty ──chunks──▶ pump() ──▶ ContainerLog.write(stream, chunk)
                                         │ RecordCutter: payloads cut at the last newline
                                         │ seq + 1 (per stream), ts (never decreasing)
                                         ├──▶ buffer (unacknowledged records, <= max-buffer-size)
                                         └──▶ publish log.<id>.<stream> {seq, ts, data, partial}
                                                   │
    log collector ◀──────────────────────── events.sock
       │ writes records, then
       ├── logs.ack {acks: {id: {stdout: seq, stderr: seq}}} ──▶ ack(): the buffer frees them
       └── a gap (it was away, or the bus dropped) ── logs.replay {container, stream, from} ──▶
              replay(): the records still buffered, and the range that is not (``lost``)

A record is the whole lines of one stream read together (one read, or the reads of a window,
10 ms or 250 ms: :mod:`supervisor.logpump`), or a PARTIAL piece of a line longer than ``MAX_RECORD``,
so the hot path does a few C calls per read, never per line.

The reading is :mod:`supervisor.logpump`'s (a pipe is read straight into a buffer laid out
as the event's frame, so the kernel's copy out of the pipe is the only copy of the output
in the daemon); each stream's bookkeeping is :mod:`supervisor.streambuffer`'s. Their names
are re-exported here, where they lived before.

*Blocking* (default): when the buffer holds ``max-buffer-size`` bytes, ``write`` waits for an
ack before it returns, so the pump stops reading, the pipe fills and the container's writes
block. Nothing is dropped. Once the container's pid 1 exited (:meth:`ContainerLog.finish`) it
no longer waits: what is left in the pipe (at most its size) is read into the buffer, so a
container whose collector is away still exits.

*Kept in this process* (``keep``, an embedded Supervisor: supervisor/locallogs.py): each
record is stored (or let go) as it is cut and acknowledged at once, so nothing ever waits.

*Non-blocking*: ``write`` never waits; the oldest buffered records are evicted instead. An
evicted record is not lost yet: it was published, and a live collector stores it. It is lost
when the collector asks for it and the buffer no longer has it: then ``replay`` reports the
range with its exact line and byte counts, the supervisor counts it (``inspect``), publishes
``container.<id>.logs-dropped``, and the collector stores a marker record in its place.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from logs.format import MAX_RECORD, PARTIAL, STDERR, STDOUT, STREAM_NAMES, STREAMS, Record, RecordCutter
from logs.options import BLOCKING, LogOptions
from logs.store import LogReader, container_directory, count_lines  # noqa: F401 (count_lines: re-exported)
from supervisor.streambuffer import EVICTED_TRACKED, REPLAY_BYTES, StreamBuffer  # noqa: F401 (EVICTED_TRACKED)

#: publish(topic, data, channel[, payload]): see BusServer.publish
Publish = Callable[..., None]
#: dropped(container id, stream name, lines, bytes): a loss became certain.
Dropped = Callable[[str, str, int, int], None]
#: keep(container log, record): stores a record in this process, which then frees it at once
#: (an embedded Supervisor, supervisor/locallogs.py); None: a log collector acknowledges it.
Keep = Callable[["ContainerLog", Record], None]


class ContainerLog:
    """One container's output on its way to the log: cut, numbered, published, buffered.

    ``write(stream, chunk)`` is the one entry for output, whether it comes from a pipe or a
    pty master (one stream, "stdout").
    """

    def __init__(self, container_id: str, options: LogOptions, last: dict[int, int], publish: Publish,
                 dropped: Dropped, clock: Callable[[], float] = time.time, keep: Keep | None = None,
                 watched: Callable[[str], bool] | None = None):
        self.id = container_id
        self.options = options
        self.streams = {STDOUT: StreamBuffer(last.get(STDOUT, 0)), STDERR: StreamBuffer(last.get(STDERR, 0))}
        self.cutters: dict[int, RecordCutter] = {}
        self.bytes = 0
        self.exited = False
        self.waiting = False  # write() is waiting for room (the container is held up)
        self._publish = publish
        self._dropped = dropped
        self._keep = keep
        self._clock = clock
        self._last_ts = 0.0
        self.last_read = 0.0  # trio time of the last chunk taken (pump), for the drain after exit
        self.pumping = 0  # pumps reading into this log
        # stream name -> its pump's let_go(), while the pump holds lines back (logpump.py)
        self.holding: dict[str, Callable[[], None]] = {}
        self.mixed_until = 0.0  # trio time until which the pumps read promptly (logpump.py)
        # Live readers (logpump.py holds lines back less while there are): `logs -f` requests
        # waiting now, the time until which one that just answered counts as still there, and
        # whether the bus has a subscriber to this container's log topics (besides the collector).
        self.followers = 0
        # stream name -> its pump's let_go(), while the pump waits on an empty pipe; and the
        # streams whose next read is taken at once (a flush came while the pump was busy).
        self.parked: dict[str, Callable[[], None]] = {}
        self.flushed: set[str] = set()
        self.followed_until = 0.0
        self._watched = watched
        self._pump_ended = trio.Event()
        self._room = trio.Event()
        self._changed = trio.Event()
        self._topics = {code: f"log.{container_id}.{name}" for code, name in STREAM_NAMES.items()}
        # Live restore (supervisor/logspool.py): each stream's spool, the stream offset its
        # records have reached, and (seq, end offset) of its records not released yet.
        self.spools: dict[int, Any] = {}
        self.detached = False  # the daemon leaves the container running: no last partial line is cut
        self.spool_failures: list[str] = []  # spools dropped (their fd failed): logged by the supervisor
        self._spool_offset: dict[int, int] = {}
        self._spool_marks: dict[int, deque[tuple[int, int]]] = {}

    # --- output in ---------------------------------------------------------------------

    def use_spool(self, stream: str, spool: Any, offset: int = 0) -> None:
        """Read ``stream`` through ``spool`` from now on: its records from the next seq on
        start at stream ``offset``; each is released in the spool once stored (or evicted)."""
        code = STREAMS[stream]
        self.spools[code] = spool
        self._spool_offset[code] = offset
        self._spool_marks[code] = deque()
        spool.release(self.streams[code].last, offset)

    def _release_spool(self, code: int, seq: int) -> None:
        marks = self._spool_marks[code]
        released = None
        while marks and marks[0][0] <= seq:
            released = marks.popleft()
        if released is not None:
            try:
                self.spools[code].release(*released)
            except OSError as exc:  # the spool is gone: output is no longer kept across a daemon restart
                self.spools.pop(code)
                self.spool_failures.append(f"{STREAM_NAMES[code]}: {exc.strerror}")

    async def write(self, stream: str, chunk: bytes) -> None:
        """Take a chunk of a stream's output; in blocking mode, return only once the buffer
        has room again (so the caller stops reading its source meanwhile)."""
        code = STREAMS[stream]
        cutter = self.cutters.get(code)
        if cutter is None:
            cutter = self.cutters[code] = RecordCutter(MAX_RECORD)
        for payload, partial in cutter.feed(chunk):
            self._add(code, payload, partial)
        await self.wait_for_room()

    def add(self, stream: str, payload: bytes, partial: bool, ts: float | None = None) -> None:
        """Take ``payload``, already cut (whole lines, or ``partial``), as one record, read at
        ``ts`` (Unix time; default: now). Then :meth:`wait_for_room`."""
        self._add(STREAMS[stream], payload, partial, None, ts)

    def add_in_place(self, stream: str, buffer: bytearray, start: int, end: int, partial: bool,
                     ts: float | None = None) -> None:
        """:meth:`add` for ``buffer[start:end]``, without copying it: the record and its event
        keep ``buffer``, whose bytes before ``start`` are free for the event's frame."""
        self._add(STREAMS[stream], memoryview(buffer)[start:end], partial, (buffer, start, end), ts)

    def live(self) -> bool:
        """Someone reads this container's output as it comes (besides the log collector):
        a ``logs -f``, or a bus subscriber to its ``log.<id>`` topics. (Attached clients are
        the pump's own to see.) Lines are then held back for the short window only."""
        if self.followers or trio.current_time() < self.followed_until:
            return True
        return self._watched is not None and self._watched(self.id)

    def flush(self) -> None:
        """Make every line the pumps hold back (and what their pipes hold now) records at
        once: a reader asks (``logs``), a live reader comes, or pid 1 exited. A pump that is
        neither holding nor parked (it has just taken a record) takes its next read at once:
        a reader that lets the pumps run (a checkpoint) after this sees that too."""
        for stream in STREAMS:
            let_go = self.holding.get(stream) or self.parked.get(stream)
            if let_go is not None:
                let_go()
            else:
                self.flushed.add(stream)

    async def wait_for_room(self) -> None:
        """In blocking mode, until the buffer has room again (the caller stops reading its
        source meanwhile); a checkpoint."""
        if self.options.mode == BLOCKING:
            while self.bytes >= self.options.max_buffer_size and not self.exited:
                self.waiting = True
                # Both streams' pumps may wait here at once: they share one event, which
                # _make_room() sets (waking both) and then replaces.
                await self._room.wait()
            self.waiting = False
        await trio.lowlevel.checkpoint()

    def end_stream(self, stream: str) -> None:
        """The stream ended: its last bytes without a newline become a record."""
        cutter = self.cutters.pop(STREAMS[stream], None)
        if cutter is not None:
            for payload, partial in cutter.flush():
                self._add(STREAMS[stream], payload, partial)

    def _add(self, code: int, payload: bytes | memoryview, partial: bool,
             frame: tuple[bytearray, int, int] | None = None, ts: float | None = None) -> None:
        if ts is None:
            ts = self._clock()
        if ts <= self._last_ts:
            ts = self._last_ts + 1e-6  # strictly increasing: the store's time order is the output's
        self._last_ts = ts
        buffer = self.streams[code]
        buffer.last += 1
        record = Record(ts, code, buffer.last, PARTIAL if partial else 0, payload)
        buffer.append(record)
        self.bytes += len(payload)
        if code in self.spools:
            self._spool_offset[code] += len(payload)
            self._spool_marks[code].append((buffer.last, self._spool_offset[code]))
        topic = self._topics[code]
        if frame is None:
            self._publish(topic, {"seq": buffer.last, "ts": ts, "data": payload, "partial": partial}, topic)
        else:
            self._publish(topic, {"seq": buffer.last, "ts": ts, "partial": partial}, topic, frame)
        if self._keep is not None:  # kept in this process: nobody else will acknowledge it
            self._keep(self, record)
            self.ack(code, record.seq)
        if self.options.mode != BLOCKING:
            while self.bytes > self.options.max_buffer_size:
                oldest = self._oldest_buffer()
                self.bytes -= oldest.evict_oldest()
                if self.spools:
                    evicted = next(c for c, b in self.streams.items() if b is oldest)
                    if evicted in self.spools:
                        self._release_spool(evicted, oldest.evicted[-1][0])

    def _oldest_buffer(self) -> StreamBuffer:
        out, err = self.streams[STDOUT], self.streams[STDERR]
        if not err.records:
            return out
        if not out.records:
            return err
        return out if out.records[0].ts <= err.records[0].ts else err

    # --- the collector -------------------------------------------------------------------

    def ack(self, stream: int, seq: int) -> None:
        freed = self.streams[stream].ack(seq)
        if stream in self.spools:
            self._release_spool(stream, min(seq, self.streams[stream].last))
        if freed:
            self.bytes -= freed
            self._make_room()
        self._changed.set()
        self._changed = trio.Event()

    def replay(self, stream: int, start: int, max_bytes: int = REPLAY_BYTES) -> dict[str, Any]:
        buffer = self.streams[stream]
        before = buffer.bytes
        records, lost = buffer.replay(start, max_bytes)
        self.bytes -= before - buffer.bytes
        if lost is not None:
            self._dropped(self.id, STREAM_NAMES[stream], lost[2], lost[3])
            self._make_room()
        return {
            "records": [[r.seq, r.ts, r.payload, bool(r.flags & PARTIAL)] for r in records],
            "lost": list(lost) if lost is not None else None,
            "last": buffer.last,
        }

    # --- lifetime --------------------------------------------------------------------------

    def started(self) -> None:
        """The container (re)starts: block again when full; fresh line cutters; the last
        run's spools are gone."""
        self.exited = False
        self.cutters.clear()
        self.spools.clear()
        self._spool_marks.clear()
        self._spool_offset.clear()

    def _make_room(self) -> None:
        self._room.set()
        self._room = trio.Event()

    def finish(self) -> None:
        """pid 1 exited: never hold the pumps up again (what is left in the pipes is bounded)."""
        self.exited = True
        self.flush()
        self._make_room()
        self._changed.set()
        self._changed = trio.Event()

    def settled(self) -> bool:
        """Every record given out was stored (or its loss reported)."""
        return all(buffer.acked >= buffer.last for buffer in self.streams.values())

    async def wait_changed(self, timeout: float) -> None:
        """Until the next ack or exit, or ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            await self._changed.wait()

    def unstored(self, through: dict[int, int] | None = None) -> dict[str, Any] | None:
        """What was given out (up to the seqs ``through``, per stream; default: all) and the
        collector has not stored: ``{records, bytes, since}``, or None when it stored all.
        ``bytes`` counts what the buffer still holds (non-blocking mode may have evicted
        more); ``since`` is the ts of the oldest record held (None if none is)."""
        records = size = 0
        since: float | None = None
        for code, buffer in self.streams.items():
            last = buffer.last if through is None else min(through.get(code, 0), buffer.last)
            if last <= buffer.acked:
                continue
            records += last - buffer.acked
            held = buffer.bytes
            for record in reversed(buffer.records):  # the newest ones, given out after ``through``
                if record.seq <= last:
                    break
                held -= len(record.payload)
            size += held
            if buffer.records and buffer.records[0].seq <= last:
                oldest = buffer.records[0].ts
                since = oldest if since is None else min(since, oldest)
        if not records:
            return None
        return {"records": records, "bytes": size, "since": since}

    def status(self) -> dict[str, Any]:
        return {
            name: {"last": self.streams[code].last, "acked": self.streams[code].acked,
                   "buffered": self.streams[code].bytes}
            for code, name in STREAM_NAMES.items()
        }


class CollectorSightings:
    """When a log collector last asked the supervisor something, sans-IO: a collector run on
    its own (its own unit) is known only by its requests. It asks ``logs.status`` of every
    container each second while output comes, every 5 s at least (workers/logcollector.py,
    CATCH_UP_INTERVAL, IDLE_CATCH_UP_INTERVAL), and ``logs.ack``
    and ``logs.replay`` as it stores; :meth:`recent` is true within ``window`` seconds of
    the last one."""

    def __init__(self, window: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.window = window
        self.last_seen: float | None = None  # Unix time, for people
        self._seen_at: float | None = None
        self._clock = clock
        self._wall = wall

    def seen(self) -> None:
        self._seen_at = self._clock()
        self.last_seen = self._wall()

    def recent(self) -> bool:
        return self._seen_at is not None and self._clock() - self._seen_at < self.window


class LogBuffers:
    """Every container's :class:`ContainerLog`, kept while the daemon runs (seqs continue
    across a container's restarts; after a daemon restart they continue from the store)."""

    def __init__(self, root: Path, publish: Publish, dropped: Dropped, keep: Keep | None = None):
        self.root = Path(root)
        #: container id -> whether something besides the collector reads its log events live
        #: (the daemon: a bus subscriber to its ``log.<id>`` topics; ContainerLog.live).
        self.watched: Callable[[str], bool] = lambda container_id: False
        self._publish = publish
        self._dropped = dropped
        self._keep = keep
        self._logs: dict[str, ContainerLog] = {}
        self.collector = CollectorSightings()

    def directory(self, container_id: str) -> Path:
        return container_directory(self.root, container_id)

    def open(self, container_id: str, options: LogOptions) -> ContainerLog:
        """The container's log, ready for a start."""
        log = self._logs.get(container_id)
        if log is None:
            try:
                last = LogReader(self.directory(container_id)).last_seqs()
            except Exception:  # an unreadable store: the collector reports it; start afresh
                last = {STDOUT: 0, STDERR: 0}
            log = self._logs[container_id] = ContainerLog(container_id, options, last, self._publish, self._dropped,
                                                          keep=self._keep, watched=self._is_watched)
        log.options = options
        log.started()
        return log

    def _is_watched(self, container_id: str) -> bool:
        return self.watched(container_id)

    def get(self, container_id: str) -> ContainerLog | None:
        return self._logs.get(container_id)

    def flush_watched(self) -> None:
        """A live reader may have come (a bus subscription to log topics): the logs it
        watches take what their pumps hold back at once."""
        for container_id, log in self._logs.items():
            if log.holding and self.watched(container_id):
                log.flush()

    def all(self) -> dict[str, ContainerLog]:
        """Container id -> its log, for every container that ran since the daemon started."""
        return dict(self._logs)

    async def wait_settled(self, timeout: float) -> bool:
        """Until the collector stored every record given out (at most ``timeout`` seconds):
        the daemon calls it before it stops its workers. True if all were stored."""
        with trio.move_on_after(timeout):
            while True:
                waiting = [log for log in self._logs.values() if not log.settled()]
                if not waiting:
                    return True
                await waiting[0].wait_changed(0.5)
        return False

    def remove(self, container_id: str) -> None:
        """Forget the container's buffer and delete its stored log (``rm``)."""
        import shutil

        self._logs.pop(container_id, None)
        shutil.rmtree(self.directory(container_id), ignore_errors=True)
