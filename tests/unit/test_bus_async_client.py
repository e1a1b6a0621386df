"""The trio client (bus/async_client.py) against a real BusServer.

No root needed: the run dir is a fresh temporary directory. trio.fail_after is only a hang
guard, never an assertion about speed.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from bus.client import AsyncClient
from bus.server import BusServer

from tests.bus_harness import GUARD, Handlers
from tests.bus_harness import client, handlers, log, run_dir, server  # noqa: F401 - fixtures


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


async def test_subscribe_handshake_never_misses_the_next_event(server: BusServer, client: AsyncClient) -> None:
    """Run many times: without the bus.sync handshake the first event is lost often."""
    with trio.fail_after(GUARD * 4):
        for attempt in range(200):
            async with client.subscribe([f"test.{attempt}."]) as events:
                published = server.publish(f"test.{attempt}.first", {"attempt": attempt}, channel="test")
                assert await events.receive() == published


async def test_a_stream_gives_its_messages_then_its_result_beside_plain_requests(client: AsyncClient) -> None:
    import pytest

    from bus.errors import RemoteError

    with trio.fail_after(GUARD):
        stream = await client.open_stream("count", {"n": 3})
        assert (await client.request("echo", {"x": 1}))["args"] == {"x": 1}  # one dealer, both at once
        received = []
        while (payload := await stream.receive()) is not None:
            received.append(payload)
        assert received == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert stream.result == {"count": 3} and stream.done
        async with await client.open_stream("count", {"n": 1, "fail": True}) as failing:
            assert await failing.receive() == {"i": 0}
            with pytest.raises(RemoteError) as caught:
                await failing.receive()
            assert caught.value.code == "conflict"
