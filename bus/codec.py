"""The bus wire format: one msgpack envelope per message, sans-IO.

Theory of operation
-------------------
Everything that crosses the bus is an *envelope*, a msgpack map with six keys::

    {v: 3, topic: "container.3f2a….die", seq: 41, ts: 1764300000.25, source: "dockyard", data: {...}}

How envelopes travel (see docs/events.md for the full reference):

* **Events** (PUB/XPUB socket ``events.sock``): one ZeroMQ frame, ``topic NUL envelope``
  (:func:`event_frame`, :func:`split_event`): the frame starts with the topic so ZeroMQ's
  prefix filtering works on it. Since version 3 the envelope may be an array of envelopes
  of that topic, when the publisher had a backlog (bus/batches.py). Version 1 sent two
  frames, ``[topic, envelope]``; clients still read those (docs/events.md, *Wire revisions*).
* **Requests** (DEALER -> ROUTER socket ``control.sock``): one frame, an envelope whose
  topic is ``request.<op>``, whose ``seq`` is the client's request id and whose ``data`` is
  the argument map.
* **Replies** (ROUTER -> DEALER): one frame, topic ``reply.<op>``, ``seq`` = the request id,
  ``data`` = ``{ok: true, result: ...}`` or ``{ok: false, error: {code, message, details}}``.
  A streaming request (``run`` attached, for example) first gets any number of
  ``stream.<op>`` envelopes with the same ``seq``, then exactly one reply.

This module only turns bytes into validated envelopes and back: no sockets, no trio. A
frame that is not a valid envelope raises :class:`~bus.errors.FrameError`; callers answer
it with an error reply and carry on.
"""

from __future__ import annotations

import math
import re
import time
from operator import itemgetter
from typing import Any

import msgpack

from bus.errors import ERROR_CODES, FrameTooLarge, MalformedFrame, RemoteError

VERSION = 3
#: The envelope versions this side reads: 3 (an event frame may hold several envelopes,
#: bus/batches.py), 2 (events in one frame, one envelope each), 1 (events in two frames).
VERSIONS = (1, 2, 3)
#: Ends the topic at the start of an event's frame (no topic contains it).
TOPIC_END = b"\x00"
#: The longest topic prefix of an event frame (a filtered subscription's topic is the
#: longest: bus/filters.py bounds it below this).
MAX_EVENT_PREFIX = 8192
#: Largest frame the codec accepts or produces (bytes).
MAX_FRAME = 8 * 1024 * 1024
MAX_TOPIC = 255
MAX_SOURCE = 255
_KEYS = ("v", "topic", "seq", "ts", "source", "data")
_TOPIC = re.compile(r"^[A-Za-z0-9_\-:@/+=]+(\.[A-Za-z0-9_\-:@/+=]+)*\Z")
_SEQ_LIMIT = 2**64
#: Topics already checked, so the hot path does not run the regex for every event.
_VALID_TOPICS: set[str] = set()
_VALID_TOPICS_LIMIT = 65_536


def _check_topic(topic: object) -> None:
    if type(topic) is not str or not 0 < len(topic) <= MAX_TOPIC:
        raise MalformedFrame(f"topic must be a string of 1 to {MAX_TOPIC} characters")
    if not _TOPIC.match(topic):
        raise MalformedFrame(f"topic {topic!r} is not dotted words")
    if len(_VALID_TOPICS) >= _VALID_TOPICS_LIMIT:
        _VALID_TOPICS.clear()
    _VALID_TOPICS.add(topic)


