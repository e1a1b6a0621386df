"""Attach, logs and exec: a container's streams over HTTP.

Theory of operation
-------------------
A hijacked connection (attach, exec start) is pumped both ways against one bus session
(docs/events.md, "Sessions")::

    client ──raw bytes──▶ {stdin: bytes} (at most STDIN_IN_FLIGHT unacknowledged) ──▶ daemon
           ◀─frames/raw── {stream, data} (each one a credit; we give it back once written)
    client half-closes ──▶ {eof: true}       container ends ──▶ the reply ──▶ we close

Output is framed as docker's multiplexed stream (8-byte header: stream 1 or 2, three zero
bytes, big-endian length) unless the process has a terminal, then raw. The credit is given
back only once the bytes were written to the client's socket, so a client that does not
read stops the container's output at the daemon's window, not in this process's memory.

``docker run`` attaches before it starts: an attach to a container that is not running
waits (``Api.waiting_attaches``) for the start request, which then starts the container
with an attached session (``container.start {attach: true}``) and hands it to the waiting
connection, so no output of a short-lived container is missed.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import trio

from bus.errors import BusError, RemoteError
from supervisor import operations as ops
from workers.api import views
from workers.api.http import ApiError, Empty, Hijack, Json, Request, Response, Streamed
from workers.api.router import Router
from workers.api.service import Api, ExecRecord, api_error, start_error

#: Output chunks the daemon may send before we give credits back.
WINDOW = 64
#: Input chunks sent without their ack, at most (the daemon takes 8).
STDIN_IN_FLIGHT = 8
STREAM_NUMBERS = {"stdin": 0, "stdout": 1, "stderr": 2}


def frame(stream: int, data: bytes) -> bytes:
    """One frame of docker's multiplexed stream."""
    return struct.pack(">BxxxL", stream, len(data)) + data


def timestamped(data: bytes, ts: float, at_line_start: bool) -> tuple[bytes, bool]:
    """``data`` with docker's RFC 3339 stamp before each line that starts in it."""
    stamp = views.rfc3339(ts).encode() + b" "
    out = bytearray()
    for line in data.splitlines(keepends=True):
        if at_line_start:
            out += stamp
        out += line
        at_line_start = line.endswith(b"\n")
    return bytes(out), at_line_start


class DetachKeys:
    """docker's detach sequence (default ctrl-p,ctrl-q) found in a client's input, sans-IO:
    ``feed`` returns the bytes to pass on and whether the sequence was typed. Bytes that may
    begin the sequence are held until the next ones tell."""

    def __init__(self, sequence: bytes):
        self.sequence = sequence
        self.held = b""

    @classmethod
    def parse(cls, text: str | None) -> DetachKeys:
        """``ctrl-p,ctrl-q``, ``ctrl-x``, ``a,b``; empty: the default.

        Raises:
            ApiError: 400 for a key docker does not know.
        """
        keys = bytearray()
        for key in (text or "ctrl-p,ctrl-q").split(","):
            key = key.strip()
            if len(key) == 1:
                keys.append(ord(key))
            elif key.startswith("ctrl-") and len(key) == 6:
                char = key[5].lower()
                if "a" <= char <= "z":
                    keys.append(ord(char) - ord("a") + 1)
                elif char in "@[\\]^_":
                    keys.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}[char])
                else:
                    raise ApiError(400, f"Invalid detach keys ({text}) provided")
            else:
                raise ApiError(400, f"Invalid detach keys ({text}) provided")
        return cls(bytes(keys))

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        for byte in data:
            candidate = self.held + bytes([byte])
            if self.sequence.startswith(candidate):
                if candidate == self.sequence:
                    self.held = b""
                    return bytes(out), True
                self.held = candidate
            else:
                out += candidate
                self.held = b""
        return bytes(out), False


@dataclass
class AttachWaiter:
    """An attached connection waiting for its container's start."""

    stdin: bool
    ready: trio.Event = field(default_factory=trio.Event)
    session: Any = None  # the bus stream, once started
    failed: Any = None  # called with the bus error of a start that failed


