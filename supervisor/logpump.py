"""Reading a container's output into its log: :func:`pump` (one per stream) and
:func:`drain` (after pid 1 exited).

Apart from :mod:`supervisor.logbuffer` because this is the I/O side (the pipe or pty, the
attached clients) and the log path's hot loop (docs/logs.md "The data path and what it
costs"), while the log buffer decides what becomes of each record.

A pipe is read straight into a buffer laid out as the event's frame: ``FRAME_ROOM`` free
bytes, then the output. A big record (``OWN_MIN`` or more) keeps that buffer: its event frame
is written around it (``BusServer.publish(payload=...)``) and sent from it, and the buffer
holds the record until it is acknowledged; the unfinished line after it starts the next
buffer. The kernel's copy out of the pipe is the only copy of the output in the daemon. A
smaller record is copied out, and the buffer is used again.

The buffer is sized to what is in flight, so an idle container costs one page per stream,
not a megabyte: it starts at ``BUFFER_MIN``; a read that fills it grows it to what the pipe
holds (``FIONREAD``; at least twice, at most ``BUFFER_MAX``) and reading goes on into the
same record, so a burst is still one record per pipe's worth; and once the pipe is empty
(the read would block) a big buffer is swapped for a small one before the wait. Growing
copies only the output read since the last record (at most the buffer's old size, once per
doubling), never a record already taken.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import struct
import termios
import time
from typing import TYPE_CHECKING, Any

import trio

from logs.format import MAX_RECORD
from supervisor.attach import receive_chunk
from supervisor.logspool import SpoolFull

if TYPE_CHECKING:
    from supervisor.logbuffer import ContainerLog

#: Bytes asked of the pipe per read; the pipe is enlarged to this (F_SETPIPE_SZ) where allowed.
READ_SIZE = 1 << 20
#: Free bytes before the output in a pipe buffer, for the header of its event frame.
FRAME_ROOM = 512
#: A record at least this big keeps the buffer it was read into (so a buffer is at most
#: twice the bytes it holds for the log's buffer); a smaller one is copied out of it.
OWN_MIN = MAX_RECORD // 2
#: A stream's buffer while little is in flight (one page: the frame's room and 3.5 KiB).
BUFFER_MIN = 4096
#: The largest buffer: the frame's room and one record.
BUFFER_MAX = FRAME_ROOM + MAX_RECORD
#: Output read a line or a few at a time, faster than one read per this long (seconds), is
#: held back up to this long for more to join it in one record: the per-record costs (event,
#: collector, store, ack) are then paid once per window, not once per line (docs/logs.md,
#: "Output a line at a time"). A line after a quiet spell is taken at once. This is the
#: window while someone reads the container's output live (:meth:`ContainerLog.live`:
#: an attached client, a ``logs -f``, a bus subscriber to its log topics) ...
COALESCE_WINDOW = 0.010
#: ... and this while nobody does: only the log collector takes the records, so they are
#: fewer and bigger. A ``logs`` read, a new live reader and the container's exit take what
#: is held at once (:meth:`ContainerLog.flush`), so nobody sees the difference but the CPU.
HOLD_WINDOW = 0.250
#: ... unless this much is held (or a quarter of the log's buffer or segment size): then it
#: is taken at once.
COALESCE_BYTES = 64 << 10
#: After the other stream of a container read output, its streams read promptly (each read
#: wakes the pump) for this long, so their lines keep the order they were read in.
MIXED_PROMPT = 1.0
#: A stream whose pipe has been empty this long (seconds) gives its output spool's spare
#: pages back (logspool.py: a busy stream writes into the same pages again).
SPOOL_IDLE = 1.0
#: A full spool (nothing released for a while): wait for the collector's next
#: acknowledgement, at most this long (seconds), before trying again.
SPOOL_FULL_WAIT = 1.0
F_SETPIPE_SZ = 1031


def enlarge_pipe(fd: int, size: int = READ_SIZE) -> None:
    """Ask for a larger pipe (fewer, larger reads); a pty or a refusal leaves it as it is."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, size)
    except OSError:
        pass


