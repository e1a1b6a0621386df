"""What the bus tests share (tests/unit/test_bus_*.py): a BusServer on a fresh run dir with
ops the tests drive, clients of it, a bare DEALER, a fake log.

The fixtures are imported by name in each test module that uses them (``run_dir``,
``handlers``, ``log``, ``server``, ``client``, ``waits``), not put in conftest.py: their
short names would shadow other tests' fixtures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import zmq

from bus import codec
from bus.client import AsyncClient, Client
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

    def warning(self, event: str, **fields: Any) -> None:
        self.calls.append(("warning", event, fields))


class Handlers:
    """The ops the ``server`` fixture knows, with hooks the tests drive."""

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


class Waits:
    """Ops that wait until released, and record how they ended (servers of start_server)."""

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


@pytest.fixture
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bounds")


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
def log() -> FakeLog:
    return FakeLog()


@pytest.fixture
def waits() -> Waits:
    return Waits()


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


async def until(condition, what: str) -> None:
    """Poll a counter the server updates from another thread's events, against a guard."""
    with trio.fail_after(GUARD):
        while not condition():
            await trio.sleep(0.01)


async def start_server(nursery: trio.Nursery, run_dir: Path, waits: Waits, **bounds: Any) -> BusServer:
    """A server of the ``waits`` ops, whose ``hold`` is cancelled when its client leaves."""
    bus = BusServer(run_dir, waits.table(), source="testd", log=FakeLog(), cancel_on_disconnect={"hold"}, **bounds)
    await nursery.start(bus.serve)
    return bus
