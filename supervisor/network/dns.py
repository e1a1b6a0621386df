"""The embedded DNS server of user-defined networks (docker's 127.0.0.11).

Theory of operation
-------------------
A container on a user network gets ``nameserver 127.0.0.11`` in its resolv.conf. Once its
pid 1 exists, the daemon opens a UDP socket and a listening TCP socket *inside the
container's network namespace* (a worker thread setns(2)es in, creates them, and comes
back: a socket stays in the namespace it was made in, links.open_in_namespace) bound to
127.0.0.11:53 on its loopback, and serves them from its own trio loop::

    container: resolver ──UDP/TCP──▶ 127.0.0.11:53 (the daemon's socket in the container's netns)
                                        │
    daemon (trio):  Names.lookup(container, name) ── a name on one of its networks: A/AAAA answer
                                        └─ anything else: forwarded from the daemon's own netns to
                                           the host's resolvers (/etc/resolv.conf) or --dns servers

Names (:class:`Names`, sans-IO) maps each network to the names its containers answer to:
container name, aliases, short id, and ``NAME.NETWORK``. A container sees the names of the
networks it is on, nothing else; the table changes at once on connect, disconnect, rename
and exit. A name of ours is never forwarded (an AAAA query for a container without IPv6
gets an empty NOERROR answer).

Bounds: each container may send :data:`RATE` queries a second (a burst of :data:`BURST`);
beyond that queries are dropped and counted. At most :data:`MAX_TCP` TCP connections and
:data:`MAX_FORWARDS` forwarded queries per container at a time (a forward beyond that gets
SERVFAIL); a forward waits :data:`FORWARD_TIMEOUT` seconds at most. Messages are at most
64 KiB (the protocol's own limit). The wire format is dnspython's, imported only here (the
daemon imports this module once the first container on a user network starts).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from typing import Any

import trio

ADDRESS = "127.0.0.11"
RATE = 1000.0
BURST = 200.0
MAX_TCP = 8
MAX_FORWARDS = 32
FORWARD_TIMEOUT = 2.0
TTL = 600  # docker's embedded server answers with a TTL of 600 s


@dataclass
class Entry:
    names: set[str]
    v4: str
    v6: str


class Names:
    """Who answers to which name on each network (sans-IO)."""

    def __init__(self) -> None:
        self.networks: dict[str, dict[str, Entry]] = {}  # network id -> container id -> entry

    def add(self, network_id: str, network_name: str, container_id: str, names: list[str], v4: str,
            v6: str = "") -> None:
        wanted = {name.lower().rstrip(".") for name in names if name}
        wanted |= {f"{name}.{network_name.lower()}" for name in wanted}
        self.networks.setdefault(network_id, {})[container_id] = Entry(wanted, v4, v6)

    def remove(self, network_id: str, container_id: str) -> None:
        entries = self.networks.get(network_id, {})
        entries.pop(container_id, None)
        if not entries:
            self.networks.pop(network_id, None)

    def lookup(self, container_id: str, name: str) -> tuple[list[str], list[str]] | None:
        """(IPv4, IPv6 addresses) of ``name`` on the networks of ``container_id``; None if
        no container of those networks answers to it."""
        name = name.lower().rstrip(".")
        v4: list[str] = []
        v6: list[str] = []
        found = False
        for entries in self.networks.values():
            if container_id not in entries:
                continue
            for entry in entries.values():
                if name in entry.names:
                    found = True
                    if entry.v4 and entry.v4 not in v4:
                        v4.append(entry.v4)
                    if entry.v6 and entry.v6 not in v6:
                        v6.append(entry.v6)
        return (v4, v6) if found else None


def answer(names: Names, container_id: str, wire: bytes) -> tuple[bytes | None, Any]:
    """The reply to a query: (reply bytes, None) when it is ours to answer or malformed,
    (None, the parsed message) when it must be forwarded."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.rcode
    import dns.rdataclass
    import dns.rdatatype
    import dns.rrset

    try:
        query = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError):
        if len(wire) >= 2:  # FORMERR with the query's id, as a resolver expects
            return struct.pack("!HHHHHH", int.from_bytes(wire[:2], "big"), 0x8001, 0, 0, 0, 0), None
        return None, None
    if query.opcode() != 0 or len(query.question) != 1:
        reply = dns.message.make_response(query)
        reply.set_rcode(dns.rcode.NOTIMP if query.opcode() != 0 else dns.rcode.FORMERR)
        return reply.to_wire(), None
    question = query.question[0]
    found = names.lookup(container_id, question.name.to_text(omit_final_dot=True))
    if found is None or question.rdclass != dns.rdataclass.IN:
        return None, query
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.RA
    addresses = {dns.rdatatype.A: found[0], dns.rdatatype.AAAA: found[1]}.get(question.rdtype, [])
    if addresses:
        reply.answer.append(dns.rrset.from_text_list(question.name, TTL, "IN", question.rdtype, addresses))
    return reply.to_wire(), None