async def pump(log: ContainerLog, stream: str, source: Any, attachments: list[Any],
               window: float = COALESCE_WINDOW, spool: Any = None, recovered: bytes = b"",
               hold: float = HOLD_WINDOW) -> None:
    """Read ``source`` (a trio receive stream: a pipe or a pty master) to its end into the
    log as ``stream``, forwarding each chunk to the attached clients first. Lines read a few
    at a time are held back up to ``window`` seconds to share a record while someone reads
    the output live (clients attached, :meth:`ContainerLog.live`), up to ``hold`` seconds
    while nobody does.

    ``spool`` (a :class:`supervisor.logspool.Spool`): the pipe is read through it, so that
    what was read and not stored survives the daemon; ``recovered``: output a killed daemon
    had read and not stored (from the spool), taken first, as if read from the pipe."""
    fileno = getattr(source, "fileno", None)
    if fileno is not None:
        enlarge_pipe(fileno())
    log.pumping += 1
    try:
        if isinstance(source, trio.lowlevel.FdStream):
            await _FramePump(log, stream, source.fileno(), attachments, window, spool, recovered, hold).run()
        else:
            while True:
                chunk = await receive_chunk(source, READ_SIZE)  # b"" also for a pty's EIO
                if not chunk:
                    break
                log.last_read = trio.current_time()
                for attachment in tuple(attachments):
                    await attachment.send(stream, chunk)
                await log.write(stream, chunk)
    finally:
        log.pumping -= 1
        log._pump_ended.set()
        log._pump_ended = trio.Event()
        if not log.detached:  # else the unfinished line stays in the spool for the next daemon
            log.end_stream(stream)


