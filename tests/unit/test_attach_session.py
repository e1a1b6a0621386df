"""Attached sessions without root: the daemon's Session against a fake request and a fake
stdin, client stream messages through a real BusServer, and the CLI's detach keys."""

from __future__ import annotations

import select
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from bus.client import Client
from bus.server import BusServer, Request
from supervisor.attach import STDIN_WINDOW, Session, Target
from supervisor.errors import InvalidArgument
from supervisor.terminal import DetachScanner, TerminalError, parse_detach_keys

GUARD = 30  # seconds: hang guard only


class FakeRequest:
    """A bus request as a Session sees it: what it sent, and an inbox the test fills."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.gone = False
        self._send, self._receive = trio.open_memory_channel(1000)

    def send_stream(self, payload: dict) -> bool | None:
        if self.gone:
            return None
        self.sent.append(payload)
        return True

    async def stream(self, payload: dict) -> bool:
        return self.send_stream(payload) is True

    async def receive(self) -> dict:
        return await self._receive.receive()

    def client_sends(self, payload: dict) -> None:
        self._send.send_nowait(payload)

    def output(self) -> list[bytes]:
        return [payload["data"] for payload in self.sent if "data" in payload]


class FakeStdin:
    """A process's stdin that takes writes only while ``open_tap`` is set."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False
        self.open_tap = trio.Event()
        self.open_tap.set()

    async def write(self, data: bytes) -> bool:
        await self.open_tap.wait()
        self.data += data
        return True

    async def close_input(self) -> None:
        self.closed = True


def target_for(stdin: FakeStdin, signals: list[int] | None = None, sizes: list | None = None) -> Target:
    async def deliver(number: int) -> None:
        (signals if signals is not None else []).append(number)

    return Target(stdin=stdin, resize=lambda rows, columns: (sizes if sizes is not None else []).append((rows, columns)),
                  signal=deliver)


async def test_output_waits_for_credit_and_flows_again_when_it_comes() -> None:
    request = FakeRequest()
    session = Session(request, window=2)
    finished = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.serve, target_for(FakeStdin()), finished.wait)

        async def pump() -> None:
            for index in range(5):
                await session.send("stdout", b"chunk%d" % index)

        nursery.start_soon(pump)
        await trio.testing.wait_all_tasks_blocked()
        assert request.output() == [b"chunk0", b"chunk1"]  # the window, and no more
        request.client_sends({"credit": 2})
        await trio.testing.wait_all_tasks_blocked()
        assert request.output() == [b"chunk0", b"chunk1", b"chunk2", b"chunk3"]
        request.client_sends({"credit": 1})
        await trio.testing.wait_all_tasks_blocked()
        assert len(request.output()) == 5
        finished.set()
    assert session.dropped == 0


async def test_input_goes_in_order_with_acks_and_eof_closes_stdin_while_credits_still_flow() -> None:
    request = FakeRequest()
    stdin = FakeStdin()
    stdin.open_tap = trio.Event()  # the process does not read its stdin for now
    signals: list[int] = []
    sizes: list = []
    session = Session(request, window=1, stdin=True)
    finished = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.serve, target_for(stdin, signals, sizes), finished.wait)
        for index in range(3):
            request.client_sends({"stdin": b"line%d\n" % index})
        request.client_sends({"eof": True})
        request.client_sends({"resize": [30, 100]})
        request.client_sends({"signal": 2})
        await session.send("stdout", b"one")
        request.client_sends({"credit": 1})  # taken though the stdin writer is stuck
        with trio.fail_after(GUARD):
            await session.send("stdout", b"two")
        await trio.testing.wait_all_tasks_blocked()
        assert (signals, sizes, stdin.data) == ([2], [(30, 100)], b"")
        stdin.open_tap.set()
        await trio.testing.wait_all_tasks_blocked()
        assert stdin.data == b"line0\nline1\nline2\n" and stdin.closed
        assert [p for p in request.sent if "stdin_ack" in p] == [{"stdin_ack": 1}] * 3
        finished.set()


async def test_detach_writes_what_was_typed_before_it_and_ends_the_session() -> None:
    request = FakeRequest()
    stdin = FakeStdin()
    session = Session(request, window=4, stdin=True)
    request.client_sends({"stdin": b"FOO=1\r"})
    request.client_sends({"detach": True})
    with trio.fail_after(GUARD):
        outcome = await session.serve(target_for(stdin), trio.sleep_forever)
    assert outcome is None and session.detached and stdin.data == b"FOO=1\r"
    await session.send("stdout", b"after")  # the pump is never held up by an ended session
    assert request.output() == [] and session.dropped == 1