def servfail(query: Any) -> bytes:
    import dns.message
    import dns.rcode

    reply = dns.message.make_response(query)
    reply.set_rcode(dns.rcode.SERVFAIL)
    return reply.to_wire()


def upstreams(resolv_conf: str) -> list[str]:
    """The name servers of a resolv.conf (the host's: the daemon forwards from its own netns)."""
    servers = []
    for line in resolv_conf.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1:
            servers.append(words[1].split("%")[0])
    return servers[:3]


@dataclass
class Limiter:
    """A token bucket: :data:`RATE` a second, :data:`BURST` at once."""

    tokens: float = BURST
    stamp: float = field(default_factory=lambda: trio.current_time())

    def take(self) -> bool:
        now = trio.current_time()
        self.tokens = min(BURST, self.tokens + (now - self.stamp) * RATE)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class Stats:
    queries: int = 0
    answered: int = 0
    forwarded: int = 0
    dropped: int = 0  # over the rate, or forwards beyond MAX_FORWARDS, or TCP beyond MAX_TCP
    failed: int = 0  # forwards without an answer


class Server:
    """One container's server: its two sockets, served until :meth:`close` (or cancellation)."""

    def __init__(self, names: Names, container_id: str, servers: list[str], stats: Stats):
        self.names = names
        self.container_id = container_id
        self.servers = servers
        self.stats = stats
        self.limiter = Limiter()
        self.forwards = trio.Semaphore(MAX_FORWARDS)
        self.connections = 0
        self.scope = trio.CancelScope()
        self.udp: Any = None
        self.tcp: Any = None

    async def open(self, pid: int) -> None:
        """The sockets, bound inside the namespace of ``pid`` (a worker thread)."""
        from supervisor.network import links

        udp = await trio.to_thread.run_sync(links.open_in_namespace, pid, socket.AF_INET, socket.SOCK_DGRAM,
                                            (ADDRESS, 53))
        try:
            tcp = await trio.to_thread.run_sync(links.open_in_namespace, pid, socket.AF_INET, socket.SOCK_STREAM,
                                                (ADDRESS, 53))
        except BaseException:
            udp.close()
            raise
        self.udp = trio.socket.from_stdlib_socket(udp)
        self.tcp = trio.socket.from_stdlib_socket(tcp)

    def close(self) -> None:
        self.scope.cancel()
        for sock in (self.udp, self.tcp):
            if sock is not None:
                sock.close()

    async def serve(self) -> None:
        with self.scope:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._serve_udp, nursery)
                    nursery.start_soon(self._serve_tcp, nursery)
            finally:
                self.close()

    def _decide(self, wire: bytes) -> tuple[bytes | None, Any]:
        """What to do with a query: (a reply, None), (None, None) to drop it, or
        (None, the parsed query) to forward it (a forward slot is taken: release it after)."""
        self.stats.queries += 1
        if not self.limiter.take():
            self.stats.dropped += 1
            return None, None
        reply, query = answer(self.names, self.container_id, wire)
        if query is None:
            self.stats.answered += reply is not None
            return reply, None
        if not self.servers:  # the host names no resolver: nothing to forward to
            self.stats.failed += 1
            return servfail(query), None
        try:
            self.forwards.acquire_nowait()
        except trio.WouldBlock:
            self.stats.dropped += 1
            return servfail(query), None
        self.stats.forwarded += 1
        return None, query

    async def _forwarded(self, wire: bytes, query: Any) -> bytes:
        """The upstream's reply to a query :meth:`_decide` let through (or SERVFAIL)."""
        try:
            got = await self._forward(wire)
        finally:
            self.forwards.release()
        if got is None:
            self.stats.failed += 1
            return servfail(query)
        return got

    async def _reply(self, wire: bytes) -> bytes | None:
        reply, query = self._decide(wire)
        return await self._forwarded(wire, query) if query is not None else reply

    async def _forward(self, wire: bytes) -> bytes | None:
        """The first answer of the upstream servers (from the daemon's own namespace)."""
        for server in self.servers:
            family = socket.AF_INET6 if ":" in server else socket.AF_INET
            with trio.socket.socket(family, socket.SOCK_DGRAM) as sock, trio.move_on_after(FORWARD_TIMEOUT):
                try:
                    await sock.connect((server, 53))
                    await sock.send(wire)
                    while True:
                        data = await sock.recv(65535)
                        if data[:2] == wire[:2]:
                            return data
                except OSError:
                    continue
        return None

    async def _send_udp(self, wire: bytes, data: bytes, peer: Any) -> None:
        if len(data) > 512:
            data = truncated(wire, data)
        try:
            await self.udp.sendto(data, peer)
        except OSError:
            pass

    async def _serve_udp(self, nursery: trio.Nursery) -> None:
        """Answers of ours are sent from this loop (no task per query: the latency of a
        name lookup is this loop's); a forward gets a task of its own, at most MAX_FORWARDS."""
        while True:
            try:
                wire, peer = await self.udp.recvfrom(65535)
            except OSError:
                return
            if len(wire) < 12:
                continue
            reply, query = self._decide(wire)
            if reply is not None:
                await self._send_udp(wire, reply, peer)
            elif query is not None:
                nursery.start_soon(self._forward_udp, wire, query, peer)

    async def _forward_udp(self, wire: bytes, query: Any, peer: Any) -> None:
        await self._send_udp(wire, await self._forwarded(wire, query), peer)

    async def _serve_tcp(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                connection, _ = await self.tcp.accept()
            except OSError:
                return
            if self.connections >= MAX_TCP:
                self.stats.dropped += 1
                connection.close()
                continue
            self.connections += 1
            nursery.start_soon(self._serve_connection, connection)

    async def _serve_connection(self, connection: Any) -> None:
        try:
            with connection:
                while True:
                    with trio.move_on_after(10) as idle:
                        size = await _read_exactly(connection, 2)
                        wire = await _read_exactly(connection, struct.unpack("!H", size)[0]) if size else b""
                    if idle.cancelled_caught or not wire:
                        return
                    data = await self._reply(wire)
                    if data is None:
                        return
                    message = memoryview(struct.pack("!H", len(data)) + data)
                    while message:
                        sent = await connection.send(message)
                        message = message[sent:]
        except OSError:
            pass
        finally:
            self.connections -= 1


def truncated(wire: bytes, data: bytes) -> bytes:
    """``data`` if the asker takes a UDP reply that long (512 bytes, or its EDNS0 payload
    size), else an empty reply with TC set: the resolver asks again over TCP."""
    import dns.exception
    import dns.flags
    import dns.message

    try:
        query = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError):
        return data[:512]
    if len(data) <= (query.payload if query.edns >= 0 else 512):
        return data
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.TC
    return reply.to_wire()


async def _read_exactly(connection: Any, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = await connection.recv(count - len(data))
        if not chunk:
            return b""
        data += chunk
    return data

