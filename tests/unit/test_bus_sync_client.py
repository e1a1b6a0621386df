"""The synchronous client (bus/sync_client.py) against a real BusServer: subscriptions, a
daemon that is missing, silent or going away.

No root needed: the run dir is a fresh temporary directory. trio.fail_after is only a hang
guard, never an assertion about speed.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import trio
import zmq

from bus import codec
from bus.client import AsyncClient, Client
from bus.errors import DaemonUnavailable, RequestTimeout
from bus.server import BusServer
from bus.trio_zmq import AsyncSocket

from tests.bus_harness import GUARD, Handlers, in_thread, sync_request
from tests.bus_harness import handlers, log, run_dir, server  # noqa: F401 - fixtures


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


def test_subscribe_refuses_a_bare_string(run_dir: Path) -> None:
    with Client(run_dir) as sync_client:
        with pytest.raises(TypeError):
            sync_client.subscribe("container.")  # type: ignore[arg-type]
