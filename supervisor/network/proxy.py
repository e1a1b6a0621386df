"""The userland proxy of published ports, in trio (what docker runs as docker-proxy): a
host socket bound before the container starts (a taken port fails the start, clearly),
relaying TCP connections and UDP datagrams to the container's address. It serves only
where the kernel's DNAT cannot (``nat.py``: no iptables, ``--userland-proxy``, a rule that
failed); otherwise :func:`bind` just reserves the host port."""

from __future__ import annotations

import errno
import socket
from typing import Any

import trio

from supervisor.errors import Conflict
from supervisor.network import PortMapping

UDP_IDLE_SECONDS = 60.0  # a UDP "connection" with no datagram for this long is dropped
BUFFER = 65536


async def bind(mapping: PortMapping, name: str, listen: bool = True) -> tuple[Any, int]:
    """The host socket of ``mapping`` (listening, for TCP) and the port it got: the first
    free one of ``host_port..host_port_end`` for a range.

    ``listen=False`` only reserves the port (the kernel's DNAT serves it, as docker's
    dummy proxy): bound without SO_REUSEADDR and not listening, so no other socket can
    bind it, and :func:`listen` can still turn it into the proxy's if DNAT fails.

    Raises:
        Conflict: the port is taken (or cannot be bound), naming it.
    """
    last = mapping.host_port_end or mapping.host_port
    for port in range(mapping.host_port, last + 1):
        try:
            return await _bind_one(mapping, name, port, listen)
        except Conflict:
            if port == last:
                raise
    raise AssertionError("unreachable: the loop returns or raises")


async def _bind_one(mapping: PortMapping, name: str, port: int, listen: bool) -> tuple[Any, int]:
    kind = socket.SOCK_STREAM if mapping.protocol == "tcp" else socket.SOCK_DGRAM
    sock = trio.socket.socket(socket.AF_INET6 if mapping.ipv6 else socket.AF_INET, kind)
    try:
        if mapping.ipv6:  # "::" is IPv6's own: the port on 0.0.0.0 is another socket's
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM and listen:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind((mapping.host_ip, port))
        if kind == socket.SOCK_STREAM and listen:
            sock.listen(128)
    except OSError as exc:
        sock.close()
        reason = "port is already allocated" if exc.errno == errno.EADDRINUSE else exc.strerror
        ports = f"{mapping.host_port}-{mapping.host_port_end}" if mapping.host_port_end else str(mapping.host_port)
        raise Conflict(
            f"bind {mapping.host(ports)}/{mapping.protocol} for port {mapping.key}"
            f" of container {name}: {reason}",
            port=mapping.key,
        ) from None
    return sock, sock.getsockname()[1]


def listen(sock: Any) -> None:
    """Make a socket :func:`bind` reserved (``listen=False``) the proxy's."""
    if sock.type == socket.SOCK_STREAM:
        sock.listen(128)


async def serve(sock: Any, mapping: PortMapping, target: str) -> None:
    """Relay until cancelled; closes ``sock``."""
    with sock:
        if mapping.protocol == "tcp":
            await _serve_tcp(sock, (target, mapping.container_port))
        else:
            await _serve_udp(sock, (target, mapping.container_port))


async def _serve_tcp(listener: Any, target: tuple[str, int]) -> None:
    async with trio.open_nursery() as nursery:
        while True:
            client, _ = await listener.accept()
            nursery.start_soon(_relay_connection, trio.SocketStream(client), target)


async def _relay_connection(client: trio.SocketStream, target: tuple[str, int]) -> None:
    async with client:
        try:
            upstream = await trio.open_tcp_stream(*target)
        except OSError:
            return  # nothing listens in the container: the client sees the connection close
        async with upstream:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pipe, client, upstream)
                nursery.start_soon(_pipe, upstream, client)


async def _pipe(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    try:
        while data := await source.receive_some(BUFFER):
            await sink.send_all(data)
        await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


async def _serve_udp(sock: Any, target: tuple[str, int]) -> None:
    """One upstream socket per client address, replies relayed back to that client."""
    upstreams: dict[Any, Any] = {}

    async def back(client: Any, upstream: Any) -> None:
        try:
            while True:
                with trio.move_on_after(UDP_IDLE_SECONDS) as idle:
                    data = await upstream.recv(BUFFER)
                if idle.cancelled_caught:
                    return
                await sock.sendto(data, client)
        except OSError:
            pass
        finally:
            upstreams.pop(client, None)
            upstream.close()

    async with trio.open_nursery() as nursery:
        while True:
            data, client = await sock.recvfrom(BUFFER)
            upstream = upstreams.get(client)
            if upstream is None:
                upstream = trio.socket.socket(socket.AF_INET6 if ":" in target[0] else socket.AF_INET,
                                              socket.SOCK_DGRAM)
                await upstream.connect(target)
                upstreams[client] = upstream
                nursery.start_soon(back, client, upstream)
            try:
                await upstream.send(data)
            except OSError:
                pass