async def test_a_client_that_ignores_acks_is_refused() -> None:
    request = FakeRequest()
    stdin = FakeStdin()
    stdin.open_tap = trio.Event()
    session = Session(request, window=4, stdin=True)
    for index in range(STDIN_WINDOW + 2):  # the writer holds one, the channel STDIN_WINDOW
        request.client_sends({"stdin": b"x"})
    with pytest.raises(InvalidArgument, match="without waiting for acks"):
        with trio.fail_after(GUARD):
            await session.serve(target_for(stdin), trio.sleep_forever)


async def test_bad_messages_are_refused_with_the_reason() -> None:
    for message, reason in (({"resize": [1]}, "resize"), ({"credit": -1}, "credit"), ({"stdin": "text"}, "bytes")):
        request = FakeRequest()
        request.client_sends(message)
        with pytest.raises(InvalidArgument, match=reason):
            with trio.fail_after(GUARD):
                await Session(request, window=4, stdin=True).serve(target_for(FakeStdin()), trio.sleep_forever)


async def test_a_client_that_went_away_ends_the_session(autojump_clock: trio.abc.Clock) -> None:
    request = FakeRequest()
    session = Session(request, window=1)
    request.gone = True
    with trio.fail_after(GUARD):  # virtual time: the probe fires without waiting for real
        outcome = await session.serve(target_for(FakeStdin()), trio.sleep_forever)
    assert outcome is None and session.gone


# --- client stream messages over the real bus -------------------------------------------------


async def test_client_stream_messages_reach_the_running_request_in_order(tmp_path_factory: pytest.TempPathFactory,
                                                                        nursery: trio.Nursery) -> None:
    async def echo_input(request: Request) -> Any:
        count = 0
        while not (message := await request.receive()).get("end"):
            count += 1
            request.send_stream({"echo": message["n"]})
        return {"count": count}

    run_dir = tmp_path_factory.mktemp("bus")
    server = BusServer(run_dir, {"echo_input": echo_input}, source="testd")
    await nursery.start(server.serve)

    def converse() -> tuple[list, Any]:
        with Client(run_dir) as client:
            stream = client.stream("echo_input", {}, timeout=GUARD)
            for n in range(50):
                stream.send({"n": n})
            stream.send({"end": True})
            echoes = []
            while True:
                select.select([stream.fileno()], [], [], 1.0)
                try:
                    while (payload := stream.receive_nowait()) is not None:
                        echoes.append(payload["echo"])
                except StopIteration as done:
                    result = done.value
                    break
            with pytest.raises(RuntimeError):
                stream.send({"late": True})
            return echoes, result

    echoes, result = await trio.to_thread.run_sync(converse)
    assert echoes == list(range(50)) and result == {"count": 50}
    assert server.stats.stream_in == 51


# --- the CLI's detach keys ----------------------------------------------------------------


def test_detach_keys_parse_as_docker_writes_them() -> None:
    assert parse_detach_keys("") == b"\x10\x11"
    assert parse_detach_keys("ctrl-x,y") == b"\x18y"
    assert parse_detach_keys("ctrl-@,ctrl-[,ctrl-_") == b"\x00\x1b\x1f"
    for bad in ("ctrl-", "ctrl-1", "ab", "ctrl-xx"):
        with pytest.raises(TerminalError, match="invalid detach keys"):
            parse_detach_keys(bad)


def test_detach_scanner_holds_a_prefix_and_sends_it_on_when_it_is_not_the_sequence() -> None:
    scanner = DetachScanner(b"\x10\x11")
    assert scanner.feed(b"ab\x10") == (b"ab", False)  # ctrl-p held back
    assert scanner.feed(b"c") == (b"\x10c", False)  # not followed by ctrl-q: both go on
    assert scanner.feed(b"\x10\x10") == (b"\x10", False)  # a second ctrl-p may start it again
    assert scanner.feed(b"\x11rest") == (b"", True)  # detached: the rest is not sent
    assert DetachScanner(b"").feed(b"\x10\x11") == (b"\x10\x11", False)
