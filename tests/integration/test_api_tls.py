"""The Engine API over TLS with client certificates (dockerd's --tlsverify): certificates made
here with the openssl CLI, a private daemon serving --api tcp://0.0.0.0:PORT, and clients on
127.0.0.1 only: the docker CLI (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), docker-py, and clients
without a certificate or with one of another CA, refused in the handshake."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess

import pytest

from tests.conftest import DOCKYARD, private_daemon
from tests.integration.test_api import wait_for_socket
from tests.tools import require

pytestmark = pytest.mark.integration

TIMEOUT = 60.0


def openssl(*args: str, cwd) -> None:
    require("openssl")
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr.decode()}"


def make_ca(directory, name: str) -> None:
    """``<name>-ca.pem`` and its key ``<name>-ca-key.pem`` in ``directory``."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} test CA",
            "-keyout", f"{name}-ca-key.pem", "-out", f"{name}-ca.pem", cwd=directory)


def make_certificate(directory, ca: str, name: str, extensions: str) -> None:
    """``<name>.pem`` and ``<name>-key.pem`` signed by the CA ``<ca>``."""
    (directory / f"{name}.ext").write_text(extensions + "\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}-key.pem",
            "-out", f"{name}.csr", cwd=directory)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}-ca.pem", "-CAkey", f"{ca}-ca-key.pem",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=directory)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """docker's file names: DOCKER_CERT_PATH holds ca.pem, cert.pem, key.pem of a client."""
    directory = tmp_path_factory.mktemp("tls")
    make_ca(directory, "good")
    make_ca(directory, "other")
    make_certificate(directory, "good", "server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    make_certificate(directory, "good", "client", "extendedKeyUsage=clientAuth")
    make_certificate(directory, "other", "stranger", "extendedKeyUsage=clientAuth")
    client = directory / "client-dir"
    client.mkdir()
    for source, target in (("good-ca.pem", "ca.pem"), ("client.pem", "cert.pem"), ("client-key.pem", "key.pem")):
        shutil.copy(directory / source, client / target)
    return directory


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory, busybox_tar, certificates):
    base = tmp_path_factory.mktemp("api-tls")
    port = free_port()
    with private_daemon(base, busybox_tar, "--api", f"tcp://0.0.0.0:{port}", "--tlsverify",
                        "--tlscacert", str(certificates / "good-ca.pem"), "--tlscert", str(certificates / "server.pem"),
                        "--tlskey", str(certificates / "server-key.pem")) as instance:
        instance.api_port = port  # type: ignore[attr-defined]
        wait_for_socket(instance.run_dir / "docker.sock")
        yield instance


def handshake(port: int, certificates, client: str | None) -> bytes:
    """A _ping over TLS on 127.0.0.1 with the client certificate ``client`` (None: none);
    the answer's first bytes, or raises the handshake's error."""
    context = ssl.create_default_context(cafile=str(certificates / "good-ca.pem"))
    if client is not None:
        context.load_cert_chain(certificates / f"{client}.pem", certificates / f"{client}-key.pem")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
            return tls.recv(100)


def test_the_docker_cli_with_docker_tls_verify_runs_a_container(tls_daemon, certificates):
    require("docker")
    env = {**os.environ, "DOCKER_HOST": f"tcp://127.0.0.1:{tls_daemon.api_port}", "DOCKER_TLS_VERIFY": "1",
           "DOCKER_CERT_PATH": str(certificates / "client-dir"), "DOCKER_CONFIG": str(tls_daemon.root)}
    ran = subprocess.run([shutil.which("docker"), "run", "--rm", "base", "echo", "over TLS"], capture_output=True,
                         timeout=TIMEOUT, env=env)
    assert (ran.returncode, ran.stdout) == (0, b"over TLS\n"), ran.stderr.decode()
    version = subprocess.run([shutil.which("docker"), "version", "--format", "{{.Server.APIVersion}}"],
                             capture_output=True, timeout=TIMEOUT, env=env)
    assert version.returncode == 0 and version.stdout.strip(), version.stderr.decode()


def test_docker_py_with_a_client_certificate(tls_daemon, certificates, monkeypatch):
    docker_py = pytest.importorskip("docker")
    # requests lets these override a session's own CA (psf/requests#3829): this machine sets them
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    tls = docker_py.tls.TLSConfig(client_cert=(str(certificates / "client.pem"), str(certificates / "client-key.pem")),
                                  ca_cert=str(certificates / "good-ca.pem"), verify=True)
    client = docker_py.DockerClient(base_url=f"https://127.0.0.1:{tls_daemon.api_port}", tls=tls, version="auto")
    try:
        assert client.ping() is True
        assert [image.tags for image in client.images.list() if image.tags] == [["base:latest"]]
    finally:
        client.close()


def test_a_client_without_a_certificate_or_with_another_ca_s_is_refused(tls_daemon, certificates):
    assert handshake(tls_daemon.api_port, certificates, "client").startswith(b"HTTP/1.1 200")
    for client in (None, "stranger"):
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            answer = handshake(tls_daemon.api_port, certificates, client)
            assert answer == b"", f"answered without a good certificate: {answer!r}"  # TLS 1.3: refused after
            raise ssl.SSLError("closed without an answer")
    with socket.create_connection(("127.0.0.1", tls_daemon.api_port), timeout=TIMEOUT) as plain:
        plain.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")  # no TLS at all
        assert not plain.recv(100).startswith(b"HTTP/1.1 200")
    # the unix socket is served as before
    assert tls_daemon.cli("info").returncode == 0
    wait_for_socket(tls_daemon.run_dir / "docker.sock")


@pytest.mark.parametrize("flags, message", [
    ([], b"refusing a non-loopback address without TLS"),
    (["--tlsverify"], b"--tlsverify needs --tlscacert FILE"),
    (["--tlscert", "/nonexistent.pem"], b"--tlscert without --tlsverify"),
    (["--tlsverify", "--tlscacert", "/nonexistent/ca.pem", "--tlscert", "/etc/hostname", "--tlskey", "/etc/hostname"],
     b"--tlscacert /nonexistent/ca.pem: cannot read the file"),
])
def test_a_non_loopback_address_needs_every_tls_flag(tmp_path, flags, message):
    result = subprocess.run([DOCKYARD, "daemon", "--root", str(tmp_path / "root"), "--run", str(tmp_path / "run"),
                             "--api", "tcp://0.0.0.0:2375", *flags], capture_output=True, timeout=TIMEOUT)
    assert result.returncode != 0 and message in result.stderr, result.stderr.decode()
    assert not (tmp_path / "run" / "control.sock").exists()
