"""Errors raised by the bus.

    BusError
     ├── FrameError            a frame that is not a valid envelope (never crashes a peer)
     │    ├── FrameTooLarge    bigger than the codec's limit
     │    └── MalformedFrame   not msgpack, wrong shape, wrong types, unknown version
     ├── RequestTimeout        no reply within the request's timeout
     ├── DaemonUnavailable     nothing is listening at the control socket
     └── RemoteError          the daemon answered with an error reply (code, message, details)

Error codes carried in error replies are stable strings, listed in ``ERROR_CODES``; clients
branch on the code, never on the message.
"""

from __future__ import annotations

#: Stable error codes of error replies (docs/events.md lists what each means).
ERROR_CODES = frozenset(
    {
        "bad_frame",  # the request frame could not be decoded
        "bad_request",  # unknown operation, or a client's stream message of the wrong shape
        "invalid_argument",  # an argument missing, unknown, of the wrong type or not acceptable
        "not_found",  # no such container or image
        "conflict",  # the name is taken, the object is in use
        "invalid_state",  # the operation is not possible in the object's current state
        "timeout",  # the daemon gave up waiting
        "too_many_requests",  # the client has too many requests without a reply; retry after some
        "internal",  # a bug or an unexpected system error; the daemon logged it
    }
)


class BusError(Exception):
    """Base of every error the bus raises."""


class FrameError(BusError):
    """A frame is not a valid envelope."""


class FrameTooLarge(FrameError):
    def __init__(self, size: int, limit: int):
        super().__init__(f"frame of {size} bytes is over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class MalformedFrame(FrameError):
    def __init__(self, reason: str):
        super().__init__(f"malformed frame: {reason}")
        self.reason = reason


class RequestTimeout(BusError):
    def __init__(self, op: str, timeout: float):
        super().__init__(f"request {op!r} got no reply within {timeout:g} s")
        self.op = op
        self.timeout = timeout


class DaemonUnavailable(BusError):
    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot reach the dockyard daemon at {path}: {reason}")
        self.path = path
        self.reason = reason


class RemoteError(BusError):
    """The daemon answered a request with an error reply."""

    def __init__(self, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
