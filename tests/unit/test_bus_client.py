"""bus.client, the clients' public names: what the CLI imports, and what it must not."""

from __future__ import annotations

import subprocess
import sys

from bus import async_client, client, sockets, sync_client


def test_client_module_imports_neither_trio_nor_structlog() -> None:
    code = "import sys, bus.client; print(sorted(m for m in ('trio', 'structlog') if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_the_public_names_are_the_clients_own() -> None:
    assert client.Client is sync_client.Client and client.Stream is sync_client.Stream
    assert client.AsyncClient is async_client.AsyncClient
    assert client.default_run_dir is sockets.default_run_dir
    assert (client.CONTROL_SOCKET, client.EVENTS_SOCKET) == (sockets.CONTROL_SOCKET, sockets.EVENTS_SOCKET)