class Envelope(tuple):
    """One bus message. Validated on construction, so an Envelope is always well-formed;
    immutable, compared by value.

    A tuple underneath, not a dataclass: it is built for every event on both ends of the
    bus (a tuple costs a third of six ``object.__setattr__`` calls), and ``dataclasses``
    imports ``inspect``, about 15 ms on every CLI start.
    """

    __slots__ = ()

    def __new__(
        cls,
        topic: str,
        seq: int,
        data: Any = None,
        source: str = "dockyard",
        ts: float | None = None,
        v: int = VERSION,
    ) -> Envelope:
        if type(v) is not int or v not in VERSIONS:
            raise MalformedFrame(f"unsupported version {v!r} (this side speaks {', '.join(map(str, VERSIONS))})")
        if type(topic) is not str or topic not in _VALID_TOPICS:
            _check_topic(topic)
        if type(seq) is not int or not 0 <= seq < _SEQ_LIMIT:
            raise MalformedFrame(f"seq must be an unsigned 64-bit integer, not {seq!r}")
        if ts is None:
            ts = time.time()
        elif type(ts) not in (int, float) or not math.isfinite(ts) or ts < 0:
            raise MalformedFrame(f"ts must be a finite, non-negative number of seconds, not {ts!r}")
        if type(source) is not str or len(source) > MAX_SOURCE:
            raise MalformedFrame(f"source must be a string of at most {MAX_SOURCE} characters")
        return tuple.__new__(cls, (topic, seq, data, source, ts, v))

    topic: str = property(itemgetter(0))  # type: ignore[assignment]
    seq: int = property(itemgetter(1))  # type: ignore[assignment]
    data: Any = property(itemgetter(2))
    source: str = property(itemgetter(3))  # type: ignore[assignment]
    ts: float = property(itemgetter(4))  # type: ignore[assignment]
    v: int = property(itemgetter(5))  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Envelope(topic={!r}, seq={!r}, data={!r}, source={!r}, ts={!r}, v={!r})".format(*self)

    def as_map(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "topic": self.topic,
            "seq": self.seq,
            "ts": self.ts,
            "source": self.source,
            "data": self.data,
        }


def _refuse_ext(code: int, data: bytes) -> Any:
    raise MalformedFrame(f"msgpack extension type {code} is not allowed")


def encode(envelope: Envelope) -> bytes:
    """Serialise an envelope. Raises FrameTooLarge rather than produce a frame peers refuse."""
    try:
        frame = msgpack.packb(envelope.as_map(), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise MalformedFrame(f"data of {envelope.topic!r} cannot be encoded: {exc}") from exc
    if len(frame) > MAX_FRAME:
        raise FrameTooLarge(len(frame), MAX_FRAME)
    return frame


class Encoder:
    """:func:`encode` with one reusable msgpack Packer (the same bytes at a third of the
    cost: the daemon's publisher encodes every event), and :meth:`encode_around`, which
    lays a frame out around a payload already in a buffer. Not thread-safe."""

    __slots__ = ("_packer",)

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True)

    def encode(self, envelope: Envelope) -> bytes:
        """The bytes of :func:`encode`. Raises MalformedFrame, FrameTooLarge like it."""
        topic, seq, data, source, ts, v = envelope
        try:
            frame = self._packer.pack({"v": v, "topic": topic, "seq": seq, "ts": ts, "source": source, "data": data})
        except (TypeError, ValueError, OverflowError) as exc:
            raise MalformedFrame(f"data of {topic!r} cannot be encoded: {exc}") from exc
        if len(frame) > MAX_FRAME:
            raise FrameTooLarge(len(frame), MAX_FRAME)
        return frame

    def encode_around(self, envelope: Envelope, buffer: bytearray, start: int, end: int,
                      prefix: bytes = b"") -> memoryview | None:
        """The frame of ``envelope`` whose ``data`` map's last value, ``b""`` in the
        envelope, is ``buffer[start:end]`` instead, laid out in ``buffer`` without copying
        the payload: the frame's header (everything before the payload) is written into
        the bytes just before ``start``. Its bytes are those :func:`encode` makes of the
        envelope with the payload in place of ``b""``.

        ``prefix`` goes before the header (an event's ``topic NUL``: :func:`event_frame`).
        Returns a view of ``buffer`` holding the whole frame, or None, with ``buffer``
        untouched, when prefix and header are longer than ``start`` (then encode it as usual).

        Raises:
            ValueError: data is not a map whose last value is ``b""``.
            MalformedFrame, FrameTooLarge: like :func:`encode`.
        """
        topic, seq, data, source, ts, v = envelope
        try:
            packed = self._packer.pack({"v": v, "topic": topic, "seq": seq, "ts": ts, "source": source, "data": data})
        except (TypeError, ValueError, OverflowError) as exc:
            raise MalformedFrame(f"data of {topic!r} cannot be encoded: {exc}") from exc
        # data is packed last: a map whose last value is b"" ends the frame with c4 00, the
        # empty bin's header, which gives way to the payload's.
        if packed[-1] or packed[-2] != 0xC4 or type(data) is not dict:
            raise ValueError("encode_around: the envelope's data must be a map whose last value is b''")
        length = end - start
        header = prefix + packed[:-2] + (b"\xc6" + length.to_bytes(4, "big") if length >= 1 << 16 else _bin_header(length))
        first = start - len(header)
        if first < 0:
            return None
        if end - first > MAX_FRAME:
            raise FrameTooLarge(end - first, MAX_FRAME)
        buffer[first:start] = header
        return memoryview(buffer)[first:end]


