"""Tunables of the registry client, and the rule for plain HTTP. Pure."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from supervisor.registry.manifest import MANIFEST_LIMIT

USER_AGENT = "dockyard/0.1.0"


def is_loopback(registry: str) -> bool:
    host = registry
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Options:
    """Args:
    insecure_registries: hosts (``host[:port]``, or a bare host for every port) that may be
        reached over plain HTTP, or over HTTPS without certificate checks, as docker's
        ``--insecure-registry``. Loopback (localhost, 127.0.0.0/8, ::1) always may.
    manifest_limit: the largest manifest or index accepted, in bytes.
    max_redirects: redirects followed for one request before it is called a loop.
    max_concurrent: blobs transferred at the same time (docker: 3 down, 5 up).
    chunk_size: push blobs in PATCH chunks of this many bytes; None: one monolithic PUT.
    connect_timeout, read_timeout: seconds.
    """

    insecure_registries: frozenset[str] = field(default_factory=frozenset)
    manifest_limit: int = MANIFEST_LIMIT
    max_redirects: int = 10
    max_concurrent: int = 3
    chunk_size: int | None = None
    connect_timeout: float = 30.0
    read_timeout: float = 60.0
    user_agent: str = USER_AGENT

    def __post_init__(self) -> None:
        object.__setattr__(self, "insecure_registries", frozenset(self.insecure_registries))
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, not {self.chunk_size}")
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, not {self.max_concurrent}")

    def is_insecure(self, registry: str) -> bool:
        if is_loopback(registry) or registry in self.insecure_registries:
            return True
        host = registry.rpartition(":")[0] if registry.count(":") == 1 else registry
        return host in self.insecure_registries
