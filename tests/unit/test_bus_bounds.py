"""The bus's bounds against careless or hostile clients, over real ipc sockets: connections
per socket (bus/peers.py), requests in flight per client, requests abandoned by a client
that left. No root needed; trio.fail_after is a hang guard only."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import trio
import zmq

from bus import codec
from bus.client import AsyncClient
from bus.peers import Peers
from bus.server import BusServer, Request
from bus.trio_zmq import AsyncSocket
from tests.unit.test_bus_io import GUARD, FakeLog, RawDealer


class Log(FakeLog):
    def warning(self, event: str, **fields: Any) -> None:
        self.calls.append(("warning", event, fields))


class Waits:
    """Ops that wait until released, and record how they ended."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.started = 0
        self.cancelled = 0

    def table(self) -> dict[str, Any]:
        return {"hold": self.hold, "echo": self.echo}

    async def hold(self, request: Request) -> Any:
        self.started += 1
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.cancelled += 1
            raise
        return "released"

    async def echo(self, request: Request) -> Any:
        return request.args


async def until(condition, what: str) -> None:
    """Poll a counter the server updates from another thread's events, against a guard."""
    with trio.fail_after(GUARD):
        while not condition():
            await trio.sleep(0.01)


@pytest.fixture
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bounds")


@pytest.fixture
def waits() -> Waits:
    return Waits()


async def start_server(nursery: trio.Nursery, run_dir: Path, waits: Waits, **bounds: Any) -> BusServer:
    bus = BusServer(run_dir, waits.table(), source="testd", log=Log(), cancel_on_disconnect={"hold"}, **bounds)
    await nursery.start(bus.serve)
    return bus


# --- the table, without sockets -------------------------------------------------------------


def test_peers_keep_at_most_the_bound_and_a_quarter_per_process() -> None:
    peers = Peers(max_connections=8, max_in_flight=2)
    assert [peers.accepted(fd, pid=100) for fd in (10, 11, 12)] == [True, True, False]
    assert [peers.accepted(fd, pid=200 + fd) for fd in range(20, 28)] == [True] * 6 + [False] * 2
    assert peers.stats.connections == 8 and peers.stats.connections_refused == 3
    assert peers.disconnected(12) == set()  # a refused one leaving changes no count
    assert peers.seen(b"client", 10)
    assert peers.disconnected(10) == {b"client"} and not peers.connected(b"client")
    assert peers.stats.connections == 7
    assert peers.accepted(10, pid=100)  # the fd reused by a new connection of the same process
    assert peers.accepted(30, pid=300, refusable=False)  # over the bound, but cannot be closed
    assert not peers.is_refused(30) and peers.seen(b"other", 30)


def test_peers_cap_requests_in_flight_per_client() -> None:
    peers = Peers(max_connections=4, max_in_flight=2)
    assert [peers.begin(b"a") for _ in range(3)] == [True, True, False]
    assert peers.begin(b"b")
    peers.end(b"a")
    assert peers.begin(b"a") and peers.in_flight() == 3 and peers.in_flight(b"a") == 2


def test_message_source_descriptor_is_reported() -> None:
    """ZMQ_SRCFD (deprecated in libzmq, still implemented) is what ties a routing id to its
    connection; a libzmq without it must fail here, not silently stop cancelling."""
    context = zmq.Context()
    try:
        router = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send(b"hello")
        assert router.poll(GUARD * 1000)
        frames, fd = AsyncSocket(router).recv_from_nowait()
        assert frames[1] == b"hello" and fd > 2
        assert socket.socket(fileno=fd).detach() == fd  # a real socket of this process
        dealer.close()
        router.close()
    finally:
        context.term()


# --- connections --------------------------------------------------------------------------


async def test_connections_over_the_bound_are_closed_and_the_server_answers(
    run_dir: Path, waits: Waits, nursery: trio.Nursery
) -> None:
    server = await start_server(nursery, run_dir, waits, max_connections=8)  # 2 per process
    raws = []
    try:
        for _ in range(6):
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.connect(str(run_dir / "control.sock"))
            raws.append(raw)
        await until(lambda: server.stats.connections_refused == 4, "4 refused")
        assert server.stats.connections == 2
        # A refused connection ends (EOF, after libzmq's greeting); a kept one stays open.
        for raw in raws:
            raw.setblocking(False)

        def ended(raw: socket.socket) -> bool:
            try:
                while data := raw.recv(4096):
                    pass
                return True
            except BlockingIOError:
                return False

        await until(lambda: sum(map(ended, raws)) == 4, "4 connections ended")
        assert sum(map(ended, raws)) == 4
    finally:
        for raw in raws:
            raw.close()
    await until(lambda: server.stats.connections == 0, "the kept ones gone")
    async with AsyncClient(run_dir) as client:
        assert await client.request("echo", {"x": 1}) == {"x": 1}
    assert server.stats.connections_refused == 4


