"""The trio bus client, for workers and embedding: :class:`AsyncClient` and its
subscriptions.

Importing this module imports neither trio nor pyzmq (``bus.client`` re-exports it and the
CLI imports that): a client loads them when it is made. Requests and subscriptions speak
the protocol the synchronous client does (bus/sync_client.py describes it).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from bus import codec
from bus.codec import Envelope
from bus.connect import SYNC_TIMEOUT, FilterGaps, check_daemon, check_prefixes, event, locate, subscriber
from bus.errors import FrameError, RequestTimeout

if TYPE_CHECKING:
    import zmq

    from bus.trio_zmq import AsyncSocket

__all__ = ["AsyncClient", "AsyncSubscription"]


class _Pending:
    __slots__ = ("reply",)

    def __init__(self) -> None:
        self.reply: Envelope | None = None


class AsyncClient:
    """trio bus client. Any number of tasks may have requests outstanding at once.

    Theory of operation: replies arrive on one DEALER, and only one task may wait on it
    (bus/trio_zmq.py). The first task whose reply has not come becomes the *reader*: it
    receives and files every reply under its request id, waking the others, until its own
    reply is in; then it steps down and wakes the others, one of which takes over if its
    reply is still missing. The others wait in a ParkingLot. No background task, so no
    nursery is needed to use the client.
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, *, source: str | None = None):
        import trio  # noqa: F401 - here, not at module level: the CLI never pays for it

        locate(self, run_dir, source)
        self._context: zmq.Context | None = None
        self._dealer: AsyncSocket | None = None
        self._subscriptions: set[AsyncSocket] = set()
        self._last_id = 0
        self._pending: dict[int, _Pending] = {}
        self._reading = False
        self._replies = trio.lowlevel.ParkingLot()
        self._closed = False

    async def request(self, op: str, args: dict[str, Any] | None = None, *, timeout: float = 30.0) -> Any:
        """Send one request and return the reply's result. Raises like Client.request."""
        import trio

        dealer = self._control_socket()
        self._last_id += 1
        request_id = self._last_id
        frame = codec.encode(codec.request(op, request_id, args if args is not None else {}, self.source))
        pending = self._pending[request_id] = _Pending()
        try:
            with trio.fail_after(timeout):
                delay = 0.001
                while not dealer.send_nowait((frame,)):  # at the HWM: rare, back off
                    await trio.sleep(delay)
                    delay = min(delay * 2, 0.05)
                while pending.reply is None:
                    if self._reading:
                        await self._replies.park()
                        continue
                    self._reading = True
                    try:
                        while pending.reply is None:
                            self._file_reply(await dealer.recv())
                    finally:
                        self._reading = False
                        self._replies.unpark_all()
        except trio.TooSlowError:
            raise RequestTimeout(op, timeout) from None
        finally:
            del self._pending[request_id]
        return codec.unwrap_reply(pending.reply)

    def _file_reply(self, frames: list[bytes]) -> None:
        if len(frames) != 1:
            return
        try:
            envelope = codec.decode(frames[0])
        except FrameError:
            return
        pending = self._pending.get(envelope.seq)
        if pending is None or codec.is_stream(envelope):
            return  # stale (its request timed out), or a stream message nobody asked for
        pending.reply = envelope
        self._replies.unpark_all()

    def _control_socket(self) -> AsyncSocket:
        import zmq

        from bus.trio_zmq import AsyncSocket

        if self._closed:
            raise RuntimeError("this client is closed")
        if self._dealer is None:
            check_daemon(self.control_path)
            dealer = self._zmq_context().socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(f"ipc://{self.control_path}")
            self._dealer = AsyncSocket(dealer)
        return self._dealer

    def _zmq_context(self) -> zmq.Context:
        import zmq

        if self._context is None:
            self._context = zmq.Context()
        return self._context

    @asynccontextmanager
    async def subscribe(self, prefixes: Sequence[str]) -> AsyncIterator[AsyncSubscription]:
        """``async with client.subscribe(["container."]) as events: async for e in events``.

        The bus.sync handshake is done before the context manager yields: every event
        published after that is delivered. One task iterates a subscription.

        A big event whose data ends with a bin value (a log record's ``data``) gives that
        value as a read-only memoryview of the received message, not a bytes copy
        (``bytes(view)`` makes one).
        """
        import zmq

        from bus.trio_zmq import AsyncSocket

        topics = check_prefixes(prefixes)
        if self._closed:
            raise RuntimeError("this client is closed")
        check_daemon(self.events_path)
        raw, token = subscriber(self._zmq_context(), self.events_path, topics)
        sub = AsyncSocket(raw, receive_views=True)
        self._subscriptions.add(sub)
        try:
            await self.request("bus.sync", {"token": token}, timeout=SYNC_TIMEOUT)
            raw.setsockopt(zmq.UNSUBSCRIBE, f"sync.{token}".encode())
            yield AsyncSubscription(sub)
        finally:
            self._subscriptions.discard(sub)
            sub.close()

    async def aclose(self) -> None:
        """Close every socket of this client; tasks waiting on them get ClosedResourceError."""
        import trio

        self._closed = True
        for sub in list(self._subscriptions):
            sub.close()
        self._subscriptions.clear()
        if self._dealer is not None:
            self._dealer.close()
            self._dealer = None
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncSubscription:
    """Async iterator of the events of one subscription. ``bad_frames`` counts skipped
    messages that were not envelopes."""

    def __init__(self, sub: AsyncSocket):
        self.bad_frames = 0
        self.filter_gaps = FilterGaps()  # a filtered subscription's missed events
        self._sub = sub

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> Envelope:
        while True:
            received = event(await self._sub.recv())
            if received is not None:
                self.filter_gaps.seen(received[0])
                return received[1]
            self.bad_frames += 1

    async def receive(self) -> Envelope:
        """The next event (same as ``await anext(subscription)``)."""
        return await self.__anext__()
