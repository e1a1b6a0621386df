"""Authentication: ``WWW-Authenticate`` challenges, token scopes, and the credentials file.

Theory of operation (the distribution spec's token flow)::

    client                         registry                      token server (realm)
      │ GET /v2/                      │                                │
      │──────────────────────────────▶│                                │
      │ 401 WWW-Authenticate: Bearer realm=R,service=S                 │
      │◀──────────────────────────────│                                │
      │ GET R?service=S&scope=repository:NAME:pull   (Basic user:pass if we have them)
      │───────────────────────────────────────────────────────────────▶│
      │ 200 {"token": JWT, "expires_in": 300}                          │
      │◀───────────────────────────────────────────────────────────────│
      │ GET /v2/NAME/manifests/TAG  Authorization: Bearer JWT          │
      │──────────────────────────────▶│                                │

With ``Basic realm=...`` the credentials go on every request instead. A 401 without any
challenge is an error (there is nothing to answer). Tokens are cached per scope set.

Credentials live in ``<daemon root>/auth.json`` (the daemon pulls and pushes, so the file
is beside its state, not in a user's home), in docker's ``config.json`` shape::

    {"auths": {"127.0.0.1:5000": {"auth": base64("user:password")}}}

written atomically with mode 0600 in a directory only root can enter.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from logs.atomic import write_atomic
from supervisor.registry.errors import AuthError


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "bearer" or "basic"
    params: dict[str, str]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` header (RFC 7235) into its challenges.

    ``Bearer realm="https://a/token",service="reg",scope="repository:x:pull", Basic realm="r"``
    gives two challenges. Quoted strings may hold commas and backslash escapes.
    """
    challenges: list[Challenge] = []
    position, length = 0, len(header)

    def skip(chars: str) -> None:
        nonlocal position
        while position < length and header[position] in chars:
            position += 1

    def token() -> str:
        nonlocal position
        start = position
        while position < length and header[position] not in ' \t,="':
            position += 1
        return header[start:position]

    while position < length:
        skip(" \t,")
        scheme = token()
        if not scheme:
            if position < length:
                position += 1  # a stray character: skip it rather than loop
            continue
        params: dict[str, str] = {}
        while True:
            skip(" \t")
            mark = position
            skip(",")
            skip(" \t")
            key = token()
            skip(" \t")
            if not key or position >= length or header[position] != "=":
                position = mark  # not a parameter: the next challenge's scheme
                break
            position += 1
            skip(" \t")
            if position < length and header[position] == '"':
                position += 1
                value = []
                while position < length and header[position] != '"':
                    if header[position] == "\\" and position + 1 < length:
                        position += 1
                    value.append(header[position])
                    position += 1
                position += 1
                params[key.lower()] = "".join(value)
            else:
                params[key.lower()] = token()
        challenges.append(Challenge(scheme.lower(), params))
    return challenges


def repository_scope(repository: str, actions: tuple[str, ...]) -> str:
    return f"repository:{repository}:{','.join(actions)}"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic_header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


class CredentialStore:
    """The credentials file. Every method re-reads it, so a login seen by one client is
    seen by the next without a restart."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> dict:
        try:
            with open(self.path) as handle:
                document = json.load(handle)
        except FileNotFoundError:
            return {"auths": {}}
        except (OSError, ValueError) as exc:
            raise AuthError(f"cannot read the credentials file {self.path}: {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("auths", {}), dict):
            raise AuthError(f"cannot read the credentials file {self.path}: no 'auths' object")
        document.setdefault("auths", {})
        return document

    def get(self, registry: str) -> Credentials | None:
        entry = self._read()["auths"].get(registry)
        if not isinstance(entry, dict) or not isinstance(entry.get("auth"), str):
            return None
        try:
            username, colon, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise AuthError(f"the credentials file {self.path} has a malformed entry for {registry}", registry=registry) from None
        return Credentials(username, password) if colon else None

    def registries(self) -> list[str]:
        return sorted(self._read()["auths"])

    def save(self, registry: str, credentials: Credentials) -> None:
        document = self._read()
        token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
        document["auths"][registry] = {"auth": token}
        self._write(document)

    def remove(self, registry: str) -> bool:
        """Forget ``registry``; False when there was nothing to forget."""
        document = self._read()
        if registry not in document["auths"]:
            return False
        del document["auths"][registry]
        self._write(document)
        return True

    def _write(self, document: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.path, json.dumps(document, indent=1, sort_keys=True).encode(), durable=True, mode=0o600)
