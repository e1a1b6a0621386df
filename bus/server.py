"""The daemon's side of the bus: a ROUTER control socket and an XPUB event socket.

Theory of operation
-------------------
::

    client DEALER ──[request]──────────▶ ROUTER control.sock ──▶ one task per request ──▶ handler
                  ◀──[stream.<op>]* [reply.<op>]── send_nowait from the request's own task

    publish() ──▶ deque ──▶ events task ──[topic, envelope]──▶ XPUB events.sock ──▶ SUB sockets
                               ◀──────── subscription messages b"\\x01<prefix>" ─────┘

*Control.* One task receives on the ROUTER (it is the socket's only waiter, see
``bus/trio_zmq.py``) and starts one task per request, so a ``wait`` that takes minutes
does not hold up anything else. Stream messages and replies are sent by the request's task
with non-blocking sends; :class:`~bus.trio_zmq.AsyncSocket` un-parks the receiving task
after each one, so no wake-up is lost. ROUTER_MANDATORY makes a send to a peer that is gone
(EHOSTUNREACH) or full (EAGAIN) fail instead of vanishing: a stream message that cannot be
delivered is counted and ``Request.stream`` returns False; a reply waits up to
``REPLY_SEND_TIMEOUT`` for a full peer to drain (ZeroMQ cannot say when *one* ROUTER peer
has room, so it retries with a short back-off), then is counted and dropped.

*Client stream messages.* While a request runs, its client may send ``stream.<op>``
envelopes with the request's id (``seq``): input of an attached session, credits, resize.
The control task files each one in the request's *inbox* (a bounded deque, never a wait)
and the handler takes them with ``await request.receive()``. A client that sends more than
``INBOX_LIMIT`` messages the handler has not taken yet is cut off: its next ``receive``
raises ``bad_request``. Messages for a request that has ended (or never existed) are
counted in ``stats.stream_in_dropped``, never answered.

*Events.* ``publish`` is synchronous and cheap: it numbers the event (gap-free per channel),
encodes it and appends ``(topic, frame)`` to a deque. The events task owns the XPUB socket:
it drains the deque with non-blocking sends in batches, reads subscription messages, and
parks on the socket when both are empty; ``publish`` wakes it when the deque goes from
empty to non-empty. PUB/XPUB drops silently at a subscriber's high-water mark; subscribers
find out from gaps in ``seq``. The publisher never blocks on a slow subscriber.

*Slow subscribers.* The high-water mark counts messages, and a log record can be 1 MiB, so
it bounds nothing in bytes; XPUB tells nothing about one subscriber's queue either. The
kernel does: SIOCOUTQ on a subscriber's connection is what it has not read yet. After each
batch the events task reads it for every subscriber; one whose unread count has not moved
(and is not 0) while ``subscriber_queue_bytes`` of events were published, for 0.1 s at
least, reads nothing, and is disconnected (libzmq frees its queue; the heap is trimmed soon after).

*Connections and clients* (bus/peers.py). Socket monitors count the connections of both
sockets; past the bound (a quarter of the open-file limit at most) a new connection is shut
down at once, before libzmq can run out of descriptors, which aborts it. Each control
message carries its connection's fd (ZMQ_SRCFD), so the server knows which client sent it:
a client over ``max_in_flight`` requests without a reply gets ``too_many_requests``; when
it disconnects, its requests in ``cancel_on_disconnect`` are cancelled; when its replies
stay unread (its queue full), it is disconnected rather than left waiting for them.

*Slow joiner.* A SUB socket's subscriptions reach the XPUB asynchronously, so a subscriber
cannot know when it starts to receive. ``bus.sync`` closes that gap::

    subscriber                                  daemon
    SUB  subscribe "container."    ──────────▶  XPUB  (subscriptions from one socket
    SUB  subscribe "sync.<token>"  ──────────▶  XPUB   are applied in order)
                                                  │ sees b"\\x01sync.<token>"
    DEALER request bus.sync {token} ─────────▶  ROUTER ─ waits (<= 5 s) for the token ─┘
           reply ◀──────────────────────────────  every earlier subscription is in effect

libzmq adds a subscription to the XPUB's filter before handing its message to us, so once
the token is seen, every event published afterwards reaches the subscriber (up to its
high-water mark). XPUB_VERBOSE passes on repeated subscriptions, so two subscribers that
happen to use the same prefix both get their token seen.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import resource
import socket as _socket
import stat
import struct
import sys
import termios
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import zmq

from bus import codec
from bus.sockets import CONTROL_SOCKET, EVENTS_SOCKET, SOCKET_MODE
from bus.codec import Envelope
from bus.errors import ERROR_CODES, BusError, FrameError, MalformedFrame
from bus.peers import Peers
from bus.trio_zmq import AsyncSocket

__all__ = ["BusServer", "BusStats", "Handler", "Request", "RequestFailed", "CONTROL_SOCKET", "EVENTS_SOCKET"]

#: How long bus.sync waits for its subscription to reach the event socket (seconds).
SYNC_TIMEOUT = 5.0
#: How long a reply waits for a peer at its high-water mark before it is dropped (seconds).
REPLY_SEND_TIMEOUT = 5.0
#: Messages queued per subscriber before XPUB drops (per peer, on top of its RCVHWM).
EVENTS_SNDHWM = 100_000
#: Messages queued per client on the control socket before stream messages are refused.
CONTROL_SNDHWM = 10_000
#: Events publish() may queue before the events task has sent them; beyond, they are
#: dropped (counted in stats.events_dropped; subscribers see a gap in seq).
EVENT_QUEUE_LIMIT = 100_000
#: Events the events task sends before it lets other tasks run.
EVENT_BATCH = 2_000
#: Event frames at least this big (a log record) go to libzmq without a copy.
EVENT_ZERO_COPY = 64 << 10
#: publish(payload=...): the room it needs before the payload for the frame's header (topic,
#: source and the data's other fields), and the least payload it is used for (a bin 32).
PAYLOAD_ROOM = 512
PAYLOAD_MIN = 1 << 16
#: Inbound control messages larger than this make libzmq disconnect the peer; frames
#: between codec.MAX_FRAME and this get a bad_frame reply.
CONTROL_MAXMSGSIZE = 4 * codec.MAX_FRAME
#: Stream messages from a client that its request's handler has not taken yet, at most.
INBOX_LIMIT = 1_024
#: sync tokens seen on the event socket before their bus.sync request arrived, kept at most.
SYNC_SEEN_LIMIT = 4_096
#: Connections per bus socket, at most (and a quarter of it per client process); lowered to
#: a quarter of the open-file limit, so that both sockets together leave half of the
#: descriptors to containers and the store (see bus/peers.py).
MAX_CONNECTIONS = 4_096
#: A subscriber that reads nothing while this many bytes of events are published is
#: disconnected: what the daemon queues for it stays below about this much.
SUBSCRIBER_QUEUE_BYTES = 8 << 20
#: ... and at least this long (seconds): a reader that the scheduler left aside for a moment
#: is not taken for one that reads nothing.
SUBSCRIBER_STALL_SECONDS = 0.1
#: After a subscriber leaves, free heap pages go back to the system after these delays (s).
TRIM_DELAYS = (0.2, 1.0, 4.0)
#: Requests of one client without a reply yet, at most; the next gets ``too_many_requests``.
MAX_IN_FLIGHT = 1_024
#: Ops whose requests are cancelled when their client disconnects: they only wait, and an
#: answer nobody will read is not worth the memory (a daemon adds its own, e.g. container.wait).
CANCEL_ON_DISCONNECT = frozenset({"bus.sync"})

_SYNC_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{1,64}\Z")


class RequestFailed(BusError):
    """Raise from a handler to answer with an error reply (any exception with ``code``,
    ``message`` and optionally ``details`` attributes works the same way)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


