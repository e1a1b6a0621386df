"""The Engine API's HTTP layer (workers/api/http.py, router.py) over trio memory streams:
no socket, no daemon."""

from __future__ import annotations

import json

import h11
import pytest
import trio
import trio.testing

from workers.api.http import ApiError, Empty, Hijack, Json, Request, Streamed, serve_connection
from workers.api.router import API_VERSION, Router


def client_connection() -> h11.Connection:
    return h11.Connection(h11.CLIENT)


async def exchange(stream: trio.abc.Stream, connection: h11.Connection, method: str, target: str,
                   body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> tuple[h11.Response, bytes]:
    """Send one request and read its whole response."""
    all_headers = [("Host", "docker"), *(headers or [])]
    if body:
        all_headers.append(("Content-Length", str(len(body))))
    await stream.send_all(connection.send(h11.Request(method=method, target=target, headers=all_headers)))
    if body:
        await stream.send_all(connection.send(h11.Data(data=body)))
    await stream.send_all(connection.send(h11.EndOfMessage()))
    response = None
    parts = []
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(65536))
            continue
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            break
    connection.start_next_cycle()
    assert response is not None
    return response, b"".join(parts)


def make_router() -> Router:
    router = Router()

    async def ping(request: Request) -> Json:
        return Json({"version": request.version, "path": request.path})

    async def echo(request: Request) -> Json:
        return Json({"body": (await request.read_body()).decode(), "all": request.flag("all")})

    async def missing(request: Request, id: str) -> Json:
        raise ApiError(404, f"No such container: {id}")

    async def stream(request: Request) -> Streamed:
        async def chunks():
            for number in range(3):
                yield f"{number}\n".encode()
        return Streamed(chunks())

    async def no_content(request: Request, id: str) -> Empty:
        return Empty(304)

    async def crash(request: Request) -> Json:
        raise RuntimeError("a bug")

    router.add("GET", "/ping", ping)
    router.add("POST", "/echo", echo)
    router.add("GET", "/containers/{id}/json", missing)
    router.add("GET", "/stream", stream)
    router.add("POST", "/containers/{id}/start", no_content)
    router.add("GET", "/crash", crash)
    return router


async def serve_pair(nursery: trio.Nursery, route) -> trio.abc.Stream:
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(serve_connection, server, route)
    return client


async def test_version_prefix_and_bare_path_on_one_kept_alive_connection():
    async with trio.open_nursery() as nursery:
        stream = await serve_pair(nursery, make_router())
        connection = client_connection()
        response, body = await exchange(stream, connection, "GET", "/v1.41/ping")
        assert response.status_code == 200
        assert json.loads(body) == {"version": "1.41", "path": "/ping"}
        response, body = await exchange(stream, connection, "GET", "/ping")
        assert json.loads(body) == {"version": None, "path": "/ping"}
        await stream.aclose()


async def test_a_version_out_of_range_is_refused_with_docker_s_message():
    async with trio.open_nursery() as nursery:
        stream = await serve_pair(nursery, make_router())
        connection = client_connection()
        response, body = await exchange(stream, connection, "GET", "/v1.99/ping")
        assert response.status_code == 400
        assert json.loads(body)["message"] == f"client version 1.99 is too new. Maximum supported API version is {API_VERSION}"
        response, body = await exchange(stream, connection, "GET", "/v1.12/ping")
        assert response.status_code == 400 and "too old" in json.loads(body)["message"]
        await stream.aclose()


async def test_errors_have_docker_s_shape_and_status():
    async with trio.open_nursery() as nursery:
        stream = await serve_pair(nursery, make_router())
        connection = client_connection()
        response, body = await exchange(stream, connection, "GET", "/containers/abc/json")
        assert (response.status_code, json.loads(body)) == (404, {"message": "No such container: abc"})
        response, body = await exchange(stream, connection, "GET", "/nowhere")
        assert response.status_code == 404 and "page not found" in json.loads(body)["message"]
        response, body = await exchange(stream, connection, "DELETE", "/ping")
        assert response.status_code == 405
        response, body = await exchange(stream, connection, "GET", "/crash")
        assert response.status_code == 500 and "a bug" in json.loads(body)["message"]
        response, body = await exchange(stream, connection, "GET", "/ping")  # the connection goes on
        assert response.status_code == 200
        await stream.aclose()


