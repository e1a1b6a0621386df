"""Publishing events: the user's callback and the daemon's bus, in one place.

Every event of the events channel goes through :meth:`Events.emit` (its ``type`` checked
against :data:`supervisor.EVENT_TYPES`); log records and stats go through
:meth:`Events.publish` on their own channels. An exception the user's callback raises is
counted and logged, never raised into the lifecycle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from supervisor import EVENT_TYPES

EVENTS_CHANNEL = "events"

#: The attributes that are not text, with their type (docs/events.md): a subscriber gets
#: ``exitCode: 0``, not ``"0"``, as from containerd's typed task events. Given as text by a
#: caller, they are converted here, the one place every lifecycle event passes.
ATTRIBUTE_TYPES: dict[str, type] = {
    "exitCode": int, "signal": int, "pid": int, "attempt": int, "restartCount": int,
    "lines": int, "bytes": int, "total": int, "delay": float, "read/write": bool,
}


def typed(attributes: dict[str, Any]) -> dict[str, Any]:
    """``attributes`` with the keys of :data:`ATTRIBUTE_TYPES` as their type (a value that
    does not convert stays as it is: an event is never lost over an attribute)."""
    for key, kind in ATTRIBUTE_TYPES.items():
        value = attributes.get(key)
        if value is None or type(value) is kind:
            continue
        try:
            if kind is bool:
                converted: Any = value if isinstance(value, bool) else str(value).lower() == "true"
            else:
                converted = kind(value)
        except (TypeError, ValueError):
            continue
        attributes[key] = converted
    return attributes


class Events:
    """Args:
        callback: the user's ``publish(topic, data, channel)`` (Supervisor(publish=...)).
        sink: the daemon's bus, ``publish(topic, data, channel, payload)``.
        log: a structlog-style logger.
    """

    def __init__(self, callback: Callable[..., Any] | None, sink: Callable[..., Any] | None, log: Any):
        self.callback = callback
        self.sink = sink
        self.log = log
        self.callback_errors = 0  # exceptions the callback raised (each logged, at most one a second)
        self._callback_error_logged = -1.0

    def container(self, container: Any, action: str, **attributes: Any) -> None:
        """``container.<id>.<action>``, with the container's labels, name and image, as docker
        (its labels are attributes of every event of it; its name, its image and the event's
        own attributes win over a label of the same key). A label stays text, whatever its key:
        only the event's own attributes are typed."""
        own = {"name": container.name, "image": container.image_ref, **attributes}
        self.emit("container", action, container.id, own, labels=container.resolved.labels)

    def emit(self, kind: str, action: str, actor: str, attributes: dict[str, Any],
             labels: dict[str, str] | None = None) -> None:
        """Publish ``<kind>.<actor>.<action>`` (``<kind>.<action>`` without an actor); ``labels``
        go under the (typed) attributes, as text."""
        if kind not in EVENT_TYPES:  # a subscriber to the documented prefixes would see a gap
            raise ValueError(f"cannot publish a {kind!r} event: the events channel holds {', '.join(EVENT_TYPES)}")
        topic = f"{kind}.{actor}.{action}" if actor else f"{kind}.{action}"
        data = {"type": kind, "action": action, "id": actor, "attributes": {**(labels or {}), **typed(dict(attributes))},
                "time": time.time()}
        self.publish(topic, data, EVENTS_CHANNEL)

    def publish(self, topic: str, data: dict[str, Any], channel: str, payload: Any = None) -> None:
        if self.sink is not None:
            self.sink(topic, data, channel, payload)
        if self.callback is None:
            return
        if payload is not None:  # the callback's one shape: the record's bytes in data["data"]
            buffer, start, end = payload
            data = {**data, "data": bytes(memoryview(buffer)[start:end])}
        try:
            self.callback(topic, data, channel)
        except Exception as exc:  # the user's code: it must not take the containers down
            self._callback_failed(topic, exc)

    def _callback_failed(self, topic: str, exc: Exception) -> None:
        """Count, and log (the first one with its traceback, then at most one a second)."""
        self.callback_errors += 1
        now = time.monotonic()
        if self._callback_error_logged < 0 or now - self._callback_error_logged >= 1.0:
            self._callback_error_logged = now
            first = {"exc_info": exc} if self.callback_errors == 1 else {}
            self.log.error("the event callback raised an exception; the event was not retried", topic=topic,
                           error=f"{type(exc).__name__}: {exc}", errors=self.callback_errors, **first)
