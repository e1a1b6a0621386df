"""The event socket's side of the daemon: numbering, encoding and queueing events, the task
that sends them on the XPUB, subscription messages (the ``bus.sync`` tokens), and the
bound on subscribers that read nothing.

Theory of operation
-------------------
::

    publish() ──▶ deque ──▶ events task ──topic NUL envelope(s)──▶ XPUB events.sock ──▶ SUB sockets
                               ◀──────── subscription messages b"\\x01<prefix>" ─────┘

``publish`` is synchronous and cheap: it numbers the event (gap-free per channel), encodes
it (:class:`bus.batches.EventEncoder`, the constant parts of a topic's envelopes packed
once; a big payload gets its header written in front of it in its own buffer by
:class:`bus.codec.Encoder` and goes out without a copy) and appends ``(topic, envelope)``
to a deque. The events task owns the XPUB socket: it drains the deque with non-blocking
sends, reads subscription messages, and parks on the socket when both are empty;
``publish`` wakes it when the deque goes from empty to non-empty. A run of queued events
of one topic goes out as one frame, ``topic NUL [envelope, ...]`` (wire revision 3,
bus/batches.py: a frame costs pyzmq about as much as the encoding of an event, whatever its
size); an event alone goes out alone, ``topic NUL envelope``. PUB/XPUB drops silently at a
subscriber's high-water mark; subscribers find out from gaps in ``seq``. The publisher
never blocks on a slow subscriber.

*What nobody takes.* XPUB passes every subscription (XPUB_VERBOSE) and the last
unsubscription of a prefix, so the events task knows exactly which prefixes are
subscribed; a topic none of them starts is dropped before batching and sending (libzmq
would drop it after), counted in ``stats.events_unsubscribed``. Subscribing with the
``bus.sync`` handshake, the subscription is known before ``subscribe`` returns.

*Slow subscribers.* The high-water mark counts messages, and a log record can be 1 MiB, so
it bounds nothing in bytes; XPUB tells nothing about one subscriber's queue either. The
kernel does: SIOCOUTQ on a subscriber's connection is what it has not read yet. Once per
eighth of ``subscriber_queue_bytes`` published, the events task reads it for every
subscriber; one whose unread count has not moved (and is not 0) while
``subscriber_queue_bytes`` of events were published, for 0.1 s at least, reads nothing,
and is disconnected (bus/connections.py; libzmq frees its queue, the heap is trimmed soon
after).

*Sync tokens.* A subscription ``sync.<token>`` seen on the XPUB wakes the ``bus.sync``
request waiting for it (bus/server.py draws the handshake), or is kept (at most
``SYNC_SEEN_LIMIT``) for the request still on its way.

*Filtered subscriptions.* A subscription ``filter.<token>.`` carries a filter
(bus/filters.py): the events task registers it, and ``publish`` queues each event of
``filter_channel`` that passes it once more, as the whole frame ``filter.<token>.<n> NUL
envelope``: the same envelope bytes (no second encode). The filter is evaluated before
anything is sent, so a subscriber that wants 1% of the events receives 1% of them; the
filters are indexed by the action and type they name (:class:`bus.filters.FilterSet`), so
an event none of them names costs ``publish`` one dict lookup, however many filters there
are. The last unsubscription (XPUB passes only that one) forgets the filter.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from time import time
from typing import Any

import trio
import zmq

from bus import codec
from bus.batches import BATCH_BYTES, BATCH_EVENTS, EventEncoder, batch_frame
from bus.codec import TOPIC_END, Envelope
from bus.connections import Connections, unread_bytes
from bus.errors import MalformedFrame
from bus.filters import PREFIX as FILTER_TOPIC_PREFIX, Entry, FilterSet
from bus.requests import RequestFailed
from bus.stats import BusStats
from bus.trio_zmq import AsyncSocket

FILTER_PREFIX = FILTER_TOPIC_PREFIX.encode()
#: The prefix of containers' log topics (``log.<id>.stdout|stderr``).
LOG_PREFIX = b"log."
#: A subscription-only replay's prefix (bus/remote.py), and the topic of its end marker.
REPLAY_PREFIX = b"replay."
REPLAY_END = "replay.end"

__all__ = ["Publisher", "PAYLOAD_MIN", "PAYLOAD_ROOM"]

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
#: Topics whose "does a subscription take it" is remembered at most (a container's come and go).
WANTED_LIMIT = 4_096
#: sync tokens seen on the event socket before their bus.sync request arrived, kept at most.
SYNC_SEEN_LIMIT = 4_096
#: A subscriber counts as reading nothing only after this long too (seconds): a reader that
#: the scheduler left aside for a moment is not taken for one that reads nothing.
SUBSCRIBER_STALL_SECONDS = 0.1


class Publisher:
    """The events of one BusServer (see the module doc). ``socket`` is the XPUB while the
    server serves, None otherwise. Not thread-safe: publish from the trio thread."""

    def __init__(self, stats: BusStats, connections: Connections, *, source: str, subscriber_queue_bytes: int):
        if subscriber_queue_bytes < 1:
            raise ValueError("subscriber_queue_bytes must be at least 1")
        self.subscriber_queue_bytes = subscriber_queue_bytes
        self.socket: AsyncSocket | None = None
        self.linger_ms = 0  # how long the socket may deliver what is queued on close (drain())
        self._stats = stats
        self._connections = connections
        self._source = source
        self._sequencer = codec.Sequencer()
        self._encoder = codec.Encoder()  # codec.encode() without a Packer per event
        self._event_encoder = EventEncoder(source)  # the same bytes, constant parts packed once
        #: (topic, envelope) to send behind ``topic NUL``, batched with its neighbours of
        #: the same topic; (None, frame): a whole frame, sent as it is.
        self._queue: deque[tuple[bytes | None, bytes | memoryview]] = deque()
        self._drained = trio.Event()
        self._sync_seen: OrderedDict[str, None] = OrderedDict()
        self._sync_waiting: dict[str, trio.Event] = {}
        self._events_bytes = 0  # bytes of events handed to the XPUB socket, ever
        self._checked_at = 0  # _events_bytes at the last _check_subscribers()
        self._stalled: dict[int, tuple[int, int, float]] = {}  # fd -> (unread, _events_bytes, time) then
        #: The channel whose events filtered subscriptions see (bus/filters.py); None: no filters.
        self.filter_channel: str | None = None
        self.filters = FilterSet()
        #: ``after_seq -> (envelope maps after it, last_seq, lost)``: the journal, for
        #: subscription-only replays (``replay.<token>.<seq>.``, bus/remote.py); None: none.
        self.replayer: Callable[[int], tuple[list[dict[str, Any]], int, int]] | None = None
        #: What a replay's end marker says of this daemon (its id and name).
        self.identity: dict[str, Any] = {}
        #: Subscriptions to one container's log topics (``log.<id>...``; not the collector's
        #: whole ``log.``): such a subscriber reads that output live (:meth:`watches_log`).
        self.log_subscriptions: set[bytes] = set()
        #: Called when such a subscription comes (the daemon flushes the lines held back).
        self.on_log_subscription: Callable[[], None] | None = None
        #: Every prefix some subscriber subscribes to, and whether a topic matches one (a
        #: cache, emptied when they change): what nobody takes is not sent (module doc).
        self._subscribed: set[bytes] = set()
        self._wanted: dict[bytes, bool] = {}

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
        seq = self._sequencer.next(channel)
        try:
            room: int | None = None
            if payload is not None:
                if "data" in data:
                    raise ValueError("publish(payload=...) gives data['data']: data must not have it")
                buffer, start, end = payload
                if start >= PAYLOAD_ROOM and end - start >= PAYLOAD_MIN:
                    room, data = start, {**data, "data": b""}  # the stand-in encode_around replaces
                else:
                    data = {**data, "data": bytes(memoryview(buffer)[start:end])}
            entry: tuple[bytes | None, bytes | memoryview] | None = None
            body: bytes | None = None
            if room is not None:
                assert payload is not None
                envelope = Envelope(topic=topic, seq=seq, data=data, source=self._source)
                buffer, start, end = payload
                frame = self._encoder.encode_around(envelope, buffer, start, end, topic.encode() + TOPIC_END)
                if frame is not None:
                    data["data"] = frame[len(frame) - (end - start) :]  # the envelope's data too (same dict)
                    entry = (None, frame)  # a whole frame, sent alone
                else:  # a very long topic or source: no room for the header
                    data["data"] = bytes(memoryview(buffer)[start:end])
            if entry is None:
                envelope, topic_bytes, body = self._event_encoder.encode(topic, seq, time(), data)
                entry = (topic_bytes, body)
        except BaseException:
            self._sequencer.give_back(channel, seq)  # gap-free: a seq is used only once encoded
            raise
        self._stats.events_published += 1
        queue = self._queue
        if len(queue) >= EVENT_QUEUE_LIMIT:
            self._stats.events_dropped += 1
            return envelope
        if not queue and self.socket is not None:
            self.socket.wake()
        queue.append(entry)
        filters = self.filters
        if filters.active and channel == self.filter_channel and body is not None:
            # The filtered subscriptions' copies (bus/filters.py), behind each one's numbered
            # topic. Inline: this runs for every event, and a call costs what the lookup does;
            # the filters' index leads to those the event may pass, usually none.
            route = filters.route
            if route is not None and type(data) is dict:
                value = data.get(route[0])
                candidates = route[1].get(value) if type(value) is str else None
            else:
                candidates = filters.candidates(data)
            if candidates:
                self._queue_filtered(candidates, data, body)
        return envelope

    def _queue_filtered(self, candidates: list[Entry], data: Any, body: bytes) -> None:
        """Queue ``body`` once more behind the numbered topic of each filter that passes, as a
        whole frame: its topic is new every time (never batched with another), and its
        filter is subscribed, or it would not be registered (the events task need not look
        the topic up in the subscriptions, nor remember one more topic)."""
        queue = self._queue
        for topic in self.filters.topics_for(data, candidates):
            if len(queue) >= EVENT_QUEUE_LIMIT:
                self._stats.events_dropped += 1
            else:
                queue.append((None, topic + b"\0" + body))

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
        self.linger_ms = int(timeout * 1000)
        with trio.move_on_after(timeout):
            while self._queue and self.socket is not None:
                self._drained = trio.Event()
                await self._drained.wait()
        return not self._queue

    def drop_queued(self) -> None:
        """The server stopped: what was never sent is dropped (counted)."""
        self._stats.events_dropped += len(self._queue)
        self._queue.clear()

    async def serve(self) -> None:
        """The events task: send what is queued, read subscription messages, until cancelled."""
        events = self.socket
        assert events is not None
        send = events.socket.send
        nonblocking = zmq.NOBLOCK
        queue = self._queue
        popleft = queue.popleft
        wanted = self._wanted
        stats = self._stats
        while True:
            while (message := events.recv_nowait()) is not None:
                self._on_subscription(message)
            sent = sent_bytes = unsubscribed = frames = 0
            # This task is the XPUB's only user, and the socket is re-checked (EVENTS) in
            # events.wait() before parking, so raw sends need no touched() here.
            while queue and sent < EVENT_BATCH:
                topic, body = popleft()
                count = 1
                if topic is None:
                    frame = body
                elif not (wanted.get(topic) or topic not in wanted and self._wants(topic)):
                    # No subscription takes this topic: XPUB would drop it. Skip its run.
                    while queue and queue[0][0] == topic:
                        popleft()
                        count += 1
                    unsubscribed += count
                    sent += count
                    continue
                elif not queue or queue[0][0] != topic:  # no backlog of this topic: alone
                    frame = topic + TOPIC_END + body
                else:  # a backlog: its envelopes of this topic in one frame (bus/batches.py)
                    bodies = [body]
                    size = len(body)
                    while queue and count < BATCH_EVENTS:
                        following, next_body = queue[0]
                        if following != topic or size + len(next_body) > BATCH_BYTES:
                            break
                        popleft()
                        bodies.append(next_body)
                        size += len(next_body)
                        count += 1
                    frame = batch_frame(topic, bodies)
                try:
                    send(frame, nonblocking, copy=len(frame) < EVENT_ZERO_COPY)
                except zmq.Again:  # only with XPUB_NODROP, which we do not set
                    stats.events_dropped += count
                sent += count
                sent_bytes += len(frame)
                frames += 1
            stats.events_sent += sent - unsubscribed
            stats.events_unsubscribed += unsubscribed
            stats.event_frames += frames
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
        peers = self._connections.peers["events"]
        stalled = self._stalled
        total = self._events_bytes
        now = trio.current_time()
        for fd in peers.live_fds():
            unread = unread_bytes(fd)
            previous = stalled.get(fd)
            if unread <= 0 or previous is None or previous[0] != unread:
                stalled[fd] = (unread, total, now)  # it reads (or has nothing to read)
            elif total - previous[1] >= self.subscriber_queue_bytes and now - previous[2] >= SUBSCRIBER_STALL_SECONDS:
                del stalled[fd]
                self._connections.cut_off_subscriber(fd, total - previous[1], self.subscriber_queue_bytes)
        if len(stalled) > peers.stats.connections:
            live = set(peers.live_fds())
            for fd in [fd for fd in stalled if fd not in live]:
                del stalled[fd]

    # --- sync tokens ------------------------------------------------------------------------

    def _on_subscription(self, message: list[bytes]) -> None:
        if len(message) != 1 or not message[0]:
            return
        body = message[0]
        subscribe = body[0] == 1
        if subscribe:
            self._stats.subscriptions += 1
            self._subscribed.add(body[1:])
        elif body[0] == 0:  # XPUB passes only the last one: nobody subscribes to it now
            self._subscribed.discard(body[1:])
        self._wanted.clear()
        if body.startswith(FILTER_PREFIX, 1):
            self._on_filter(body[1:].decode("utf-8", "replace"), subscribe)
            return
        if body.startswith(REPLAY_PREFIX, 1):
            if subscribe:
                self._replay(body[1:])
            return
        if body.startswith(LOG_PREFIX, 1) and len(body) > len(LOG_PREFIX) + 1:
            # XPUB passes every subscription (XPUB_VERBOSE) and only the last unsubscription
            # of a prefix: a set of the prefixes subscribed is exact.
            if subscribe:
                self.log_subscriptions.add(body[1:])
                if self.on_log_subscription is not None:
                    self.on_log_subscription()
            else:
                self.log_subscriptions.discard(body[1:])
            return
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

    def _wants(self, topic: bytes) -> bool:
        """Whether a subscription takes ``topic`` (remembered until the subscriptions change)."""
        if len(self._wanted) >= WANTED_LIMIT:
            self._wanted.clear()
        wanted = self._wanted[topic] = any(topic.startswith(prefix) for prefix in self._subscribed)
        return wanted

    def watches_log(self, container_id: str) -> bool:
        """A subscriber takes this container's log events, by a prefix that names it (or
        part of its id): someone reads its output live. The log collector's ``log.`` does
        not count."""
        if not self.log_subscriptions:
            return False
        topic = f"log.{container_id}.".encode()
        return any(topic.startswith(prefix) or prefix.startswith(topic) for prefix in self.log_subscriptions)

    def _on_filter(self, prefix: str, subscribe: bool) -> None:
        """A filtered subscription came (register its filter) or its last subscriber went
        (forget it). XPUB passes an unsubscription only for the last one."""
        if not subscribe:
            self.filters.remove(prefix)
        elif not self.filters.add(prefix):
            self._stats.filters_refused += 1

    def _replay(self, prefix: bytes) -> None:
        """A subscription ``replay.<token>.<seq>.``: the journal after ``seq`` behind that
        topic, then a ``replay.end`` envelope (bus/remote.py). Nobody else subscribes to
        the token, so only its subscriber receives them; its other subscriptions, sent
        before on the same connection, are in effect (the replay is its sync too)."""
        parts = prefix.split(b".")
        if self.replayer is None or len(parts) != 4 or parts[3] or not parts[1] or not parts[2].isdigit():
            self._stats.replays_refused += 1
            return
        events, last_seq, lost = self.replayer(int(parts[2]))
        queue = self._queue
        if len(queue) + len(events) + 1 > EVENT_QUEUE_LIMIT:
            self._stats.replays_refused += 1
            return
        encode = self._encoder.encode
        for event in events:
            try:
                envelope = Envelope(event["topic"], event["seq"], event.get("data"), event.get("source", self._source),
                                    event.get("ts"), event.get("v", 1))
            except (KeyError, MalformedFrame):
                continue  # a journal record this version cannot send: its seq shows as a gap
            queue.append((prefix, encode(envelope)))
        end = Envelope(topic=REPLAY_END, seq=last_seq, source=self._source,
                       data={"last_seq": last_seq, "lost": lost, "daemon": self.identity})
        queue.append((prefix, encode(end)))
        self._stats.replays += 1
        if self.socket is not None:
            self.socket.wake()

    async def subscription_seen(self, token: str, timeout: float) -> bool:
        """Wait (at most ``timeout``) until the XPUB has seen the subscription ``sync.<token>``
        (or return at once if it has already). False when it has not in time.

        Raises:
            RequestFailed(conflict): another request waits for the same token.
        """
        if token in self._sync_seen:
            del self._sync_seen[token]
            return True
        if token in self._sync_waiting:
            raise RequestFailed("conflict", f"a bus.sync with token {token!r} is already waiting")
        seen = self._sync_waiting[token] = trio.Event()
        try:
            with trio.move_on_after(timeout):
                await seen.wait()
                return True
        finally:
            del self._sync_waiting[token]
        return False
