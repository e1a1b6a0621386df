"""The bus over real ZeroMQ ipc sockets: BusServer, Client, AsyncClient, AsyncSocket.

No root needed: the run dir is a fresh temporary directory. trio.fail_after is only a hang
guard, never an assertion about speed.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import zmq

from bus import client as bus_client
from bus import codec, control as bus_control, publisher as bus_publisher, server as bus_server
from bus.client import AsyncClient, Client
from bus.errors import BusError, DaemonUnavailable, RemoteError, RequestTimeout
from bus.server import BusServer, Request, RequestFailed
from bus.trio_zmq import AsyncSocket

GUARD = 30  # seconds: hang guard only


class FakeLog:
    """Records structlog-style calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.calls.append(("error", event, fields))

    def debug(self, event: str, **fields: Any) -> None:
        self.calls.append(("debug", event, fields))


class Handlers:
    """The ops the test server knows, with hooks the tests drive."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.slow_started = trio.Event()
        self.finished = trio.Event()
        self.stream_results: list[bool] = []

    def table(self) -> dict[str, Any]:
        return {
            "echo": self.echo,
            "fail": self.fail,
            "boom": self.boom,
            "unencodable": self.unencodable,
            "slow": self.slow,
            "count": self.count,
            "flood": self.flood,
            "until_gone": self.until_gone,
        }

    async def echo(self, request: Request) -> Any:
        return {"args": request.args, "source": request.source, "op": request.op}

    async def fail(self, request: Request) -> Any:
        raise RequestFailed("not_found", "no container `web`", {"container": "web"})

    async def boom(self, request: Request) -> Any:
        raise RuntimeError("boom")

    async def unencodable(self, request: Request) -> Any:
        return {1, 2, 3}

    async def slow(self, request: Request) -> Any:
        self.slow_started.set()
        await self.release.wait()
        return "slow done"

    async def count(self, request: Request) -> Any:
        """Stream {i} for i < n, then fail with `conflict` if asked, else return n."""
        for i in range(request.args["n"]):
            self.stream_results.append(await request.stream({"i": i}))
        if request.args.get("fail"):
            raise RequestFailed("conflict", "stopped on purpose")
        return {"count": request.args["n"]}

    async def flood(self, request: Request) -> Any:
        """Stream until the requester is full, then wait for release; return how many went."""
        sent = 0
        while await request.stream({"i": sent}):
            sent += 1
        self.finished.set()
        await self.release.wait()
        return {"sent": sent}

    async def until_gone(self, request: Request) -> Any:
        """Stream until the requester is gone; then return (the reply goes nowhere)."""
        self.slow_started.set()
        await self.release.wait()
        while await request.stream({"ping": True}):
            await trio.sleep(0.001)
        self.finished.set()
        return "nobody hears this"


@pytest.fixture
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A short directory: AF_UNIX paths are limited to 107 bytes, test names can be long.
    path = tmp_path_factory.mktemp("bus")
    assert len(str(path / "control.sock")) < 100
    return path


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
def log() -> FakeLog:
    return FakeLog()


@pytest.fixture
async def server(run_dir: Path, handlers: Handlers, log: FakeLog, nursery: trio.Nursery) -> BusServer:
    bus = BusServer(run_dir, handlers.table(), source="testd", log=log)
    await nursery.start(bus.serve)
    return bus


@pytest.fixture
async def client(run_dir: Path, server: BusServer) -> AsyncClient:
    async with AsyncClient(run_dir, source="test") as async_client:
        yield async_client


def in_thread(function, *args: Any, **kwargs: Any):
    """Run a blocking (synchronous Client) call without blocking the server's trio loop."""
    return trio.to_thread.run_sync(lambda: function(*args, **kwargs))


def sync_request(run_dir: Path, op: str, args: dict | None = None, **kwargs: Any) -> Any:
    with Client(run_dir) as sync_client:
        return sync_client.request(op, args, **kwargs)


class RawDealer:
    """A bare DEALER on the control socket, to send what no client would."""

    def __init__(self, run_dir: Path):
        self.context = zmq.Context()
        raw = self.context.socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(f"ipc://{run_dir / 'control.sock'}")
        self.socket = AsyncSocket(raw)

    async def send(self, *frames: bytes) -> None:
        await self.socket.send(frames)

    async def reply(self) -> codec.Envelope:
        with trio.fail_after(GUARD):
            (frame,) = await self.socket.recv()
        return codec.decode(frame)

    def close(self) -> None:
        self.socket.close()
        self.context.term()


