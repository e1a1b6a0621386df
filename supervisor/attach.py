"""Attached clients: a container's (or an exec's) stdio streamed over a bus request, with
flow control both ways.

Theory of operation
-------------------
A client that attaches (``run`` without -d, ``start -a``, ``attach``, ``exec`` without -d)
sends one streaming request; the conversation then runs on that request's id in both
directions (``bus/control.py``: client stream messages land in the request's inbox)::

    client (CLI)                                     daemon (Session)
    request {..., window: W} ─────────────────────▶  W output credits
    ◀── {stream: stdout|stderr, data}  ─────────────  one per chunk, only while credits > 0
    {credit: n} ──────────────────────────────────▶  after the client wrote n chunks
    {stdin: bytes} (at most STDIN_WINDOW unacked) ─▶  written to the process's stdin, then
    ◀── {stdin_ack: 1} ────────────────────────────
    {eof: true} ──────────────────────────────────▶  close stdin (a pipe; a pty stays open)
    {resize: [rows, columns]} ────────────────────▶  TIOCSWINSZ on the pty master
    {signal: N} ──────────────────────────────────▶  kill(N) (non-tty run: ctrl-c -> SIGINT)
    {detach: true} ───────────────────────────────▶  end this session, the process runs on
    ◀── reply {exit_code} | {detached: true} ──────

Memory stays bounded: the daemon never has more than W chunks (64 KiB each) on the way to
a client, and a client never more than STDIN_WINDOW chunks on the way in. The supervisor's
output pump waits for a client without credits, so a slow terminal slows the container's
writes (its pipe or pty fills up), as with docker, instead of growing a buffer; the same
pump publishes the log events, so with one attached client the logs hold every byte too.
Control messages (credit, resize, signal, detach) are taken by one task and stdin by
another, so a container that stopped reading its stdin cannot hold up the credits that
let its output drain.

A client that goes away without a word is noticed when a send to it fails: every
PROBE_SECONDS a session with nothing to send, or waiting for credit, sends ``{ping: true}``
(clients ignore it), and ends when the peer is gone.

A request without ``window`` gets no flow control: output is sent as it comes, and what the
client cannot take (over the socket's high-water mark) is dropped and counted, as before
this protocol existed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from supervisor.errors import InvalidArgument
from supervisor.runtime.stdio import InputPort

#: Input chunks a client may have on the way before it waits for a stdin_ack.
STDIN_WINDOW = 8
#: The largest input chunk a client may send.
MAX_INPUT_CHUNK = 1 << 20
#: Most output credits a client may hold (chunks of up to 64 KiB: 16 MiB).
MAX_WINDOW = 256
#: Seconds between two liveness probes of a client that gets nothing else.
PROBE_SECONDS = 2.0
#: At a detach, how long the input typed before it may take to reach the process.
DETACH_DRAIN_SECONDS = 1.0


def chunk_window(args: dict[str, Any]) -> int | None:
    """The ``window`` argument of an attaching request: None (no flow control) or 1..MAX_WINDOW."""
    window = args.get("window")
    if window is None:
        return None
    if type(window) is not int or not 0 < window <= MAX_WINDOW:
        raise InvalidArgument(f"argument 'window' must be a whole number of chunks from 1 to {MAX_WINDOW}")
    return window


async def receive_chunk(stream: Any, size: int = 65536) -> bytes:
    """The next chunk of a pipe or pty master; b"" at the end. A pty master reads EIO once
    every slave fd is closed: the end as well."""
    try:
        return await stream.receive_some(size)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""


@dataclass
class Target:
    """What a session acts on: a container's or an exec's stdin, pty and signals."""

    stdin: InputPort | None
    resize: Callable[[int, int], None] | None
    signal: Callable[[int], Awaitable[None]]


class Session:
    """One attached client (an :class:`~supervisor.container.Attachment`). See the module doc.

    Args:
        request: the bus request (``stream``/``send_stream``/``receive``).
        window: the output credits the client granted, None for no flow control.
        stdin: whether the client's input goes to the process (``-i``).
    """

    def __init__(self, request: Any, window: int | None, *, stdin: bool = False):
        self.request = request
        self.stdin = stdin
        self.detached = False
        self.gone = False  # the client went away
        self.dropped = 0  # output chunks not delivered
        self.input_dropped = 0  # input bytes that found no open stdin
        self._credits = window
        self._flow = window is not None
        self._lot = trio.lowlevel.ParkingLot()
        self._ended = False
        self._input: tuple[trio.MemorySendChannel, trio.MemoryReceiveChannel] = trio.open_memory_channel(STDIN_WINDOW)
        self._input_written = trio.Event()  # every input chunk taken was written (after a detach)

    @property
    def ended(self) -> bool:
        return self._ended

    # --- output: the supervisor's pump calls this -----------------------------------------

    async def send(self, stream: str, data: bytes) -> None:
        """Deliver one chunk, waiting for a credit; returns at once once the session ended."""
        if not self._flow:
            if not await self.request.stream({"stream": stream, "data": data}):
                self.dropped += 1
            return
        while self._credits == 0 and not self._ended:
            with trio.move_on_after(PROBE_SECONDS) as waited:
                await self._lot.park()
            if waited.cancelled_caught:
                self._probe()
        if self._ended:
            self.dropped += 1
            return
        sent = self.request.send_stream({"stream": stream, "data": data})
        if sent is None:
            self._lost()
        if sent is not True:
            self.dropped += 1
            return
        self._credits -= 1

    # --- the session's life ---------------------------------------------------------------

    async def serve(self, target: Target, finished: Callable[[], Awaitable[Any]]) -> Any:
        """Run the session until ``finished()`` returns (the process exited and its output
        was pumped: its value is returned), the client detaches (None) or goes away (None).

        Raises:
            RequestFailed: the client broke the protocol (too many messages, a bad one).
        """
        outcome: list[Any] = [None]

        async def until_finished(scope: trio.CancelScope) -> None:
            outcome[0] = await finished()
            scope.cancel()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(until_finished, nursery.cancel_scope)
                nursery.start_soon(self._control, target, nursery.cancel_scope)
                nursery.start_soon(self._write_input, target)
                if self._flow:  # a client without flow control may not expect pings
                    nursery.start_soon(self._heartbeat, nursery.cancel_scope)
        except BaseExceptionGroup as group:  # one task failed: raise its error, not a group
            raise _single(group) from None
        finally:
            self.end()
        return outcome[0]

    def end(self) -> None:
        """No more output for this client; a pump waiting for its credit goes on."""
        self._ended = True
        self._lot.unpark_all()

    async def _control(self, target: Target, scope: trio.CancelScope) -> None:
        send_input, _ = self._input
        while True:
            message = await self.request.receive()
            if "credit" in message:
                credit = message["credit"]
                if type(credit) is not int or credit < 0 or self._credits is None:
                    raise InvalidArgument("a credit message needs a whole number of chunks (and a window)")
                self._credits = min(self._credits + credit, MAX_WINDOW)
                self._lot.unpark_all()
            elif "stdin" in message or "eof" in message:
                data = message.get("stdin", b"")
                if not isinstance(data, bytes) or len(data) > MAX_INPUT_CHUNK:
                    raise InvalidArgument(f"stdin chunks must be bytes, at most {MAX_INPUT_CHUNK} of them")
                try:
                    send_input.send_nowait(message)
                except trio.WouldBlock:
                    raise InvalidArgument(
                        f"the client sent more than {STDIN_WINDOW} stdin chunks without waiting for acks"
                    ) from None
            elif "resize" in message:
                size = message["resize"]
                if (not isinstance(size, (list, tuple)) or len(size) != 2
                        or not all(type(n) is int and 0 <= n < 65536 for n in size)):
                    raise InvalidArgument("resize needs [rows, columns], each from 0 to 65535")
                if target.resize is not None:
                    target.resize(size[0], size[1])
            elif "signal" in message:
                number = message["signal"]
                if type(number) is not int:
                    raise InvalidArgument("signal needs a signal number")
                await target.signal(number)
            elif "detach" in message:
                # The keys typed before the detach keys go in first (the channel keeps order).
                self.detached = True
                send_input.close()
                with trio.move_on_after(DETACH_DRAIN_SECONDS):
                    await self._input_written.wait()
                scope.cancel()
                return
            # anything else (a newer client's message): ignored

    async def _write_input(self, target: Target) -> None:
        _, receive_input = self._input
        async for message in receive_input:
            data = message.get("stdin", b"")
            if data:
                if self.stdin and target.stdin is not None:
                    if not await target.stdin.write(data):
                        self.input_dropped += len(data)
                else:
                    self.input_dropped += len(data)
                # The ack frees the client's window even when the input found no stdin.
                if self.request.send_stream({"stdin_ack": 1}) is None:
                    self._lost()
            if message.get("eof") and self.stdin and target.stdin is not None:
                await target.stdin.close_input()
        self._input_written.set()

    async def _heartbeat(self, scope: trio.CancelScope) -> None:
        while not self.gone:
            await trio.sleep(PROBE_SECONDS)
            self._probe()
        scope.cancel()

    def _probe(self) -> None:
        if self.request.send_stream({"ping": True}) is None:
            self._lost()

    def _lost(self) -> None:
        self.gone = True
        self.end()


def _single(group: BaseExceptionGroup) -> BaseException:
    """The one error in a nursery's group (the others are the Cancelled it caused)."""
    errors = [error for error in _leaves(group) if not isinstance(error, trio.Cancelled)]
    return errors[0] if errors else group


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


class Collector:
    """An attachment that keeps the last ``limit`` bytes of output (exec for health checks)."""

    def __init__(self, limit: int = 4096):
        self.limit = limit
        self.data = bytearray()
        self.total = 0

    async def send(self, stream: str, data: bytes) -> None:
        self.total += len(data)
        self.data += data
        del self.data[: max(0, len(self.data) - self.limit)]
