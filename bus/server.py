"""The daemon's side of the bus: a ROUTER control socket and an XPUB event socket.

:class:`BusServer` binds both sockets, runs their tasks and answers the built-in ops; the
work is done by its parts, each in a module of its own::

    BusServer (this module)       sockets bound or taken over (systemd), bus.ping, bus.sync
    ├─ Control (bus/control.py)   requests in, one task per request, streams, replies
    │    └─ Request (bus/requests.py)  what a handler gets: args, stream both ways
    ├─ Publisher (bus/publisher.py)    events numbered, encoded (bus/codec.py), queued, sent;
    │                                  subscription messages; subscribers that read nothing
    └─ Connections (bus/connections.py) socket monitors, connection bounds, cut-offs
         └─ Peers (bus/peers.py)   the sans-IO table of connections and requests in flight

Socket names and mode come from bus/sockets.py, the counters are :class:`bus.stats.BusStats`.

*Slow joiner.* A SUB socket's subscriptions reach the XPUB asynchronously, so a subscriber
cannot know when it starts to receive. ``bus.sync`` closes that gap::

    subscriber                                  daemon
    SUB  subscribe "container."    ──────────▶  XPUB  (subscriptions from one socket
    SUB  subscribe "sync.<token>"  ──────────▶  XPUB   are applied in order)
                                                  │ sees b"\\x01sync.<token>"
    DEALER request bus.sync {token} ─────────▶  ROUTER ─ waits (<= 5 s) for the token ─┘
           reply ◀──────────────────────────────  every earlier subscription is in effect

libzmq adds a subscription to the XPUB's filter before handing its message to us, so once
the token is seen, every event published afterwards reaches the subscriber (up to its
high-water mark). XPUB_VERBOSE passes on repeated subscriptions, so two subscribers that
happen to use the same prefix both get their token seen.
"""

from __future__ import annotations

import os
import re
import socket as _socket
import stat
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import trio
import zmq

from bus import codec
from bus.codec import Envelope
from bus.connections import Connections
from bus.control import CONTROL_MAXMSGSIZE, CONTROL_SNDHWM, Control
from bus.errors import BusError
from bus.publisher import Publisher
from bus.requests import Handler, Request, RequestFailed
from bus.sockets import CONTROL_SOCKET, EVENTS_SOCKET, SOCKET_MODE
from bus.stats import BusStats
from bus.trio_zmq import AsyncSocket

__all__ = ["BusServer", "BusStats", "Handler", "Request", "RequestFailed", "CONTROL_SOCKET", "EVENTS_SOCKET"]

#: How long bus.sync waits for its subscription to reach the event socket (seconds).
SYNC_TIMEOUT = 5.0
#: Messages queued per subscriber before XPUB drops (per peer, on top of its RCVHWM).
EVENTS_SNDHWM = 100_000
#: Connections per bus socket, at most (and a quarter of it per client process); lowered to
#: a quarter of the open-file limit, so that both sockets together leave half of the
#: descriptors to containers and the store (see bus/peers.py).
MAX_CONNECTIONS = 4_096
#: A subscriber that reads nothing while this many bytes of events are published is
#: disconnected: what the daemon queues for it stays below about this much.
SUBSCRIBER_QUEUE_BYTES = 8 << 20
#: Requests of one client without a reply yet, at most; the next gets ``too_many_requests``.
MAX_IN_FLIGHT = 1_024
#: Ops whose requests are cancelled when their client disconnects: they only wait, and an
#: answer nobody will read is not worth the memory (a daemon adds its own, e.g. container.wait).
CANCEL_ON_DISCONNECT = frozenset({"bus.sync"})

_SYNC_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{1,64}\Z")