def event_frame(topic: str, envelope_frame: bytes) -> bytes:
    """The one frame of an event (version 2): ``topic NUL envelope``."""
    return topic.encode() + TOPIC_END + envelope_frame


def split_event(frame: bytes | memoryview) -> tuple[bytes, bytes | memoryview]:
    """An event frame's topic and envelope (a view of the frame if it is one, else bytes).

    Raises:
        MalformedFrame: no NUL within the first MAX_EVENT_PREFIX bytes, or an empty topic.
    """
    head = bytes(frame[:MAX_EVENT_PREFIX]) if type(frame) is memoryview else frame
    end = head.find(TOPIC_END, 0, MAX_EVENT_PREFIX)
    if end <= 0:
        raise MalformedFrame("an event frame must start with its topic and a NUL byte")
    return head[:end], frame[end + 1 :]


def _bin_header(length: int) -> bytes:
    """The msgpack header of a bin value of ``length`` bytes, as msgpack packs it."""
    if length < 1 << 8:
        return b"\xc4" + length.to_bytes(1, "big")
    if length < 1 << 16:
        return b"\xc5" + length.to_bytes(2, "big")
    return b"\xc6" + length.to_bytes(4, "big")


#: decode() of a memoryview this big leaves a bin value that ends the frame (a log record's
#: output) in the frame, as a view, rather than copying it out (see _unpack_leaving_tail).
TAIL_VIEW_MIN = 64 << 10
#: Where such a bin's header may start: within this many bytes of the frame's start.
TAIL_SEARCH = 1024


def decode(frame: bytes | memoryview, *, max_size: int = MAX_FRAME) -> Envelope:
    """Parse and validate one frame. Raises a FrameError subclass for anything invalid.

    A big ``memoryview`` frame (a subscriber's, ``bus.trio_zmq.VIEW_MIN``) whose data ends
    with a bin value, as a log record's event does, gives that value as a memoryview of
    the frame: the one copy of the output a subscriber would otherwise make."""
    if len(frame) > max_size:
        raise FrameTooLarge(len(frame), max_size)
    obj = None
    if type(frame) is memoryview and len(frame) >= TAIL_VIEW_MIN:
        obj = _unpack_leaving_tail(frame)
    if obj is None:
        obj = _unpack(frame)
    if type(obj) is not dict:
        raise MalformedFrame(f"envelope must be a map, not {type(obj).__name__}")
    try:
        return Envelope(obj["topic"], obj["seq"], obj["data"], obj["source"], obj["ts"], obj["v"])
    except KeyError:
        missing = [key for key in _KEYS if key not in obj]
        raise MalformedFrame(f"envelope lacks {', '.join(missing)}") from None


def _unpack(frame: bytes | memoryview) -> Any:
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=True, ext_hook=_refuse_ext)
    except MalformedFrame:
        raise
    except (msgpack.UnpackException, ValueError, TypeError, RecursionError) as exc:
        raise MalformedFrame(f"not msgpack ({type(exc).__name__}: {exc})") from exc


def _unpack_leaving_tail(frame: memoryview) -> Any:
    """The envelope map, its ``data`` map's last value a view of the frame's end; None when
    the frame is not laid out so (then it is decoded as usual).

    If ``frame[k]`` starts a bin 32 header whose length reaches exactly the end of the frame,
    and ``frame[:k] + c4 00`` (an empty bin) is one whole msgpack object, then the frame is
    that same object with its last value, the empty bin, standing for ``frame[k + 5:]``:
    msgpack is read front to back, so the bytes before ``k`` parse the same either way, and
    after the bin neither has anything left. That value is ``data``'s last one when the
    envelope's last key is "data" and ``data`` is a map whose last value is that empty bin.
    """
    size = len(frame)
    head = bytes(frame[: min(size, TAIL_SEARCH)])
    k = head.find(b"\xc6")
    while 0 <= k <= len(head) - 5:
        if int.from_bytes(head[k + 1 : k + 5], "big") == size - k - 5:
            try:
                obj = _unpack(head[:k] + b"\xc4\x00")
            except MalformedFrame:
                obj = None
            if type(obj) is dict and obj and next(reversed(obj)) == "data":
                data = obj["data"]
                if type(data) is dict and data:
                    last = next(reversed(data))
                    if data[last] == b"":
                        data[last] = frame[k + 5 :]
                        return obj
        k = head.find(b"\xc6", k + 1)
    return None


