"""BusServer (bus/server.py): its socket files, one server per run dir, the built-in bus.sync.

No root needed: the run dir is a fresh temporary directory. trio.fail_after is only a hang
guard, never an assertion about speed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import zmq

from bus import server as bus_server
from bus.client import AsyncClient
from bus.errors import BusError, RemoteError
from bus.server import BusServer

from tests.bus_harness import GUARD, Handlers
from tests.bus_harness import client, handlers, log, run_dir, server  # noqa: F401 - fixtures


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