# --- request / reply ----------------------------------------------------------------------


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


async def test_concurrent_requests_on_one_async_client(client: AsyncClient, handlers: Handlers) -> None:
    results: dict[int, Any] = {}

    async def one(i: int) -> None:
        if i % 10 == 0:
            results[i] = await client.request("slow")
        else:
            results[i] = (await client.request("echo", {"i": i}))["args"]["i"]

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            for i in range(60):
                nursery.start_soon(one, i)
            await handlers.slow_started.wait()
            await trio.testing.wait_all_tasks_blocked()
            handlers.release.set()
    assert results == {i: "slow done" if i % 10 == 0 else i for i in range(60)}


# --- streaming ----------------------------------------------------------------------------


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


# --- events -------------------------------------------------------------------------------


async def test_subscribe_handshake_never_misses_the_next_event(server: BusServer, client: AsyncClient) -> None:
    """Run many times: without the bus.sync handshake the first event is lost often."""
    with trio.fail_after(GUARD * 4):
        for attempt in range(200):
            async with client.subscribe([f"test.{attempt}."]) as events:
                published = server.publish(f"test.{attempt}.first", {"attempt": attempt}, channel="test")
                assert await events.receive() == published


async def test_sync_client_subscribe_never_misses_the_next_event(server: BusServer, run_dir: Path) -> None:
    def subscribe_then_announce(ready: trio.Event, token: trio.lowlevel.TrioToken) -> codec.Envelope:
        with Client(run_dir) as sync_client:
            with sync_client.subscribe(["container."], timeout=GUARD) as events:
                trio.from_thread.run_sync(ready.set, trio_token=token)
                return next(events, None)

    for attempt in range(20):
        ready = trio.Event()
        async with trio.open_nursery() as nursery:
            got: list[codec.Envelope] = []

            async def run() -> None:
                got.append(await in_thread(subscribe_then_announce, ready, trio.lowlevel.current_trio_token()))

            nursery.start_soon(run)
            with trio.fail_after(GUARD):
                await ready.wait()
            published = server.publish("container.web.start", {"attempt": attempt}, channel="events")
        assert got == [published]


