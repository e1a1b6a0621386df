"""Event frames of wire revision 3: several envelopes in one frame, and the publisher's
cheap encoding of an event. Sans-IO, like bus/codec.py.

Theory of operation
-------------------
An event frame is ``topic NUL body`` (bus/codec.py). In revision 3 the body is either one
envelope (a msgpack map, as in revision 2) or, when the publisher had several events of
the same topic queued one after the other, a msgpack *array* of envelopes::

    b"log.3f2a….stdout" 00 | 93 | {v:3, seq:41, ...} {v:3, seq:42, ...} {v:3, seq:43, ...}
    └──── topic ───────┘    └array of 3┘ └──────── the envelopes' own bytes, concatenated ──┘

Every envelope of a batch shares the frame's topic, so ZeroMQ's prefix filtering is exactly
what it was: a subscription matches the frame if and only if it matches each event in it.
A reader tells the two bodies apart by their first byte (a map starts 0x80-0x8f, 0xde or
0xdf; an array 0x90-0x9f, 0xdc or 0xdd). A frame costs a sender and a receiver about 1.5 µs
in pyzmq whatever its size; a batch spreads that over its events, and its body is one
``unpackb`` for the reader instead of one per event.

Batches are only made of what is already queued (a backlog): an event published alone goes
out alone, at once, as before. Bounds: at most ``BATCH_EVENTS`` envelopes and about
``BATCH_BYTES`` per frame (a single bigger event goes alone). The high-water marks count
frames, so a subscriber that falls behind loses whole batches; ``seq`` shows each event
missed, as before.

:class:`EventEncoder` packs an event's envelope with its constant parts (the map header,
``v``, the topic, the source and the keys) packed once per topic: only seq, ts and data are
packed per event. Its bytes are those :func:`bus.codec.encode` makes.
"""

from __future__ import annotations

import struct
from operator import itemgetter
from typing import Any

import msgpack

from bus import codec
from bus.codec import TOPIC_END, Envelope
from bus.errors import FrameError, FrameTooLarge, MalformedFrame

__all__ = ["BATCH_BYTES", "BATCH_EVENTS", "EventEncoder", "batch_frame", "decode_events"]

#: The most envelopes one frame carries.
BATCH_EVENTS = 1024
#: A batch takes no more envelopes once it holds this many bytes.
BATCH_BYTES = 64 << 10
#: First bytes of a msgpack array (fixarray, array 16, array 32).
_ARRAY_FIRST = frozenset(range(0x90, 0xA0)) | {0xDC, 0xDD}
_TS_KEY = b"\xa2ts"
#: ``seq`` as msgpack packs it (the smallest of positive fixint, uint 8, 16, 32, 64), then
#: ts's key and ts (float 64).
_SEQ_FIXINT = struct.Struct(">B3sBd")
_SEQ_U8 = struct.Struct(">BB3sBd")
_SEQ_U16 = struct.Struct(">BH3sBd")
_SEQ_U32 = struct.Struct(">BI3sBd")
_SEQ_U64 = struct.Struct(">BQ3sBd")
_INFINITY = float("inf")
_SEQ_LIMIT = 1 << 64
_MAX_SOURCE = codec.MAX_SOURCE
_VERSION = codec.VERSION
#: An envelope map's values in the order of Envelope's fields (one C call).
_ENVELOPE_FIELDS = itemgetter("topic", "seq", "data", "source", "ts", "v")
#: Topics whose constant parts are kept at most (a container's topics come and go).
_HEADS_LIMIT = 4096