# --- requests and replies -----------------------------------------------------------------


def request(op: str, request_id: int, args: dict[str, Any], source: str) -> Envelope:
    return Envelope(topic=f"request.{op}", seq=request_id, data=args, source=source)


def request_op(envelope: Envelope) -> str:
    """The operation a request names. Raises MalformedFrame for anything that is not one."""
    prefix, _, op = envelope.topic.partition(".")
    if prefix != "request" or not op:
        raise MalformedFrame(f"topic {envelope.topic!r} is not a request (request.<op>)")
    if not isinstance(envelope.data, dict):
        raise MalformedFrame(f"arguments of {op!r} must be a map")
    return op


def reply(op: str, request_id: int, result: Any = None, source: str = "dockyard") -> Envelope:
    return Envelope(topic=f"reply.{op}", seq=request_id, data={"ok": True, "result": result}, source=source)


def error_reply(
    op: str,
    request_id: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    source: str = "dockyard",
) -> Envelope:
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    error = {"code": code, "message": message, "details": details or {}}
    return Envelope(topic=f"reply.{op}", seq=request_id, data={"ok": False, "error": error}, source=source)


def stream(op: str, request_id: int, payload: dict[str, Any], source: str = "dockyard") -> Envelope:
    return Envelope(topic=f"stream.{op}", seq=request_id, data=payload, source=source)


def is_stream(envelope: Envelope) -> bool:
    return envelope.topic.startswith("stream.")


def unwrap_reply(envelope: Envelope) -> Any:
    """The result of a reply envelope; raises RemoteError for an error reply."""
    if not envelope.topic.startswith("reply."):
        raise MalformedFrame(f"expected a reply, got topic {envelope.topic!r}")
    data = envelope.data
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        raise MalformedFrame("reply data must be a map with a boolean 'ok'")
    if data["ok"]:
        return data.get("result")
    error = data.get("error")
    if not isinstance(error, dict):
        raise MalformedFrame("error reply lacks its error map")
    raise RemoteError(str(error.get("code", "internal")), str(error.get("message", "")), error.get("details"))


# --- sequence numbers --------------------------------------------------------------------


class Sequencer:
    """Gap-free sequence numbers, one counter per channel (see docs/events.md)."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def next(self, channel: str) -> int:
        seq = self._next.get(channel, 1)
        self._next[channel] = seq + 1
        return seq

    def give_back(self, channel: str, seq: int) -> None:
        """Undo :meth:`next` of ``seq``, the last number handed out on the channel (the
        message it was for could not be sent): the next one is ``seq`` again."""
        if self._next.get(channel) == seq + 1:
            self._next[channel] = seq

    def last(self, channel: str) -> int:
        """The last number handed out on a channel, 0 if none."""
        return self._next.get(channel, 1) - 1

    def resume(self, channel: str, last: int) -> None:
        """Carry on a channel after ``last`` (e.g. from a journal, after a restart)."""
        self._next[channel] = max(self._next.get(channel, 1), last + 1)

    def forget(self, channel: str) -> None:
        self._next.pop(channel, None)


class GapDetector:
    """Counts what a subscriber missed on one channel, from the sequence numbers it sees."""

    __slots__ = ("last", "missed")

    def __init__(self, last: int = 0) -> None:
        self.last = last
        self.missed = 0

    def feed(self, seq: int) -> int | None:
        """Record one sequence number. Returns how many were missed just before it, or
        None when this one is a duplicate or older than the last one seen (drop it)."""
        if seq <= self.last:
            return None
        gap = seq - self.last - 1 if self.last else 0
        self.missed += gap
        self.last = seq
        return gap