class _FramePump:
    """pump() for a pipe or pty master: read into frame buffers (see the module's doc).
    ``buffer[FRAME_ROOM:end]`` holds what was read and not yet taken, with no newline before
    ``clean``. The state is updated before any wait, so what is left at a cancellation is
    exactly that."""

    def __init__(self, log: ContainerLog, stream: str, fd: int, attachments: list[Any], window: float,
                 spool: Any = None, recovered: bytes = b"", hold: float = HOLD_WINDOW):
        self.log = log
        self.spool = spool
        self.recovered = memoryview(recovered)
        self.window = window
        self.hold = max(hold, window)
        self.stream = stream
        self.fd = fd
        self.attachments = attachments
        self.buffer = bytearray(BUFFER_MIN)
        # The buffer grows to this for a record of whole lines (a bigger one only for a longer
        # line): BUFFER_MAX, or less for a small segment size (a record's segment holds it)
        # or a small log buffer (a non-blocking log keeps the newest records that fit in it:
        # a record bigger than the buffer would leave nothing of the output's tail).
        options = log.options
        self.largest = FRAME_ROOM + min(MAX_RECORD, max(min(options.max_size, options.max_buffer_size) // 4, BUFFER_MIN))
        self.end = self.clean = FRAME_ROOM
        self.deadline: float | None = None  # trio time by which the lines read must be taken
        self.first_read = 0.0  # wall time of the first read since the last record: its ts
        self.previous_read = -math.inf  # trio time of the last read
        self._hold: trio.CancelScope | None = None

    async def run(self) -> None:
        try:
            await self._read_to_end()
        except trio.ClosedResourceError:
            pass
        finally:
            if self.end > FRAME_ROOM and not self.log.detached:  # the last line, without its newline
                self.log.add(self.stream, bytes(memoryview(self.buffer)[FRAME_ROOM : self.end]), False,
                             self.first_read if self.deadline is not None else None)

    async def _read_to_end(self) -> None:
        log, fd = self.log, self.fd
        while True:
            if self.end == len(self.buffer):  # a read filled it: more is waiting in the pipe
                if len(self.buffer) >= self.largest and self._take_lines():
                    await log.wait_for_room()
                    continue
                if len(self.buffer) < BUFFER_MAX:
                    self.buffer = _grown(self.buffer, self.end, fd, self.largest)
                else:  # a line longer than MAX_RECORD: a PARTIAL piece of it
                    self._take(self.end, partial=True)
                    await log.wait_for_room()
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                count = self._readinto(memoryview(self.buffer)[self.end :])
            except SpoolFull:  # what was read is not stored yet: let the records go, and wait
                self._take_lines()
                await log.wait_changed(SPOOL_FULL_WAIT)
                continue
            except BlockingIOError:
                if self.end > self.clean:  # lines read and not taken yet
                    if trio.current_time() < self.deadline:  # type: ignore[operator]
                        await self._hold_back()
                        continue
                    if self._take_lines():
                        await log.wait_for_room()
                        continue
                if len(self.buffer) > BUFFER_MIN and self.end < BUFFER_MIN:  # nothing in flight: give it back
                    small = bytearray(BUFFER_MIN)
                    small[FRAME_ROOM : self.end] = memoryview(self.buffer)[FRAME_ROOM : self.end]
                    self.buffer = small
                log.parked[self.stream] = self.let_go  # a flush() reads what came meanwhile
                try:
                    await self._park()
                finally:
                    log.parked.pop(self.stream, None)
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:  # a pty master reads EIO once its slave is closed
                    raise
                count = 0
            if not count:
                break
            start = self.end
            self._read(count)
            if log.holding:  # the other stream's lines were read first: they go first
                _let_go(log, self.stream)
            for attachment in tuple(self.attachments):
                await attachment.send(self.stream, bytes(memoryview(self.buffer)[start : start + count]))
            if self.end == len(self.buffer):
                continue  # read on into this record (the buffer grows), or take it
            if (self.end - FRAME_ROOM >= self._enough() or len(self.buffer) == BUFFER_MAX
                    or trio.current_time() >= self.deadline):  # type: ignore[operator]
                if self._take_lines():
                    await log.wait_for_room()
            else:
                await self._hold_back()

    async def _park(self) -> None:
        """Wait for output (ClosedResourceError when the pipe is closed meanwhile); after
        SPOOL_IDLE seconds without any, the spool gives its spare pages back."""
        if self.spool is not None and self.spool.ring and not self.spool.idle:
            with trio.move_on_after(SPOOL_IDLE) as idle:
                await trio.lowlevel.wait_readable(self.fd)
            if not idle.cancelled_caught:
                return
            self.spool.trim()
        await trio.lowlevel.wait_readable(self.fd)

    def _readinto(self, view: memoryview) -> int:
        """One read of the source into ``view`` (through the spool, if any; what was
        recovered first)."""
        if self.recovered:
            count = min(len(view), len(self.recovered))
            view[:count] = self.recovered[:count]
            self.recovered = self.recovered[count:]
            return count
        if self.spool is not None:
            return self.spool.read_from(self.fd, view)
        return os.readv(self.fd, [view])

    def _enough(self) -> int:
        """Held back this much, lines are taken at once: COALESCE_BYTES, or a quarter of a
        small log buffer (a record bigger than the buffer could not stay in it) or of a small
        segment (``max-size``: holding back never makes a record its segment cannot hold)."""
        options = self.log.options
        return min(COALESCE_BYTES, options.max_buffer_size // 4, options.max_size // 4)

    def _read(self, count: int) -> None:
        self.end += count
        now = self.log.last_read = trio.current_time()
        previous, self.previous_read = self.previous_read, now
        if self.deadline is None:
            # Held back only when output comes faster than one read per window: a line after
            # a quiet spell (a service that logs now and then) is taken at once. The short
            # window while someone reads live, the long one while only the collector does;
            # none once pid 1 exited (what is left is taken as it is read).
            log = self.log
            if log.exited or self.stream in log.flushed:  # a reader asked while this was on its way
                log.flushed.discard(self.stream)
                window = 0.0
            else:
                window = self.window if self.attachments or log.live() else self.hold
            self.deadline = now + window if now - previous < window else now
            self.first_read = time.time()

    async def _hold_back(self) -> None:
        """Hold the lines read back until the deadline, for more to join them in one record;
        when the other stream is quiet, without reading meanwhile (one wakeup per window,
        not per line: attached clients then get what came in the window as one chunk).
        Another stream that reads output ends it (:func:`_let_go`)."""
        log = self.log
        prompt = trio.current_time() < log.mixed_until
        with trio.CancelScope(deadline=self.deadline) as self._hold:  # type: ignore[arg-type]
            log.holding[self.stream] = self.let_go
            try:
                if prompt:
                    await trio.lowlevel.wait_readable(self.fd)
                else:
                    await trio.sleep_forever()
            finally:
                self._hold = None
                log.holding.pop(self.stream, None)

    def let_go(self) -> None:
        """The other stream read output: take what this one read before it (and what its pipe
        holds now, written before that, unless clients are attached: they get each read from
        the pump itself) as a record at once, and read promptly for a while."""
        if not self.attachments and self.end < len(self.buffer):
            try:
                count = self._readinto(memoryview(self.buffer)[self.end :])
            except OSError:  # nothing there (or the end): this pump's own read finds out
                count = 0
            if count:
                self._read(count)
        self._take_lines()
        if self._hold is not None:
            self._hold.cancel()

    def _take_lines(self) -> bool:
        """Give the whole lines read to the log as a record; False if there are none."""
        self.deadline = None
        cut = self.buffer.rfind(b"\n", self.clean, self.end)
        if cut < 0:
            self.clean = self.end
            return False
        self._take(cut + 1, partial=False)
        return True

    def _take(self, cut: int, partial: bool) -> None:
        """Give ``buffer[FRAME_ROOM:cut]`` to the log as a record, and move ``buffer[cut:end]``
        (an unfinished line) to the start of the buffer to read on into."""
        buffer, end = self.buffer, self.end
        rest = bytes(memoryview(buffer)[cut:end])
        if cut - FRAME_ROOM >= OWN_MIN:  # the record keeps this buffer; the next starts small
            self.log.add_in_place(self.stream, buffer, FRAME_ROOM, cut, partial, self.first_read)
            buffer = self.buffer = bytearray(min(BUFFER_MAX, max(BUFFER_MIN, FRAME_ROOM + 2 * len(rest))))
        else:
            self.log.add(self.stream, bytes(memoryview(buffer)[FRAME_ROOM:cut]), partial, self.first_read)
        buffer[FRAME_ROOM : FRAME_ROOM + len(rest)] = rest
        self.end = self.clean = FRAME_ROOM + len(rest)  # the rest has no newline
        self.deadline = None


def _let_go(log: ContainerLog, stream: str) -> None:
    """``stream`` read output: every other stream's held lines become records first (they were
    read before), and the log reads promptly, without holding back, for MIXED_PROMPT s."""
    for other, let_go in tuple(log.holding.items()):
        if other != stream:
            let_go()
            log.mixed_until = trio.current_time() + MIXED_PROMPT


def _grown(buffer: bytearray, end: int, fd: int, largest: int) -> bytearray:
    """A bigger buffer for a stream whose read filled ``buffer``: room for what the pipe holds
    and a page more (at least twice the size; at most ``largest``, or BUFFER_MAX once it is
    that big), with ``buffer[FRAME_ROOM:end]`` in it."""
    try:
        waiting = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        waiting = 0
    limit = largest if len(buffer) < largest else BUFFER_MAX
    grown = bytearray(min(limit, max(2 * len(buffer), end + waiting + BUFFER_MIN)))
    grown[FRAME_ROOM:end] = memoryview(buffer)[FRAME_ROOM:end]
    return grown


async def drain(log: ContainerLog, pumps: trio.CancelScope, idle: float) -> None:
    """After pid 1 exited: let the pumps read what is left in the pipes, and cancel them only
    once no output came for ``idle`` seconds (a process outside the container may hold a pipe
    open for ever). A busy or slow machine never cuts off output that is still flowing."""
    log.last_read = max(log.last_read, trio.current_time())
    while log.pumping:
        quiet_until = log.last_read + idle
        if trio.current_time() >= quiet_until:
            pumps.cancel()
            return
        with trio.move_on_at(quiet_until):
            await log._pump_ended.wait()
