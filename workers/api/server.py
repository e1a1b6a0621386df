"""The API worker's listeners: ``<run>/docker.sock`` (mode 0660) and, if asked, loopback TCP.

``tcp://HOST:PORT`` is accepted only for a loopback address: the API gives whoever reaches it
root on the host (it runs containers with any bind mount), and dockyard has no TLS client
authentication yet, so a non-loopback address is refused with a message saying why.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

import trio

from workers.api.http import serve_connection

#: The socket's mode: like the bus sockets, the owner and its group.
SOCKET_MODE = 0o660
SOCKET_NAME = "docker.sock"


class ListenAddressError(ValueError):
    """An ``--api`` address that dockyard does not serve."""


def parse_listen_address(text: str) -> tuple[str, str, int]:
    """``tcp://127.0.0.1:2375`` to ``("tcp", host, port)``; ``unix:///path`` to ``("unix", path, 0)``.

    Raises:
        ListenAddressError: not one of those, or a TCP address that is not loopback.
    """
    if text.startswith("unix://"):
        path = text.removeprefix("unix://")
        if not path.startswith("/"):
            raise ListenAddressError(f"--api {text}: a unix socket needs an absolute path")
        return "unix", path, 0
    if not text.startswith("tcp://"):
        raise ListenAddressError(f"--api {text}: use tcp://127.0.0.1:PORT or unix:///PATH")
    host, _, port_text = text.removeprefix("tcp://").rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ListenAddressError(f"--api {text}: the port must be a number from 1 to 65535")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ListenAddressError(f"--api {text}: the host must be a loopback IP address") from None
        address = ipaddress.ip_address("127.0.0.1")
    if not address.is_loopback:
        raise ListenAddressError(
            f"--api {text}: refusing a non-loopback address: the Engine API gives root on this host to whoever "
            "reaches it, and dockyard serves it without TLS client certificates; use 127.0.0.1 (or ::1), or "
            "the unix socket")
    return "tcp", str(address), int(port_text)


def unix_listener(path: Path) -> trio.SocketListener:
    """A listening unix socket at ``path`` (a stale one there is replaced), mode 0660."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        os.unlink(temporary)
    except FileNotFoundError:
        pass
    sock.bind(str(temporary))
    os.chmod(temporary, SOCKET_MODE)
    os.rename(temporary, path)  # the socket appears at its name with its mode already set
    sock.listen(512)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


async def tcp_listeners(host: str, port: int) -> list[trio.SocketListener]:
    return await trio.open_tcp_listeners(port, host=host)


async def serve_listeners(listeners: list[Any], route: Any, log: Any,
                          *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Accept on every listener, one task per connection, until cancelled."""

    async def handle(stream: trio.abc.Stream) -> None:
        try:
            await serve_connection(stream, route, log)
        except Exception as exc:  # a bug in one request must not end the worker
            log.error("API connection failed", error=repr(exc))

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(trio.serve_listeners, handle, [listener])
        task_status.started()
