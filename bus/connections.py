"""The connections of the daemon's two bus sockets, as the kernel sees them: the I/O side of
bus/peers.py.

libzmq accepts connections on its own thread and hides their descriptors. A socket
monitor (a PAIR socket with an unbounded queue, so no event is lost) reports each
ACCEPTED and DISCONNECTED with the fd; :meth:`Connections.read_monitor` feeds those to
one :class:`~bus.peers.Peers` table per socket and does what the table decides: a
connection over the bound (a quarter of the open-file limit at most, read each time) is
shut down at once, before libzmq can run out of descriptors (which aborts it); a client
that leaves cancels its requests filed in ``abandonable`` (ops in ``cancel_on_disconnect``).

The server also closes connections itself: a client that leaves its replies unread
(:meth:`cut_off_client`) and a subscriber that reads nothing (:meth:`cut_off_subscriber`,
decided by bus/publisher.py). Every syscall on a connection libzmq owns is here:
SO_PEERCRED for its pid, SIOCOUTQ for what its peer has not read, ``shutdown`` (libzmq
sees the end of the stream and closes the fd itself); and, after a subscriber leaves,
``malloc_trim`` to give its queue's pages back to the system. An fd is used only after
checking that it is still a connection accepted on our socket file: fds are reused.
"""

from __future__ import annotations

import fcntl
import os
import resource
import socket as _socket
import struct
import sys
import termios
from pathlib import Path
from typing import Any

import trio
import zmq

from bus.peers import Peers
from bus.stats import BusStats
from bus.trio_zmq import AsyncSocket

__all__ = ["Connections", "unread_bytes"]

#: After a subscriber leaves, free heap pages go back to the system after these delays (s).
TRIM_DELAYS = (0.2, 1.0, 4.0)


class Connections:
    """The connections of both sockets (roles "control" and "events"), their bounds and
    their monitors. ``nursery`` is set by the server while it serves (for trimming)."""

    def __init__(self, control_path: Path, events_path: Path, stats: BusStats, *, max_connections: int,
                 max_in_flight: int, log: Any = None):
        if max_connections < 1 or max_in_flight < 1:
            raise ValueError("max_connections and max_in_flight must be at least 1")
        self.max_connections = max_connections
        self.peers = {role: Peers(max_connections, max_in_flight) for role in ("control", "events")}
        self.abandonable: dict[bytes, set[trio.CancelScope]] = {}  # peer -> its cancellable requests
        self.nursery: trio.Nursery | None = None
        self._paths = {"control": os.fsencode(control_path), "events": os.fsencode(events_path)}
        #: Ports the events socket listens on over tcp (bus/remote.py): its connections there
        #: are its own too.
        self.tcp_ports: set[int] = set()
        self._stats = stats
        self._log = log
        self._monitors: dict[str, AsyncSocket] = {}
        self._trimming = False

    def watch(self, context: zmq.Context, role: str, sock: zmq.Socket) -> None:
        """Monitor a socket's connections; call before it binds."""
        self._monitors[role] = AsyncSocket(_monitor(context, sock, f"inproc://bus-monitor-{role}-{id(self)}"))

    async def serve_monitors(self) -> None:
        """Read both monitors as their events come, until cancelled."""
        async with trio.open_nursery() as nursery:
            for role in self._monitors:
                nursery.start_soon(self._serve_monitor, role)

    async def _serve_monitor(self, role: str) -> None:
        monitor = self._monitors[role]
        while True:
            await monitor.wait(zmq.POLLIN)
            self.read_monitor(role)

    def close(self) -> None:
        for monitor in self._monitors.values():
            monitor.close()
        self._monitors.clear()
        self.nursery = None

    def read_monitor(self, role: str) -> None:
        """Take every pending monitor event of one socket: count connections, refuse the
        excess, cancel what a departed client left waiting."""
        monitor = self._monitors.get(role)
        if monitor is None:
            return
        batch = []
        while (message := monitor.recv_nowait()) is not None:
            if len(message) == 2 and len(message[0]) == 6:
                batch.append((int.from_bytes(message[0][:2], "little"), int.from_bytes(message[0][2:], "little")))
        if not batch:
            return
        subscriber_left = False
        peers = self.peers[role]
        peers.max_connections = self.connection_limit()
        path = self._paths[role]
        # A connection that is gone later in this batch: its fd may already be another file.
        last_gone = {fd: index for index, (event, fd) in enumerate(batch) if event == zmq.EVENT_DISCONNECTED}
        for index, (event, fd) in enumerate(batch):
            if event == zmq.EVENT_ACCEPTED:
                sock = None if last_gone.get(fd, -1) > index else _own_connection(fd, path, self.tcp_ports)
                try:
                    pid = _peer_pid(sock)
                    # One that cannot be closed (gone already, or not recognised) is counted.
                    if not peers.accepted(fd, pid, refusable=sock is not None):
                        _shut_down(sock)
                        self._warn_refused(role, pid)
                finally:
                    if sock is not None:
                        sock.detach()
            elif event == zmq.EVENT_DISCONNECTED:
                for routing_id in peers.disconnected(fd):
                    self._cancel_abandoned(routing_id)
                subscriber_left = subscriber_left or role == "events"
        if subscriber_left:
            # libzmq has freed (or is freeing) what it queued for the subscriber: give the
            # pages back to the system, which glibc's arenas would otherwise keep.
            self._trim_memory()
        self._stats.connections = self.peers["control"].stats.connections
        self._stats.subscribers = self.peers["events"].stats.connections
        self._stats.connections_refused = sum(p.stats.connections_refused for p in self.peers.values())

    def _cancel_abandoned(self, routing_id: bytes) -> None:
        for scope in self.abandonable.pop(routing_id, ()):
            scope.cancel()

    def connection_limit(self) -> int:
        """Connections per socket now: max_connections, at most a quarter of the open-file
        limit (read each time: an administrator may lower it while the daemon runs)."""
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft // 4))

    def _warn_refused(self, role: str, pid: int) -> None:
        peers = self.peers[role]
        refused = peers.stats.connections_refused
        if self._log is not None and (refused & (refused - 1)) == 0:  # 1, 2, 4, 8...: never a flood of lines
            self._log.warning(
                "bus refused a connection: too many",
                socket=role,
                pid=pid,
                connections=peers.stats.connections,
                limit=peers.max_connections,
                per_process=peers.max_per_process,
                refused=refused,
            )

    def cut_off_client(self, peer: bytes, reason: str) -> None:
        """Disconnect a control client that does not read its replies: it learns that its
        replies were lost from the closed connection, not by waiting for them forever."""
        self.read_monitor("control")
        cut = self.peers["control"].cut_off(peer)
        if cut is None:
            if self._log is not None:
                self._log.debug("bus dropped a reply: the peer is gone", reason=reason)
            return
        fd, routing_ids = cut
        pid = 0
        sock = _own_connection(fd, self._paths["control"])
        if sock is not None:
            pid = _peer_pid(sock)
            _shut_down(sock)
            sock.detach()
        for routing_id in routing_ids:
            self._cancel_abandoned(routing_id)
        self._stats.clients_cut_off += 1
        self._stats.connections = self.peers["control"].stats.connections
        if self._log is not None:
            self._log.warning("bus disconnected a client that does not read its replies", reason=reason, pid=pid)

    def cut_off_subscriber(self, fd: int, published: int, limit: int) -> None:
        """Disconnect a subscriber that read nothing while ``published`` bytes of events
        went out (``limit``: the bound it passed)."""
        sock = _own_connection(fd, self._paths["events"], self.tcp_ports)
        if sock is None:
            return
        try:
            pid = _peer_pid(sock)
            _shut_down(sock)
        finally:
            sock.detach()
        self.peers["events"].refuse(fd)
        self._stats.subscribers_cut_off += 1
        self._stats.subscribers = self.peers["events"].stats.connections
        self._trim_memory()
        if self._log is not None:
            self._log.warning("bus disconnected a subscriber that reads nothing", pid=pid,
                              published=published, limit=limit)

    def _trim_memory(self) -> None:
        if self._trimming or self.nursery is None:
            return
        self._trimming = True
        self.nursery.start_soon(self._trim_later)

    async def _trim_later(self) -> None:
        """libzmq frees a departed subscriber's queue after its pipe is torn down, and pyzmq
        lets go of zero-copy frames after that: trim a few times over the next seconds."""
        try:
            for delay in TRIM_DELAYS:
                await trio.sleep(delay)
                _release_free_memory()
        finally:
            self._trimming = False


