"""The control socket (bus/control.py) over real ZeroMQ ipc sockets: requests, replies, errors,
streams both ways, requests in flight.

No root needed: the run dir is a fresh temporary directory. trio.fail_after is only a hang
guard, never an assertion about speed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from bus import codec
from bus import control as bus_control
from bus.client import AsyncClient, Client
from bus.errors import RemoteError
from bus.server import BusServer

from tests.bus_harness import GUARD, FakeLog, Handlers, RawDealer, Waits, in_thread, sync_request, start_server
from tests.bus_harness import client, handlers, log, run_dir, server, waits  # noqa: F401 - fixtures


async def test_request_reply(client: AsyncClient, run_dir: Path, server: BusServer) -> None:
    assert await client.request("echo", {"x": [1, "two"]}) == {
        "args": {"x": [1, "two"]},
        "source": "test",
        "op": "echo",
    }
    assert (await in_thread(sync_request, run_dir, "echo", {"y": 2}))["args"] == {"y": 2}
    assert await client.request("bus.ping") == {"pid": os.getpid(), "source": "testd"}
    assert server.stats.requests == server.stats.replies == 3


async def test_error_reply_carries_code_message_details(client: AsyncClient, run_dir: Path) -> None:
    with pytest.raises(RemoteError) as caught:
        await client.request("fail")
    assert (caught.value.code, caught.value.message, caught.value.details) == (
        "not_found",
        "no container `web`",
        {"container": "web"},
    )
    with pytest.raises(RemoteError) as caught:
        await in_thread(sync_request, run_dir, "fail")
    assert caught.value.code == "not_found"


async def test_unknown_op_is_a_bad_request_naming_the_known_ones(client: AsyncClient) -> None:
    with pytest.raises(RemoteError) as caught:
        await client.request("frobnicate")
    assert caught.value.code == "bad_request"
    assert "'frobnicate'" in caught.value.message
    assert "echo" in caught.value.message and "bus.ping" in caught.value.message
    assert "echo" in caught.value.details["known"]


async def test_handler_crash_is_an_internal_error_and_the_server_stays_up(
    client: AsyncClient, server: BusServer, log: FakeLog
) -> None:
    with pytest.raises(RemoteError) as caught:
        await client.request("boom")
    assert caught.value.code == "internal"
    assert "boom" in caught.value.message
    errors = [fields for level, _, fields in log.calls if level == "error"]
    assert len(errors) == 1 and errors[0]["op"] == "boom"
    assert isinstance(errors[0]["exc_info"], RuntimeError)
    with pytest.raises(RemoteError) as caught:
        await client.request("unencodable")
    assert caught.value.code == "internal"
    assert server.stats.handler_errors == 2
    assert (await client.request("echo", {"still": "up"}))["args"] == {"still": "up"}


async def test_bad_frames_get_bad_frame_or_are_counted(server: BusServer, client: AsyncClient, run_dir: Path) -> None:
    raw = RawDealer(run_dir)
    try:
        await raw.send(b"\xc1 not msgpack")
        reply = await raw.reply()
        assert (reply.topic, reply.seq) == ("reply.unknown", 0)
        with pytest.raises(RemoteError) as caught:
            codec.unwrap_reply(reply)
        assert caught.value.code == "bad_frame"
        assert "not msgpack" in caught.value.message

        # A valid envelope that is not a request: answered with its seq, so a client can match it.
        await raw.send(codec.encode(codec.Envelope(topic="hello.there", seq=77, data={})))
        reply = await raw.reply()
        assert reply.seq == 77 and reply.data["error"]["code"] == "bad_frame"

        # Three frames at the ROUTER (identity + two): counted and dropped, no reply.
        await raw.send(b"one", b"two")
        await raw.send(codec.encode(codec.request("echo", 5, {"after": "garbage"}, "raw")))
        reply = await raw.reply()
        assert reply.seq == 5 and codec.unwrap_reply(reply)["args"] == {"after": "garbage"}
    finally:
        raw.close()
    assert server.stats.frames_bad == 3
    assert (await client.request("echo"))["args"] == {}


async def test_slow_request_does_not_hold_up_others(
    server: BusServer, handlers: Handlers, run_dir: Path, nursery: trio.Nursery
) -> None:
    results: list[Any] = []
    slow_done = trio.Event()

    async def slow() -> None:
        async with AsyncClient(run_dir) as own:
            results.append(await own.request("slow"))
        slow_done.set()

    nursery.start_soon(slow)
    with trio.fail_after(GUARD):
        await handlers.slow_started.wait()
        async with AsyncClient(run_dir) as fast:
            assert (await fast.request("echo", {"n": 1}))["args"] == {"n": 1}
        assert results == []  # the slow one is still waiting: it did not block the fast one
        handlers.release.set()
        await slow_done.wait()
    assert results == ["slow done"]


async def test_stream_yields_payloads_in_order_then_the_result(server: BusServer, run_dir: Path) -> None:
    def consume() -> tuple[list[dict], Any, Any]:
        with Client(run_dir) as sync_client:
            stream = sync_client.stream("count", {"n": 500}, timeout=GUARD)
            payloads = []
            while True:
                try:
                    payloads.append(next(stream))
                except StopIteration as stop:
                    return payloads, stop.value, stream.result

    payloads, returned, result = await in_thread(consume)
    assert payloads == [{"i": i} for i in range(500)]
    assert returned == result == {"count": 500}
    assert server.stats.streamed == 500


async def test_stream_error_reply_raises(server: BusServer, run_dir: Path) -> None:
    def consume() -> list[dict]:
        payloads: list[dict] = []
        with Client(run_dir) as sync_client:
            with pytest.raises(RemoteError) as caught:
                for payload in sync_client.stream("count", {"n": 3, "fail": True}, timeout=GUARD):
                    payloads.append(payload)
            assert caught.value.code == "conflict"
            assert sync_client.request("echo", {"next": 1})["args"] == {"next": 1}
        return payloads

    assert await in_thread(consume) == [{"i": 0}, {"i": 1}, {"i": 2}]


async def test_stream_to_a_full_peer_is_refused_and_the_reply_waits(
    server: BusServer, handlers: Handlers, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bus_control, "REPLY_SEND_TIMEOUT", GUARD)  # reading the backlog may be slow
    raw = RawDealer(run_dir)
    try:
        await raw.send(codec.encode(codec.request("flood", 1, {}, "raw")))
        with trio.fail_after(GUARD):
            await handlers.finished.wait()  # stream() said False: the peer is full
        assert server.stats.stream_dropped == 1
        handlers.release.set()
        received = []
        while True:
            envelope = await raw.reply()
            if not codec.is_stream(envelope):
                break
            received.append(envelope.data["i"])
        result = codec.unwrap_reply(envelope)
    finally:
        raw.close()
    assert received == list(range(result["sent"]))
    assert server.stats.replies_dropped == 0


async def test_stream_and_reply_to_a_vanished_peer_are_counted(
    server: BusServer, handlers: Handlers, run_dir: Path
) -> None:
    raw = RawDealer(run_dir)
    try:
        await raw.send(codec.encode(codec.request("until_gone", 1, {}, "raw")))
        with trio.fail_after(GUARD):
            await handlers.slow_started.wait()
    finally:
        raw.close()
    handlers.release.set()
    with trio.fail_after(GUARD):
        await handlers.finished.wait()
    # finished is set right before the handler returns; its reply is attempted before any
    # other task runs, so this runs after the drop.
    await trio.testing.wait_all_tasks_blocked()
    assert server.stats.stream_dropped == 1
    assert server.stats.replies_dropped == 1
    async with AsyncClient(run_dir) as after:
        assert (await after.request("echo"))["args"] == {}


async def test_a_client_over_its_requests_in_flight_gets_too_many_requests_at_once(
    run_dir: Path, waits: Waits, nursery: trio.Nursery
) -> None:
    server = await start_server(nursery, run_dir, waits, max_in_flight=3)
    raw = RawDealer(run_dir)
    try:
        for request_id in range(1, 6):
            await raw.send(codec.encode(codec.request("hold", request_id, {}, "raw")))
        refused = [await raw.reply() for _ in range(2)]  # before any hold is released
        assert [envelope.seq for envelope in refused] == [4, 5]
        for envelope in refused:
            assert envelope.data["error"]["code"] == "too_many_requests"
            assert "3 requests without a reply" in envelope.data["error"]["message"]
        assert server.stats.requests_refused == 2 and server.stats.in_flight == 3
        waits.release.set()
        replies = sorted([(await raw.reply()).seq for _ in range(3)])
        assert replies == [1, 2, 3]
        await raw.send(codec.encode(codec.request("echo", 6, {"again": True}, "raw")))
        assert codec.unwrap_reply(await raw.reply()) == {"again": True}
    finally:
        raw.close()