def array_header(count: int) -> bytes:
    """The msgpack header of an array of ``count`` items."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def batch_frame(topic: bytes, bodies: list[bytes]) -> bytes:
    """One frame of several envelopes (``bodies``, each an encoded envelope of ``topic``):
    ``topic NUL array``. One body is sent as it is (revision 2's layout)."""
    if len(bodies) == 1:
        return topic + TOPIC_END + bodies[0]
    return b"".join((topic, TOPIC_END, array_header(len(bodies)), *bodies))


def decode_events(body: bytes | memoryview, *, max_size: int = codec.MAX_FRAME,
                  topic: str | None = None) -> tuple[list[Envelope], int]:
    """The envelopes of an event frame's body (after ``topic NUL``): one envelope, or an
    array of them (revision 3). Returns them and how many items were not valid envelopes,
    or (``topic`` given) not of that topic (skipped; the caller counts them).

    Raises:
        FrameError: the body is not msgpack, or not a map or array, or too large.
    """
    if not body or body[0] not in _ARRAY_FIRST:
        alone = codec.decode(body, max_size=max_size)
        return ([alone], 0) if topic is None or alone.topic == topic else ([], 1)
    if len(body) > max_size:
        raise FrameTooLarge(len(body), max_size)
    items = codec._unpack(body)
    envelopes = []
    bad = 0
    new = tuple.__new__
    fields = _ENVELOPE_FIELDS
    valid_topics = codec._VALID_TOPICS
    for item in items:
        # The checks of Envelope(), inlined for the common case (a batch is a backlog of
        # thousands); anything unusual goes through Envelope() itself for its message.
        try:
            if type(item) is not dict:
                bad += 1
                continue
            values = fields(item)  # in the Envelope's order
            own, seq, _, source, ts, v = values
            if topic is not None and own != topic:
                bad += 1
                continue
            if (type(own) is str and own in valid_topics and type(seq) is int and 0 <= seq < _SEQ_LIMIT
                    and type(ts) is float and 0 <= ts < _INFINITY and type(source) is str
                    and len(source) <= _MAX_SOURCE and type(v) is int and v == _VERSION):
                envelopes.append(new(Envelope, values))
            else:
                envelopes.append(Envelope(*values))
        except (KeyError, FrameError):
            bad += 1
    return envelopes, bad


class EventEncoder:
    """Encodes events for the publisher: :func:`bus.codec.encode`'s bytes, with the parts
    that do not change from one event of a topic to the next packed once (module doc).
    Not thread-safe."""

    __slots__ = ("_packer", "_heads", "_source", "_tail")

    def __init__(self, source: str) -> None:
        if type(source) is not str or len(source) > codec.MAX_SOURCE:
            raise MalformedFrame(f"source must be a string of at most {codec.MAX_SOURCE} characters")
        self._packer = msgpack.Packer(use_bin_type=True)
        self._source = source
        self._tail = b"\xa6source" + msgpack.packb(source) + b"\xa4data"
        #: topic -> (its bytes, the envelope's bytes up to seq's value)
        self._heads: dict[str, tuple[bytes, bytes]] = {}

    def topic_head(self, topic: str) -> tuple[bytes, bytes]:
        """The topic as bytes and the envelope's packed head (map header, v, topic, seq's
        key). Raises MalformedFrame for a topic that is not dotted words."""
        head = self._heads.get(topic)
        if head is None:
            codec._check_topic(topic)
            if len(self._heads) >= _HEADS_LIMIT:
                self._heads.clear()
            head = self._heads[topic] = (topic.encode(),
                                         b"\x86\xa1v" + bytes((codec.VERSION,)) + b"\xa5topic" + msgpack.packb(topic)
                                         + b"\xa3seq")
        return head

    def encode(self, topic: str, seq: int, ts: float, data: Any) -> tuple[Envelope, bytes, bytes]:
        """The envelope of an event of this encoder's source, its topic as bytes and its
        encoded bytes (those of ``codec.encode(envelope)``).

        Raises:
            MalformedFrame: a topic that is not dotted words, data msgpack cannot hold, a seq
                that is not an unsigned 64-bit integer.
            FrameTooLarge: the envelope is larger than codec.MAX_FRAME.
        """
        head = self._heads.get(topic)
        if head is None:
            head = self.topic_head(topic)
        try:
            packed_data = self._packer.pack(data)
        except (TypeError, ValueError, OverflowError) as exc:
            raise MalformedFrame(f"data of {topic!r} cannot be encoded: {exc}") from exc
        if type(seq) is not int or type(ts) is not float or not 0 <= ts < _INFINITY or not 0 <= seq < 1 << 64:
            ts = float(ts) if type(ts) is int else ts
            Envelope(topic, seq, data, self._source, ts)  # raises what is wrong with them
        if 0xFFFF < seq <= 0xFFFFFFFF:  # the usual seq of a daemon that has run a while
            middle = _SEQ_U32.pack(0xCE, seq, _TS_KEY, 0xCB, ts)
        elif seq < 0x80:
            middle = _SEQ_FIXINT.pack(seq, _TS_KEY, 0xCB, ts)
        elif seq <= 0xFF:
            middle = _SEQ_U8.pack(0xCC, seq, _TS_KEY, 0xCB, ts)
        elif seq <= 0xFFFF:
            middle = _SEQ_U16.pack(0xCD, seq, _TS_KEY, 0xCB, ts)
        else:
            middle = _SEQ_U64.pack(0xCF, seq, _TS_KEY, 0xCB, ts)
        body = head[1] + middle + self._tail + packed_data
        if len(body) > codec.MAX_FRAME:
            raise FrameTooLarge(len(body), codec.MAX_FRAME)
        return tuple.__new__(Envelope, (topic, seq, data, self._source, ts, codec.VERSION)), head[0], body
