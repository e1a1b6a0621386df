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
import os
import struct
import termios
from typing import TYPE_CHECKING, Any

import trio

from logs.format import MAX_RECORD
from supervisor.attach import receive_chunk

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
F_SETPIPE_SZ = 1031


def enlarge_pipe(fd: int, size: int = READ_SIZE) -> None:
    """Ask for a larger pipe (fewer, larger reads); a pty or a refusal leaves it as it is."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, size)
    except OSError:
        pass


async def pump(log: ContainerLog, stream: str, source: Any, attachments: list[Any]) -> None:
    """Read ``source`` (a trio receive stream: a pipe or a pty master) to its end into the
    log as ``stream``, forwarding each chunk to the attached clients first."""
    fileno = getattr(source, "fileno", None)
    if fileno is not None:
        enlarge_pipe(fileno())
    log.pumping += 1
    try:
        if isinstance(source, trio.lowlevel.FdStream):
            await _pump_fd(log, stream, source.fileno(), attachments)
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
        log.end_stream(stream)


async def _pump_fd(log: ContainerLog, stream: str, fd: int, attachments: list[Any]) -> None:
    """pump() for a pipe or pty master: read into frame buffers (see the module's doc).
    ``buffer[FRAME_ROOM:end]`` holds what was read and not yet taken, with no newline before
    ``clean``. The state is updated before any wait, so what is left at a cancellation is
    exactly that."""
    buffer = bytearray(BUFFER_MIN)
    end = clean = FRAME_ROOM
    try:
        while True:
            if end == len(buffer):
                if len(buffer) < BUFFER_MAX:  # a read filled it: more is waiting in the pipe
                    buffer = _grown(buffer, end, fd)
                else:  # a line longer than MAX_RECORD: a PARTIAL piece of it
                    buffer, end = _take(log, stream, buffer, end, end, partial=True)
                    clean = FRAME_ROOM
                    await log.wait_for_room()
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                count = os.readv(fd, [memoryview(buffer)[end:]])
            except BlockingIOError:
                if end > clean:  # a read filled the buffer, and then the pipe was empty
                    buffer, end, clean = _take_lines(log, stream, buffer, clean, end)
                    if clean == FRAME_ROOM:
                        await log.wait_for_room()
                        continue
                if len(buffer) > BUFFER_MIN and end < BUFFER_MIN:  # nothing in flight: give it back
                    small = bytearray(BUFFER_MIN)
                    small[FRAME_ROOM:end] = memoryview(buffer)[FRAME_ROOM:end]
                    buffer = small
                await trio.lowlevel.wait_readable(fd)  # ClosedResourceError when closed meanwhile
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:  # a pty master reads EIO once its slave is closed
                    raise
                count = 0
            if not count:
                break
            start, end = end, end + count
            log.last_read = trio.current_time()
            chunk = bytes(memoryview(buffer)[start:end]) if attachments else b""
            took = False
            if end < len(buffer) or len(buffer) == BUFFER_MAX:  # else read on into this record
                buffer, end, clean = _take_lines(log, stream, buffer, clean, end)
                took = clean == FRAME_ROOM
            for attachment in tuple(attachments):
                await attachment.send(stream, chunk)
            if took:
                await log.wait_for_room()
    except trio.ClosedResourceError:
        pass
    finally:
        if end > FRAME_ROOM:  # the last line, without its newline
            log.add(stream, bytes(memoryview(buffer)[FRAME_ROOM:end]), False)


def _take_lines(log: ContainerLog, stream: str, buffer: bytearray, clean: int,
                end: int) -> tuple[bytearray, int, int]:
    """Give the whole lines of ``buffer[FRAME_ROOM:end]`` (the part before ``clean`` has no
    newline) to the log as a record; returns the buffer, its end and its new ``clean``:
    ``FRAME_ROOM`` if a record was taken, else ``end``."""
    cut = buffer.rfind(b"\n", clean, end)
    if cut < 0:
        return buffer, end, end
    buffer, end = _take(log, stream, buffer, cut + 1, end, partial=False)
    return buffer, end, FRAME_ROOM


def _grown(buffer: bytearray, end: int, fd: int) -> bytearray:
    """A bigger buffer for a stream whose read filled ``buffer``: room for what the pipe holds
    and a page more (at least twice the size, at most
    BUFFER_MAX), with ``buffer[FRAME_ROOM:end]`` in it."""
    try:
        waiting = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        waiting = 0
    grown = bytearray(min(BUFFER_MAX, max(2 * len(buffer), end + waiting + BUFFER_MIN)))
    grown[FRAME_ROOM:end] = memoryview(buffer)[FRAME_ROOM:end]
    return grown


def _take(log: ContainerLog, stream: str, buffer: bytearray, cut: int, end: int,
          partial: bool) -> tuple[bytearray, int]:
    """Give ``buffer[FRAME_ROOM:cut]`` to the log as a record; returns the buffer to read on
    into and its end, with ``buffer[cut:end]`` (an unfinished line) moved to its start."""
    rest = bytes(memoryview(buffer)[cut:end])
    if cut - FRAME_ROOM >= OWN_MIN:  # the record keeps this buffer; the next starts small
        log.add_in_place(stream, buffer, FRAME_ROOM, cut, partial)
        buffer = bytearray(min(BUFFER_MAX, max(BUFFER_MIN, FRAME_ROOM + 2 * len(rest))))
    else:
        log.add(stream, bytes(memoryview(buffer)[FRAME_ROOM:cut]), partial)
    buffer[FRAME_ROOM : FRAME_ROOM + len(rest)] = rest
    return buffer, FRAME_ROOM + len(rest)


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
