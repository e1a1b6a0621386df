"""One subscription to the daemon's lifecycle events, shared by every client of the API.

``/events`` streams and ``/containers/{id}/wait`` each need the events from the moment they
ask: the hub subscribes once (with the bus's sync handshake, so nothing published after it is
missed) and hands each event to every listener registered at that moment. A listener is a
bounded queue; a listener that falls :data:`LISTENER_QUEUE` events behind (a client that
reads its ``/events`` stream too slowly) is cut off with ``overflowed`` set, counted, and its
stream ends: it never slows the hub or the other listeners.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

#: The events channel's prefixes (docs/events.md).
EVENT_PREFIXES = ("container.", "daemon.", "image.", "volume.", "worker.")
#: Events a listener may have waiting before it is cut off.
LISTENER_QUEUE = 4096


class Listener:
    def __init__(self, wanted: Callable[[dict[str, Any]], bool]):
        self.wanted = wanted
        self.send, self.receive = trio.open_memory_channel[dict[str, Any]](LISTENER_QUEUE)
        self.overflowed = False


class EventHub:
    def __init__(self) -> None:
        self._listeners: set[Listener] = set()
        self.ready = trio.Event()
        self.dropped_listeners = 0

    def listen(self, wanted: Callable[[dict[str, Any]], bool] = lambda event: True) -> Listener:
        listener = Listener(wanted)
        self._listeners.add(listener)
        return listener

    def forget(self, listener: Listener) -> None:
        self._listeners.discard(listener)
        listener.send.close()

    def publish(self, event: dict[str, Any]) -> None:
        """Hand one event's data (the envelope's ``data``, with ``topic``) to the listeners."""
        for listener in list(self._listeners):
            if not listener.wanted(event):
                continue
            try:
                listener.send.send_nowait(event)
            except trio.WouldBlock:
                listener.overflowed = True
                self.dropped_listeners += 1
                self.forget(listener)

    async def run(self, client: Any, log: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe and publish until cancelled; reports started once subscribed."""
        started = False
        while True:
            try:
                async with client.subscribe(list(EVENT_PREFIXES)) as events:
                    if not started:
                        started = True
                        self.ready.set()
                        task_status.started()
                    async for envelope in events:
                        data = dict(envelope.data) if isinstance(envelope.data, dict) else {}
                        data["topic"], data["seq"] = envelope.topic, envelope.seq
                        self.publish(data)
            except trio.Cancelled:
                raise
            except Exception as exc:  # the daemon went away: subscribe again
                log.warning("event subscription lost; subscribing again", error=str(exc))
                await trio.sleep(0.5)