@dataclass
class BusStats:
    """Counters of a BusServer (read them, do not write)."""

    requests: int = 0  # well-formed requests received
    replies: int = 0  # replies handed to libzmq (ok and error)
    error_replies: int = 0  # of which error replies
    replies_dropped: int = 0  # the peer was gone, or stayed full for REPLY_SEND_TIMEOUT
    frames_bad: int = 0  # undecodable request frames, wrong number of frames
    handler_errors: int = 0  # handlers that raised an exception without an error code
    streamed: int = 0  # stream messages handed to libzmq
    stream_dropped: int = 0  # stream messages refused: peer gone or over its high-water mark
    stream_in: int = 0  # stream messages from clients filed in a request's inbox
    stream_in_dropped: int = 0  # from clients, for no running request, or over INBOX_LIMIT
    events_published: int = 0  # publish() calls
    events_sent: int = 0  # events written to the XPUB socket
    events_dropped: int = 0  # events dropped before the socket (queue full, server stopped)
    subscriptions: int = 0  # subscription messages seen on the XPUB socket
    requests_refused: int = 0  # too_many_requests: the client had max_in_flight without a reply
    requests_cancelled: int = 0  # abandoned: their client disconnected before the reply
    requests_abandoned: int = 0  # not run: they came from a connection that is gone or refused
    in_flight: int = 0  # requests without a reply, now
    clients_cut_off: int = 0  # clients disconnected because they left a reply unread (queue full)
    subscribers_cut_off: int = 0  # subscribers disconnected: they read nothing for subscriber_queue_bytes
    connections: int = 0  # control.sock connections, now
    subscribers: int = 0  # events.sock connections, now
    connections_refused: int = 0  # closed at once: over the bound (both sockets)

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class Request:
    """One request, as a handler gets it."""

    op: str
    args: dict[str, Any]
    request_id: int
    source: str
    peer: bytes
    _server: BusServer = field(repr=False, compare=False)
    _inbox: Inbox = field(default_factory=lambda: Inbox(), repr=False, compare=False)

    async def stream(self, payload: dict[str, Any]) -> bool:
        """Send a ``stream.<op>`` envelope to the requester before the reply.

        Returns False, and counts it in ``stats.stream_dropped``, when it could not be
        delivered: the peer is gone or over its high-water mark. Never blocks for long;
        a checkpoint. Raises MalformedFrame if the payload cannot be encoded.
        """
        await trio.lowlevel.checkpoint()
        return self.send_stream(payload) is True

    def send_stream(self, payload: dict[str, Any]) -> bool | None:
        """As :meth:`stream`, without the checkpoint, telling the two failures apart:
        True sent, False the peer is over its high-water mark, None the peer is gone."""
        envelope = codec.stream(self.op, self.request_id, payload, source=self._server.source)
        return self._server._send_stream_status(self.peer, codec.encode(envelope))

    async def receive(self) -> dict[str, Any]:
        """The next stream message the client sent for this request (its ``data`` map), in
        order. Waits until one comes.

        Raises:
            RequestFailed(bad_request): the client sent more than INBOX_LIMIT messages
                that were not taken, or a message whose data is not a map.
        """
        return await self._inbox.receive()