def _monitor(context: zmq.Context, sock: zmq.Socket, address: str) -> zmq.Socket:
    """A PAIR socket that gets sock's ACCEPTED and DISCONNECTED events, none dropped: its
    receive queue is unbounded (libzmq drops monitor events at a full queue, and a lost
    DISCONNECTED would leak a connection from the count). Call before sock binds."""
    sock.monitor(address, zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
    pair = context.socket(zmq.PAIR)
    pair.setsockopt(zmq.LINGER, 0)
    pair.setsockopt(zmq.RCVHWM, 0)
    pair.connect(address)
    return pair


def _own_connection(fd: int, path: bytes, tcp_ports: set[int] | frozenset[int] = frozenset()) -> _socket.socket | None:
    """A socket object over fd (detach() it after use) if fd is a connection accepted on the
    unix socket bound at path (or on one of ``tcp_ports``), else None: fds are reused, see
    bus/peers.py."""
    try:
        sock = _socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        if sock.family == _socket.AF_UNIX:
            name = sock.getsockname()
        elif tcp_ports and sock.family in (_socket.AF_INET, _socket.AF_INET6) and sock.getsockname()[1] in tcp_ports:
            return sock
        else:
            name = None
    except OSError:
        name = None
    if name is not None and (os.fsencode(name) == path or _same_file(name, path)):
        return sock
    sock.detach()
    return None


def _same_file(name: str | bytes, path: bytes) -> bool:
    """The socket file a connection was accepted on is ours under another name (a socket
    bound by systemd through a symlinked run dir)."""
    if not name:
        return False
    try:
        return os.path.samefile(name, path)
    except (OSError, ValueError):
        return False


def _peer_pid(sock: _socket.socket | None) -> int:
    """The pid of the process at the other end of a connection, 0 if unknown."""
    if sock is None:
        return 0
    try:
        return struct.unpack("3i", sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12))[0]
    except OSError:
        return 0


def _release_free_memory() -> None:
    """glibc's malloc_trim(0): return free heap pages to the system (nothing elsewhere)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6", use_errno=True).malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def unread_bytes(fd: int) -> int:
    """Bytes sent on a connection that its peer has not read yet (SIOCOUTQ); -1 if unknown."""
    buffer = bytearray(4)
    try:
        fcntl.ioctl(fd, termios.TIOCOUTQ, buffer)
    except OSError:
        return -1
    return int.from_bytes(buffer, sys.byteorder, signed=True)


def _shut_down(sock: _socket.socket) -> None:
    """Shut a connection down both ways: libzmq (which owns the fd) sees the end of the
    stream and closes it."""
    try:
        sock.shutdown(_socket.SHUT_RDWR)
    except OSError:
        pass
