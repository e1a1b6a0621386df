"""The counters of a BusServer, one dataclass shared by the parts that count (bus/control.py,
bus/publisher.py, bus/connections.py); the daemon reports them in ``dockyard info``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["BusStats"]


@dataclass
class BusStats:
    """Counters of a BusServer (read them, do not write)."""

    requests: int = 0  # well-formed requests received
    replies: int = 0  # replies handed to libzmq (ok and error)
    error_replies: int = 0  # of which error replies
    replies_dropped: int = 0  # the peer was gone, or stayed full for REPLY_SEND_TIMEOUT
    frames_bad: int = 0  # undecodable request frames, wrong number of frames
    handler_errors: int = 0  # handlers that raised an exception without an error code
    streamed: int = 0  # stream messages handed to libzmq
    stream_dropped: int = 0  # stream messages refused: peer gone or over its high-water mark
    stream_in: int = 0  # stream messages from clients filed in a request's inbox
    stream_in_dropped: int = 0  # from clients, for no running request, or over INBOX_LIMIT
    events_published: int = 0  # publish() calls
    events_sent: int = 0  # events written to the XPUB socket
    event_frames: int = 0  # the frames they went in (one for several queued together: bus/batches.py)
    events_dropped: int = 0  # events dropped before the socket (queue full, server stopped)
    events_unsubscribed: int = 0  # events no subscription's prefix took: not written to the socket
    subscriptions: int = 0  # subscription messages seen on the XPUB socket
    filters_refused: int = 0  # filtered subscriptions not served: undecodable, or too many filters
    replays: int = 0  # subscription-only replays sent (replay.<token>.<seq>., bus/remote.py)
    replays_refused: int = 0  # replay subscriptions not served: malformed, no journal, queue full
    remote_refused: int = 0  # tcp subscribers whose CURVE key is not allowed (bus/remote.py)
    requests_refused: int = 0  # too_many_requests: the client had max_in_flight without a reply
    requests_cancelled: int = 0  # abandoned: their client disconnected before the reply
    requests_abandoned: int = 0  # not run: they came from a connection that is gone or refused
    in_flight: int = 0  # requests without a reply, now
    clients_cut_off: int = 0  # clients disconnected because they left a reply unread (queue full)
    subscribers_cut_off: int = 0  # subscribers disconnected: they read nothing for subscriber_queue_bytes
    connections: int = 0  # control.sock connections, now
    subscribers: int = 0  # events.sock connections, now
    connections_refused: int = 0  # closed at once: over the bound (both sockets)

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)
