"""What both bus clients share: finding the daemon before connecting, a subscription's SUB
socket, and an event message turned into its envelopes.

Nothing here imports pyzmq or trio at module level: the CLI imports this module.
"""

from __future__ import annotations

import _socket  # not `socket`: its enum wrappers cost the CLI ~6 ms of start-up
import os
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bus import codec, sockets
from bus.batches import decode_events
from bus.codec import Envelope
from bus.errors import DaemonUnavailable, FrameError
from bus.filters import PREFIX as _FILTER_TOPIC_PREFIX

FILTER_PREFIX = _FILTER_TOPIC_PREFIX.encode()
#: A subscription-only replay's topics (bus/remote.py).
REPLAY_PREFIX = b"replay."

if TYPE_CHECKING:
    import zmq

#: Longest a blocking wait lasts before the client looks again (Ctrl-C, daemon gone).
POLL_SLICE = 0.25
#: Timeout of the bus.sync handshake of subscribe (the daemon gives up after 5 s).
SYNC_TIMEOUT = 10.0
#: Events a SUB socket queues before ZeroMQ drops (on top of the daemon's SNDHWM).
SUB_RCVHWM = 100_000


def check_daemon(path: str) -> int:
    """Make sure something listens on the unix socket at path; return its inode.

    ZeroMQ connects in the background and retries forever, so without this check a request
    to a daemon that is not running would only end in a timeout.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DaemonUnavailable(path, "no socket file; is the daemon running? ($DOCKYARD_RUN selects the run dir)") from None
    except OSError as exc:
        raise DaemonUnavailable(path, exc.strerror or str(exc)) from None
    if not stat.S_ISSOCK(st.st_mode):
        raise DaemonUnavailable(path, "this is not a socket")
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except BlockingIOError:
        pass  # the listen backlog is full: the daemon is there, just busy
    except ConnectionRefusedError:
        raise DaemonUnavailable(path, "connection refused; the daemon is not running (stale socket file)") from None
    except PermissionError:
        raise DaemonUnavailable(path, "permission denied; you need to be in the socket's group") from None
    except OSError as exc:
        raise DaemonUnavailable(path, exc.strerror or str(exc)) from None
    finally:
        probe.close()
    return st.st_ino


def same_daemon(path: str, inode: int) -> bool:
    """False once the daemon removed its socket, or another daemon bound the path."""
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def _default_source() -> str:
    return f"client.{os.getpid()}"


def locate(client: Any, run_dir: str | os.PathLike[str] | None, source: str | None) -> None:
    """Set where a client finds the daemon (run_dir, control_path, events_path) and its source."""
    client.run_dir = os.fspath(run_dir) if run_dir is not None else sockets.default_run_dir()
    client.control_path = sockets.control_path(client.run_dir)
    client.events_path = sockets.events_path(client.run_dir)
    client.source = source or _default_source()


def sync_token() -> str:
    return os.urandom(8).hex()  # not secrets: it costs the CLI a few ms of imports


def subscriber(context: zmq.Context, path: str, topics: list[bytes]) -> tuple[zmq.Socket, str]:
    """A SUB socket connected to ``path``, subscribed to ``topics`` and to ``sync.<token>``
    for the bus.sync handshake (which the caller then does, sync or async)."""
    import zmq

    sub = context.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, SUB_RCVHWM)
        sub.connect(f"ipc://{path}")
        for topic in topics:
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        token = sync_token()
        sub.setsockopt(zmq.SUBSCRIBE, f"sync.{token}".encode())
    except BaseException:
        sub.close(linger=0)
        raise
    return sub, token


def check_prefixes(prefixes: Sequence[str]) -> list[bytes]:
    if isinstance(prefixes, (str, bytes)):
        raise TypeError("prefixes must be a sequence of topic prefixes, not one string")
    return [prefix.encode() for prefix in prefixes]


def event(frames: list[bytes]) -> tuple[bytes, Envelope] | None:
    """The topic and envelope of a message of one event (:func:`events` tells the whole
    story); None when it is not exactly one valid event."""
    received = events(frames)
    if received is None or len(received[1]) != 1 or received[2]:
        return None
    return received[0], received[1][0]


def events(frames: list[bytes]) -> tuple[bytes, list[Envelope], int] | None:
    """The topic, the envelopes and the count of invalid envelopes of an event message:
    one frame ``topic NUL body`` whose body is one envelope or (version 3) an array of
    envelopes of that topic (bus/batches.py), or two frames ``[topic, envelope]`` (version
    1: an older daemon). None when it is not one at all (the subscription counts it in
    ``bad_frames``). The topic is the envelopes' own, or a filtered subscription's
    (bus/filters.py) or a replay's; an envelope whose topic is neither is counted invalid."""
    try:
        if len(frames) == 1:
            topic, body = codec.split_event(frames[0])
        elif len(frames) == 2:
            topic, body = frames
        else:
            return None
        # A filtered subscription's or a replay's frames carry other topics' envelopes.
        own = None if topic.startswith(FILTER_PREFIX) or topic.startswith(REPLAY_PREFIX) else \
            topic.decode("utf-8", "replace")
        if len(frames) == 1:
            envelopes, bad = decode_events(body, topic=own)
        else:
            envelope = codec.decode(body)
            envelopes, bad = ([envelope], 0) if own is None or envelope.topic == own else ([], 1)
    except FrameError:
        return None
    if bad and not envelopes:
        return None  # the topic lies, or nothing in it is an event
    return topic, envelopes, bad


class FilterGaps:
    """Gap detection on filtered subscriptions (bus/filters.py): the topic of a filtered
    event numbers the matches of its filter; ``missed`` counts the numbers that
    never arrived. The first number seen for a filter is where this subscriber started."""

    __slots__ = ("missed", "_last")

    def __init__(self) -> None:
        self.missed = 0
        self._last: dict[bytes, int] = {}

    def seen(self, topic: bytes) -> None:
        if not topic.startswith(FILTER_PREFIX):
            return
        prefix, _, number = topic.rpartition(b".")
        try:
            n = int(number)
        except ValueError:
            return
        last = self._last.get(prefix)
        if last is not None and n > last + 1:
            self.missed += n - last - 1
        self._last[prefix] = n
