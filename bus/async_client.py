"""The trio bus client, for workers and embedding: :class:`AsyncClient` and its
subscriptions.

Importing this module imports neither trio nor pyzmq (``bus.client`` re-exports it and the
CLI imports that): a client loads them when it is made. Requests and subscriptions speak
the protocol the synchronous client does (bus/sync_client.py describes it).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from bus import codec
from bus.codec import Envelope
from bus.connect import SYNC_TIMEOUT, FilterGaps, check_daemon, check_prefixes, events, locate, subscriber
from bus.errors import FrameError, RequestTimeout

if TYPE_CHECKING:
    import zmq

    from bus.trio_zmq import AsyncSocket

__all__ = ["AsyncClient", "AsyncStream", "AsyncSubscription"]


class _Pending:
    __slots__ = ("reply", "streamed", "wants_stream")

    def __init__(self, wants_stream: bool = False) -> None:
        self.reply: Envelope | None = None
        self.streamed: deque[dict] = deque()  # stream payloads not yet taken (a stream's request)
        self.wants_stream = wants_stream

    def ready(self) -> bool:
        return self.reply is not None or bool(self.streamed)


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

        request_id = self._last_id + 1
        pending = _Pending()
        try:
            with trio.fail_after(timeout):
                await self._send(op, request_id, pending, args)
                await self._wait(pending)
        except trio.TooSlowError:
            raise RequestTimeout(op, timeout) from None
        finally:
            self._pending.pop(request_id, None)
        return codec.unwrap_reply(pending.reply)

    async def open_stream(self, op: str, args: dict[str, Any] | None = None) -> AsyncStream:
        """Send a streaming request (an attached session, a pull's progress): the returned
        :class:`AsyncStream` takes the daemon's stream messages and sends the client's. Close
        it (``aclose``, or ``async with``) when done; what arrives after is dropped."""
        request_id = self._last_id + 1
        pending = _Pending(wants_stream=True)
        await self._send(op, request_id, pending, args)
        return AsyncStream(self, op, request_id, pending)

    async def _send(self, op: str, request_id: int, pending: _Pending, args: dict[str, Any] | None) -> None:
        dealer = self._control_socket()
        self._last_id = request_id
        self._pending[request_id] = pending
        await self._send_frame(dealer, codec.encode(codec.request(op, request_id, args if args is not None else {},
                                                                  self.source)))

    @staticmethod
    async def _send_frame(dealer: AsyncSocket, frame: bytes) -> None:
        import trio

        delay = 0.001
        while not dealer.send_nowait((frame,)):  # at the HWM: rare, back off
            await trio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _wait(self, pending: _Pending) -> None:
        """Until ``pending`` has its reply or a stream payload. One task reads the socket for
        every waiter (the class's theory of operation)."""
        dealer = self._control_socket()
        while not pending.ready():
            if self._reading:
                await self._replies.park()
                continue
            self._reading = True
            try:
                while not pending.ready():
                    self._file_reply(await dealer.recv())
            finally:
                self._reading = False
                self._replies.unpark_all()

    def _file_reply(self, frames: list[bytes]) -> None:
        if len(frames) != 1:
            return
        try:
            envelope = codec.decode(frames[0])
        except FrameError:
            return
        pending = self._pending.get(envelope.seq)
        if pending is None:
            return  # stale: its request timed out or its stream was closed
        if codec.is_stream(envelope):
            if not pending.wants_stream:
                return  # a stream message nobody asked for
            pending.streamed.append(envelope.data)
        else:
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


class AsyncStream:
    """One streaming request of an :class:`AsyncClient` (docs/events.md, "Sessions"):
    ``receive`` gives the daemon's stream payloads, then None once the reply came (its
    result in ``result``; an error reply raises RemoteError); ``send`` sends the client's."""

    def __init__(self, client: AsyncClient, op: str, request_id: int, pending: _Pending):
        self.op = op
        self.request_id = request_id
        self.result: Any = None
        self.done = False
        self._client = client
        self._pending = pending

    async def receive(self) -> dict | None:
        """The next stream payload; None once the request has replied (see ``result``).

        Raises:
            RemoteError: the request failed.
        """
        pending = self._pending
        if not pending.streamed and not self.done:
            await self._client._wait(pending)
        if pending.streamed:
            return pending.streamed.popleft()
        if not self.done:
            self.done = True
            self._client._pending.pop(self.request_id, None)
            self.result = codec.unwrap_reply(pending.reply)
        return None

    async def send(self, payload: dict[str, Any]) -> None:
        """Send a ``stream.<op>`` message of this request (input, credit, resize, detach)."""
        if self.done:
            raise RuntimeError(f"the stream of {self.op!r} is finished")
        client = self._client
        frame = codec.encode(codec.stream(self.op, self.request_id, payload, client.source))
        await client._send_frame(client._control_socket(), frame)

    async def aclose(self) -> None:
        """Stop listening: what the daemon still sends for this request is dropped."""
        self.done = True
        self._client._pending.pop(self.request_id, None)

    async def __aenter__(self) -> AsyncStream:
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
        self._received: list[Envelope] = []  # the rest of a batch (bus/batches.py), reversed

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> Envelope:
        if self._received:
            return self._received.pop()
        while True:
            received = events(await self._sub.recv())
            if received is None:
                self.bad_frames += 1
                continue
            topic, envelopes, bad = received
            self.bad_frames += bad
            self.filter_gaps.seen(topic)
            if len(envelopes) == 1:
                return envelopes[0]
            if envelopes:
                envelopes.reverse()
                self._received = envelopes
                return envelopes.pop()

    async def receive(self) -> Envelope:
        """The next event (same as ``await anext(subscription)``)."""
        return await self.__anext__()
