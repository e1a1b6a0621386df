"""login and logout through the real CLI and a private daemon, against docker-registry
with htpasswd basic auth on 127.0.0.1."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.registry_server import REGISTRY_BINARY, Registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BINARY), reason="docker-registry is not installed (scripts/setup.sh)"),
]


@pytest.fixture
def basic_registry(tmp_path):
    registry = Registry(tmp_path / "registry", auth="htpasswd", users={"alice": "wonder-land"})
    registry.directory.mkdir()
    registry.start()
    yield registry
    registry.stop()


def test_login_checks_and_keeps_credentials_then_logout_forgets_them(daemon, basic_registry):
    auth_file = daemon.root / "auth.json"
    # usage errors and an unreachable registry change nothing
    result = daemon.cli("login", "--password-stdin", basic_registry.host, input=b"x\n")
    assert result.returncode == 2 and "needs a username" in result.stderr.decode()
    result = daemon.cli("login", "-u", "alice", basic_registry.host, input=b"")
    assert result.returncode == 2 and "a password is needed" in result.stderr.decode()
    result = daemon.cli("login", "-u", "alice", "--password-stdin", "127.0.0.1:1", input=b"pw\n")
    assert result.returncode == 1 and "cannot reach registry 127.0.0.1:1" in result.stderr.decode()
    assert not auth_file.exists()

    refused = daemon.cli("login", "-u", "alice", "--password-stdin", basic_registry.host, input=b"wrong\n")
    assert refused.returncode == 1
    message = refused.stderr.decode()
    assert basic_registry.host in message and "as alice" in message, message
    assert not auth_file.exists()

    assert daemon.out("login", "-u", "alice", "--password-stdin", basic_registry.host,
                      input=b"wonder-land\n").strip() == "Login Succeeded"
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    assert list(json.loads(auth_file.read_text())["auths"]) == [basic_registry.host]

    assert daemon.out("logout", basic_registry.host).strip() == f"Removing login credentials for {basic_registry.host}"
    assert daemon.out("logout", basic_registry.host).strip() == f"Not logged in to {basic_registry.host}"
    assert json.loads(auth_file.read_text())["auths"] == {}

