"""pyzmq sockets under trio.

Theory of operation
-------------------
A ZeroMQ socket is not a file descriptor. libzmq gives us ``ZMQ_FD``, the read end of the
socket's command mailbox, and ``ZMQ_EVENTS``, the socket's real state (POLLIN: a whole
message can be received, POLLOUT: a message can be sent). The mailbox fd is a poor proxy for
the state:

* it becomes readable when libzmq has *commands* for the socket (a peer attached, a pipe
  became readable or writable, ...), not when a message is there;
* any libzmq call on the socket (send, recv, getsockopt EVENTS) processes those commands
  and drains the fd. A message can therefore be waiting while the fd is *not* readable:
  the edge was consumed by a send made a moment ago, or by the recv that took the
  previous message. libzmq only signals again on the next state *change*.

So the fd is edge-triggered with respect to the state we care about, and the one rule is:
**before parking on the fd, ask ``EVENTS``; after anything touched the socket, ask again.**

:class:`AsyncSocket` enforces the rule:

1. ``send_nowait`` / ``recv_nowait`` never block. They may be called from any task: trio
   runs one task at a time and neither awaits, so two calls never interleave on the socket.
2. Exactly one task at a time may *wait* (``wait``, ``recv``, ``send``). It loops::

       while not EVENTS & wanted:          # drains the fd as a side effect
           park in wait_readable(ZMQ_FD)   # inside a cancel scope: self._parked

   There is no checkpoint between reading ``EVENTS`` and parking, so nothing can touch the
   socket in between; any later state change re-signals the fd, and epoll wakes the task.
3. Every other call into libzmq goes through this class and, when it returns, cancels
   ``self._parked``: the parked task wakes and re-reads ``EVENTS`` before parking again.

Why no wake-up is ever lost: the fd's signal can only be consumed by a libzmq call on this
socket. Such a call is made either by the waiter itself (which then re-reads EVENTS before
parking, rule 2) or by another task through this class (which then un-parks the waiter,
rule 3). In both cases the waiter looks at EVENTS after the consuming call. (libzmq
processes commands inside send/recv at most about once a millisecond, so the lost wake-up
is rare and depends on timing; test_bus_io.py builds it step by step.) A second waiter
would need a second ``wait_readable`` on the same fd, which trio forbids; ``wait`` raises
:class:`trio.BusyResourceError` instead, so a socket has one owner for waiting.

``wake()`` un-parks the waiter for a reason outside the socket (the server's publisher
uses it when its outgoing queue goes from empty to non-empty); ``wait`` then returns 0.

Do not call the raw ``socket`` while a task may be waiting, except through this class, or
call :meth:`AsyncSocket.touched` afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import trio
import zmq

#: Frames at least this big are sent without a copy (pyzmq keeps them alive until sent).
ZERO_COPY = 1 << 20
#: A socket made with ``receive_views=True`` gives frames at least this big as read-only
#: memoryviews over libzmq's message instead of a bytes copy (a log record on its way to
#: the collector: the copy was a tenth of the collector's work).
VIEW_MIN = 64 << 10

__all__ = ["AsyncSocket"]


class AsyncSocket:
    """A pyzmq socket with trio waiting. See the module docstring for the rules."""

    __slots__ = ("socket", "_fd", "_parked", "_woken", "_waiting", "_closed", "_views")

    def __init__(self, socket: zmq.Socket, *, receive_views: bool = False):
        self.socket = socket
        self._views = receive_views
        self._fd: int = socket.get(zmq.FD)
        self._parked: trio.CancelScope | None = None
        self._woken = False
        self._waiting = False
        self._closed = False

    # --- never blocks ---------------------------------------------------------------------

    def send_nowait(self, frames: Sequence[bytes]) -> bool:
        """Send one message now. False when it would block (high-water mark reached, or
        no peer for a DEALER/ROUTER yet); other ZMQErrors (EHOSTUNREACH for a ROUTER with
        ROUTER_MANDATORY) propagate. All frames are sent or none."""
        # Frame by frame rather than send_multipart, which costs pyzmq about four times
        # as much per message (it validates every frame in Python). Once libzmq accepted
        # the first frame, it accepts the rest of the message.
        send = self.socket.send
        try:
            last = len(frames) - 1
            for index, frame in enumerate(frames):
                # A big frame (a page of logs) is handed to libzmq without a copy.
                send(frame, (zmq.NOBLOCK | zmq.SNDMORE) if index < last else zmq.NOBLOCK, copy=len(frame) < ZERO_COPY)
        except zmq.Again:
            return False
        finally:
            self.touched()
        return True

    def recv_nowait(self) -> list[bytes] | None:
        """One whole message if one is queued, else None. (With ``receive_views``, big
        frames are memoryviews: bytes-like, but without the methods of bytes.)"""
        socket = self.socket
        try:
            if self._views:
                message = [_view_or_bytes(socket.recv(zmq.NOBLOCK, copy=False))]
                while socket.get(zmq.RCVMORE):
                    message.append(_view_or_bytes(socket.recv(zmq.NOBLOCK, copy=False)))
            else:
                message = _with_more_frames(socket, [socket.recv(zmq.NOBLOCK)])
        except zmq.Again:
            return None
        finally:
            self.touched()
        return message

    def recv_from_nowait(self) -> tuple[list[bytes], int] | None:
        """As :meth:`recv_nowait` (bytes frames), with the descriptor of the connection the
        message came in on (ZMQ_SRCFD, -1 if libzmq does not tell). libzmq closes that
        descriptor when the peer goes, and the kernel may reuse it: see bus/peers.py."""
        socket = self.socket
        try:
            first = socket.recv(zmq.NOBLOCK, copy=False)
            message = _with_more_frames(socket, [first.bytes])
        except zmq.Again:
            return None
        finally:
            self.touched()
        try:
            fd = first.get(zmq.SRCFD)
        except zmq.ZMQError:
            fd = -1
        return message, fd

    def touched(self) -> None:
        """Tell the waiting task (if any) that libzmq was called, so it re-reads EVENTS."""
        if self._parked is not None:
            self._parked.cancel()

    def wake(self) -> None:
        """Make the current (or next) ``wait`` return, even if the socket is not ready."""
        self._woken = True
        if self._parked is not None:
            self._parked.cancel()

    # --- waits ----------------------------------------------------------------------------

    async def wait(self, flags: int = zmq.POLLIN) -> int:
        """Wait until ``EVENTS & flags`` or ``wake()``; return ``EVENTS & flags`` (0 when
        woken). A checkpoint. Only one task may wait at a time."""
        if self._waiting:
            raise trio.BusyResourceError("another task is already waiting on this zmq socket")
        if self._closed:
            raise trio.ClosedResourceError("the zmq socket is closed")
        await trio.lowlevel.checkpoint_if_cancelled()
        self._waiting = True
        parked_before = False
        try:
            while True:
                ready = self.socket.get(zmq.EVENTS) & flags
                if ready or self._woken:
                    self._woken = False
                    if not parked_before:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    return ready
                # No checkpoint between reading EVENTS above and parking here.
                with trio.CancelScope() as parked:
                    self._parked = parked
                    try:
                        await trio.lowlevel.wait_readable(self._fd)
                    finally:
                        self._parked = None
                parked_before = True
                if self._closed:
                    raise trio.ClosedResourceError("the zmq socket was closed while waiting")
        finally:
            self._waiting = False

    async def recv(self) -> list[bytes]:
        """Receive one whole message, waiting for it. If this raises Cancelled, no message
        was taken off the socket."""
        return await self._receive(self.recv_nowait)

    async def recv_from(self) -> tuple[list[bytes], int]:
        """As :meth:`recv`, with the connection's descriptor (:meth:`recv_from_nowait`)."""
        return await self._receive(self.recv_from_nowait)

    async def _receive(self, take: Callable[[], Any]) -> Any:
        """What ``take`` (a ``*_nowait`` receive) gives, waiting until it gives something."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            received = take()
            if received is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return received
            await self.wait(zmq.POLLIN)

    async def send(self, frames: Sequence[bytes]) -> None:
        """Send one message, waiting while the socket is at its high-water mark. If this
        raises Cancelled, the message was not sent.

        Caution: a ROUTER reports POLLOUT when *some* peer has room, so for a ROUTER this
        can spin against one full peer; the server uses ``send_nowait`` instead.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self.send_nowait(frames):
            await self.wait(zmq.POLLOUT)
        await trio.lowlevel.cancel_shielded_checkpoint()

    # --- lifetime -------------------------------------------------------------------------

    def close(self, linger: int = 0) -> None:
        """Close the socket; a task waiting on it gets ClosedResourceError."""
        if self._closed:
            return
        self._closed = True
        # Tell trio before the fd goes away, so it forgets its epoll registration and
        # wakes any waiter with ClosedResourceError rather than leaving it on a dead fd.
        trio.lowlevel.notify_closing(self._fd)
        self.socket.close(linger=linger)

    @property
    def closed(self) -> bool:
        return self._closed


def _view_or_bytes(frame: zmq.Frame) -> bytes | memoryview:
    return frame.buffer if len(frame) >= VIEW_MIN else frame.bytes


def _with_more_frames(socket: zmq.Socket, message: list[bytes]) -> list[bytes]:
    """``message`` (its first frame received) with the rest of its frames, as bytes."""
    while socket.get(zmq.RCVMORE):
        message.append(socket.recv(zmq.NOBLOCK))
    return message
