"""HTTP/1.1 for the Engine API: h11 parses and frames, this module moves the bytes.

Theory of operation
-------------------
h11 is sans-IO: it is fed the bytes a connection received and hands back events (a request's
head, body data, its end); it turns our responses into bytes. :func:`serve_connection` is the
thin trio shell around it, one task per connection::

    bytes ──▶ h11.Connection ──Request──▶ route(request) ──▶ Response
                                                               │ Json / Empty: one body
                                                               │ Streamed: chunked, each chunk
                                                               │   sent before the next is made
                                                               │   (back-pressure: a slow client
                                                               │   slows its producer, no one else)
                                                               └ Hijack: our own head
                                                                 (101 UPGRADED), then the raw
                                                                 stream belongs to the handler

A request's body is read only when its handler asks (:meth:`Request.body_chunks`), so an
image tarball streams to a file instead of into memory; whatever a handler left unread is
drained (up to :data:`DRAIN_LIMIT`) before the next request on a kept-alive connection.

A hijacked connection (attach, exec start) is docker's: after the head, both directions are
raw bytes, and the client may half-close its side (end of input) while output still flows.
h11 has nothing more to do with it; the handler gets the stream and any bytes h11 had
already received past the head.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import trio
from http import HTTPStatus

#: Bytes of a request head, at most (docker's own limit is of this order).
MAX_HEAD = 64 * 1024
#: Unread body bytes drained before the next request; more and the connection is closed.
DRAIN_LIMIT = 1 << 20
#: Bytes read from the socket at once.
RECEIVE_SIZE = 64 * 1024

#: The headers docker sends with every response (clients read the API version from them).
SERVER_HEADERS = (("Server", "dockyard (linux)"), ("Ostype", "linux"), ("Docker-Experimental", "false"))


class ApiError(Exception):
    """An error answered as docker does: ``status`` and ``{"message": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    """One request, as a handler sees it. ``path`` has no version prefix; ``version`` is
    the prefix's (``"1.41"``) or None for a bare path."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    version: str | None = None
    _body: Callable[[], AsyncIterator[bytes]] | None = field(default=None, repr=False)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean query parameter as docker reads them: 1/true/yes (any case) are true."""
        value = self.arg(name)
        if value is None or value == "":
            return default
        return value.lower() in ("1", "true", "yes", "on")

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.arg(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise ApiError(400, f"invalid value for {name!r}: {value!r} is not an integer") from None

    def json_arg(self, name: str) -> Any:
        """A query parameter holding JSON (``filters``); None when absent."""
        value = self.arg(name)
        if not value:
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise ApiError(400, f"invalid {name!r}: not JSON: {value[:80]!r}") from None

    async def body_chunks(self) -> AsyncIterator[bytes]:
        """The body, as it arrives (once)."""
        if self._body is None:
            return
        body, self._body = self._body, None
        async for chunk in body():
            yield chunk

    async def read_body(self, limit: int = 16 << 20) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.body_chunks():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the request body is over {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def json_body(self, default: Any = None) -> Any:
        data = await self.read_body()
        if not data.strip():
            return default
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ApiError(400, f"the request body is not JSON: {exc}") from None


class Response:
    status: int = 200
    headers: list[tuple[str, str]]


class Json(Response):
    def __init__(self, body: Any, status: int = 200, headers: list[tuple[str, str]] | None = None):
        self.status = status
        self.body = json.dumps(body).encode() + b"\n"
        self.headers = [("Content-Type", "application/json"), *(headers or [])]


class Empty(Response):
    """A response without a body (204, 304), or a fixed one (``_ping``'s ``OK``)."""

    def __init__(self, status: int = 204, body: bytes = b"", headers: list[tuple[str, str]] | None = None,
                 content_type: str = "text/plain; charset=utf-8"):
        self.status = status
        self.body = body
        self.headers = [*(headers or [])]
        if body or status == 200:
            self.headers.insert(0, ("Content-Type", content_type))


class Streamed(Response):
    """A chunked body made by ``chunks`` as the client takes it."""

    def __init__(self, chunks: AsyncIterator[bytes], status: int = 200, content_type: str = "application/json",
                 headers: list[tuple[str, str]] | None = None):
        self.status = status
        self.chunks = chunks
        self.headers = [("Content-Type", content_type), *(headers or [])]


class Hijack(Response):
    """The connection handed over raw: ``session(stream, already_received)`` runs until done."""

    def __init__(self, session: Callable[[trio.abc.HalfCloseableStream, bytes], Awaitable[None]],
                 content_type: str = "application/vnd.docker.raw-stream"):
        self.status = 101
        self.session = session
        self.headers = [("Content-Type", content_type)]


def error_body(status: int, message: str) -> Json:
    return Json({"message": message}, status)


Router = Callable[[Request], Awaitable[Response]]


def parse_target(target: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(target)
    return parts.path or "/", parse_qs(parts.query, keep_blank_values=True)


async def serve_connection(stream: trio.abc.HalfCloseableStream, route: Router, log: Any = None) -> None:
    """Serve requests on one connection until it closes (or is hijacked)."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    try:
        while True:
            event = await _next_event(connection, stream)
            if isinstance(event, h11.ConnectionClosed) or event is None:
                return
            if not isinstance(event, h11.Request):
                return
            request = _request(event, connection, stream)
            try:
                response = await route(request)
            except ApiError as error:
                response = error_body(error.status, error.message)
            except Exception as exc:  # a bug: said to the client and logged, the server goes on
                if log is not None:
                    log.error("API request failed", method=request.method, path=request.path, error=repr(exc))
                response = error_body(500, f"{request.method} {request.path} failed in dockyard: {exc!r}")
            if isinstance(response, Hijack):
                await _hijack(connection, stream, event, response)
                return
            await _respond(connection, stream, request, response)
            if not await _finish_cycle(connection, stream):
                return
    except h11.RemoteProtocolError as exc:
        await _refuse(connection, stream, exc)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def _next_event(connection: h11.Connection, stream: trio.abc.Stream) -> Any:
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(RECEIVE_SIZE)
            connection.receive_data(data)  # b"": end of the stream
            continue
        if event is h11.PAUSED:
            return None
        return event


def _request(event: h11.Request, connection: h11.Connection, stream: trio.abc.Stream) -> Request:
    path, query = parse_target(event.target.decode("latin-1"))
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers}

    async def body() -> AsyncIterator[bytes]:
        while True:
            part = await _next_event(connection, stream)
            if isinstance(part, h11.Data):
                yield bytes(part.data)
            elif part is None or isinstance(part, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    return Request(event.method.decode("ascii"), path, query, headers, _body=body)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _headers(response: Response, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [*SERVER_HEADERS, *response.headers, *extra]


async def _respond(connection: h11.Connection, stream: trio.abc.Stream, request: Request, response: Response) -> None:
    head_only = request.method == "HEAD"
    if isinstance(response, (Json, Empty)):
        body = response.body
        framing = [] if response.status in (204, 304) else [("Content-Length", str(len(body)))]
        await _send(connection, stream, h11.Response(status_code=response.status, reason=_reason(response.status),
                                                     headers=_headers(response, framing)))
        if body and not head_only and response.status not in (204, 304):
            await _send(connection, stream, h11.Data(data=body))
        await _send(connection, stream, h11.EndOfMessage())
        return
    assert isinstance(response, Streamed)
    await _send(connection, stream, h11.Response(status_code=response.status, reason=_reason(response.status),
                                                 headers=_headers(response, [("Transfer-Encoding", "chunked")])))
    try:
        if not head_only:
            async for chunk in response.chunks:
                if chunk:
                    await _send(connection, stream, h11.Data(data=chunk))
    finally:
        aclose = getattr(response.chunks, "aclose", None)
        if aclose is not None:
            with trio.CancelScope(shield=True):
                await aclose()
    await _send(connection, stream, h11.EndOfMessage())


async def _send(connection: h11.Connection, stream: trio.abc.Stream, event: Any) -> None:
    data = connection.send(event)
    if data:
        await stream.send_all(data)


async def _finish_cycle(connection: h11.Connection, stream: trio.abc.Stream) -> bool:
    """Drain what the handler left of the request body; True if the connection goes on."""
    drained = 0
    while connection.their_state is h11.SEND_BODY:
        event = await _next_event(connection, stream)
        if isinstance(event, h11.Data):
            drained += len(event.data)
            if drained > DRAIN_LIMIT:
                return False
        elif event is None or isinstance(event, h11.ConnectionClosed):
            return False
    if connection.our_state is h11.DONE and connection.their_state is h11.DONE:
        connection.start_next_cycle()
        return True
    return False


async def _hijack(connection: h11.Connection, stream: trio.abc.HalfCloseableStream, event: h11.Request,
                  response: Hijack) -> None:
    """docker's hijack: ``101 UPGRADED`` when the client asked for an upgrade, else ``200 OK``;
    then raw bytes both ways. Bytes h11 received past the head go to the session first."""
    upgrade = any(name.lower() == b"upgrade" for name, _ in event.headers)
    lines = ["HTTP/1.1 101 UPGRADED" if upgrade else "HTTP/1.1 200 OK"]
    lines += [f"{name}: {value}" for name, value in (*SERVER_HEADERS, *response.headers)]
    if upgrade:
        lines += ["Connection: Upgrade", "Upgrade: tcp"]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    already = bytes(connection.trailing_data[0]) if upgrade else b""
    if not upgrade:  # an old-style hijack: the request may still carry a (chunked) body; keep what arrived
        already = bytes(connection.trailing_data[0])
    await response.session(stream, already)


async def _refuse(connection: h11.Connection, stream: trio.abc.Stream, exc: h11.RemoteProtocolError) -> None:
    """A request h11 could not parse: docker's error shape with h11's reason, then close."""
    if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    status = exc.error_status_hint or 400
    body = json.dumps({"message": f"bad HTTP request: {exc}"}).encode()
    try:
        await _send(connection, stream, h11.Response(
            status_code=status, headers=[*SERVER_HEADERS, ("Content-Type", "application/json"),
                                         ("Content-Length", str(len(body))), ("Connection", "close")]))
        await _send(connection, stream, h11.Data(data=body))
        await _send(connection, stream, h11.EndOfMessage())
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        pass
