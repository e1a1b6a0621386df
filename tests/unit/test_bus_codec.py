"""The envelope codec (bus/codec.py): round trips, every malformed frame, replies, seq."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus import codec
from bus.codec import Envelope, GapDetector, Sequencer, decode, encode
from bus.errors import ERROR_CODES, FrameError, FrameTooLarge, MalformedFrame, RemoteError

# --- strategies ---------------------------------------------------------------------------

_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-:@/+=", min_size=1, max_size=12)
topics = st.lists(_WORD, min_size=1, max_size=6).map(".".join).filter(lambda topic: len(topic) <= codec.MAX_TOPIC)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
data = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
envelopes = st.builds(
    Envelope,
    topic=topics,
    seq=st.integers(min_value=0, max_value=2**64 - 1),
    data=data,
    source=st.text(max_size=codec.MAX_SOURCE),
    ts=st.floats(min_value=0, max_value=1e12, allow_nan=False) | st.integers(min_value=0, max_value=2**40),
)


def _frame(**overrides: object) -> bytes:
    """A valid envelope map with some keys replaced (or removed, with the value DROP)."""
    envelope = {"v": 1, "topic": "container.web.start", "seq": 7, "ts": 1764300000.25, "source": "dockyard", "data": {}}
    envelope.update(overrides)
    return msgpack.packb({k: v for k, v in envelope.items() if v is not DROP}, use_bin_type=True)


DROP = object()

# --- round trips --------------------------------------------------------------------------


@given(envelopes)
def test_encode_decode_round_trip(envelope: Envelope) -> None:
    assert decode(encode(envelope)) == envelope


@given(topics, st.integers(min_value=0, max_value=2**64 - 1), st.dictionaries(st.text(max_size=8), data, max_size=4))
def test_request_round_trip(op: str, request_id: int, args: dict) -> None:
    envelope = decode(encode(codec.request(op, request_id, args, "cli")))
    assert codec.request_op(envelope) == op
    assert (envelope.seq, envelope.data, envelope.source) == (request_id, args, "cli")


@given(data)
def test_reply_round_trip(result: object) -> None:
    envelope = decode(encode(codec.reply("inspect", 3, result)))
    assert envelope.topic == "reply.inspect"
    assert codec.unwrap_reply(envelope) == result


def test_stream_envelope() -> None:
    envelope = decode(encode(codec.stream("run", 9, {"line": "hi"})))
    assert codec.is_stream(envelope)
    assert (envelope.topic, envelope.seq, envelope.data) == ("stream.run", 9, {"line": "hi"})
    assert not codec.is_stream(codec.reply("run", 9))


# --- malformed frames ---------------------------------------------------------------------

MALFORMED = {
    "empty": b"",
    "not msgpack": b"\xc1",
    "truncated": _frame()[:-3],
    "trailing bytes": _frame() + b"\x00",
    "a list": msgpack.packb([1, "container.x", 7]),
    "an integer": msgpack.packb(42),
    "a string": msgpack.packb("container.web.start"),
    "nil": msgpack.packb(None),
    "missing v": _frame(v=DROP),
    "missing topic": _frame(topic=DROP),
    "missing seq": _frame(seq=DROP),
    "missing ts": _frame(ts=DROP),
    "missing source": _frame(source=DROP),
    "missing data": _frame(data=DROP),
    "unknown version": _frame(v=4),
    "version as string": _frame(v="1"),
    "topic as bytes": _frame(topic=b"container.web"),
    "topic as int": _frame(topic=5),
    "empty topic": _frame(topic=""),
    "topic with space": _frame(topic="container web"),
    "topic with leading dot": _frame(topic=".container"),
    "topic with empty word": _frame(topic="container..web"),
    "topic with trailing dot": _frame(topic="container."),
    "topic too long": _frame(topic="a" * (codec.MAX_TOPIC + 1)),
    "negative seq": _frame(seq=-1),
    "seq as float": _frame(seq=7.0),
    "seq as bool": _frame(seq=True),
    "seq as string": _frame(seq="7"),
    "negative ts": _frame(ts=-1.0),
    "ts as string": _frame(ts="now"),
    "ts as bool": _frame(ts=True),
    "source as int": _frame(source=1),
    "source too long": _frame(source="s" * (codec.MAX_SOURCE + 1)),
    "int map key": msgpack.packb({1: "x"}),
    "int key inside data": _frame(data={1: 2}),
    "invalid utf-8": _frame(topic="container.wxb").replace(b"wxb", b"\xff\xfe\xfd"),
    "ext type": _frame(data=msgpack.ExtType(5, b"payload")),
    "ext type as envelope": msgpack.packb(msgpack.ExtType(1, b"x")),
    "deep nesting": b"\x91" * 100_000 + b"\xc0",
    "deep nesting in data": _frame(data=None)[:-1] + b"\x91" * 10_000 + b"\xc0",
    "huge array header": b"\xdd\xff\xff\xff\xff",
    "huge map header": b"\xdf\xff\xff\xff\xff",
}


@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frame_raises_frame_error(frame: bytes) -> None:
    with pytest.raises(MalformedFrame):
        decode(frame)


# msgpack's own timestamp type (ext -1) is decoded as msgpack.Timestamp (docs/events.md);
# every other extension type is refused.
NOT_A_NUMBER = {
    "ts NaN": _frame(ts=math.nan),
    "ts infinite": _frame(ts=math.inf),
    "version true": _frame(v=True),
}


@pytest.mark.parametrize("frame", NOT_A_NUMBER.values(), ids=NOT_A_NUMBER.keys())
def test_odd_numbers_are_refused(frame: bytes) -> None:
    with pytest.raises(FrameError):
        decode(frame)


def test_oversize_frame() -> None:
    frame = _frame(data="x" * 100)
    with pytest.raises(FrameTooLarge) as caught:
        decode(frame, max_size=len(frame) - 1)
    assert (caught.value.size, caught.value.limit) == (len(frame), len(frame) - 1)
    assert decode(frame, max_size=len(frame)).data == "x" * 100
    with pytest.raises(FrameTooLarge):
        decode(b"\x00" * (codec.MAX_FRAME + 1))


def test_encode_refuses_what_cannot_go_on_the_wire() -> None:
    with pytest.raises(MalformedFrame):
        encode(Envelope(topic="a.b", seq=1, data={1, 2}))
    with pytest.raises(MalformedFrame):
        encode(Envelope(topic="a.b", seq=1, data=object()))
    with pytest.raises(FrameTooLarge):
        encode(Envelope(topic="a.b", seq=1, data=b"x" * codec.MAX_FRAME))


@pytest.mark.parametrize(
    "fields",
    [{"topic": "bad topic"}, {"seq": -1}, {"seq": 2**64}, {"ts": -5.0}, {"v": 4}, {"source": None}],
    ids=["topic", "negative seq", "seq too big", "ts", "version", "source"],
)
def test_envelope_validates_on_construction(fields: dict) -> None:
    with pytest.raises(MalformedFrame):
        Envelope(**{"topic": "a.b", "seq": 1, **fields})


def test_frame_errors_share_one_base() -> None:
    assert issubclass(MalformedFrame, FrameError) and issubclass(FrameTooLarge, FrameError)


# --- requests and replies -----------------------------------------------------------------


def test_request_op_refuses_non_requests() -> None:
    with pytest.raises(MalformedFrame):
        codec.request_op(Envelope(topic="reply.ping", seq=1, data={}))
    with pytest.raises(MalformedFrame):
        codec.request_op(Envelope(topic="request", seq=1, data={}))
    with pytest.raises(MalformedFrame):
        codec.request_op(Envelope(topic="request.ping", seq=1, data=[1, 2]))


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_error_reply_carries_code_message_details(code: str) -> None:
    envelope = decode(encode(codec.error_reply("start", 4, code, "cannot start `web`", {"container": "web"})))
    assert (envelope.topic, envelope.seq) == ("reply.start", 4)
    with pytest.raises(RemoteError) as caught:
        codec.unwrap_reply(envelope)
    assert (caught.value.code, caught.value.message, caught.value.details) == (
        code,
        "cannot start `web`",
        {"container": "web"},
    )


def test_error_reply_refuses_unknown_codes() -> None:
    with pytest.raises(ValueError, match="no_such_code"):
        codec.error_reply("start", 1, "no_such_code", "x")


@pytest.mark.parametrize(
    "envelope",
    [
        Envelope(topic="stream.run", seq=1, data={"ok": True}),
        Envelope(topic="reply.run", seq=1, data={"result": 1}),
        Envelope(topic="reply.run", seq=1, data={"ok": "yes"}),
        Envelope(topic="reply.run", seq=1, data={"ok": False}),
    ],
    ids=["not a reply", "no ok", "ok not bool", "error without map"],
)
def test_unwrap_reply_refuses_malformed_replies(envelope: Envelope) -> None:
    with pytest.raises(MalformedFrame):
        codec.unwrap_reply(envelope)


# --- sequence numbers ---------------------------------------------------------------------


def test_sequencer_counts_each_channel_from_one() -> None:
    sequencer = Sequencer()
    assert sequencer.last("events") == 0
    assert [sequencer.next("events") for _ in range(3)] == [1, 2, 3]
    assert [sequencer.next("log.web") for _ in range(2)] == [1, 2]
    assert sequencer.next("events") == 4
    assert (sequencer.last("events"), sequencer.last("log.web")) == (4, 2)
    sequencer.forget("events")
    assert sequencer.next("events") == 1


def test_gap_detector() -> None:
    gaps = GapDetector()
    assert gaps.feed(40) == 0  # joined late: what came before is not a gap
    assert gaps.feed(41) == 0
    assert gaps.feed(44) == 2
    assert gaps.feed(44) is None  # duplicate
    assert gaps.feed(42) is None  # older
    assert gaps.feed(45) == 0
    assert (gaps.missed, gaps.last) == (2, 45)
    resumed = GapDetector(last=10)
    assert resumed.feed(13) == 2


@given(st.sets(st.integers(min_value=1, max_value=500), min_size=1))
def test_gap_detector_counts_every_missing_seq(received: set[int]) -> None:
    gaps = GapDetector()
    for seq in sorted(received):
        gaps.feed(seq)
    first, last = min(received), max(received)
    assert gaps.missed == (last - first + 1) - len(received)
    assert gaps.last == last


def test_a_big_frame_given_as_a_view_keeps_its_trailing_output_in_it() -> None:
    """decode(memoryview): data's last bin value, when it ends the frame, is a view of the
    frame (no copy); anything else is decoded as usual, and always to the same values."""
    output = b"0123456789\n" * 20_000
    last = Envelope(topic="log.c.stdout", seq=1, source="s", data={"seq": 4, "ts": 1.5, "partial": False, "data": output})
    frame = encode(last)
    decoded = decode(memoryview(frame))
    assert type(decoded.data["data"]) is memoryview and decoded.data["data"].obj is not None
    assert decoded == decode(frame) and bytes(decoded.data["data"]) == output
    # Not last, nested deeper, or a \xc6 inside a string that looks like a header: no view.
    for data in ({"data": output, "seq": 4}, {"x": {"data": output}}, {"n": "\xc6", "data": [output]}):
        envelope = Envelope(topic="log.c.stdout", seq=1, source="s", data=data)
        assert decode(memoryview(encode(envelope))) == envelope
    # A value early in the frame that reads as a bin 32 header reaching exactly the end.
    placeholder = b"\xc6\x00\x00\x00\x00"
    frame_before = encode(Envelope(topic="log.c.stdout", seq=1, source="s", data={"a": placeholder, "data": [output]}))
    k = frame_before.find(placeholder)
    fake = b"\xc6" + (len(frame_before) - k - 5).to_bytes(4, "big")
    trap = Envelope(topic="log.c.stdout", seq=1, source="s", data={"a": fake, "data": [output]})
    assert encode(trap).find(fake) == k
    assert decode(memoryview(encode(trap))) == trap
    with pytest.raises(MalformedFrame):
        decode(memoryview(frame[:-1]))


# --- the reusable Encoder and the in-place header -----------------------------------------


@given(envelopes)
def test_encoder_makes_the_bytes_of_encode(envelope: Envelope) -> None:
    try:
        expected = encode(envelope)
    except FrameError as exc:
        with pytest.raises(type(exc)):
            codec.Encoder().encode(envelope)
        return
    assert codec.Encoder().encode(envelope) == expected


@given(
    topic=topics,
    source=st.text(max_size=40),
    fields=st.dictionaries(st.text(max_size=10).filter(lambda key: key != "data"), scalars, max_size=4),
    size=st.sampled_from([0, 1, 255, 256, 65_535, 65_536, 300_000]),
    room=st.integers(min_value=0, max_value=600),
)
def test_a_frame_laid_out_around_its_payload_is_the_frame_encode_makes(
    topic: str, source: str, fields: dict, size: int, room: int
) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    buffer = bytearray(b"\xee" * room) + payload
    envelope = Envelope(topic, 7, {**fields, "data": b""}, source=source, ts=1.5)
    frame = codec.Encoder().encode_around(envelope, buffer, room, len(buffer))
    whole = encode(Envelope(topic, 7, {**fields, "data": payload}, source=source, ts=1.5))
    if frame is None:  # no room for the header: the buffer is untouched
        assert len(whole) - size > room
        assert buffer == bytearray(b"\xee" * room) + payload
        return
    assert frame.obj is buffer  # the payload was not copied
    assert bytes(frame) == whole
    assert bytes(buffer[: room - (len(whole) - size)]) == b"\xee" * (room - (len(whole) - size))


def test_encode_around_refuses_data_that_does_not_end_with_the_stand_in() -> None:
    buffer = bytearray(1024)
    for data in ({"data": b"x"}, {}, [b""], {"data": b"", "after": 1}):
        with pytest.raises(ValueError):
            codec.Encoder().encode_around(Envelope("log", 1, data), buffer, 512, 1024)
    assert buffer == bytearray(1024)


def test_encode_around_refuses_a_frame_too_large_and_leaves_the_buffer() -> None:
    buffer = bytearray(512) + bytearray(codec.MAX_FRAME)
    with pytest.raises(FrameTooLarge):
        codec.Encoder().encode_around(Envelope("log", 1, {"data": b""}), buffer, 512, len(buffer))
    assert not any(buffer)


def test_an_event_frame_is_its_topic_a_nul_and_the_envelope() -> None:
    envelope = Envelope(topic="container.web.die", seq=9, data={"exitCode": 0})
    frame = codec.event_frame(envelope.topic, encode(envelope))
    assert frame.startswith(b"container.web.die\x00")  # ZeroMQ's prefix filtering sees the topic
    topic, body = codec.split_event(frame)
    assert topic == b"container.web.die" and decode(body) == envelope
    view_topic, view_body = codec.split_event(memoryview(frame))
    assert view_topic == topic and isinstance(view_body, memoryview) and decode(view_body) == envelope
    assert envelope.v == 3 and decode(encode(envelope)).v == 3


@pytest.mark.parametrize("frame", [b"", b"\x00envelope", b"no separator at all", b"x" * codec.MAX_EVENT_PREFIX + b"\x00"])
def test_an_event_frame_without_its_topic_is_malformed(frame: bytes) -> None:
    with pytest.raises(MalformedFrame):
        codec.split_event(frame)


def test_version_2_envelopes_are_still_read() -> None:
    assert decode(_frame(v=2)).v == 2


def test_version_1_envelopes_are_still_read() -> None:
    old = _frame(v=1)
    assert decode(old).v == 1