async def test_body_query_flags_and_304_without_a_body():
    async with trio.open_nursery() as nursery:
        stream = await serve_pair(nursery, make_router())
        connection = client_connection()
        response, body = await exchange(stream, connection, "POST", "/echo?all=1", body=b"hello")
        assert json.loads(body) == {"body": "hello", "all": True}
        response, body = await exchange(stream, connection, "POST", "/containers/x/start")
        assert response.status_code == 304 and body == b""
        await stream.aclose()


async def test_a_body_the_handler_did_not_read_is_drained_before_the_next_request():
    async with trio.open_nursery() as nursery:
        stream = await serve_pair(nursery, make_router())
        connection = client_connection()
        response, _ = await exchange(stream, connection, "GET", "/ping", body=b"x" * 100_000)
        assert response.status_code == 200
        response, body = await exchange(stream, connection, "GET", "/ping")
        assert json.loads(body)["path"] == "/ping"
        await stream.aclose()


async def test_a_streamed_body_is_chunked():
    async with trio.open_nursery() as nursery:
        stream = await serve_pair(nursery, make_router())
        connection = client_connection()
        response, body = await exchange(stream, connection, "GET", "/stream")
        assert (b"transfer-encoding", b"chunked") in response.headers
        assert body == b"0\n1\n2\n"
        await stream.aclose()


async def test_a_streamed_body_waits_for_a_slow_client():
    """Back-pressure: the producer makes the next chunk only once the last one was sent."""
    made = []

    async def route(request: Request) -> Streamed:
        async def chunks():
            for number in range(1000):
                made.append(number)
                yield b"x" * 65536
        return Streamed(chunks())

    client, server = trio.testing.lockstep_stream_pair()  # no buffer: a send waits for the reader
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, route)
        connection = client_connection()
        await client.send_all(connection.send(h11.Request(method="GET", target="/s", headers=[("Host", "d")])))
        await client.send_all(connection.send(h11.EndOfMessage()))
        await client.receive_some(100)
        await trio.testing.wait_all_tasks_blocked()
        assert len(made) < 5  # not 1000 chunks in memory
        nursery.cancel_scope.cancel()


async def test_hijack_answers_101_and_hands_over_the_raw_stream():
    seen = []

    async def route(request: Request) -> Hijack:
        async def session(stream: trio.abc.HalfCloseableStream, already: bytes) -> None:
            data = already or await stream.receive_some(100)
            seen.append(data)
            await stream.send_all(b"raw:" + data)
        return Hijack(session)

    async with trio.open_nursery() as nursery:
        stream = await serve_pair(nursery, route)
        head = (b"POST /v1.41/containers/x/attach?stream=1 HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\n"
                b"Upgrade: tcp\r\nContent-Length: 0\r\n\r\n")
        await stream.send_all(head + b"typed")
        received = b""
        while b"raw:typed" not in received:
            part = await stream.receive_some(1000)
            assert part, received
            received += part
        assert received.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
        assert b"Upgrade: tcp" in received and b"application/vnd.docker.raw-stream" in received
        assert seen == [b"typed"]


async def test_malformed_request_gets_a_400_and_the_connection_closes():
    async with trio.open_nursery() as nursery:
        stream = await serve_pair(nursery, make_router())
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        received = b""
        while True:
            part = await stream.receive_some(1000)
            if not part:
                break
            received += part
        assert received.startswith(b"HTTP/1.1 400")
        assert b"bad HTTP request" in received


def test_route_parameters_may_take_slashes_where_declared():
    router = Router()
    router.add("GET", "/images/{name:path}/json", lambda request, name: None)
    _, regex, _ = router._routes[0]
    assert regex.match("/images/localhost:5000/team/app:1/json").group("name") == "localhost:5000/team/app:1"


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("True", True), ("0", False),
                                            ("false", False), ("", False)])
def test_flags_read_as_docker_reads_them(value, expected):
    assert Request("GET", "/", {"x": [value]}, {}).flag("x") is expected
