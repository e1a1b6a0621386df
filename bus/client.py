"""Clients of the dockyard bus, the public names: :class:`Client` (synchronous, for the CLI;
bus/sync_client.py) and :class:`AsyncClient` (trio, for workers and embedding;
bus/async_client.py); what they share is in bus/connect.py, the socket names in
bus/sockets.py.

Importing this module loads msgpack and bus.codec, not pyzmq and not trio: the CLI starts
fast (AsyncClient imports trio when one is made).
"""

from __future__ import annotations

from bus.async_client import AsyncClient, AsyncStream, AsyncSubscription
from bus.sockets import CONTROL_SOCKET, EVENTS_SOCKET, default_run_dir
from bus.sync_client import Client, Pending, Stream, Subscription

__all__ = [
    "AsyncClient",
    "AsyncStream",
    "AsyncSubscription",
    "Client",
    "Pending",
    "Stream",
    "Subscription",
    "default_run_dir",
    "CONTROL_SOCKET",
    "EVENTS_SOCKET",
]
