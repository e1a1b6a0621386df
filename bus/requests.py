"""A request as a handler sees it: :class:`Request` (its arguments, its stream messages both
ways), :class:`RequestFailed` to answer with an error, and the :data:`Handler` signature.

A handler is ``async def handler(request) -> result``; the control socket (bus/control.py)
runs it in a task of its own and answers with exactly one reply: the result, or the error
the handler raised. While it runs, ``request.stream(payload)`` sends ``stream.<op>``
messages to the client and ``request.receive()`` takes the client's, filed by the control
task in the request's :class:`Inbox` (bounded: a client that sends more than
``INBOX_LIMIT`` messages the handler has not taken is answered ``bad_request``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from bus import codec
from bus.errors import ERROR_CODES, BusError

__all__ = ["Handler", "INBOX_LIMIT", "Inbox", "Request", "RequestFailed"]

#: Stream messages from a client that its request's handler has not taken yet, at most.
INBOX_LIMIT = 1_024


class StreamSender(Protocol):
    """What a request sends its stream messages through (bus.control.Control)."""

    source: str

    def send_stream(self, peer: bytes, frame: bytes) -> bool | None:
        """True sent, False the peer is over its high-water mark, None the peer is gone."""


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


@dataclass(frozen=True, slots=True)
class Request:
    """One request, as a handler gets it."""

    op: str
    args: dict[str, Any]
    request_id: int
    source: str
    peer: bytes
    _control: StreamSender = field(repr=False, compare=False)
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
        envelope = codec.stream(self.op, self.request_id, payload, source=self._control.source)
        return self._control.send_stream(self.peer, codec.encode(envelope))

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
