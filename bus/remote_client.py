"""Following remote daemons' events over CURVE (bus/remote.py), one or several merged:
what ``dockyard events --remote`` runs. Synchronous, like the CLI.

Theory of operation
-------------------
Each :class:`RemoteStream` is one SUB socket to one daemon, with a monitor socket::

    connect ─▶ handshake ─▶ subscribe replay.<token>.<last seen seq>.  (bus/remote.py)
               │             replayed events ... replay.end {last_seq, lost, daemon}
               │             live events meanwhile: held, then shown if newer than last_seq
               ├─ a gap in seq (or in a filtered subscription's numbers) ─▶ replay again
               └─ disconnected ─▶ drop the replay subscription (libzmq would send it again
                                  on reconnect) ─▶ reconnected ─▶ replay from the last seq

so a subscriber that loses its connection, or events, or whose daemon restarts, resumes from
its own cursor with nothing missed and nothing twice (seq is gap-free in the events channel
and carries on across daemon restarts). What the daemon's journal no longer holds is
reported (``lost``). :func:`merge` polls several streams and yields each event with the
stream it came from (its daemon's id, name and address).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import zmq

from bus.codec import Envelope
from bus.connect import FilterGaps, events

__all__ = ["RemoteStream", "merge"]

#: Messages a remote subscription queues before libzmq drops (gaps then trigger a replay).
RCVHWM = 100_000
#: Events :meth:`RemoteStream.on_messages` returns at most about (it stops after the message
#: that reaches it; the rest stay queued in libzmq, and the socket stays readable). A reader
#: that fell behind would otherwise take a whole backlog, up to RCVHWM batches, into one list
#: before showing any of it: every envelope alive at once makes Python's collector walk them
#: again and again (it doubled the subscriber's CPU per event in the benchmark).
SHOWN_PER_CALL = 1024
#: The seq a "live only" subscriber replays after: nothing is that new, so the replay is its
#: sync and tells it the daemon's last seq.
LIVE_ONLY = 1 << 62
_MONITORED = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
              | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)


class RemoteStream:
    """The events of one remote daemon (module doc). ``accept`` filters replayed events on
    this side (live ones are filtered by the daemon when ``prefixes`` is a filter topic);
    ``since``: events older than this time are not shown; ``warnings`` collects what a user
    should be told (lost events, a refused key)."""

    def __init__(self, context: zmq.Context, endpoint: str, *, server_key: bytes, public_key: bytes,
                 secret_key: bytes, prefixes: Sequence[str], after_seq: int | None = None,
                 accept: Callable[[Any], bool] | None = None, since: float | None = None):
        self.endpoint = endpoint
        self.identity: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.replays = 0
        self._accept = accept
        self._since = since
        self._last = after_seq  # the newest seq shown (None: not synced yet, live only)
        self._replay_prefix: bytes | None = None
        self._replayed: list[Envelope] = []
        self._held: list[Envelope] = []
        self._gaps = FilterGaps()
        self._filtered = any(prefix.startswith("filter.") for prefix in prefixes)
        self._resync_on_connect = False
        self.failed = False  # the handshake failed: a refused key or a wrong server key
        self.socket = sub = context.socket(zmq.SUB)
        try:
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.RCVHWM, RCVHWM)
            sub.setsockopt(zmq.CURVE_SERVERKEY, server_key)
            sub.setsockopt(zmq.CURVE_PUBLICKEY, public_key)
            sub.setsockopt(zmq.CURVE_SECRETKEY, secret_key)
            sub.setsockopt(zmq.RECONNECT_IVL, 100)
            sub.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            self.monitor = sub.get_monitor_socket(_MONITORED)
            for prefix in prefixes:
                sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
            self._replay()
            sub.connect(endpoint)
        except BaseException:
            sub.close(linger=0)
            raise

    @property
    def last_seq(self) -> int | None:
        return self._last

    @property
    def synced(self) -> bool:
        """Its first replay is done: what the daemon had journaled is shown."""
        return bool(self.identity)

    def close(self) -> None:
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close(linger=0)

    def _replay(self) -> None:
        """(Re)subscribe to a replay from the last seq shown; live events are held until its end."""
        sub = self.socket
        if self._replay_prefix is not None:
            sub.setsockopt(zmq.UNSUBSCRIBE, self._replay_prefix)
        after = self._last if self._last is not None else LIVE_ONLY
        self._replay_prefix = f"replay.{os.urandom(6).hex()}.{after}.".encode()
        self._replayed, self._held = [], []
        sub.setsockopt(zmq.SUBSCRIBE, self._replay_prefix)
        self.replays += 1

    def on_monitor(self) -> None:
        """Take the monitor's events: a reconnection replays from the last seq."""
        from zmq.utils.monitor import recv_monitor_message

        while self.monitor.poll(0):
            kind = recv_monitor_message(self.monitor)["event"]
            if kind == zmq.EVENT_DISCONNECTED:
                if self._replay_prefix is not None:  # not sent again on reconnect
                    self.socket.setsockopt(zmq.UNSUBSCRIBE, self._replay_prefix)
                    self._replay_prefix = None
                self._resync_on_connect = True
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.failed = False
                if self._resync_on_connect:
                    self._resync_on_connect = False
                    self._replay()
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._fail(f"{self.endpoint} refused this client's key (is it added with "
                           f"`dockyard events-keys add` there?)")
            elif kind in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                self._fail(f"the CURVE handshake with {self.endpoint} failed (wrong server key?)")

    def _fail(self, warning: str) -> None:
        if not self.failed:  # libzmq retries; say it once
            self.failed = True
            self.warnings.append(warning)

    def on_messages(self) -> list[Envelope]:
        """Queued messages taken until about SHOWN_PER_CALL events are to be shown (or none
        is queued); returns those events, in order. Call again while the socket is readable."""
        shown: list[Envelope] = []
        while len(shown) < SHOWN_PER_CALL:
            try:
                frames = [self.socket.recv(zmq.NOBLOCK)]
                while self.socket.get(zmq.RCVMORE):
                    frames.append(self.socket.recv(zmq.NOBLOCK))
            except zmq.Again:
                return shown
            received = events(frames)
            if received is None:
                continue
            topic, envelopes, _ = received
            if topic.startswith(b"replay."):
                if topic == self._replay_prefix:
                    for envelope in envelopes:
                        self._on_replayed(envelope, shown)
                continue
            self._gaps.seen(topic)
            for envelope in envelopes:
                if self._replay_prefix is not None:
                    self._held.append(envelope)
                else:
                    self._on_live(envelope, shown)
        return shown

    def _on_replayed(self, envelope: Envelope, shown: list[Envelope]) -> None:
        if envelope.topic != "replay.end":
            self._replayed.append(envelope)
            return
        data = envelope.data if isinstance(envelope.data, dict) else {}
        self.identity = dict(data.get("daemon") or {})
        if data.get("lost") and self._last is not None:
            self.warnings.append(f"{self.endpoint}: {data['lost']} events after seq {self._last} are older than "
                                 f"the daemon's journal")
        self._replay_prefix = None
        last = self._last if self._last is not None else -1
        for replayed in self._replayed:
            if replayed.seq > last:
                last = replayed.seq
                if self._accept is None or self._accept(replayed.data):
                    self._show(replayed, shown)
        self._last = max(last, int(data.get("last_seq", 0)))
        held, self._replayed, self._held = self._held, [], []
        for live in held:
            self._on_live(live, shown)

    def _on_live(self, envelope: Envelope, shown: list[Envelope]) -> None:
        last = self._last if self._last is not None else envelope.seq - 1
        if envelope.seq <= last:
            return  # already shown (a replay covered it)
        if self._gaps.missed or (not self._filtered and envelope.seq > last + 1):
            self._gaps.missed = 0  # missed live: the journal has them
            self._replay()
            self._held.append(envelope)
            return
        self._last = envelope.seq
        self._show(envelope, shown)

    def _show(self, envelope: Envelope, shown: list[Envelope]) -> None:
        if self._since is None or envelope.ts >= self._since:
            shown.append(envelope)


def merge(streams: Sequence[RemoteStream], timeout: float | None = None) -> Iterator[tuple[RemoteStream, list[Envelope]]]:
    """Events of several streams as they come, in batches (what one stream had queued, at
    most about SHOWN_PER_CALL), each with its stream; ends after ``timeout`` seconds without
    any message (None: never)."""
    poller = zmq.Poller()
    owners: dict[Any, tuple[RemoteStream, bool]] = {}
    for stream in streams:
        poller.register(stream.socket, zmq.POLLIN)
        poller.register(stream.monitor, zmq.POLLIN)
        owners[stream.socket] = (stream, False)
        owners[stream.monitor] = (stream, True)
    wait = None if timeout is None else int(timeout * 1000)
    while True:
        ready = dict(poller.poll(wait))
        if not ready:
            return
        for sock in ready:
            stream, is_monitor = owners[sock]
            if is_monitor:
                stream.on_monitor()
            else:
                shown = stream.on_messages()
                if shown:
                    yield stream, shown