class BusServer:
    """The bus of one daemon. Handlers map an op name to ``async def handler(request)``;
    the value a handler returns is the reply's result (it must be msgpack-encodable).
    ``bus.ping`` and ``bus.sync`` are built in.

    Not thread-safe: call publish() from the trio thread that runs serve().
    """

    def __init__(
        self,
        run_dir: str | Path,
        handlers: Mapping[str, Handler],
        *,
        source: str = "dockyard",
        log: Any = None,
        activated: Mapping[str, int] | None = None,
        max_connections: int = MAX_CONNECTIONS,
        max_in_flight: int = MAX_IN_FLIGHT,
        cancel_on_disconnect: Collection[str] = (),
        subscriber_queue_bytes: int = SUBSCRIBER_QUEUE_BYTES,
        events_listen: str | None = None,
        events_keys: Path | None = None,
    ):
        builtin = {"bus.ping": self._ping, "bus.sync": self._sync}
        clash = sorted(set(handlers) & set(builtin))
        if clash:
            raise ValueError(f"handlers may not replace the built-in ops {', '.join(clash)}")
        for op in handlers:
            codec.request(op, 0, {}, source)  # raises MalformedFrame for an op no topic can carry
        self.run_dir = Path(run_dir)
        self.control_path = self.run_dir / CONTROL_SOCKET
        self.events_path = self.run_dir / EVENTS_SOCKET
        self.source = source
        self.stats = BusStats()
        self.connections = Connections(self.control_path, self.events_path, self.stats,
                                       max_connections=max_connections, max_in_flight=max_in_flight, log=log)
        self.control = Control({**handlers, **builtin}, self.stats, self.connections, source=source, log=log,
                               cancel_on_disconnect=CANCEL_ON_DISCONNECT | frozenset(cancel_on_disconnect))
        self.publisher = Publisher(self.stats, self.connections, source=source,
                                   subscriber_queue_bytes=subscriber_queue_bytes)
        # The publisher's own bound method: the daemon's hot path without a call through
        # this class (BusServer.publish below says what it does).
        self.publish = self.publisher.publish  # type: ignore[method-assign]
        self._serving = False
        # The events socket on tcp too, with CURVE (bus/remote.py): endpoint and key directory.
        if events_listen is not None:
            from bus.remote import check_endpoint

            check_endpoint(events_listen)
            if events_keys is None:
                raise ValueError("events_listen needs events_keys: where the CURVE keys are kept")
        self.events_listen = events_listen
        self.events_keys = events_keys
        self.events_endpoint: str | None = None  # the bound tcp endpoint (its port if 0 was asked)
        # Listening sockets passed in (systemd socket activation): role -> fd, see serve().
        self._activated = dict(activated or {})
        unknown = sorted(set(self._activated) - {"control", "events"})
        if unknown:
            raise ValueError(f"activated sockets must be 'control' or 'events', not {', '.join(unknown)}")

    @property
    def max_connections(self) -> int:
        return self.connections.max_connections

    @property
    def subscriber_queue_bytes(self) -> int:
        return self.publisher.subscriber_queue_bytes

    def operations(self) -> list[str]:
        """Every op this server answers, built-in ones included, sorted."""
        return sorted(self.control.handlers)

    def connection_limit(self) -> int:
        """Connections per socket now (see Connections.connection_limit)."""
        return self.connections.connection_limit()

    # --- events (bus/publisher.py) ----------------------------------------------------------

    def publish(self, topic: str, data: Any, *, channel: str,
                payload: tuple[bytearray, int, int] | None = None) -> Envelope:
        """Queue one event for the subscribers; never blocks: :meth:`bus.publisher.Publisher.publish`
        (numbered gap-free per ``channel``; ``payload`` sent from its own buffer)."""
        return self.publisher.publish(topic, data, channel=channel, payload=payload)

    def last_seq(self, channel: str) -> int:
        """:meth:`bus.publisher.Publisher.last_seq`."""
        return self.publisher.last_seq(channel)

    def resume_seq(self, channel: str, last: int) -> None:
        """:meth:`bus.publisher.Publisher.resume_seq` (a daemon restarting from its journal)."""
        self.publisher.resume_seq(channel, last)

    async def drain(self, timeout: float = 1.0) -> bool:
        """:meth:`bus.publisher.Publisher.drain`: every published event handed to the socket."""
        return await self.publisher.drain(timeout)

    # --- lifetime -------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind both sockets, report started, serve until cancelled, then close the sockets
        and remove their files.

        Raises BusError if a daemon is already listening on the control socket, ValueError
        if run_dir makes a socket path too long for AF_UNIX.

        A socket given in ``activated`` (a listening unix socket already bound to its path,
        e.g. by a systemd socket unit) is taken over with ZMQ_USE_FD instead of bound; its
        file belongs to whoever bound it, so it is neither chmod-ed nor removed.
        """
        if self._serving:
            raise RuntimeError("this BusServer is already serving")
        for path in (self.control_path, self.events_path):
            if len(os.fsencode(path)) > _ipc_path_max():
                raise ValueError(f"socket path {path} is longer than AF_UNIX allows ({_ipc_path_max()} bytes)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if "control" not in self._activated and _someone_listens(self.control_path):
            raise BusError(f"another daemon is already serving {self.control_path}")
        self._serving = True
        context = zmq.Context()
        bound: dict[Path, int] = {}
        authenticator = None
        try:
            router = context.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            router.setsockopt(zmq.SNDHWM, CONTROL_SNDHWM)
            router.setsockopt(zmq.MAXMSGSIZE, CONTROL_MAXMSGSIZE)
            xpub = context.socket(zmq.XPUB)
            xpub.setsockopt(zmq.LINGER, 0)
            xpub.setsockopt(zmq.SNDHWM, EVENTS_SNDHWM)
            xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
            for role, sock in (("control", router), ("events", xpub)):
                self.connections.watch(context, role, sock)
            for role, sock, path in (("control", router, self.control_path), ("events", xpub, self.events_path)):
                if role in self._activated:
                    sock.setsockopt(zmq.USE_FD, self._activated.pop(role))  # libzmq closes it
                    sock.bind(f"ipc://{path}")
                    continue
                sock.bind(f"ipc://{path}")
                os.chmod(path, SOCKET_MODE)
                bound[path] = os.stat(path).st_ino
            if self.events_listen is not None:  # after the ipc binds: only tcp gets CURVE
                authenticator = self._listen_remote(xpub)
            self.control.socket = AsyncSocket(router)
            self.publisher.socket = AsyncSocket(xpub)
            task_status.started()
            async with trio.open_nursery() as nursery:
                self.connections.nursery = nursery
                nursery.start_soon(self.publisher.serve)
                nursery.start_soon(self.connections.serve_monitors)
                await self.control.serve(nursery)
        finally:
            if self.control.socket is not None:
                self.control.socket.close()
            if self.publisher.socket is not None:
                self.publisher.socket.close(linger=self.publisher.linger_ms)
            self.control.socket = self.publisher.socket = None
            self.connections.close()
            if authenticator is not None:
                authenticator.stop()
            context.destroy(linger=0)
            for path, inode in bound.items():
                _unlink_if_ours(path, inode)
            self.publisher.drop_queued()
            self._serving = False

    def _listen_remote(self, xpub: zmq.Socket) -> Any:
        """Bind the events socket on ``events_listen`` with CURVE (bus/remote.py)."""
        from bus import remote

        assert self.events_listen is not None and self.events_keys is not None
        allowed = remote.AllowedKeys(self.events_keys / "allowed", self.stats)
        authenticator = remote.listen(xpub, self.events_listen, self.events_keys, allowed)
        endpoint = xpub.getsockopt(zmq.LAST_ENDPOINT).decode()
        _, port = remote.check_endpoint(endpoint)
        self.connections.tcp_ports.add(port)
        self.events_endpoint = endpoint
        return authenticator

    # --- built-in ops ---------------------------------------------------------------------

    async def _ping(self, request: Request) -> dict[str, Any]:
        """bus.ping {} -> {pid, source}"""
        return {"pid": os.getpid(), "source": self.source}

    async def _sync(self, request: Request) -> dict[str, Any]:
        """bus.sync {token: str} -> {token}, once the event socket has seen the subscription
        ``sync.<token>``; error ``timeout`` after SYNC_TIMEOUT seconds."""
        token = request.args.get("token")
        if not isinstance(token, str) or not _SYNC_TOKEN.match(token):
            raise RequestFailed("invalid_argument", "bus.sync: argument 'token' must be 1 to 64 letters, digits, "
                                "'_' or '-'", {"op": "bus.sync", "argument": "token"})
        if await self.publisher.subscription_seen(token, SYNC_TIMEOUT):
            return {"token": token}
        raise RequestFailed(
            "timeout",
            f"the subscription sync.{token} did not reach {self.events_path} within {SYNC_TIMEOUT:g} s",
            {"token": token},
        )


def _ipc_path_max() -> int:
    return getattr(zmq, "IPC_PATH_MAX_LEN", 107) or 107


def _someone_listens(path: Path) -> bool:
    """True if a process accepts connections on the unix socket at path."""
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(os.fspath(path))
    except BlockingIOError:  # backlog full: someone is there
        return True
    except OSError:  # missing, refused (a stale file), not a socket
        return False
    finally:
        probe.close()
    return True


def _unlink_if_ours(path: Path, inode: int) -> None:
    """Remove a socket file we bound, unless another daemon has bound the path since."""
    try:
        st = os.lstat(path)
        if st.st_ino == inode and stat.S_ISSOCK(st.st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