# --- requests in flight ---------------------------------------------------------------------


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


async def test_a_clients_waiting_requests_are_cancelled_when_it_disconnects(
    run_dir: Path, waits: Waits, nursery: trio.Nursery
) -> None:
    server = await start_server(nursery, run_dir, waits)
    raw = RawDealer(run_dir)
    try:
        for request_id in range(1, 201):
            await raw.send(codec.encode(codec.request("hold", request_id, {}, "raw")))
        await until(lambda: waits.started == 200, "200 holds running")
        assert server.stats.in_flight == 200
    finally:
        raw.close()
    await until(lambda: server.stats.in_flight == 0, "the holds cancelled")
    assert waits.cancelled == 200 and server.stats.requests_cancelled == 200
    assert server.stats.connections == 0


async def test_a_client_that_leaves_replies_unread_is_disconnected_not_left_waiting(
    run_dir: Path, waits: Waits, nursery: trio.Nursery
) -> None:
    server = await start_server(nursery, run_dir, waits, max_in_flight=1)
    context = zmq.Context()
    try:
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.RCVHWM, 1)
        dealer.setsockopt(zmq.RECONNECT_IVL, -1)  # so that the test sees the disconnection
        monitor = dealer.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        dealer.connect(f"ipc://{run_dir / 'control.sock'}")
        raw = AsyncSocket(dealer)
        frame = codec.encode(codec.request("hold", 1, {}, "raw"))
        # One hold runs; every other request is refused, and nobody reads the refusals.
        with trio.fail_after(GUARD):
            while server.stats.clients_cut_off == 0:
                if not raw.send_nowait([frame]):
                    await trio.sleep(0.001)
        # What was queued for it arrives, and then the end of the connection.
        with trio.fail_after(GUARD):
            while not monitor.poll(0):
                while raw.recv_nowait() is not None:
                    pass
                await trio.sleep(0.01)
        assert server.stats.requests_refused > 10_000
        await until(lambda: server.stats.in_flight == 0, "the hold cancelled")
        assert server.stats.clients_cut_off == 1
    finally:
        context.destroy(linger=0)


# --- subscribers ----------------------------------------------------------------------------


async def test_a_subscriber_that_reads_nothing_is_disconnected_and_a_reader_keeps_up(
    run_dir: Path, waits: Waits, nursery: trio.Nursery
) -> None:
    server = await start_server(nursery, run_dir, waits, subscriber_queue_bytes=1 << 20)
    context = zmq.Context()
    try:
        stuck = context.socket(zmq.SUB)
        stuck.setsockopt(zmq.LINGER, 0)
        stuck.setsockopt(zmq.RCVHWM, 1)
        stuck.setsockopt(zmq.RECONNECT_IVL, -1)
        stuck.setsockopt(zmq.SUBSCRIBE, b"")
        stuck.connect(f"ipc://{run_dir / 'events.sock'}")
        await until(lambda: server.stats.subscribers == 1, "the stuck subscriber connected")
        async with AsyncClient(run_dir) as client, client.subscribe(["big."]) as events:
            received = []

            async def read() -> None:
                while True:
                    envelope = await events.receive()
                    if envelope.topic == "big.end":
                        return
                    received.append(envelope.seq)

            with trio.fail_after(GUARD):
                async with trio.open_nursery() as readers:
                    readers.start_soon(read)
                    while server.stats.subscribers_cut_off == 0:
                        server.publish("big.thing", {"pad": bytes(64 << 10)}, channel="big")
                        await trio.sleep(0.001)  # let the reader and the events task run
                    server.publish("big.end", {}, channel="big")
        assert len(received) > 16 and received == list(range(1, len(received) + 1))  # nothing lost
        assert server.stats.subscribers_cut_off == 1  # the stuck one, not the reader
    finally:
        context.destroy(linger=0)
