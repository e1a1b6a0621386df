"""Where the daemon's two bus sockets are: their file names under the run dir, the run dir
itself, and the mode the daemon gives the files. The one place both ends take them from.

``control.sock`` carries requests, stream messages and replies (DEALER -> ROUTER);
``events.sock`` carries events (XPUB -> SUB). Nothing here imports pyzmq or trio: the CLI
imports this module.
"""

from __future__ import annotations

import os

__all__ = ["CONTROL_SOCKET", "DEFAULT_RUN_DIR", "EVENTS_SOCKET", "SOCKET_MODE", "control_path", "default_run_dir",
           "events_path"]

CONTROL_SOCKET = "control.sock"
EVENTS_SOCKET = "events.sock"
DEFAULT_RUN_DIR = "/run/dockyard"
#: The socket files a daemon binds: its user and group (the socket's group may use the bus).
SOCKET_MODE = 0o660


def default_run_dir() -> str:
    """``$DOCKYARD_RUN``, or /run/dockyard."""
    return os.environ.get("DOCKYARD_RUN") or DEFAULT_RUN_DIR


def control_path(run_dir: str | os.PathLike[str]) -> str:
    """The control socket of the daemon whose run dir is ``run_dir``."""
    return os.path.join(os.fspath(run_dir), CONTROL_SOCKET)


def events_path(run_dir: str | os.PathLike[str]) -> str:
    """The event socket of the daemon whose run dir is ``run_dir``."""
    return os.path.join(os.fspath(run_dir), EVENTS_SOCKET)
