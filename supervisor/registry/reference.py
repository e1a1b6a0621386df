"""Image references, normalised as docker does (distribution's ``reference`` package).

    busybox                          docker.io/library/busybox:latest
    user/app:1                       docker.io/user/app:1
    localhost/app                    localhost/app:latest        (``localhost`` is a host)
    127.0.0.1:5000/base:1            127.0.0.1:5000/base:1       (a colon: host[:port])
    quay.io/org/app@sha256:<hex>     by digest (a tag beside a digest is kept, but the digest wins)

The first ``/``-separated component is a registry host when it contains a ``.`` or a ``:``,
is ``localhost``, or has an upper-case letter (docker's rule); otherwise the reference is
on Docker Hub, whose official images live under ``library/``. ``index.docker.io`` is the
same host as ``docker.io``. Pure: no I/O, no imports beyond the stdlib.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from supervisor.registry.errors import ReferenceError

DEFAULT_REGISTRY = "docker.io"
#: Where Docker Hub's registry API answers (docker.io itself serves a web site).
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[[0-9a-fA-F:]+\]"
DOMAIN = re.compile(rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?\Z")
PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
TAG = re.compile(r"^[\w][\w.-]{0,127}\Z", re.ASCII)
DIGEST = re.compile(r"^(?P<algorithm>sha256|sha512):(?P<hex>[0-9a-f]+)\Z")
DIGEST_HEX_LENGTH = {"sha256": 64, "sha512": 128}


def check_digest(value: str, what: str = "digest") -> str:
    """``value`` if it is ``sha256:<64 hex>`` or ``sha512:<128 hex>``, else ReferenceError."""
    match = DIGEST.match(value) if isinstance(value, str) else None
    if not match or len(match["hex"]) != DIGEST_HEX_LENGTH[match["algorithm"]]:
        raise ReferenceError(f"invalid {what} {value!r}: want sha256:<64 hex digits>", object=str(value))
    return value


@dataclass(frozen=True)
class Reference:
    """A normalised reference. ``registry`` is the host as the user names it (``docker.io``),
    ``repository`` the path in it (``library/busybox``)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``: the fully qualified repository."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host[:port] that serves the registry API for ``registry``."""
        return DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def target(self) -> str:
        """What to ask the registry for: the digest if there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def familiar(self) -> str:
        """The short form docker shows: ``busybox:latest``, ``user/app:1``,
        ``127.0.0.1:5000/base:1``."""
        name = self.name
        if self.registry == DEFAULT_REGISTRY:
            name = self.repository.removeprefix("library/")
        if self.tag:
            name += f":{self.tag}"
        if self.digest:
            name += f"@{self.digest}"
        return name

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, None, digest)


def split_registry(name: str) -> tuple[str, str]:
    """``name`` without tag or digest -> (registry, repository), by docker's rule."""
    first, slash, rest = name.partition("/")
    if not slash or not (any(c in first for c in ".:") or first == "localhost" or first.lower() != first):
        registry, repository = DEFAULT_REGISTRY, name
    else:
        registry, repository = first, rest
    if registry == "index.docker.io":
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


def parse(text: str, default_tag: str | None = DEFAULT_TAG) -> Reference:
    """Parse and normalise ``text``. Without tag or digest the tag is ``default_tag``.

    Raises:
        ReferenceError: the reference is malformed; the message says which part.
    """
    if not isinstance(text, str) or not text:
        raise ReferenceError("invalid reference: it is empty", object=str(text))
    if text != text.strip() or any(c.isspace() for c in text):
        raise ReferenceError(f"invalid reference {text!r}: it contains white space", object=text)
    remainder, at, digest = text.partition("@")
    if at:
        check_digest(digest, f"digest in reference {text!r}")
    tag = None
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not TAG.match(tag):
            raise ReferenceError(
                f"invalid reference {text!r}: tag {tag!r} must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
                object=text,
            )
    if not remainder:
        raise ReferenceError(f"invalid reference {text!r}: the name is empty", object=text)
    registry, repository = split_registry(remainder)
    if not DOMAIN.match(registry):
        raise ReferenceError(f"invalid reference {text!r}: {registry!r} is not a valid registry host", object=text)
    for component in repository.split("/"):
        if not PATH_COMPONENT.match(component):
            why = "must be lowercase" if component.lower() != component else "is not a valid name component"
            raise ReferenceError(f"invalid reference {text!r}: repository component {component!r} {why}", object=text)
    if len(f"{registry}/{repository}") > NAME_MAX:
        raise ReferenceError(f"invalid reference {text!r}: the name is longer than {NAME_MAX} characters", object=text)
    if tag is None and not at:
        tag = default_tag
    return Reference(registry, repository, tag, digest or None)


def normalise_registry(host: str) -> str:
    """A registry as the user names it in ``login`` (``https://`` and a trailing ``/`` are
    dropped; Docker Hub's aliases become ``docker.io``)."""
    host = host.strip()
    for prefix in ("https://", "http://"):
        host = host.removeprefix(prefix)
    host = host.rstrip("/")
    if host in ("index.docker.io", "registry-1.docker.io", "index.docker.io/v1", DEFAULT_REGISTRY):
        return DEFAULT_REGISTRY
    if not host or "/" in host or not DOMAIN.match(host):
        raise ReferenceError(f"invalid registry {host!r}: want HOST[:PORT]", object=host)
    return host
