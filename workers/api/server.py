"""The API worker's listeners: ``<run>/docker.sock`` (mode 0660) and, if asked, TCP.

``tcp://HOST:PORT`` without TLS is accepted only for a loopback address: the API gives whoever
reaches it root on the host (it runs containers with any bind mount), so a non-loopback
address is refused with a message saying why, unless the worker has ``--tlsverify``: then
every TCP address is served over TLS (1.2 or later, the standard library's ``ssl``) and a
client must present a certificate signed by ``--tlscacert``, as dockerd's ``--tlsverify``.
A client that does not is cut off in the handshake, before any HTTP; the unix sockets stay
as they are (their mode is their access control).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import trio

from workers.api.http import serve_connection

#: The socket's mode: like the bus sockets, the owner and its group.
SOCKET_MODE = 0o660
SOCKET_NAME = "docker.sock"


class ListenAddressError(ValueError):
    """An ``--api`` address that dockyard does not serve."""


def parse_listen_address(text: str, tls: bool = False) -> tuple[str, str, int]:
    """``tcp://127.0.0.1:2375`` to ``("tcp", host, port)``; ``unix:///path`` to ``("unix", path, 0)``.

    Raises:
        ListenAddressError: not one of those, or a TCP address that is not loopback without ``tls``.
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
    if not address.is_loopback and not tls:
        raise ListenAddressError(
            f"--api {text}: refusing a non-loopback address without TLS: the Engine API gives root on this host "
            "to whoever reaches it; serve it with client certificates (--tlsverify --tlscacert FILE --tlscert "
            "FILE --tlskey FILE), or use 127.0.0.1 (or ::1), or the unix socket")
    return "tcp", str(address), int(port_text)


def tls_context(cacert: str, cert: str, key: str) -> ssl.SSLContext:
    """The server's TLS: its certificate and key, and a client certificate signed by
    ``cacert`` required (TLS 1.2 at least, the ``ssl`` module's default ciphers).

    Raises:
        ListenAddressError: a file that cannot be read or does not hold what it should.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ListenAddressError(f"--tlscert {cert} --tlskey {key}: cannot load the certificate and its key: "
                                 f"{exc}") from None
    try:
        context.load_verify_locations(cafile=cacert)
    except (OSError, ssl.SSLError) as exc:
        raise ListenAddressError(f"--tlscacert {cacert}: cannot load the CA: {exc}") from None
    return context


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


async def tcp_listeners(host: str, port: int, tls: ssl.SSLContext | None = None) -> list[Any]:
    """The TCP listeners of ``host:port``; with ``tls``, each wrapped in TLS (the handshake
    happens on the connection's first read, in its own task)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    if tls is None:
        return listeners
    return [trio.SSLListener(listener, tls, https_compatible=True) for listener in listeners]


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
