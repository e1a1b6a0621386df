"""The control socket's side of the daemon: requests in, one task per request, stream
messages both ways, exactly one reply out.

Theory of operation
-------------------
::

    client DEALER ──[request]──────────▶ ROUTER control.sock ──▶ one task per request ──▶ handler
                  ◀──[stream.<op>]* [reply.<op>]── send_nowait from the request's own task

One task receives on the ROUTER (it is the socket's only waiter, see ``bus/trio_zmq.py``)
and starts one task per request, so a ``wait`` that takes minutes does not hold up
anything else. Stream messages and replies are sent by the request's task with
non-blocking sends; :class:`~bus.trio_zmq.AsyncSocket` un-parks the receiving task after
each one, so no wake-up is lost. ROUTER_MANDATORY makes a send to a peer that is gone
(EHOSTUNREACH) or full (EAGAIN) fail instead of vanishing: a stream message that cannot be
delivered is counted and ``Request.stream`` returns False; a reply waits up to
``REPLY_SEND_TIMEOUT`` for a full peer to drain (ZeroMQ cannot say when *one* ROUTER peer
has room, so it retries with a short back-off), then is counted and dropped, and the
client, which does not read its replies, is disconnected (bus/connections.py).

*Client stream messages.* While a request runs, its client may send ``stream.<op>``
envelopes with the request's id (``seq``): input of an attached session, credits, resize.
The control task files each one in the request's inbox (bus/requests.py) and the handler
takes them with ``await request.receive()``. Messages for a request that has ended (or
never existed) are counted in ``stats.stream_in_dropped``, never answered.

*Bounds.* Each message carries its connection's fd (ZMQ_SRCFD): one from a connection
refused, cut off or gone is not run (nobody would read the answer); a client over
``max_in_flight`` requests without a reply gets ``too_many_requests`` at once; the
requests of ops in ``cancel_on_disconnect`` are cancelled when their client leaves.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import trio
import zmq

from bus import codec
from bus.codec import Envelope
from bus.connections import Connections
from bus.errors import ERROR_CODES, FrameError, MalformedFrame
from bus.requests import Handler, Request
from bus.stats import BusStats
from bus.trio_zmq import AsyncSocket

__all__ = ["Control", "CONTROL_MAXMSGSIZE", "CONTROL_SNDHWM", "REPLY_SEND_TIMEOUT"]

#: How long a reply waits for a peer at its high-water mark before it is dropped (seconds).
REPLY_SEND_TIMEOUT = 5.0
#: Messages queued per client on the control socket before stream messages are refused.
CONTROL_SNDHWM = 10_000
#: Inbound control messages larger than this make libzmq disconnect the peer; frames
#: between codec.MAX_FRAME and this get a bad_frame reply.
CONTROL_MAXMSGSIZE = 4 * codec.MAX_FRAME


class Control:
    """The requests of one BusServer (see the module doc). ``socket`` is the ROUTER while
    the server serves, None otherwise; ``handlers`` maps each op to its handler."""

    def __init__(self, handlers: Mapping[str, Handler], stats: BusStats, connections: Connections, *,
                 source: str, log: Any = None, cancel_on_disconnect: Collection[str] = ()):
        self.handlers = dict(handlers)
        self.source = source
        self.socket: AsyncSocket | None = None
        self._stats = stats
        self._connections = connections
        self._log = log
        self._cancel_on_disconnect = frozenset(cancel_on_disconnect)
        self._running: dict[tuple[bytes, int], Request] = {}  # (peer, request id): for stream input

    async def serve(self, nursery: trio.Nursery) -> None:
        """The control task: receive every message, start a task per request, until cancelled."""
        control = self.socket
        assert control is not None
        peers = self._connections.peers["control"]
        while True:
            frames, fd = await control.recv_from()
            # Every monitor event libzmq reported before this message: fd is then current.
            self._connections.read_monitor("control")
            if peers.is_refused(fd) or (frames and not peers.seen(frames[0], fd)):
                # From a connection refused, cut off or gone: nobody would read an answer.
                self._stats.requests_abandoned += 1
                continue
            self.on_message(nursery, frames)

    def on_message(self, nursery: trio.Nursery, frames: list[bytes]) -> None:
        """One message from the ROUTER (``[peer, frame]``): a request gets a task that
        answers it with exactly one reply (or ``too_many_requests`` at once past the client's
        cap); a bad frame or an unknown operation is answered at once; a client's stream
        message is filed; anything else is counted."""
        if len(frames) != 2:
            self._stats.frames_bad += 1
            self._debug("bus dropped a control message", frames=len(frames))
            return
        peer, frame = frames
        try:
            envelope = codec.decode(frame)
        except FrameError as exc:
            self._answer_bad_frame(peer, "unknown", 0, exc)
            return
        if codec.is_stream(envelope):
            self._file_stream_message(peer, envelope)
            return
        try:
            op = codec.request_op(envelope)
        except MalformedFrame as exc:
            prefix, _, named = envelope.topic.partition(".")
            self._answer_bad_frame(peer, named if prefix == "request" and named else "unknown", envelope.seq, exc)
            return
        self._stats.requests += 1
        handler = self.handlers.get(op)
        if handler is None:
            known = sorted(self.handlers)
            frame = codec.encode(
                codec.error_reply(
                    op,
                    envelope.seq,
                    "bad_request",
                    f"unknown operation {op!r}; known operations: {', '.join(known)}",
                    {"op": op, "known": known},
                    source=self.source,
                )
            )
            self._send_reply(peer, frame, error=True)
            return
        if not self._connections.peers["control"].begin(peer):
            self._refuse_request(peer, op, envelope.seq)
            return
        self._stats.in_flight += 1
        request = Request(op, envelope.data, envelope.seq, envelope.source, peer, self)
        self._running[(peer, envelope.seq)] = request
        nursery.start_soon(self._run_handler, handler, request, name=f"bus request {op}")

    def _refuse_request(self, peer: bytes, op: str, request_id: int) -> None:
        self._stats.requests_refused += 1
        limit = self._connections.peers["control"].max_in_flight
        frame = codec.encode(
            codec.error_reply(
                op,
                request_id,
                "too_many_requests",
                f"cannot run {op!r}: this client already has {limit} requests without a reply "
                "(wait for some replies first)",
                {"limit": limit},
                source=self.source,
            )
        )
        self._send_reply(peer, frame, error=True)

    def _file_stream_message(self, peer: bytes, envelope: Envelope) -> None:
        request = self._running.get((peer, envelope.seq))
        if request is None or not request._inbox.put(envelope.data):
            self._stats.stream_in_dropped += 1
            return
        self._stats.stream_in += 1

    def _answer_bad_frame(self, peer: bytes, op: str, request_id: int, exc: FrameError) -> None:
        self._stats.frames_bad += 1
        self._debug("bus got a bad frame", error=str(exc))
        frame = codec.encode(codec.error_reply(op, request_id, "bad_frame", str(exc), source=self.source))
        self._send_reply(peer, frame, error=True)

    async def _run_handler(self, handler: Handler, request: Request) -> None:
        try:
            await self._handle(handler, request)
        finally:
            self._connections.peers["control"].end(request.peer)
            self._stats.in_flight -= 1

    async def _handle(self, handler: Handler, request: Request) -> None:
        error = False
        frame = b""
        abandonable = self._abandonable_scopes(request)
        with trio.CancelScope() as scope:
            if abandonable is not None:
                abandonable.add(scope)
            try:
                result = await handler(request)
                frame = codec.encode(codec.reply(request.op, request.request_id, result, source=self.source))
            except Exception as exc:  # noqa: BLE001 - the daemon outlives any handler
                error = True
                frame = self._error_frame(request, exc)
            finally:
                if self._running.get((request.peer, request.request_id)) is request:
                    del self._running[(request.peer, request.request_id)]
                if abandonable is not None:
                    abandonable.discard(scope)
                    if not abandonable:
                        self._connections.abandonable.pop(request.peer, None)
        if scope.cancelled_caught:
            self._stats.requests_cancelled += 1
            self._debug("bus cancelled a request: its client is gone", op=request.op, request_id=request.request_id)
            return
        # A peer over its high-water mark gets time to drain. ZeroMQ cannot tell when one
        # ROUTER peer has room again (POLLOUT means "some peer"), hence the back-off.
        with trio.move_on_after(REPLY_SEND_TIMEOUT):
            delay = 0.001
            while (sent := self.send_to(request.peer, frame)) is False:
                await trio.sleep(delay)
                delay = min(delay * 2, 0.05)
            self._count_reply(sent, error)
            return
        self._stats.replies_dropped += 1
        self._connections.cut_off_client(request.peer, f"it left {CONTROL_SNDHWM} replies unread for {REPLY_SEND_TIMEOUT:g} s")

    def _abandonable_scopes(self, request: Request) -> set[trio.CancelScope] | None:
        """The set to file the request's cancel scope in, if its client's leaving cancels it."""
        if request.op not in self._cancel_on_disconnect:
            return None
        if not self._connections.peers["control"].connected(request.peer):
            return None  # unknown connection (no monitor event for it): nothing would cancel it
        return self._connections.abandonable.setdefault(request.peer, set())

    def _error_frame(self, request: Request, exc: Exception) -> bytes:
        code = getattr(exc, "code", None)
        message = getattr(exc, "message", None)
        if isinstance(code, str) and code in ERROR_CODES and isinstance(message, str):
            details = getattr(exc, "details", None)
            details = details if isinstance(details, dict) else None
            if code == "internal":
                self._error("bus request failed", request, exc)
        else:
            self._stats.handler_errors += 1
            self._error("bus request failed", request, exc)
            code = "internal"
            message = f"internal error in {request.op!r}: {type(exc).__name__}: {exc} (the daemon logged it)"
            details = None
        try:
            return codec.encode(
                codec.error_reply(request.op, request.request_id, code, message, details, source=self.source)
            )
        except FrameError:  # details that do not encode: keep the code and message
            return codec.encode(codec.error_reply(request.op, request.request_id, code, message, source=self.source))

    def _send_reply(self, peer: bytes, frame: bytes, *, error: bool) -> None:
        """Send a reply now or drop it (counted)."""
        sent = self.send_to(peer, frame)
        if sent is False:
            self._stats.replies_dropped += 1
            self._connections.cut_off_client(peer, f"it left {CONTROL_SNDHWM} replies unread")
        else:
            self._count_reply(sent, error)

    def _count_reply(self, sent: bool | None, error: bool) -> None:
        if sent:
            self._stats.replies += 1
            self._stats.error_replies += error
        else:
            self._stats.replies_dropped += 1
            self._debug("bus dropped a reply: the peer is gone")

    def send_stream(self, peer: bytes, frame: bytes) -> bool | None:
        sent = self.send_to(peer, frame)
        if sent is True:
            self._stats.streamed += 1
        else:
            self._stats.stream_dropped += 1
        return sent

    def send_to(self, peer: bytes, frame: bytes) -> bool | None:
        """True: sent; False: the peer is over its high-water mark; None: the peer is gone
        (or the server stopped)."""
        control = self.socket
        if control is None or control.closed:
            return None
        try:
            return control.send_nowait((peer, frame))
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                self._debug("bus send failed", error=str(exc))
            return None

    # --- logging --------------------------------------------------------------------------

    def _error(self, event: str, request: Request, exc: BaseException) -> None:
        if self._log is not None:
            self._log.error(
                event,
                op=request.op,
                request_id=request.request_id,
                source=request.source,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )

    def _debug(self, event: str, **fields: Any) -> None:
        if self._log is not None:
            self._log.debug(event, **fields)
