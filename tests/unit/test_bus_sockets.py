"""Where the bus sockets are (bus/sockets.py), as both ends of the bus see it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus import sockets
from bus.client import AsyncClient, Client
from bus.server import BusServer


def test_default_run_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKYARD_RUN", raising=False)
    assert sockets.default_run_dir() == "/run/dockyard"
    monkeypatch.setenv("DOCKYARD_RUN", "/tmp/elsewhere")
    assert sockets.default_run_dir() == "/tmp/elsewhere"
    assert Client().control_path == "/tmp/elsewhere/control.sock"


def test_both_ends_take_the_socket_paths_from_bus_sockets(tmp_path: Path) -> None:
    """One place names the sockets: a server and both clients on one run dir agree with it."""
    server = BusServer(tmp_path, {})
    for client in (Client(tmp_path), AsyncClient(tmp_path)):
        assert client.control_path == sockets.control_path(tmp_path) == str(server.control_path)
        assert client.events_path == sockets.events_path(tmp_path) == str(server.events_path)
    assert sockets.control_path("/run/x") == "/run/x/control.sock"
    assert sockets.events_path("/run/x") == "/run/x/events.sock"