async def pump(api: Api, container_id: str, session: Any, connection: trio.abc.HalfCloseableStream,
               already: bytes, *, tty: bool, stdin: bool, streams: set[str],
               on_error: Any = None, detach_keys: DetachKeys | None = None) -> Any:
    """Run one session between a hijacked connection and the bus; returns its result."""
    api.sessions.setdefault(container_id, []).append(session)
    slots = trio.Semaphore(STDIN_IN_FLIGHT)
    result = None
    detached = trio.Event()

    async def forward_input() -> None:
        pending = already
        while True:
            data = pending or await connection.receive_some(64 * 1024)
            pending = b""
            if not data:
                if stdin:
                    await session.send({"eof": True})
                return
            if stdin:
                if detach_keys is not None:
                    data, detach = detach_keys.feed(data)
                    if detach:
                        await session.send({"detach": True})
                        detached.set()
                        return
                if data:
                    await slots.acquire()
                    await session.send({"stdin": data})

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward_input)
            while True:
                try:
                    payload = await session.receive()
                except RemoteError as error:
                    if on_error is not None:
                        on_error(error)
                    break
                if payload is None:
                    result = session.result
                    break
                if detached.is_set():
                    continue  # output after the detach keys: dropped, the session ends
                if "data" in payload:
                    stream = payload.get("stream", "stdout")
                    if stream in streams:
                        data = bytes(payload["data"])
                        await connection.send_all(data if tty else frame(STREAM_NUMBERS[stream], data))
                    await session.send({"credit": 1})
                elif "stdin_ack" in payload:
                    slots.release()
            nursery.cancel_scope.cancel()
    except (trio.BrokenResourceError, trio.ClosedResourceError):  # the client went away
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            try:
                await session.send({"detach": True})
            except (BusError, RuntimeError):
                pass
    except ValueError:  # over the semaphore: an ack we did not wait for
        pass
    finally:
        sessions = api.sessions.get(container_id, [])
        if session in sessions:
            sessions.remove(session)
        if not sessions:
            api.sessions.pop(container_id, None)
        await session.aclose()
    return result


async def stored_output(api: Api, container_id: str, *, follow: bool, tail: int | None = None,
                        since: float | None = None, until: float | None = None) -> AsyncIterator[tuple[int, float, bytes]]:
    """A container's stored output: ``(stream number, time, data)``, paged over ``logs.read``."""
    if tail == 0 and not follow:
        return  # none: a later page (the collector's last lines) must not slip in as "after the tail"
    request = {"container": container_id, "since": since, "until": until, "tail": tail, "follow": follow,
               "wait": 10.0 if follow else 0.0}
    while True:
        result = await api.call(ops.LOGS_READ, request, what="container", timeout=60)
        for stream, ts, data, flags in result["records"]:
            yield (2 if flags & 2 else stream), ts, bytes(data)
        if result["done"]:
            return
        request["cursor"] = result["cursor"]
        request["tail"] = None


