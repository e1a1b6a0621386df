"""bus/batches.py: wire revision 3's event frames (several envelopes of one topic in one
frame) and the publisher's encoder, sans-IO; and what the clients make of every revision
(bus/connect.py's events())."""

from __future__ import annotations

import msgpack
import pytest

from bus import batches, codec
from bus.batches import EventEncoder, batch_frame, decode_events
from bus.codec import Envelope
from bus.connect import event, events
from bus.errors import FrameTooLarge, MalformedFrame

TS = 1764300000.25


def envelope(seq: int, topic: str = "container.c.die", **data) -> Envelope:
    return Envelope(topic=topic, seq=seq, data={"exitCode": 0, **data}, ts=TS)


@pytest.mark.parametrize("seq", [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])
def test_the_event_encoder_makes_the_bytes_codec_encode_makes(seq: int) -> None:
    encoder = EventEncoder("dockyard")
    made, topic, body = encoder.encode("container.c.die", seq, TS, {"exitCode": 0, "b": b"\x00"})
    assert made == Envelope("container.c.die", seq, {"exitCode": 0, "b": b"\x00"}, "dockyard", TS)
    assert topic == b"container.c.die" and body == codec.encode(made) and codec.decode(body) == made
    assert made.v == codec.VERSION == 3


@pytest.mark.parametrize("topic, seq, ts, data", [
    ("bad topic", 1, TS, {}), ("a.b", -1, TS, {}), ("a.b", 2**64, TS, {}), ("a.b", 1, -1.0, {}),
    ("a.b", 1, float("nan"), {}), ("a.b", "1", TS, {}), ("a.b", 1, TS, {"set": {1}}),
])
def test_the_event_encoder_refuses_what_envelope_refuses(topic: str, seq, ts, data) -> None:
    with pytest.raises(MalformedFrame):
        EventEncoder("dockyard").encode(topic, seq, ts, data)


def test_the_event_encoder_refuses_a_frame_too_large() -> None:
    with pytest.raises(FrameTooLarge):
        EventEncoder("dockyard").encode("a.b", 1, TS, b"x" * codec.MAX_FRAME)


def test_a_batch_is_the_topic_a_nul_and_an_array_of_the_envelopes() -> None:
    sent = [envelope(seq) for seq in range(1, 21)]
    frame = batch_frame(b"container.c.die", [codec.encode(e) for e in sent])
    topic, body = codec.split_event(frame)
    assert topic == b"container.c.die" and body[0] == 0xDC  # an array of 20: array 16
    assert [Envelope(**item) for item in msgpack.unpackb(body)] == sent  # any msgpack library reads it
    assert decode_events(body) == (sent, 0)
    assert events([frame]) == (b"container.c.die", sent, 0)


def test_one_envelope_alone_is_revision_2s_frame() -> None:
    alone = envelope(7)
    frame = batch_frame(b"container.c.die", [codec.encode(alone)])
    assert frame == codec.event_frame("container.c.die", codec.encode(alone))
    assert events([frame]) == (b"container.c.die", [alone], 0)
    assert event([frame]) == (b"container.c.die", alone)


@pytest.mark.parametrize("count, first", [(1, 0x91), (15, 0x9F), (16, 0xDC), (65535, 0xDC), (65536, 0xDD)])
def test_array_headers_are_msgpacks(count: int, first: int) -> None:
    header = batches.array_header(count)
    assert header[0] == first and header == msgpack.packb([None] * count)[: len(header)]


def test_every_wire_revision_still_decodes() -> None:
    v1 = Envelope(topic="container.c.die", seq=4, data={"exitCode": "0"}, ts=TS, v=1)
    v2 = Envelope(topic="container.c.die", seq=5, data={"exitCode": 0}, ts=TS, v=2)
    v3 = [envelope(6), envelope(7)]
    assert events([b"container.c.die", codec.encode(v1)]) == (b"container.c.die", [v1], 0)  # two frames
    assert events([codec.event_frame(v2.topic, codec.encode(v2))]) == (b"container.c.die", [v2], 0)
    assert events([batch_frame(b"container.c.die", [codec.encode(e) for e in v3])]) == (b"container.c.die", v3, 0)


def test_a_batchs_invalid_envelopes_are_counted_and_the_rest_kept() -> None:
    good = [envelope(1), envelope(3)]
    items = [codec.encode(good[0]), msgpack.packb("not a map"), msgpack.packb({"topic": "container.c.die"}),
             msgpack.packb({**good[1].as_map(), "v": 9}), codec.encode(good[1]),
             codec.encode(envelope(2, topic="container.other.die"))]  # the frame's topic is not its own
    received = events([batch_frame(b"container.c.die", items)])
    assert received == (b"container.c.die", good, 4)


def test_frames_that_are_no_events_are_refused() -> None:
    assert events([b"no nul"]) is None and events([b"a", b"b", b"c"]) is None
    assert events([b"container.c.die\x00\xdc\x00\x05\x01"]) is None  # an array cut short
    assert events([b"container.c.die\x00" + codec.encode(envelope(1, topic="container.x.die"))]) is None  # lies
    with pytest.raises(MalformedFrame):
        decode_events(b"\x92\xc1")
    with pytest.raises(FrameTooLarge):
        decode_events(b"\x91" + b"\x00" * 10, max_size=8)


def test_a_lost_batch_shows_as_a_gap_of_all_its_events() -> None:
    """The high-water marks count frames: a subscriber that falls behind loses whole
    batches, and seq tells it how many events each held."""
    frames = [batch_frame(b"container.c.die", [codec.encode(envelope(seq)) for seq in range(first, first + 10)])
              for first in (1, 11, 21)]
    gaps = codec.GapDetector()
    for frame in (frames[0], frames[2]):  # the second one lost
        for received in events([frame])[1]:
            gaps.feed(received.seq)
    assert gaps.missed == 10 and gaps.last == 30
