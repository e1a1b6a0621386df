"""The daemon's workers: separate processes that subscribe to the bus and act only through
requests to the supervisor. The daemon starts and supervises them (supervisor/workers.py);
each can also run on its own, for example as its own systemd unit:

    dockyard worker NAME [--root DIR] [--run DIR]

A worker is a module ``workers.<name>`` with ``async def serve(ctx: WorkerContext)``, listed
in :data:`WORKERS`. ``serve`` runs until it is cancelled (SIGTERM or SIGINT); the daemon
restarts a worker that exits or dies.

This module is the table of workers only (the daemon's config checks names against it);
``workers/runner.py`` runs one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: name -> module; the daemon starts every one of them unless told otherwise (--workers).
WORKERS: dict[str, str] = {
    "monitor": "workers.monitor",
    "logcollector": "workers.logcollector",
    "api": "workers.api",  # docker's Engine API on <run>/docker.sock (docs/api.md)
}


@dataclass(frozen=True)
class WorkerContext:
    name: str
    root: Path  # the daemon's state root (a worker keeps its own state under it)
    run_dir: Path  # where the bus sockets are
    log: Any
    listen: tuple[str, ...] = ()  # the api worker's --api addresses besides <run>/docker.sock
    tls: tuple[str, ...] = ()  # the api worker's --tlsverify (cacert, cert, key): TCP over TLS
