"""Remote subscribers: the events socket also on tcp, with ZeroMQ's CURVE (issue 22).

Theory of operation
-------------------
::

    XPUB events.sock ── bound on ipc://<run>/events.sock  (NULL mechanism: the file's mode guards it)
                     └─ bound on tcp://ADDR:PORT          (CURVE server, ZAP domain "dockyard-events")
                              ▲
              ZAP handler (pyzmq's ThreadAuthenticator) ── AllowedKeys: <keys>/allowed/*.key

One XPUB serves both: libzmq copies a socket's options into each listener when it binds, so
setting CURVE after the ipc bind makes only the tcp endpoint encrypted and authenticated, and
every event is still sent once (no second socket, no second send). The tcp endpoint is
subscription-only by construction: the control socket never listens on tcp. A remote client
is a subscriber like a local one (the same high-water mark, the same cut-off when it reads
nothing, bus/connections.py); all remote connections together count as one client process
for the per-process bound.

*Keys.* ``<keys>/server.key`` (public) and ``server.key_secret`` (mode 0600), ZeroMQ's
certificate format (``zmq.auth``), made at the first start with ``--events-listen``. A client
is allowed when its public key is in ``<keys>/allowed/<name>.key``; the handler re-reads the
directory when its modification time changes, so ``dockyard events-keys add|rm`` take effect
for the next handshake without a restart. A refused handshake gets nothing: libzmq closes the
connection, and the refusal is counted.

*Resuming from a cursor, subscription-only* (bus/publisher.py): a subscription
``replay.<token>.<seq>.`` makes the daemon send, to that subscriber only (no one else
subscribes to the token), every journaled event after ``seq`` behind that topic, then an
envelope with topic ``replay.end`` whose data holds ``last_seq``, ``lost`` and the daemon's
identity. A remote subscriber has no control socket: this is its ``events.replay`` and its
``bus.sync`` at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import zmq
from zmq.utils import z85

__all__ = ["ZAP_DOMAIN", "AllowedKeys", "RemoteError", "check_endpoint", "listen", "load_key", "server_keys"]

ZAP_DOMAIN = "dockyard-events"
#: A key name: what ``events-keys add NAME`` files a client's public key under.
KEY_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class RemoteError(ValueError):
    """A remote endpoint or key that cannot be used; the message names it and the cause."""


def check_endpoint(endpoint: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` as (host, port). Raises RemoteError for anything else."""
    parts = urlsplit(endpoint)
    if parts.scheme != "tcp" or not parts.hostname or parts.path or parts.query:
        raise RemoteError(f"invalid events endpoint {endpoint!r}: expected tcp://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not port:
        raise RemoteError(f"invalid events endpoint {endpoint!r}: expected tcp://HOST:PORT with a port of 1-65535")
    return parts.hostname, port


def check_key_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= KEY_NAME_CHARS or name.startswith("."):
        raise RemoteError(f"invalid key name {name!r}: 1 to 64 of [A-Za-z0-9_.-], not starting with a dot")
    return name


def load_key(text_or_path: str | os.PathLike[str], *, secret: bool = False) -> bytes:
    """A CURVE key: a 40-character Z85 key itself, or a ZeroMQ certificate file (``.key``
    for a public key, ``.key_secret`` for a secret one). Raises RemoteError naming it."""
    value = os.fspath(text_or_path)
    if len(value) == 40 and not os.path.exists(value):
        key = value.encode()
    else:
        from zmq.auth import load_certificate

        try:
            public, secret_key = load_certificate(value)
        except (OSError, ValueError) as exc:
            raise RemoteError(f"cannot read the CURVE key {value}: {exc}") from None
        key = secret_key if secret else public
        if key is None:
            raise RemoteError(f"{value} holds no {'secret' if secret else 'public'} key")
    try:
        z85.decode(key)
    except (ValueError, KeyError):
        raise RemoteError(f"{value!r} is not a CURVE key (40 characters of Z85)") from None
    if len(key) != 40:
        raise RemoteError(f"{value!r} is not a CURVE key (40 characters of Z85)")
    return key


def server_keys(directory: Path) -> tuple[bytes, bytes]:
    """The daemon's key pair under ``directory``, made (secret file 0600) if missing."""
    import zmq.auth

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    public, secret = directory / "server.key", directory / "server.key_secret"
    if not secret.exists():
        staging = Path(tempfile.mkdtemp(dir=directory, prefix=".new-"))
        try:
            made_public, made_secret = zmq.auth.create_certificates(staging, "server")
            os.chmod(made_secret, 0o600)
            os.chmod(made_public, 0o644)
            os.replace(made_public, public)
            os.replace(made_secret, secret)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    public_key, secret_key = zmq.auth.load_certificate(secret)
    if secret_key is None:
        raise RemoteError(f"{secret} holds no secret key")
    return public_key, secret_key


class AllowedKeys:
    """The ZAP credentials provider: a client key is allowed when a ``*.key`` file of the
    allowed directory holds it. Re-read when the directory changes."""

    def __init__(self, directory: Path, stats: Any = None):
        self.directory = directory
        self.stats = stats  # a BusStats: its remote_refused counts the refusals
        self.refused = 0
        self.accepted = 0
        self._keys: frozenset[bytes] = frozenset()
        self._stamp: tuple[int, int] | None = None

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq's credentials-provider hook (called on the authenticator's thread)."""
        allowed = domain == ZAP_DOMAIN and key in self.keys()
        if allowed:
            self.accepted += 1
        else:
            self.refused += 1
            if self.stats is not None:
                self.stats.remote_refused += 1
        return allowed

    def keys(self) -> frozenset[bytes]:
        try:
            info = self.directory.stat()
            stamp = (info.st_mtime_ns, info.st_ino)
        except OSError:
            return frozenset()
        if stamp != self._stamp:
            self._keys = frozenset(key for _, key in list_keys(self.directory))
            self._stamp = stamp
        return self._keys


def list_keys(directory: Path) -> list[tuple[str, bytes]]:
    """(name, public key) of every readable ``*.key`` file in ``directory``, by name."""
    found = []
    try:
        paths = sorted(directory.glob("*.key"))
    except OSError:
        return []
    for path in paths:
        try:
            found.append((path.stem, load_key(path)))
        except RemoteError:
            continue
    return found


def add_key(directory: Path, name: str, public_key: str) -> Path:
    """File a client's public key (Z85 or certificate text) as ``<name>.key``."""
    check_key_name(name)
    key = _key_from_text(public_key)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".new-"))
    try:
        target = staging / f"{name}.key"
        target.write_text(f'#   dockyard: an allowed events client ({name})\nmetadata\ncurve\n'
                          f'    public-key = "{key.decode()}"\n')
        os.chmod(target, 0o644)
        os.replace(target, directory / f"{name}.key")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory / f"{name}.key"


