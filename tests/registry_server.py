"""Registries for the registry client's tests, all on 127.0.0.1 and a free port:

- :class:`Registry`: Debian's ``docker-registry`` (distribution 2.8) with its storage in a
  temp dir, open, with htpasswd basic auth, or with token auth;
- :class:`TokenIssuer`: the token server that token auth points at, issuing JWTs (RS256,
  the certificate in the ``x5c`` header) signed by a test key the registry trusts;
- :class:`OCIImage`: builds an OCI image layout (busybox-static layer) to push;
- :class:`Misbehaving`: a small HTTP server that breaks the protocol in chosen ways.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import secrets
import signal
import socket
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlparse

from tests.tools import require

SERVICE = "dockyard-test-registry"
ISSUER = "dockyard-test-issuer"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- token issuer ----------------------------------------------------------------------------


class TokenIssuer:
    """``GET /token?service=S&scope=repository:NAME:ACTIONS`` with Basic auth -> a JWT that
    grants the scopes asked for, to a known user; anonymous requests get ``pull`` on
    repositories under ``public/`` only, and a wrong password gets 401."""

    def __init__(self, directory: Path, users: dict[str, str]):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.users = users
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = time.time()
        import datetime

        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime.datetime.fromtimestamp(now - 3600, datetime.timezone.utc))
            .not_valid_after(datetime.datetime.fromtimestamp(now + 86400, datetime.timezone.utc))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = directory / "token-cert.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._der = self.cert.public_bytes(serialization.Encoding.DER)
        self.requests: list[dict] = []
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                issuer._answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        query = parse_qs(urlparse(handler.path).query)
        user = None
        header = handler.headers.get("Authorization", "")
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.users.get(name) != password:
                self._send(handler, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                return
            user = name
        self.requests.append({"user": user, "scope": query.get("scope", []), "service": query.get("service")})
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = actions.split(",")
            granted = wanted if user else [a for a in wanted if a == "pull" and name.startswith("public/")]
            access.append({"type": kind, "name": name, "actions": granted})
        self._send(handler, 200, {"token": self.token(user or "", access), "expires_in": 300})

    def _send(self, handler: BaseHTTPRequestHandler, status: int, document: dict) -> None:
        body = json.dumps(document).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def token(self, subject: str, access: list[dict]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._der).decode()]}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300, "nbf": now - 60,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- docker-registry -------------------------------------------------------------------------


class Registry:
    """docker-registry on 127.0.0.1:<free port>; ``auth`` is None, "htpasswd" or "token"."""

    def __init__(self, directory: Path, auth: str | None = None, users: dict[str, str] | None = None):
        self.directory = directory
        self.auth = auth
        self.users = users or {}
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.issuer: TokenIssuer | None = None
        self.log_path = directory / "registry.log"

    def config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.directory / 'storage'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            f"  secret: {secrets.token_hex(16)}",
        ]
        if self.auth == "htpasswd":
            import bcrypt

            htpasswd = self.directory / "htpasswd"
            htpasswd.write_text("".join(
                f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
                for user, password in self.users.items()))
            lines += ["auth:", "  htpasswd:", "    realm: dockyard-test", f"    path: {htpasswd}"]
        elif self.auth == "token":
            self.issuer = TokenIssuer(self.directory, self.users)
            lines += ["auth:", "  token:", f"    realm: {self.issuer.realm}", f"    service: {SERVICE}",
                      f"    issuer: {ISSUER}", f"    rootcertbundle: {self.issuer.cert_path}"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 20.0) -> Registry:
        require("docker-registry")
        config_path = self.directory / "config.yml"
        config_path.write_text(self.config())
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(["docker-registry", "serve", str(config_path)], stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self.process.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.02)  # polls the listening socket itself, bounded by the deadline
        self.stop()
        raise RuntimeError(f"docker-registry not listening after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # by pid: the one we started
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.issuer is not None:
            self.issuer.close()


# --- OCI layouts to push ------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_of(files: dict[str, bytes], mtime: int = 0) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, payload in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(payload), 0o755, mtime
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def tar_of_directory(root: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(root.iterdir()):
            tar.add(entry, arcname=entry.name)
    return buffer.getvalue()


@dataclass
class Layer:
    tar: bytes
    compressed: bytes = b""

    def __post_init__(self):
        if not self.compressed:
            self.compressed = gzip.compress(self.tar, compresslevel=1, mtime=0)


@dataclass
class OCIImage:
    """An OCI image layout written to ``root``: layers (gzip), a config, a manifest and
    (for several platforms) an index, named ``tag`` in index.json."""

    root: Path
    blobs: dict[str, bytes] = field(default_factory=dict)

    def add_blob(self, data: bytes) -> dict:
        digest = sha256(data)
        self.blobs[digest] = data
        path = self.root / "blobs" / "sha256" / digest[7:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return {"digest": digest, "size": len(data)}

    def manifest(self, layers: list[Layer], architecture: str = "amd64", cmd: list[str] | None = None) -> dict:
        config = {
            "architecture": architecture, "os": "linux",
            "config": {"Cmd": cmd or ["/bin/sh"], "Env": ["PATH=/bin:/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer.tar) for layer in layers]},
        }
        config_descriptor = {"mediaType": "application/vnd.oci.image.config.v1+json",
                             **self.add_blob(json.dumps(config, sort_keys=True).encode())}
        manifest = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_descriptor,
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **self.add_blob(layer.compressed)}
                       for layer in layers],
        }
        return {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                **self.add_blob(json.dumps(manifest).encode()),
                "platform": {"os": "linux", "architecture": architecture}}

    def index(self, manifests: list[dict]) -> dict:
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
        return {"mediaType": "application/vnd.oci.image.index.v1+json", **self.add_blob(json.dumps(index).encode())}

    def write(self, root_descriptor: dict, tag: str) -> None:
        (self.root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        entry = {k: v for k, v in root_descriptor.items() if k != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


# --- a misbehaving registry -------------------------------------------------------------------


Behaviour = Callable[[BaseHTTPRequestHandler], None]


class Misbehaving:
    """A registry impostor: ``routes`` maps (method, path) to a function that answers.
    Unknown paths get 404. ``GET /v2/`` answers 200 unless a route says otherwise."""

    def __init__(self):
        self.routes: dict[tuple[str, str], Behaviour] = {}
        self.hits: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                path = urlparse(self.path).path
                outer.hits.append((self.command, path))
                behaviour = outer.routes.get((self.command, path))
                if behaviour is None and path == "/v2/":
                    behaviour = respond(200, b"{}")
                if behaviour is None:
                    behaviour = respond(404, b'{"errors":[{"code":"NOT_FOUND","message":"nope"}]}')
                behaviour(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def respond(status: int, body: bytes = b"", headers: dict[str, str] | None = None,
            content_length: int | None = None, close_after: int | None = None) -> Behaviour:
    """An answer: ``content_length`` may lie; ``close_after`` sends only that many body
    bytes and then drops the connection."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        if close_after is not None:
            handler.send_header("Connection", "close")
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body if close_after is None else body[:close_after])
        handler.wfile.flush()
        if close_after is not None:
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)

    return answer
