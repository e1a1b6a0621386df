"""A request as a handler sees it (bus/requests.py): the inbox of its client's stream messages,
and its stream messages out, without sockets."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from bus import codec
from bus.errors import RemoteError
from bus.requests import INBOX_LIMIT, Inbox, Request, RequestFailed


async def test_the_inbox_gives_messages_in_order_then_refuses_a_client_that_floods() -> None:
    inbox = Inbox()
    assert all(inbox.put({"i": i}) for i in range(INBOX_LIMIT))
    assert [await inbox.receive() for _ in range(3)] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert all(inbox.put({"i": i}) for i in range(INBOX_LIMIT, INBOX_LIMIT + 3))  # taken ones make room
    assert not inbox.put({"over": 1})  # the limit counts what the handler has not taken
    with pytest.raises(RequestFailed) as caught:
        await inbox.receive()
    assert caught.value.code == "bad_request" and str(INBOX_LIMIT) in caught.value.message


async def test_a_receive_waits_for_the_next_message_and_refuses_one_that_is_not_a_map() -> None:
    inbox = Inbox()
    received = []

    async def take() -> None:
        received.append(await inbox.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take)
        await trio.testing.wait_all_tasks_blocked()
        assert received == []
        inbox.put({"resize": [80, 24]})
    assert received == [{"resize": [80, 24]}]
    inbox.put([1, 2])
    with pytest.raises(RequestFailed, match="must carry a map"):
        await inbox.receive()


class Sender:
    """Stands for the control socket: records what a request streams."""

    source = "testd"

    def __init__(self, answer: bool | None) -> None:
        self.answer = answer
        self.sent: list[tuple[bytes, codec.Envelope]] = []

    def send_stream(self, peer: bytes, frame: bytes) -> bool | None:
        self.sent.append((peer, codec.decode(frame)))
        return self.answer


async def test_a_stream_message_is_a_stream_envelope_of_the_request() -> None:
    for answer in (True, False, None):
        sender = Sender(answer)
        request = Request("container.attach", {}, 41, "client.1", b"peer", sender)
        assert await request.stream({"data": b"out"}) is (answer is True)
        assert request.send_stream({"n": 2}) is answer
        (peer, first), (_, second) = sender.sent
        assert peer == b"peer" and first.topic == "stream.container.attach" and first.seq == 41
        assert first.data == {"data": b"out"} and first.source == "testd" and second.data == {"n": 2}


def test_request_failed_takes_only_known_codes() -> None:
    with pytest.raises(ValueError):
        RequestFailed("no_such_code", "x")
    failed = RequestFailed("not_found", "no container `web`", {"container": "web"})
    assert (failed.code, failed.message, failed.details) == ("not_found", "no container `web`", {"container": "web"})
    with pytest.raises(RemoteError):
        codec.unwrap_reply(codec.error_reply("x", 1, failed.code, failed.message, failed.details))