def remove_key(directory: Path, name: str) -> bool:
    check_key_name(name)
    try:
        (directory / f"{name}.key").unlink()
    except FileNotFoundError:
        return False
    return True


def _key_from_text(text: str) -> bytes:
    text = text.strip()
    if len(text) == 40:
        return load_key(text)
    for line in text.splitlines():  # a certificate's text: public-key = "..."
        name, eq, value = line.strip().partition("=")
        if eq and name.strip() == "public-key":
            return load_key(value.strip().strip('"'))
    raise RemoteError("not a CURVE public key: give the 40-character key or a ZeroMQ certificate's text")


def listen(xpub: zmq.Socket, endpoint: str, keys_dir: Path, allowed: AllowedKeys) -> Any:
    """Bind ``xpub`` (already bound on ipc) on ``endpoint`` with CURVE and start the ZAP
    handler in its context; returns the authenticator (``stop()`` it after closing). Any
    address may listen: CURVE encrypts and the allowed keys authenticate.

    Raises:
        RemoteError: not tcp://HOST:PORT.
        zmq.ZMQError: the address cannot be bound.
    """
    check_endpoint(endpoint)
    from zmq.auth.thread import ThreadAuthenticator

    _, secret = server_keys(keys_dir)
    auth = ThreadAuthenticator(xpub.context)
    auth.start()
    try:
        auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=allowed)
        xpub.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        xpub.setsockopt(zmq.CURVE_SERVER, 1)
        xpub.setsockopt(zmq.CURVE_SECRETKEY, secret)
        xpub.bind(endpoint)
    except BaseException:
        auth.stop()
        raise
    return auth

