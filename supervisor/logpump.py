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
"""

from __future__ import annotations

import errno
import fcntl
import os
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
    ``buffer[FRAME_ROOM:end]`` holds what was read and not yet taken: no newline in it. The
    state is updated before any wait, so what is left at a cancellation is exactly that."""
    buffer = bytearray(FRAME_ROOM + MAX_RECORD)
    end = FRAME_ROOM
    try:
        while True:
            if end == len(buffer):  # a line longer than MAX_RECORD: a PARTIAL piece of it
                buffer, end = _take(log, stream, buffer, end, end, partial=True)
                await log.wait_for_room()
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                count = os.readv(fd, [memoryview(buffer)[end:]])
            except BlockingIOError:
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
            cut = buffer.rfind(b"\n", start, end)  # the part before has none
            chunk = bytes(memoryview(buffer)[start:end]) if attachments else b""
            if cut >= 0:
                buffer, end = _take(log, stream, buffer, cut + 1, end, partial=False)
            for attachment in tuple(attachments):
                await attachment.send(stream, chunk)
            if cut >= 0:
                await log.wait_for_room()
    except trio.ClosedResourceError:
        pass
    finally:
        if end > FRAME_ROOM:  # the last line, without its newline
            log.add(stream, bytes(memoryview(buffer)[FRAME_ROOM:end]), False)


def _take(log: ContainerLog, stream: str, buffer: bytearray, cut: int, end: int,
          partial: bool) -> tuple[bytearray, int]:
    """Give ``buffer[FRAME_ROOM:cut]`` to the log as a record; returns the buffer to read on
    into and its end, with ``buffer[cut:end]`` (an unfinished line) moved to its start."""
    rest = bytes(memoryview(buffer)[cut:end])
    if cut - FRAME_ROOM >= OWN_MIN:  # the record keeps this buffer
        log.add_in_place(stream, buffer, FRAME_ROOM, cut, partial)
        buffer = bytearray(FRAME_ROOM + MAX_RECORD)
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
