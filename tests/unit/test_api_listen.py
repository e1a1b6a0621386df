"""The Engine API's addresses and TLS (supervisor/config.py on the daemon's side,
workers/api/server.py on the worker's): a non-loopback TCP address only with --tlsverify,
and the three files it needs."""

from __future__ import annotations

import ssl
import subprocess
import sys

import pytest

from supervisor.config import Config, check_api_address
from supervisor.daemon import worker_commands
from tests.tools import require
from workers.api.server import ListenAddressError, parse_listen_address, tls_context


def test_a_non_loopback_address_is_refused_without_tls_and_accepted_with_it(tmp_path):
    with pytest.raises(ValueError, match="refusing a non-loopback address without TLS.*--tlsverify"):
        check_api_address("tcp://0.0.0.0:2376")
    check_api_address("tcp://0.0.0.0:2376", tls=True)
    check_api_address("tcp://127.0.0.1:2375")
    with pytest.raises(ListenAddressError, match="refusing a non-loopback address without TLS"):
        parse_listen_address("tcp://0.0.0.0:2376")
    assert parse_listen_address("tcp://0.0.0.0:2376", tls=True) == ("tcp", "0.0.0.0", 2376)


def test_config_needs_every_tls_file_and_passes_them_to_the_api_worker(tmp_path):
    files = []
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
        files.append(str(tmp_path / name))
    with pytest.raises(ValueError, match="--tlsverify needs --tlskey FILE"):
        Config(root=tmp_path, run_dir=tmp_path, api_tls=(files[0], files[1], ""))
    with pytest.raises(ValueError, match="refusing a non-loopback address without TLS"):
        Config(root=tmp_path, run_dir=tmp_path, api_addresses=("tcp://0.0.0.0:2376",))
    config = Config(root=tmp_path, run_dir=tmp_path, api_addresses=("tcp://0.0.0.0:2376",), api_tls=tuple(files),
                    workers=("api",))
    command = worker_commands(config, "logfmt", "info")["api"]
    assert command[-9:] == ["--api", "tcp://0.0.0.0:2376", "--tlsverify", "--tlscacert", files[0], "--tlscert",
                            files[1], "--tlskey", files[2]]


def test_the_tls_context_requires_a_client_certificate(tmp_path):
    require("openssl")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t",
                    "-keyout", "key.pem", "-out", "cert.pem"], cwd=tmp_path, capture_output=True, check=True)
    context = tls_context(str(tmp_path / "cert.pem"), str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    assert context.verify_mode is ssl.CERT_REQUIRED and context.minimum_version >= ssl.TLSVersion.TLSv1_2
    with pytest.raises(ListenAddressError, match="--tlscacert .*cannot load the CA"):
        tls_context(str(tmp_path / "key.pem"), str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    with pytest.raises(ListenAddressError, match="--tlscert .*cannot load the certificate"):
        tls_context(str(tmp_path / "cert.pem"), str(tmp_path / "nothing.pem"), str(tmp_path / "key.pem"))


def test_the_worker_command_line_takes_the_tls_flags():
    result = subprocess.run([sys.executable, "-m", "workers", "api", "--root", "/nonexistent", "--run", "/nonexistent",
                             "--tlsverify", "--tlscacert", "a", "--tlscert", "b", "--tlskey", "c", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "--tlsverify" in result.stdout