def register(router: Router, api: Api) -> None:
    async def logs(request: Request, id: str) -> Response:
        document = await api.inspect(id)
        wanted = {number for name, number in (("stdout", 1), ("stderr", 2)) if request.flag(name)}
        if not wanted:
            raise ApiError(400, "Bad parameters: you must choose at least one stream")
        tail_text = request.arg("tail") or "all"
        if tail_text == "all" or tail_text.startswith("-"):
            tail = None
        elif tail_text.isdigit():
            tail = int(tail_text)
        else:
            raise ApiError(400, f"invalid tail {tail_text!r}: use a number of lines or all")
        since = views.parse_time(request.arg("since"))
        until = views.parse_time(request.arg("until"))
        tty = bool(document["Config"].get("Tty"))
        follow = request.flag("follow") and document["State"]["Running"]
        stamps = request.flag("timestamps")

        async def body() -> AsyncIterator[bytes]:
            at_start = {1: True, 2: True}
            async for stream, ts, data in stored_output(api, document["Id"], follow=follow, tail=tail,
                                                        since=since or None, until=until or None):
                if stream not in wanted:
                    continue
                for line in data.splitlines(keepends=True):  # one message per line, as docker's log drivers
                    if stamps:
                        line, at_start[stream] = timestamped(line, ts, at_start[stream])
                    yield line if tty else frame(stream, line)

        kind = "application/vnd.docker.raw-stream" if tty else "application/vnd.docker.multiplexed-stream"
        return Streamed(body(), content_type=kind)

    async def attach(request: Request, id: str) -> Response:
        document = await api.inspect(id)
        container_id = document["Id"]
        tty = bool(document["Config"].get("Tty"))
        stdin = request.flag("stdin") and bool(document["Config"].get("OpenStdin"))
        streams = {name for name in ("stdout", "stderr") if request.flag(name)}
        with_logs, live = request.flag("logs"), request.flag("stream")
        detach_keys = DetachKeys.parse(request.arg("detachKeys")) if stdin else None
        has_run = document["State"]["StartedAt"] != views.ZERO_TIME
        waiter = None
        if live and not document["State"]["Running"]:
            # registered before the 101 goes out: the client starts the container once it has it
            waiter = AttachWaiter(stdin=stdin)
            api.waiting_attaches.setdefault(container_id, []).append(waiter)

        async def session(connection: trio.abc.HalfCloseableStream, already: bytes) -> None:
            try:
                if with_logs and has_run:
                    async for stream, _ts, data in stored_output(api, container_id, follow=False):
                        name = "stdout" if stream == 1 else "stderr"
                        if name in streams:
                            await connection.send_all(data if tty else frame(stream, data))
                if not live:
                    return
                on_error = None
                if waiter is None:
                    try:
                        bus_session = await api.client.open_stream(
                            ops.CONTAINER_ATTACH, {"container": container_id, "stdin": stdin, "window": WINDOW})
                    except BusError:
                        return
                else:
                    await waiter.ready.wait()
                    bus_session, on_error = waiter.session, waiter.failed
                    if bus_session is None:
                        return
                await pump(api, container_id, bus_session, connection, already, tty=tty, stdin=stdin,
                           streams=streams, on_error=on_error, detach_keys=detach_keys)
            finally:
                waiters = api.waiting_attaches.get(container_id, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    api.waiting_attaches.pop(container_id, None)

        return Hijack(session)

    async def exec_create(request: Request, id: str) -> Response:
        document = await api.inspect(id)
        if not document["State"]["Running"]:
            raise ApiError(409, f"Container {document['Id']} is not running")
        if document["State"]["Paused"]:
            raise ApiError(409, f"Container {document['Id']} is paused, unpause the container before exec")
        config = await request.json_body({})
        if not isinstance(config, dict) or not config.get("Cmd"):
            raise ApiError(400, "No exec command specified")
        if isinstance(config["Cmd"], str):
            config["Cmd"] = [config["Cmd"]]
        record = ExecRecord(id=secrets.token_hex(32), container=document["Id"], config=config)
        api.execs[record.id] = record
        return Json({"Id": record.id}, 201)

    def exec_record(exec_id: str) -> ExecRecord:
        record = api.execs.get(exec_id)
        if record is None:
            raise ApiError(404, f"No such exec instance: {exec_id}")
        return record

    async def exec_inspect(request: Request, exec_id: str) -> Response:
        return Json(exec_record(exec_id).inspect())

    async def exec_resize(request: Request, exec_id: str) -> Response:
        record = exec_record(exec_id)
        if record.session is not None:
            await record.session.send({"resize": [request.integer("h", 0), request.integer("w", 0)]})
        return Empty(201)

    async def exec_start(request: Request, exec_id: str) -> Response:
        record = exec_record(exec_id)
        body = await request.json_body({}) or {}
        if record.running or record.exit_code is not None:
            raise ApiError(409, f"exec {exec_id} has already started")
        config = record.config
        # A terminal if the create asked for one; raw output (no frames) if the start says Tty:
        # docker's daemon decides the two apart, and docker-py relies on it.
        raw = bool(body.get("Tty"))
        spec = {"cmd": list(config["Cmd"]), "tty": bool(config.get("Tty")), "stdin": bool(config.get("AttachStdin"))}
        for key, field_name in (("Env", "env"), ("WorkingDir", "workdir"), ("User", "user")):
            if config.get(key):
                spec[field_name] = config[key]
        if body.get("Detach"):
            return await _exec_detached(api, record, spec)
        streams = {name for name in ("stdout", "stderr") if config.get(f"Attach{name.capitalize()}", True)}
        keys = next((value for key, value in config.items() if key.lower() == "detachkeys"), None)  # Go's JSON
        detach_keys = DetachKeys.parse(keys) if spec["stdin"] else None

        async def session(connection: trio.abc.HalfCloseableStream, already: bytes) -> None:
            try:
                bus_session = await api.client.open_stream(
                    ops.CONTAINER_EXEC, {"container": record.container, "exec": spec, "window": WINDOW})
            except BusError:
                record.exit_code = 126
                return
            record.running = True
            record.session = bus_session
            failure: list[RemoteError] = []
            try:
                result = await pump(api, record.container, bus_session, connection, already, tty=raw,
                                    stdin=spec["stdin"], streams=streams, on_error=failure.append,
                                    detach_keys=detach_keys)
            finally:
                record.running = False
                record.session = None
            if failure:
                record.exit_code = 126  # docker's for an exec that could not start, whatever the cause
                message = f"OCI runtime exec failed: {failure[0].message}\r\n".encode()
                try:
                    await connection.send_all(message if raw else frame(2, message))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            elif isinstance(result, dict):
                record.exit_code = result.get("exit_code")
            record.done.set()

        return Hijack(session)

    router.add("GET", "/containers/{id}/logs", logs)
    router.add("POST", "/containers/{id}/attach", attach)
    router.add("POST", "/containers/{id}/exec", exec_create)
    router.add("POST", "/exec/{exec_id}/start", exec_start)
    router.add("POST", "/exec/{exec_id}/resize", exec_resize)
    router.add("GET", "/exec/{exec_id}/json", exec_inspect)


async def _exec_detached(api: Api, record: ExecRecord, spec: dict[str, Any]) -> Response:
    listener = api.hub.listen(lambda event: event.get("id") == record.container
                              and event.get("action") == "exec_die")
    try:
        reply = await api.call(ops.CONTAINER_EXEC, {"container": record.container, "exec": {**spec, "detach": True,
                                                                                             "stdin": False}})
    except ApiError:
        api.hub.forget(listener)
        raise
    record.running, record.pid, record.daemon_exec_id = True, int(reply.get("pid") or 0), reply["exec_id"]

    async def until_exit() -> None:
        try:
            async for event in listener.receive:
                attributes = event.get("attributes") or {}
                if attributes.get("execID") == record.daemon_exec_id:
                    record.exit_code = int(attributes.get("exitCode", -1))
                    break
        finally:
            api.hub.forget(listener)
            record.running = False
            record.done.set()

    api.nursery.start_soon(until_exit)
    return Empty(200)


async def start_attached(api: Api, container_id: str) -> None:
    """Start a container whose attached connections wait (see the module's docstring);
    returns once it runs. Raises ApiError as ``POST /start`` answers a start that failed."""
    waiters = api.waiting_attaches.pop(container_id, [])
    first, others = waiters[0], waiters[1:]
    outcome: list[Any] = []
    settled = trio.Event()

    def failed(error: RemoteError) -> None:
        outcome.append(error)
        settled.set()

    first.failed = failed
    listener = api.hub.listen(lambda event: event.get("id") == container_id
                              and event.get("action") in ("start", "die"))
    try:
        try:
            first.session = await api.client.open_stream(
                ops.CONTAINER_START, {"container": container_id, "attach": True, "stdin": first.stdin,
                                      "window": WINDOW})
        except BusError as error:
            raise api_error(error, "container") from None
        finally:
            first.ready.set()

        async def watch() -> None:
            async for event in listener.receive:
                if event["action"] == "start":
                    break
                if (event.get("attributes") or {}).get("error"):
                    outcome.append(ApiError(400, event["attributes"]["error"]))
                break
            settled.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await settled.wait()
            nursery.cancel_scope.cancel()
    finally:
        api.hub.forget(listener)
    for waiter in others:
        try:
            waiter.session = await api.client.open_stream(
                ops.CONTAINER_ATTACH, {"container": container_id, "stdin": waiter.stdin, "window": WINDOW})
        except BusError:
            pass
        waiter.ready.set()
    if outcome:
        error = outcome[0]
        raise error if isinstance(error, ApiError) else start_error(error)
