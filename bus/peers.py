"""Who is connected to the daemon's bus sockets, and what each client has in flight.

Theory of operation
-------------------
libzmq accepts connections on its own I/O thread and never tells the application which
connection a message came from; an ``accept`` that fails with EMFILE aborts the process
(``Too many open files (src/ipc_listener.cpp)``). The server therefore watches each bound
socket with a socket monitor and keeps this table, fed with three kinds of facts::

    monitor ACCEPTED(fd) ──▶ accepted(fd, pid)  -> keep, or refuse (the server shuts fd down)
    monitor DISCONNECTED(fd) ─▶ disconnected(fd) -> the routing ids that were on it
    control message (routing id, ZMQ_SRCFD fd) ─▶ seen(routing_id, fd)

The monitor reports ACCEPTED before the connection's engine reads anything and
DISCONNECTED before libzmq closes the fd, so once the server has read every pending monitor
event, a message's fd names a live connection (or one this table already knows is gone).
A descriptor is reused by the kernel only after its DISCONNECTED, so the table never mixes
two connections on one fd: ``accepted`` of a reused fd forgets the old one first.

Bounds (all counted in :class:`PeerStats`):

* ``max_connections`` live connections per socket, and a quarter of that per client
  process (SO_PEERCRED pid), so one runaway client does not lock the others out. An excess
  connection is refused: closed at once, before it can carry a request.
* ``max_in_flight`` requests per client (routing id) that have no reply yet. The next one
  gets a ``too_many_requests`` error reply at once.

No I/O here: the server does the syscalls and the sends.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class PeerStats:
    """Counters of one socket's connections (read them, do not write)."""

    connections: int = 0  # live, accepted and kept
    connections_accepted: int = 0  # kept, since the start
    connections_refused: int = 0  # closed at once: over max_connections or the per-process share
    disconnects: int = 0  # kept connections that went away

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass
class Connection:
    fd: int
    pid: int
    routing_ids: set[bytes] = field(default_factory=set)


class Peers:
    """The connections of one bus socket (see the module docstring)."""

    def __init__(self, max_connections: int, max_in_flight: int = 0):
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        self.max_connections = max_connections
        self.max_in_flight = max_in_flight
        self.stats = PeerStats()
        self._live: dict[int, Connection] = {}  # fd -> kept connection
        self._refused: set[int] = set()  # fds refused, until their DISCONNECTED
        self._per_pid: dict[int, int] = {}
        self._fd_of: dict[bytes, int] = {}  # routing id -> fd
        self._in_flight: dict[bytes, int] = {}  # routing id -> requests without a reply

    @property
    def max_per_process(self) -> int:
        return max(1, self.max_connections // 4)

    # --- connections ------------------------------------------------------------------

    def accepted(self, fd: int, pid: int, refusable: bool = True) -> bool:
        """A connection was accepted on ``fd`` by process ``pid`` (0: unknown). False: refuse
        it (the caller closes it; its DISCONNECTED still comes and is taken here). One the
        caller cannot close (``refusable=False``: gone already) is always kept, so that a
        live connection is never taken for a refused one whose messages are ignored."""
        self._forget(fd)
        over = len(self._live) >= self.max_connections or self._per_pid.get(pid, 0) >= self.max_per_process
        if over and refusable:
            self._refused.add(fd)
            self.stats.connections_refused += 1
            return False
        self._live[fd] = Connection(fd, pid)
        self._per_pid[pid] = self._per_pid.get(pid, 0) + 1
        self.stats.connections_accepted += 1
        self.stats.connections = len(self._live)
        return True

    def disconnected(self, fd: int) -> set[bytes]:
        """The connection on ``fd`` is gone; returns the routing ids it carried."""
        if fd in self._refused:
            self._refused.discard(fd)
            return set()
        if fd in self._live:
            self.stats.disconnects += 1
        return self._forget(fd)

    def _forget(self, fd: int) -> set[bytes]:
        self._refused.discard(fd)
        connection = self._live.pop(fd, None)
        if connection is None:
            return set()
        left = self._per_pid[connection.pid] - 1
        if left:
            self._per_pid[connection.pid] = left
        else:
            del self._per_pid[connection.pid]
        for routing_id in connection.routing_ids:
            if self._fd_of.get(routing_id) == fd:
                del self._fd_of[routing_id]
        self.stats.connections = len(self._live)
        return connection.routing_ids

    def cut_off(self, routing_id: bytes) -> tuple[int, set[bytes]] | None:
        """The server closes a client's connection: (its fd, the routing ids it carried), or
        None if it is gone already. Its later messages are taken as a refused one's."""
        fd = self._fd_of.get(routing_id)
        if fd is None:
            return None
        routing_ids = self._forget(fd)
        self._refused.add(fd)
        return fd, routing_ids

    def refuse(self, fd: int) -> None:
        """The server closed a live connection (a subscriber that reads nothing)."""
        self._forget(fd)
        self._refused.add(fd)

    def live_fds(self) -> list[int]:
        return list(self._live)

    def seen(self, routing_id: bytes, fd: int) -> bool:
        """A message from ``routing_id`` came in on ``fd``. False if that connection is known
        to be gone or refused (its requests need not run)."""
        if self._fd_of.get(routing_id) == fd:
            return True
        connection = self._live.get(fd)
        if connection is None:
            return False
        connection.routing_ids.add(routing_id)
        self._fd_of[routing_id] = fd
        return True

    def fd_of(self, routing_id: bytes) -> int | None:
        """The descriptor of a live client's connection, None if it is gone."""
        return self._fd_of.get(routing_id)

    def is_refused(self, fd: int) -> bool:
        return fd in self._refused

    def connected(self, routing_id: bytes) -> bool:
        return routing_id in self._fd_of

    # --- requests in flight -----------------------------------------------------------

    def begin(self, routing_id: bytes) -> bool:
        """A request from ``routing_id`` starts; False (and nothing counted) when the client
        already has ``max_in_flight`` requests without a reply."""
        count = self._in_flight.get(routing_id, 0)
        if self.max_in_flight and count >= self.max_in_flight:
            return False
        self._in_flight[routing_id] = count + 1
        return True

    def end(self, routing_id: bytes) -> None:
        """A request started with :meth:`begin` has its reply (sent or dropped)."""
        count = self._in_flight.get(routing_id, 0) - 1
        if count > 0:
            self._in_flight[routing_id] = count
        else:
            self._in_flight.pop(routing_id, None)

    def in_flight(self, routing_id: bytes | None = None) -> int:
        """Requests without a reply: of one client, or of all."""
        if routing_id is not None:
            return self._in_flight.get(routing_id, 0)
        return sum(self._in_flight.values())
