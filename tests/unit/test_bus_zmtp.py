"""The CLI's small ZMTP DEALER, against its spec and against a real libzmq ROUTER."""

import threading

import pytest
import zmq
from hypothesis import given, strategies as st

from bus.zmtp import BIG_FRAME, COMMAND, GREETING, MORE, FrameReader, ZmtpDealer, ZmtpError, check_greeting, encode_frame


def test_short_and_long_frames_round_trip_through_the_reader():
    reader = FrameReader()
    reader.feed(encode_frame(b"a" * 10) + encode_frame(b"b" * 300))
    assert reader.messages == [[b"a" * 10], [b"b" * 300]]


def test_multi_frame_messages_and_commands_are_told_apart():
    reader = FrameReader()
    reader.feed(encode_frame(b"one", MORE) + encode_frame(b"\x04PING", COMMAND) + encode_frame(b"two"))
    assert reader.messages == [[b"one", b"two"]]
    assert reader.commands == [b"\x04PING"]


@given(st.lists(st.binary(max_size=600), min_size=1, max_size=5), st.integers(min_value=1, max_value=50))
def test_any_split_of_the_byte_stream_gives_the_same_messages(bodies, step):
    wire = b"".join(encode_frame(body) for body in bodies)
    reader = FrameReader()
    for offset in range(0, len(wire), step):
        reader.feed(wire[offset : offset + step])
    assert reader.messages == [[body] for body in bodies]


def deliver(reader, wire, step):
    """Hand ``wire`` to ``reader`` ``step`` bytes at a time, as ZmtpDealer._fill does: into
    the body buffer of a big frame when it offers one, else through feed()."""
    offset = 0
    while offset < len(wire):
        view = reader.body_view()
        if view is None:
            reader.feed(wire[offset : offset + step])
            offset += step
            continue
        count = min(step, len(view), len(wire) - offset)
        view[:count] = wire[offset : offset + count]
        view.release()
        reader.body_received(count)
        offset += count


@pytest.mark.parametrize("step", [1000, 65536, 1 << 20])
def test_big_frames_are_received_into_their_own_buffer(step):
    big, other = bytes(range(256)) * (BIG_FRAME // 128), b"y" * (BIG_FRAME + 7)
    wire = encode_frame(b"head", MORE) + encode_frame(big) + encode_frame(other, MORE) + encode_frame(b"tail")
    reader = FrameReader()
    deliver(reader, wire, step)
    assert reader.messages == [[b"head", big], [other, b"tail"]]
    assert reader.body_view() is None


def test_greetings_that_are_not_zmtp_3_null_are_refused():
    check_greeting(GREETING)
    with pytest.raises(ZmtpError, match="greeting"):
        check_greeting(b"HTTP/1.1 200 OK\r\n".ljust(64, b" "))
    with pytest.raises(ZmtpError, match="ZMTP 2"):
        check_greeting(GREETING[:10] + b"\x02" + GREETING[11:])
    with pytest.raises(ZmtpError, match="CURVE"):
        check_greeting(GREETING[:12] + b"CURVE".ljust(20, b"\x00") + GREETING[32:])


def test_oversized_frame_is_refused():
    reader = FrameReader()
    with pytest.raises(ZmtpError, match="over the limit"):
        reader.feed(bytes((0x02,)) + (1 << 40).to_bytes(8, "big"))


def test_requests_and_replies_with_a_libzmq_router(tmp_path):
    path = str(tmp_path / "router.sock")
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"ipc://{path}")

    def echo(count):
        for _ in range(count):
            identity, body = router.recv_multipart()
            router.send_multipart([identity, body[::-1]])

    server = threading.Thread(target=echo, args=(4,))
    server.start()
    dealer = ZmtpDealer(path)
    try:
        for body in (b"hello", b"x" * 1000, b"", bytes(range(256)) * 20000):
            dealer.send(body)
            # poll() takes what one read brings: a big message takes several.
            assert any(dealer.poll(10.0) for _ in range(1000))
            assert dealer.recv() == [body[::-1]]
        assert not dealer.poll(0.01)
    finally:
        dealer.close()
        server.join(10)
        router.close()
        context.term()


def test_a_peer_that_closes_is_reported(tmp_path):
    import socket

    path = str(tmp_path / "liar.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def hang_up():
        connection, _ = listener.accept()
        with connection:
            connection.recv(64)

    server = threading.Thread(target=hang_up)
    server.start()
    try:
        with pytest.raises(ConnectionError):  # ZmtpError ("closed") or a reset, by timing
            ZmtpDealer(path, timeout=5.0)
    finally:
        server.join(10)
        listener.close()