class Inbox:
    """The stream messages a client sent for one running request (see the module doc)."""

    def __init__(self) -> None:
        self._messages: deque[Any] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self.overflowed = False

    def put(self, data: Any) -> bool:
        if self.overflowed or len(self._messages) >= INBOX_LIMIT:
            self.overflowed = True
            self._lot.unpark_all()
            return False
        self._messages.append(data)
        self._lot.unpark_all()
        return True

    async def receive(self) -> dict[str, Any]:
        while not self._messages and not self.overflowed:
            await self._lot.park()
        if self.overflowed:
            raise RequestFailed(
                "bad_request", f"the client sent more than {INBOX_LIMIT} stream messages without waiting for acks"
            )
        data = self._messages.popleft()
        if not isinstance(data, dict):
            raise RequestFailed("bad_request", "a stream message from the client must carry a map")
        await trio.lowlevel.checkpoint()
        return data


Handler = Callable[[Request], Awaitable[Any]]


class BusServer:
    """The bus of one daemon. Handlers map an op name to ``async def handler(request)``;
    the value a handler returns is the reply's result (it must be msgpack-encodable).
    ``bus.ping`` and ``bus.sync`` are built in.

    Not thread-safe: call publish() from the trio thread that runs serve().
    """

    def __init__(
        self,
        run_dir: str | Path,
        handlers: Mapping[str, Handler],
        *,
        source: str = "dockyard",
        log: Any = None,
        activated: Mapping[str, int] | None = None,
        max_connections: int = MAX_CONNECTIONS,
        max_in_flight: int = MAX_IN_FLIGHT,
        cancel_on_disconnect: Collection[str] = (),
        subscriber_queue_bytes: int = SUBSCRIBER_QUEUE_BYTES,
    ):
        builtin = {"bus.ping": self._ping, "bus.sync": self._sync}
        clash = sorted(set(handlers) & set(builtin))
        if clash:
            raise ValueError(f"handlers may not replace the built-in ops {', '.join(clash)}")
        for op in handlers:
            codec.request(op, 0, {}, source)  # raises MalformedFrame for an op no topic can carry
        self.run_dir = Path(run_dir)
        self.control_path = self.run_dir / CONTROL_SOCKET
        self.events_path = self.run_dir / EVENTS_SOCKET
        self.source = source
        self.stats = BusStats()
        self._handlers: dict[str, Handler] = {**handlers, **builtin}
        self._log = log
        self._sequencer = codec.Sequencer()
        self._encoder = codec.Encoder()  # codec.encode() without a Packer per event
        self._queue: deque[tuple[bytes, bytes | memoryview]] = deque()
        self._control: AsyncSocket | None = None
        self._events: AsyncSocket | None = None
        self._serving = False
        self._sync_seen: OrderedDict[str, None] = OrderedDict()
        self._sync_waiting: dict[str, trio.Event] = {}
        self._running: dict[tuple[bytes, int], Request] = {}  # (peer, request id): for stream input
        self._drained = trio.Event()
        self._events_linger_ms = 0
        if max_connections < 1 or max_in_flight < 1:
            raise ValueError("max_connections and max_in_flight must be at least 1")
        self.max_connections = max_connections
        self._peers = {role: Peers(max_connections, max_in_flight) for role in ("control", "events")}
        self._monitors: dict[str, AsyncSocket] = {}
        self._cancel_on_disconnect = CANCEL_ON_DISCONNECT | frozenset(cancel_on_disconnect)
        self._abandonable: dict[bytes, set[trio.CancelScope]] = {}  # peer -> its cancellable requests
        self._nursery: trio.Nursery | None = None
        self._trimming = False
        if subscriber_queue_bytes < 1:
            raise ValueError("subscriber_queue_bytes must be at least 1")
        self.subscriber_queue_bytes = subscriber_queue_bytes
        self._events_bytes = 0  # bytes of events handed to the XPUB socket, ever
        self._checked_at = 0  # _events_bytes at the last _check_subscribers()
        self._stalled: dict[int, tuple[int, int, float]] = {}  # fd -> (unread, _events_bytes, time) then
        # Listening sockets passed in (systemd socket activation): role -> fd, see serve().
        self._activated = dict(activated or {})
        unknown = sorted(set(self._activated) - {"control", "events"})
        if unknown:
            raise ValueError(f"activated sockets must be 'control' or 'events', not {', '.join(unknown)}")

    def operations(self) -> list[str]:
        """Every op this server answers, built-in ones included, sorted."""
        return sorted(self._handlers)

    # --- events ---------------------------------------------------------------------------

    def publish(self, topic: str, data: Any, *, channel: str,
                payload: tuple[bytearray, int, int] | None = None) -> Envelope:
        """Queue one event for the subscribers; never blocks.

        Numbers it with the next seq of ``channel`` (gap-free: a seq is used only once the
        event is encoded), stamps ts and source, and returns the envelope so the caller can
        journal it. Raises MalformedFrame / FrameTooLarge (and uses no seq) when the topic
        or data cannot go on the wire.

        ``payload`` (``buffer, start, end``): the value of ``data["data"]`` (absent from
        ``data``) is ``buffer[start:end]``, and ``buffer[:start]`` is free. The frame is then
        written around it, its header into the bytes before ``start``, and sent from
        ``buffer``: a container's output is never copied on its way out (the bytes are those
        of ``codec.encode``). At least ``PAYLOAD_ROOM`` bytes of room and ``PAYLOAD_MIN`` of
        payload, or it is packed as usual.
        """
        seq = self._sequencer.last(channel) + 1
        room: int | None = None
        if payload is not None:
            if "data" in data:
                raise ValueError("publish(payload=...) gives data['data']: data must not have it")
            buffer, start, end = payload
            if start >= PAYLOAD_ROOM and end - start >= PAYLOAD_MIN:
                room, data = start, {**data, "data": b""}  # packed empty: the header ends c4 00
            else:
                data = {**data, "data": bytes(memoryview(buffer)[start:end])}
        envelope = Envelope(topic=topic, seq=seq, data=data, source=self.source)
        frame: bytes | memoryview | None = None
        if room is not None:
            assert payload is not None
            buffer, start, end = payload
            frame = self._encoder.encode_around(envelope, buffer, start, end)
            if frame is not None:
                data["data"] = frame[len(frame) - (end - start) :]  # the envelope's data too (same dict)
            else:  # a very long topic or source: no room for the header
                data["data"] = bytes(memoryview(buffer)[start:end])
        if frame is None:
            frame = self._encoder.encode(envelope)
        self._sequencer.next(channel)
        self.stats.events_published += 1
        queue = self._queue
        if len(queue) >= EVENT_QUEUE_LIMIT:
            self.stats.events_dropped += 1
            return envelope
        if not queue and self._events is not None:
            self._events.wake()
        queue.append((topic.encode(), frame))
        return envelope

    def last_seq(self, channel: str) -> int:
        """The seq of the last event published on a channel, 0 if none."""
        return self._sequencer.last(channel)

    def resume_seq(self, channel: str, last: int) -> None:
        """Number the channel's next event ``last + 1``: a daemon restarting from its journal
        keeps the channel's seq gap-free and increasing."""
        self._sequencer.resume(channel, last)

    async def drain(self, timeout: float = 1.0) -> bool:
        """Wait (at most ``timeout``) until every published event is handed to the socket,
        and let the socket linger that long on close to deliver them. True if drained."""
        self._events_linger_ms = int(timeout * 1000)
        with trio.move_on_after(timeout):
            while self._queue and self._events is not None:
                self._drained = trio.Event()
                await self._drained.wait()
        return not self._queue

    # --- lifetime -------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind both sockets, report started, serve until cancelled, then close the sockets
        and remove their files.

        Raises BusError if a daemon is already listening on the control socket, ValueError
        if run_dir makes a socket path too long for AF_UNIX.

        A socket given in ``activated`` (a listening unix socket already bound to its path,
        e.g. by a systemd socket unit) is taken over with ZMQ_USE_FD instead of bound; its
        file belongs to whoever bound it, so it is neither chmod-ed nor removed.
        """
        if self._serving:
            raise RuntimeError("this BusServer is already serving")
        for path in (self.control_path, self.events_path):
            if len(os.fsencode(path)) > _ipc_path_max():
                raise ValueError(f"socket path {path} is longer than AF_UNIX allows ({_ipc_path_max()} bytes)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if "control" not in self._activated and _someone_listens(self.control_path):
            raise BusError(f"another daemon is already serving {self.control_path}")
        self._serving = True
        context = zmq.Context()
        bound: dict[Path, int] = {}
        try:
            control = context.socket(zmq.ROUTER)
            control.setsockopt(zmq.LINGER, 0)
            control.setsockopt(zmq.ROUTER_MANDATORY, 1)
            control.setsockopt(zmq.SNDHWM, CONTROL_SNDHWM)
            control.setsockopt(zmq.MAXMSGSIZE, CONTROL_MAXMSGSIZE)
            events = context.socket(zmq.XPUB)
            events.setsockopt(zmq.LINGER, 0)
            events.setsockopt(zmq.SNDHWM, EVENTS_SNDHWM)
            events.setsockopt(zmq.XPUB_VERBOSE, 1)
            for role, sock in (("control", control), ("events", events)):
                self._monitors[role] = AsyncSocket(_monitor(context, sock, f"inproc://bus-monitor-{role}-{id(self)}"))
            for role, sock, path in (("control", control, self.control_path), ("events", events, self.events_path)):
                if role in self._activated:
                    sock.setsockopt(zmq.USE_FD, self._activated.pop(role))  # libzmq closes it
                    sock.bind(f"ipc://{path}")
                    continue
                sock.bind(f"ipc://{path}")
                os.chmod(path, SOCKET_MODE)
                bound[path] = os.stat(path).st_ino
            self._control = AsyncSocket(control)
            self._events = AsyncSocket(events)
            task_status.started()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._serve_events)
                for role in self._monitors:
                    nursery.start_soon(self._serve_monitor, role)
                await self._serve_control(nursery)
        finally:
            if self._control is not None:
                self._control.close()
            if self._events is not None:
                self._events.close(linger=self._events_linger_ms)
            self._control = self._events = None
            self._nursery = None
            for monitor in self._monitors.values():
                monitor.close()
            self._monitors.clear()
            context.destroy(linger=0)
            for path, inode in bound.items():
                _unlink_if_ours(path, inode)
            self.stats.events_dropped += len(self._queue)
            self._queue.clear()
            self._serving = False

    # --- control socket -------------------------------------------------------------------

    async def _serve_control(self, nursery: trio.Nursery) -> None:
        control = self._control
        assert control is not None
        peers = self._peers["control"]
        while True:
            frames, fd = await control.recv_from()
            # Every monitor event libzmq reported before this message: fd is then current.
            self._read_monitor("control")
            if peers.is_refused(fd) or (frames and not peers.seen(frames[0], fd)):
                # From a connection refused, cut off or gone: nobody would read an answer.
                self.stats.requests_abandoned += 1
                continue
            self._on_control_message(nursery, frames)

    def _on_control_message(self, nursery: trio.Nursery, frames: list[bytes]) -> None:
        """One message from the ROUTER (``[peer, frame]``): a request gets a task that
        answers it with exactly one reply (or ``too_many_requests`` at once past the client's
        cap); a bad frame or an unknown operation is answered at once; a client's stream
        message is filed; anything else is counted."""
        if len(frames) != 2:
            self.stats.frames_bad += 1
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
        self.stats.requests += 1
        handler = self._handlers.get(op)
        if handler is None:
            known = sorted(self._handlers)
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
        if not self._peers["control"].begin(peer):
            self._refuse_request(peer, op, envelope.seq)
            return
        self.stats.in_flight += 1
        request = Request(op, envelope.data, envelope.seq, envelope.source, peer, self)
        self._running[(peer, envelope.seq)] = request
        nursery.start_soon(self._run_handler, handler, request, name=f"bus request {op}")

    def _refuse_request(self, peer: bytes, op: str, request_id: int) -> None:
        self.stats.requests_refused += 1
        limit = self._peers["control"].max_in_flight
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
            self.stats.stream_in_dropped += 1
            return
        self.stats.stream_in += 1

    def _answer_bad_frame(self, peer: bytes, op: str, request_id: int, exc: FrameError) -> None:
        self.stats.frames_bad += 1
        self._debug("bus got a bad frame", error=str(exc))
        frame = codec.encode(codec.error_reply(op, request_id, "bad_frame", str(exc), source=self.source))
        self._send_reply(peer, frame, error=True)

    async def _run_handler(self, handler: Handler, request: Request) -> None:
        try:
            await self._handle(handler, request)
        finally:
            self._peers["control"].end(request.peer)
            self.stats.in_flight -= 1

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
                        self._abandonable.pop(request.peer, None)
        if scope.cancelled_caught:
            self.stats.requests_cancelled += 1
            self._debug("bus cancelled a request: its client is gone", op=request.op, request_id=request.request_id)
            return
        # A peer over its high-water mark gets time to drain. ZeroMQ cannot tell when one
        # ROUTER peer has room again (POLLOUT means "some peer"), hence the back-off.
        with trio.move_on_after(REPLY_SEND_TIMEOUT):
            delay = 0.001
            while (sent := self._send_to(request.peer, frame)) is False:
                await trio.sleep(delay)
                delay = min(delay * 2, 0.05)
            self._count_reply(sent, error)
            return
        self.stats.replies_dropped += 1
        self._cut_off(request.peer, f"it left {CONTROL_SNDHWM} replies unread for {REPLY_SEND_TIMEOUT:g} s")

    def _abandonable_scopes(self, request: Request) -> set[trio.CancelScope] | None:
        """The set to file the request's cancel scope in, if its client's leaving cancels it."""
        if request.op not in self._cancel_on_disconnect:
            return None
        if not self._peers["control"].connected(request.peer):
            return None  # unknown connection (no monitor event for it): nothing would cancel it
        return self._abandonable.setdefault(request.peer, set())

    def _error_frame(self, request: Request, exc: Exception) -> bytes:
        code = getattr(exc, "code", None)
        message = getattr(exc, "message", None)
        if isinstance(code, str) and code in ERROR_CODES and isinstance(message, str):
            details = getattr(exc, "details", None)
            details = details if isinstance(details, dict) else None
            if code == "internal":
                self._error("bus request failed", request, exc)
        else:
            self.stats.handler_errors += 1
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
        sent = self._send_to(peer, frame)
        if sent is False:
            self.stats.replies_dropped += 1
            self._cut_off(peer, f"it left {CONTROL_SNDHWM} replies unread")
        else:
            self._count_reply(sent, error)

    def _count_reply(self, sent: bool | None, error: bool) -> None:
        if sent:
            self.stats.replies += 1
            self.stats.error_replies += error
        else:
            self.stats.replies_dropped += 1
            self._debug("bus dropped a reply: the peer is gone")

    def _send_stream_status(self, peer: bytes, frame: bytes) -> bool | None:
        sent = self._send_to(peer, frame)
        if sent is True:
            self.stats.streamed += 1
        else:
            self.stats.stream_dropped += 1
        return sent

    def _send_to(self, peer: bytes, frame: bytes) -> bool | None:
        """True: sent; False: the peer is over its high-water mark; None: the peer is gone
        (or the server stopped)."""
        control = self._control
        if control is None or control.closed:
            return None
        try:
            return control.send_nowait((peer, frame))
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                self._debug("bus send failed", error=str(exc))
            return None

    # --- connections (bus/peers.py) --------------------------------------------------------

    async def _serve_monitor(self, role: str) -> None:
        monitor = self._monitors[role]
        while True:
            await monitor.wait(zmq.POLLIN)
            self._read_monitor(role)

    def _read_monitor(self, role: str) -> None:
        """Take every pending monitor event of one socket: count connections, refuse the
        excess, cancel what a departed client left waiting."""
        monitor = self._monitors.get(role)
        if monitor is None:
            return
        batch = []
        while (message := monitor.recv_nowait()) is not None:
            if len(message) == 2 and len(message[0]) == 6:
                batch.append((int.from_bytes(message[0][:2], "little"), int.from_bytes(message[0][2:], "little")))
        if not batch:
            return
        subscriber_left = False
        peers = self._peers[role]
        peers.max_connections = self.connection_limit()
        path = os.fsencode(self.control_path if role == "control" else self.events_path)
        # A connection that is gone later in this batch: its fd may already be another file.
        last_gone = {fd: index for index, (event, fd) in enumerate(batch) if event == zmq.EVENT_DISCONNECTED}
        for index, (event, fd) in enumerate(batch):
            if event == zmq.EVENT_ACCEPTED:
                sock = None if last_gone.get(fd, -1) > index else _own_connection(fd, path)
                try:
                    pid = _peer_pid(sock)
                    # One that cannot be closed (gone already, or not recognised) is counted.
                    if not peers.accepted(fd, pid, refusable=sock is not None):
                        _shut_down(sock)
                        self._warn_refused(role, pid)
                finally:
                    if sock is not None:
                        sock.detach()
            elif event == zmq.EVENT_DISCONNECTED:
                for routing_id in peers.disconnected(fd):
                    for scope in self._abandonable.pop(routing_id, ()):
                        scope.cancel()
                subscriber_left = subscriber_left or role == "events"
        if subscriber_left:
            # libzmq has freed (or is freeing) what it queued for the subscriber: give the
            # pages back to the system, which glibc's arenas would otherwise keep.
            self._trim_memory()
        self.stats.connections = self._peers["control"].stats.connections
        self.stats.subscribers = self._peers["events"].stats.connections
        self.stats.connections_refused = sum(p.stats.connections_refused for p in self._peers.values())

    def _trim_memory(self) -> None:
        if self._trimming or self._nursery is None:
            return
        self._trimming = True
        self._nursery.start_soon(self._trim_later)

    async def _trim_later(self) -> None:
        """libzmq frees a departed subscriber's queue after its pipe is torn down, and pyzmq
        lets go of zero-copy frames after that: trim a few times over the next seconds."""
        try:
            for delay in TRIM_DELAYS:
                await trio.sleep(delay)
                _release_free_memory()
        finally:
            self._trimming = False

    def connection_limit(self) -> int:
        """Connections per socket now: max_connections, at most a quarter of the open-file
        limit (read each time: an administrator may lower it while the daemon runs)."""
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft // 4))

    def _warn_refused(self, role: str, pid: int) -> None:
        peers = self._peers[role]
        refused = peers.stats.connections_refused
        if self._log is not None and (refused & (refused - 1)) == 0:  # 1, 2, 4, 8...: never a flood of lines
            self._log.warning(
                "bus refused a connection: too many",
                socket=role,
                pid=pid,
                connections=peers.stats.connections,
                limit=peers.max_connections,
                per_process=peers.max_per_process,
                refused=refused,
            )

    def _cut_off(self, peer: bytes, reason: str) -> None:
        """Disconnect a control client that does not read its replies: it learns that its
        replies were lost from the closed connection, not by waiting for them forever."""
        self._read_monitor("control")
        path = os.fsencode(self.control_path)
        cut = self._peers["control"].cut_off(peer)
        if cut is None:
            self._debug("bus dropped a reply: the peer is gone", reason=reason)
            return
        fd, routing_ids = cut
        pid = 0
        sock = _own_connection(fd, path)
        if sock is not None:
            pid = _peer_pid(sock)
            _shut_down(sock)
            sock.detach()
        for routing_id in routing_ids:
            for scope in self._abandonable.pop(routing_id, ()):
                scope.cancel()
        self.stats.clients_cut_off += 1
        self.stats.connections = self._peers["control"].stats.connections
        if self._log is not None:
            self._log.warning("bus disconnected a client that does not read its replies", reason=reason, pid=pid)

    # --- event socket ---------------------------------------------------------------------

    async def _serve_events(self) -> None:
        events = self._events
        assert events is not None
        send = events.socket.send
        more = zmq.SNDMORE | zmq.NOBLOCK
        last = zmq.NOBLOCK
        queue = self._queue
        stats = self.stats
        while True:
            while (message := events.recv_nowait()) is not None:
                self._on_subscription(message)
            sent = sent_bytes = 0
            # This task is the XPUB's only user, and the socket is re-checked (EVENTS) in
            # events.wait() before parking, so raw sends need no touched() here.
            while queue and sent < EVENT_BATCH:
                topic, frame = queue.popleft()
                try:
                    send(topic, more)
                    send(frame, last, copy=len(frame) < EVENT_ZERO_COPY)
                except zmq.Again:  # only with XPUB_NODROP, which we do not set
                    stats.events_dropped += 1
                sent += 1
                sent_bytes += len(frame)
            stats.events_sent += sent
            if sent:
                self._events_bytes += sent_bytes
                # An ioctl per subscriber: once per eighth of the bound published, not per batch.
                if self._events_bytes - self._checked_at >= self.subscriber_queue_bytes >> 3:
                    self._checked_at = self._events_bytes
                    self._check_subscribers()
            if queue:
                await trio.lowlevel.checkpoint()
            else:
                self._drained.set()
                await events.wait(zmq.POLLIN)

    def _check_subscribers(self) -> None:
        """Disconnect a subscriber that read nothing while subscriber_queue_bytes of events
        were published, over SUBSCRIBER_STALL_SECONDS at least (module doc, *Slow
        subscribers*)."""
        peers = self._peers["events"]
        stalled = self._stalled
        total = self._events_bytes
        now = trio.current_time()
        for fd in peers.live_fds():
            unread = _unread_bytes(fd)
            previous = stalled.get(fd)
            if unread <= 0 or previous is None or previous[0] != unread:
                stalled[fd] = (unread, total, now)  # it reads (or has nothing to read)
            elif total - previous[1] >= self.subscriber_queue_bytes and now - previous[2] >= SUBSCRIBER_STALL_SECONDS:
                del stalled[fd]
                self._cut_off_subscriber(fd, total - previous[1])
        if len(stalled) > peers.stats.connections:
            live = set(peers.live_fds())
            for fd in [fd for fd in stalled if fd not in live]:
                del stalled[fd]

    def _cut_off_subscriber(self, fd: int, published: int) -> None:
        sock = _own_connection(fd, os.fsencode(self.events_path))
        if sock is None:
            return
        try:
            pid = _peer_pid(sock)
            _shut_down(sock)
        finally:
            sock.detach()
        self._peers["events"].refuse(fd)
        self.stats.subscribers_cut_off += 1
        self.stats.subscribers = self._peers["events"].stats.connections
        self._trim_memory()
        if self._log is not None:
            self._log.warning("bus disconnected a subscriber that reads nothing", pid=pid,
                              published=published, limit=self.subscriber_queue_bytes)

    def _on_subscription(self, message: list[bytes]) -> None:
        if len(message) != 1 or not message[0]:
            return
        body = message[0]
        subscribe = body[0] == 1
        if subscribe:
            self.stats.subscriptions += 1
        if not body.startswith(b"sync.", 1):
            return
        token = body[6:].decode("utf-8", "replace")
        if not subscribe:
            self._sync_seen.pop(token, None)
            return
        waiting = self._sync_waiting.get(token)
        if waiting is not None:
            waiting.set()
            return
        self._sync_seen[token] = None
        while len(self._sync_seen) > SYNC_SEEN_LIMIT:
            self._sync_seen.popitem(last=False)

    # --- built-in ops ---------------------------------------------------------------------

    async def _ping(self, request: Request) -> dict[str, Any]:
        """bus.ping {} -> {pid, source}"""
        return {"pid": os.getpid(), "source": self.source}

    async def _sync(self, request: Request) -> dict[str, Any]:
        """bus.sync {token: str} -> {token}, once the event socket has seen the subscription
        ``sync.<token>``; error ``timeout`` after SYNC_TIMEOUT seconds."""
        token = request.args.get("token")
        if not isinstance(token, str) or not _SYNC_TOKEN.match(token):
            raise RequestFailed("invalid_argument", "bus.sync: argument 'token' must be 1 to 64 letters, digits, "
                                "'_' or '-'", {"op": "bus.sync", "argument": "token"})
        if token in self._sync_seen:
            del self._sync_seen[token]
            return {"token": token}
        if token in self._sync_waiting:
            raise RequestFailed("conflict", f"a bus.sync with token {token!r} is already waiting")
        seen = self._sync_waiting[token] = trio.Event()
        try:
            with trio.move_on_after(SYNC_TIMEOUT):
                await seen.wait()
                return {"token": token}
        finally:
            del self._sync_waiting[token]
        raise RequestFailed(
            "timeout",
            f"the subscription sync.{token} did not reach {self.events_path} within {SYNC_TIMEOUT:g} s",
            {"token": token},
        )

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


def _monitor(context: zmq.Context, sock: zmq.Socket, address: str) -> zmq.Socket:
    """A PAIR socket that gets sock's ACCEPTED and DISCONNECTED events, none dropped: its
    receive queue is unbounded (libzmq drops monitor events at a full queue, and a lost
    DISCONNECTED would leak a connection from the count). Call before sock binds."""
    sock.monitor(address, zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
    pair = context.socket(zmq.PAIR)
    pair.setsockopt(zmq.LINGER, 0)
    pair.setsockopt(zmq.RCVHWM, 0)
    pair.connect(address)
    return pair


def _own_connection(fd: int, path: bytes) -> _socket.socket | None:
    """A socket object over fd (detach() it after use) if fd is a connection accepted on the
    unix socket bound at path, else None: fds are reused, see bus/peers.py."""
    try:
        sock = _socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        name = sock.getsockname() if sock.family == _socket.AF_UNIX else None
    except OSError:
        name = None
    if name is not None and (os.fsencode(name) == path or _same_file(name, path)):
        return sock
    sock.detach()
    return None


def _same_file(name: str | bytes, path: bytes) -> bool:
    """The socket file a connection was accepted on is ours under another name (a socket
    bound by systemd through a symlinked run dir)."""
    if not name:
        return False
    try:
        return os.path.samefile(name, path)
    except (OSError, ValueError):
        return False


def _peer_pid(sock: _socket.socket | None) -> int:
    """The pid of the process at the other end of a connection, 0 if unknown."""
    if sock is None:
        return 0
    try:
        return struct.unpack("3i", sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12))[0]
    except OSError:
        return 0


def _release_free_memory() -> None:
    """glibc's malloc_trim(0): return free heap pages to the system (nothing elsewhere)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6", use_errno=True).malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def _unread_bytes(fd: int) -> int:
    """Bytes sent on a connection that its peer has not read yet (SIOCOUTQ); -1 if unknown."""
    buffer = bytearray(4)
    try:
        fcntl.ioctl(fd, termios.TIOCOUTQ, buffer)
    except OSError:
        return -1
    return int.from_bytes(buffer, sys.byteorder, signed=True)


def _shut_down(sock: _socket.socket) -> None:
    """Shut a connection down both ways: libzmq (which owns the fd) sees the end of the
    stream and closes it."""
    try:
        sock.shutdown(_socket.SHUT_RDWR)
    except OSError:
        pass


def _ipc_path_max() -> int:
    return getattr(zmq, "IPC_PATH_MAX_LEN", 107) or 107


def _someone_listens(path: Path) -> bool:
    """True if a process accepts connections on the unix socket at path."""
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(os.fspath(path))
    except BlockingIOError:  # backlog full: someone is there
        return True
    except OSError:  # missing, refused (a stale file), not a socket
        return False
    finally:
        probe.close()
    return True


def _unlink_if_ours(path: Path, inode: int) -> None:
    """Remove a socket file we bound, unless another daemon has bound the path since."""
    try:
        st = os.lstat(path)
        if st.st_ino == inode and stat.S_ISSOCK(st.st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
