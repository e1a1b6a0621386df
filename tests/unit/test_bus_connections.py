"""Connections (bus/connections.py): connection bounds, clients that leave, clients that do not
read their replies.

No root needed: the run dir is a fresh temporary directory. trio.fail_after is only a hang
guard, never an assertion about speed.
"""

from __future__ import annotations

import socket
from pathlib import Path

import trio
import zmq

from bus import codec
from bus.client import AsyncClient
from bus.trio_zmq import AsyncSocket

from tests.bus_harness import GUARD, RawDealer, Waits, start_server, until
from tests.bus_harness import run_dir, waits  # noqa: F401 - fixtures


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