async def test_seq_is_gap_free_per_channel(server: BusServer, client: AsyncClient) -> None:
    async with client.subscribe(["events.", "log."]) as events:
        expected = []
        for i in range(300):
            expected.append(server.publish("events.thing", {"i": i}, channel="events"))
            if i % 3 == 0:
                expected.append(server.publish("log.web.stdout", {"line": i}, channel="log.web"))
        with pytest.raises(BusError):  # cannot be encoded: no seq is used up
            server.publish("events.thing", {"bad": {1, 2}}, channel="events")
        expected.append(server.publish("events.thing", {"i": "last"}, channel="events"))
        received = []
        with trio.fail_after(GUARD):
            for _ in expected:
                received.append(await events.receive())
    assert received == expected
    for channel, prefix in (("events", "events."), ("log.web", "log.")):
        seqs = [envelope.seq for envelope in received if envelope.topic.startswith(prefix)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert server.last_seq(channel) == len(seqs)
        gaps = codec.GapDetector()
        for seq in seqs:
            gaps.feed(seq)
        assert gaps.missed == 0


@asynccontextmanager
async def raw_subscriber(client: AsyncClient, run_dir: Path, prefix: bytes, token: str):
    """A plain SUB socket on the events socket (not the client's), synced with bus.sync."""
    context = zmq.Context()
    raw = context.socket(zmq.SUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(f"ipc://{run_dir / 'events.sock'}")
    raw.setsockopt(zmq.SUBSCRIBE, prefix)
    raw.setsockopt(zmq.SUBSCRIBE, f"sync.{token}".encode())
    sub = AsyncSocket(raw)
    try:
        await client.request("bus.sync", {"token": token})
        yield sub
    finally:
        sub.close()
        context.term()


async def test_published_frames_are_exactly_codec_encode(server: BusServer, client: AsyncClient, run_dir: Path) -> None:
    async with raw_subscriber(client, run_dir, b"x.", "rawtoken") as sub:
        published = [
            server.publish("x.y", {"n": 1, "b": b"\x00bytes", "f": 1.5, "l": [None, True]}, channel="x"),
            server.publish("x.z", None, channel="x"),
        ]
        with trio.fail_after(GUARD):
            for envelope in published:
                assert await sub.recv() == [envelope.topic.encode(), codec.encode(envelope)]


async def test_a_payload_published_from_its_buffer_is_the_frame_codec_encode_makes(
    server: BusServer, client: AsyncClient, run_dir: Path
) -> None:
    """publish(payload=(buffer, start, end)): the frame is written around the payload in its
    own buffer (no copy of it), and is byte for byte what codec.encode makes of the event
    with data["data"] = those bytes; too little room or payload falls back to a copy."""
    room = bus_publisher.PAYLOAD_ROOM
    big = bytearray(room + 300_000)
    big[room:] = b"0123456789abcdef\n" * (300_000 // 17) + b"x" * (300_000 % 17)
    small = bytearray(room + 100)
    small[room:] = b"s" * 100
    cramped = bytearray(10 + 100_000)
    cramped[10:] = b"c" * 100_000
    async with raw_subscriber(client, run_dir, b"log.", "payloadtoken") as sub:
        published = []
        for buffer, start in ((big, room), (small, room), (cramped, 10)):
            published.append(server.publish("log.c.stdout", {"seq": 1, "ts": 2.5, "partial": False},
                                            channel="log.c.stdout", payload=(buffer, start, len(buffer))))
        assert isinstance(published[0].data["data"], memoryview)  # the buffer's own bytes
        assert published[0].data["data"].obj is big
        with trio.fail_after(GUARD):
            for envelope, buffer, start in zip(published, (big, small, cramped), (room, room, 10)):
                expected = codec.Envelope(topic=envelope.topic, seq=envelope.seq, source=envelope.source, ts=envelope.ts,
                                          data={"seq": 1, "ts": 2.5, "partial": False, "data": bytes(buffer[start:])})
                assert await sub.recv() == [b"log.c.stdout", codec.encode(expected)]
        with pytest.raises(ValueError):
            server.publish("log.c.stdout", {"data": b"x"}, channel="log.c.stdout", payload=(big, room, len(big)))


async def test_bus_sync_replies_only_once_the_subscription_is_seen(
    server: BusServer, client: AsyncClient, run_dir: Path, nursery: trio.Nursery
) -> None:
    answered = trio.Event()
    result: list[Any] = []

    async def sync() -> None:
        result.append(await client.request("bus.sync", {"token": "late"}))
        answered.set()

    requests_before, replies_before = server.stats.requests, server.stats.replies
    nursery.start_soon(sync)
    with trio.fail_after(GUARD):
        while server.stats.requests == requests_before:  # the request reached the server
            await trio.sleep(0.001)
    await trio.testing.wait_all_tasks_blocked()  # its handler ran as far as it could
    assert server.stats.replies == replies_before and result == []
    context = zmq.Context()
    raw = context.socket(zmq.SUB)
    try:
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(f"ipc://{run_dir / 'events.sock'}")
        raw.setsockopt(zmq.SUBSCRIBE, b"sync.late")
        with trio.fail_after(GUARD):
            await answered.wait()
    finally:
        raw.close()
        context.term()
    assert result == [{"token": "late"}]


async def test_bus_sync_validates_and_times_out(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(RemoteError) as caught:
        await client.request("bus.sync", {"token": "not a token!"})
    assert caught.value.code == "invalid_argument" and "'token'" in caught.value.message
    monkeypatch.setattr(bus_server, "SYNC_TIMEOUT", 0.05)
    with pytest.raises(RemoteError) as caught:
        await client.request("bus.sync", {"token": "nobodysubscribed"})
    assert caught.value.code == "timeout"


async def test_publisher_and_router_under_load_do_not_stall(
    server: BusServer, run_dir: Path, nursery: trio.Nursery
) -> None:
    """The edge-triggered ZMQ_FD case: the ROUTER's receiving task parks while request
    tasks send on the same socket, and the XPUB task is busy; a lost wake-up would hang a
    request or the subscriber, and the guard would fire."""
    events_total = 20_000
    async with AsyncClient(run_dir) as subscriber:
        async with subscriber.subscribe(["load."]) as events:

            async def publish() -> None:
                for i in range(events_total):
                    server.publish("load.event", {"i": i}, channel="load")
                    if i % 500 == 0:
                        await trio.lowlevel.checkpoint()

            async def requests(worker: int) -> None:
                async with AsyncClient(run_dir) as own:
                    for i in range(150):
                        assert (await own.request("echo", {"w": worker, "i": i}))["args"] == {"w": worker, "i": i}

            async def stream_requests() -> None:
                async with AsyncClient(run_dir) as own:
                    for _ in range(50):
                        assert await own.request("count", {"n": 20}) == {"count": 20}

            with trio.fail_after(GUARD * 2):
                async with trio.open_nursery() as load:
                    load.start_soon(publish)
                    for worker in range(4):
                        load.start_soon(requests, worker)
                    load.start_soon(stream_requests)
                    gaps = codec.GapDetector()
                    for _ in range(events_total):
                        gaps.feed((await events.receive()).seq)
    assert gaps.last == events_total and gaps.missed == 0


# --- sockets, lifetime, failures ----------------------------------------------------------


async def test_socket_files_are_0660_and_removed_on_exit(run_dir: Path, handlers: Handlers) -> None:
    bus = BusServer(run_dir, handlers.table())
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        for name in ("control.sock", "events.sock"):
            mode = os.stat(run_dir / name).st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
        nursery.cancel_scope.cancel()
    assert not (run_dir / "control.sock").exists()
    assert not (run_dir / "events.sock").exists()


async def test_second_server_on_the_same_run_dir_is_refused(client: AsyncClient, run_dir: Path) -> None:
    with pytest.raises(BusError, match="already serving"):
        await BusServer(run_dir, {}).serve()
    assert (await client.request("bus.ping"))["pid"] == os.getpid()  # the first one is untouched


async def test_no_daemon_is_daemon_unavailable(run_dir: Path) -> None:
    with trio.fail_after(GUARD / 3):  # well below the default request timeout of 30 s
        with pytest.raises(DaemonUnavailable, match="no socket file"):
            await in_thread(sync_request, run_dir, "bus.ping")
        async with AsyncClient(run_dir) as async_client:
            with pytest.raises(DaemonUnavailable):
                await async_client.request("bus.ping")
        # A stale socket file, left by a daemon that died: connection refused.
        for name in ("control.sock", "events.sock"):
            stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stale.bind(str(run_dir / name))
            stale.close()
        with pytest.raises(DaemonUnavailable, match="refused"):
            await in_thread(sync_request, run_dir, "bus.ping")

        def subscribe() -> None:
            with Client(run_dir) as sync_client:
                sync_client.subscribe(["x."])

        with pytest.raises(DaemonUnavailable, match="refused"):
            await in_thread(subscribe)


async def test_silent_daemon_times_out_and_stale_replies_are_ignored(run_dir: Path) -> None:
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"ipc://{run_dir / 'control.sock'}")
    silent = AsyncSocket(router)
    try:
        async with AsyncClient(run_dir) as async_client:
            with pytest.raises(RequestTimeout):
                await async_client.request("bus.ping", timeout=0.2)
            # Now answer the timed-out request 1 (stale), then request 2 properly.
            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    result: list[Any] = []

                    async def second() -> None:
                        result.append(await async_client.request("echo", timeout=GUARD))

                    nursery.start_soon(second)
                    peer, first = await silent.recv()
                    peer, second_frame = await silent.recv()
                    assert codec.decode(first).seq == 1 and codec.decode(second_frame).seq == 2
                    await silent.send([peer, codec.encode(codec.reply("bus.ping", 1, "stale"))])
                    await silent.send([peer, codec.encode(codec.reply("echo", 2, "fresh"))])
            assert result == ["fresh"]
        with pytest.raises(RequestTimeout):
            await in_thread(sync_request, run_dir, "bus.ping", timeout=0.2)
    finally:
        silent.close()
        context.term()


async def test_sync_client_notices_the_daemon_going_away(run_dir: Path, handlers: Handlers) -> None:
    bus = BusServer(run_dir, handlers.table())
    serving = trio.CancelScope()

    async def serve(task_status: trio.TaskStatus[None]) -> None:
        with serving:
            await bus.serve(task_status=task_status)

    async def stop_when_waiting() -> None:
        await handlers.slow_started.wait()
        serving.cancel()

    def wait_for_slow() -> BaseException:
        with Client(run_dir) as sync_client:
            with pytest.raises(DaemonUnavailable) as caught:
                sync_client.request("slow", timeout=GUARD * 10)  # far longer than the guard
            return caught.value

    async with trio.open_nursery() as nursery:
        await nursery.start(serve)
        nursery.start_soon(stop_when_waiting)
        with trio.fail_after(GUARD):
            error = await in_thread(wait_for_slow)
    assert "went away" in str(error)


# --- trio adapter -------------------------------------------------------------------------


async def test_async_socket_allows_one_waiter_and_close_wakes_it() -> None:
    context = zmq.Context()
    raw = context.socket(zmq.PULL)
    raw.setsockopt(zmq.LINGER, 0)
    wrapped = AsyncSocket(raw)
    outcome: list[BaseException] = []

    async def waiter() -> None:
        try:
            await wrapped.recv()
        except trio.ClosedResourceError as exc:
            outcome.append(exc)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await wrapped.wait()
            wrapped.close()
    finally:
        context.term()
    assert len(outcome) == 1


async def test_a_send_that_drains_the_mailbox_wakes_the_receiver() -> None:
    """The lost wake-up, built step by step: a reply lands in the DEALER's mailbox (its fd
    turns readable) and, before the parked receiver runs, another task sends on the same
    DEALER; libzmq processes the mailbox inside that send and the fd is quiet again. Only
    the re-check after the send (AsyncSocket.touched) wakes the receiver."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    dealer = context.socket(zmq.DEALER)
    for raw in (router, dealer):
        raw.setsockopt(zmq.LINGER, 0)
    router.bind("inproc://drain")
    dealer.connect("inproc://drain")
    server_side, client_side = AsyncSocket(router), AsyncSocket(dealer)
    received: list[list[bytes]] = []
    woke = trio.Event()
    try:
        assert client_side.send_nowait([b"hello"])
        peer, _ = await server_side.recv()
        async with trio.open_nursery() as nursery:

            async def receiver() -> None:
                received.append(await client_side.recv())
                woke.set()

            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()  # the receiver is parked on the fd
            # libzmq processes commands inside send() at most once a millisecond or so;
            # let that throttle run out so the send below does process the mailbox.
            await trio.sleep(0.02)
            assert server_side.send_nowait([peer, b"reply"])  # inproc: straight into the mailbox
            assert client_side.send_nowait([b"second"])  # drains the mailbox, fd goes quiet
            with trio.fail_after(GUARD / 3):  # without the re-check: sleeps for ever
                await woke.wait()
    finally:
        server_side.close()
        client_side.close()
        context.term()
    assert received == [[b"reply"]]


async def test_async_socket_sends_from_other_tasks_do_not_strand_the_receiver() -> None:
    """One task waits on a DEALER while other tasks send on it; every send drains the
    mailbox fd, so without the re-check the receiver could sleep with replies queued."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    dealer = context.socket(zmq.DEALER)
    for raw in (router, dealer):
        raw.setsockopt(zmq.LINGER, 0)
    router.bind("inproc://strand")
    dealer.connect("inproc://strand")
    echo, client_side = AsyncSocket(router), AsyncSocket(dealer)
    total = 5_000
    try:
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:

                async def echo_back() -> None:
                    for _ in range(total):
                        assert echo.send_nowait(await echo.recv())

                async def sender(offset: int) -> None:
                    for i in range(offset, total, 4):
                        while not client_side.send_nowait([str(i).encode()]):
                            await trio.sleep(0.001)
                        if i % 7 == 0:
                            await trio.lowlevel.checkpoint()

                nursery.start_soon(echo_back)
                for offset in range(4):
                    nursery.start_soon(sender, offset)
                received = set()
                for _ in range(total):
                    received.add(int((await client_side.recv())[0]))
    finally:
        echo.close()
        client_side.close()
        context.term()
    assert received == set(range(total))


# --- client module ------------------------------------------------------------------------


def test_client_module_imports_neither_trio_nor_structlog() -> None:
    code = "import sys, bus.client; print(sorted(m for m in ('trio', 'structlog') if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_default_run_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKYARD_RUN", raising=False)
    assert bus_client.default_run_dir() == "/run/dockyard"
    monkeypatch.setenv("DOCKYARD_RUN", "/tmp/elsewhere")
    assert bus_client.default_run_dir() == "/tmp/elsewhere"
    assert Client().control_path == "/tmp/elsewhere/control.sock"


def test_subscribe_refuses_a_bare_string(run_dir: Path) -> None:
    with Client(run_dir) as sync_client:
        with pytest.raises(TypeError):
            sync_client.subscribe("container.")  # type: ignore[arg-type]
