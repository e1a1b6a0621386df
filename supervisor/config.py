"""Where the daemon keeps its state and sockets, and its tunables. Every path is a parameter
so that tests and benchmarks run private daemons side by side."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ROOT = "/var/lib/dockyard"
DEFAULT_RUN = "/run/dockyard"
#: Processes a container may have at once when it sets no --pids-limit (--default-pids-limit).
DEFAULT_PIDS_LIMIT = 4096


def default_root() -> Path:
    return Path(os.environ.get("DOCKYARD_ROOT") or DEFAULT_ROOT)


def default_run_dir() -> Path:
    return Path(os.environ.get("DOCKYARD_RUN") or DEFAULT_RUN)


@dataclass(frozen=True)
class Config:
    """Args:
    root: persistent state: containers, images, the event journal.
    run_dir: runtime files: the bus sockets (control.sock, events.sock).
    cgroup_root: where the host's cgroup hierarchies are mounted.
    cgroup_parent: the cgroup that holds every container of this daemon.
    journal_events: how many events the persisted journal keeps for `events --since`.
    shutdown_timeout: the most a daemon shutdown waits for containers to stop, beyond
        each container's own stop timeout.
    python: the interpreter that runs the container init stage.
    stats_interval: seconds between two samples of every running container's cgroup
        (``stats.<id>`` events); 0 turns the sampler off.
    insecure_registries: registries (``host[:port]``) reached over plain HTTP or unverified
        TLS, as docker's ``--insecure-registry``; loopback registries always are.
    default_pids_limit: the pids limit given at create to a container without its own
        ``--pids-limit`` (podman's default is 2048; docker has none); -1 for none.
    max_connections: connections per bus socket, at most (a quarter of it per client
        process); never more than a quarter of the open-file limit (docs/events.md, "Bounds").
    max_requests_in_flight: requests of one client without a reply, at most; the next one
        gets a ``too_many_requests`` error reply.
    subscriber_queue_bytes: a subscriber of the event socket that reads nothing while this
        many bytes of events are published is disconnected.
    default_ulimits: ``NAME=SOFT[:HARD]`` limits given at create to a container that sets no
        ``--ulimit`` of that name (docker's ``--default-ulimit``).
    init: give every container created without ``init`` set an init as pid 1 (docker's
        ``dockerd --init``).
    init_path: the init binary of ``--init`` (docker's ``dockerd --init-path``); empty:
        ``docker-init`` or ``tini-static`` from the PATH.
    userns_remap: ``default``, ``USER[:GROUP]`` or "" (none): containers get a user namespace
        that maps their ids to the user's subordinate ids (docker's ``--userns-remap``;
        supervisor/userns.py, docs/security.md).
    subuid_file, subgid_file: where the subordinate ids are read (and, for ``default``,
        added): /etc/subuid and /etc/subgid, a test's own files otherwise.
    userns_layers: how image layers are given under the mapping: ``auto`` (idmapped mounts
        where the kernel takes them on overlay, else chowned copies), ``idmapped`` (or refuse
        to start), ``copy`` (chowned copies, once per mapping and layer).
    live_restore: containers outlive the supervisor (docs/architecture.md, "Live restore"):
        they are launched through the keeper, left running when it stops, and adopted
        again by the next one. ``dockyard daemon`` turns it on by default; off, a stop stops them.
    events_listen: ``tcp://ADDR:PORT``: the events socket there too, for remote subscribers
        with CURVE keys (bus/remote.py; keys under ``events_keys_dir``); None: unix only.
    """

    root: Path = field(default_factory=default_root)
    run_dir: Path = field(default_factory=default_run_dir)
    cgroup_root: Path = Path("/sys/fs/cgroup")
    cgroup_parent: str = "dockyard"
    journal_events: int = 10_000
    shutdown_timeout: float = 30.0
    python: str = sys.executable
    stats_interval: float = 1.0
    workers: tuple[str, ...] | None = None
    insecure_registries: tuple[str, ...] = ()
    bridge_name: str = "dockyard0"  # the daemon's bridge (docs/network.md)
    bridge_subnet: str = "172.31.0.0/16"
    ip_masq: bool = False  # a MASQUERADE rule for the subnet while the daemon runs
    userland_proxy: bool = False  # published ports through the proxy, not DNAT (docs/network.md)
    default_pids_limit: int = DEFAULT_PIDS_LIMIT
    max_connections: int = 4_096
    max_requests_in_flight: int = 1_024
    subscriber_queue_bytes: int = 8 << 20
    default_ulimits: tuple[str, ...] = ()
    live_restore: bool = False
    #: More addresses for the Engine API worker (``tcp://127.0.0.1:PORT``; docs/api.md).
    api_addresses: tuple[str, ...] = ()
    #: ``--tlsverify``: ``(cacert, cert, key)``, the API's TCP addresses served over TLS with
    #: client certificates signed by that CA (docs/api.md, "TLS"); empty: no TLS.
    api_tls: tuple[str, ...] = ()
    init: bool = False
    init_path: str = ""
    userns_remap: str = ""
    subuid_file: str = "/etc/subuid"
    subgid_file: str = "/etc/subgid"
    userns_layers: str = "auto"
    events_listen: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).absolute())
        object.__setattr__(self, "run_dir", Path(self.run_dir).absolute())
        object.__setattr__(self, "cgroup_root", Path(self.cgroup_root))
        if self.workers is not None:
            from workers import WORKERS

            unknown = [name for name in self.workers if name not in WORKERS]
            if unknown:
                known = ", ".join(sorted(WORKERS)) or "none"
                raise ValueError(f"unknown worker {', '.join(unknown)} (known: {known})")
            object.__setattr__(self, "workers", tuple(self.workers))
        from supervisor.network import BRIDGE_NAME

        if not BRIDGE_NAME.match(self.bridge_name):
            raise ValueError(f"invalid bridge name {self.bridge_name!r}: at most 15 of [a-zA-Z0-9_.-]")
        import ipaddress

        try:
            subnet = ipaddress.IPv4Network(self.bridge_subnet, strict=False)
        except ValueError as exc:
            raise ValueError(f"invalid bridge subnet {self.bridge_subnet!r}: {exc}") from None
        if subnet.prefixlen > 30:
            raise ValueError(f"invalid bridge subnet {self.bridge_subnet!r}: at most /30")
        if type(self.default_pids_limit) is not int or not (self.default_pids_limit == -1 or self.default_pids_limit > 0):
            raise ValueError(f"the default pids limit must be a positive number of processes, or -1 for none, "
                             f"not {self.default_pids_limit!r}")
        for name in ("max_connections", "max_requests_in_flight", "subscriber_queue_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")
        if isinstance(self.journal_events, bool) or not isinstance(self.journal_events, int) or self.journal_events < 2:
            raise ValueError(f"--events-journal must be a whole number >= 2, not {self.journal_events!r}")
        from supervisor.ulimits import LimitError, parse_ulimit

        object.__setattr__(self, "default_ulimits", tuple(self.default_ulimits))
        for entry in self.default_ulimits:
            try:
                parse_ulimit(entry)
            except LimitError as exc:
                raise ValueError(f"--default-ulimit: {exc.message}") from None
        object.__setattr__(self, "api_addresses", tuple(self.api_addresses))
        object.__setattr__(self, "api_tls", tuple(self.api_tls))
        if self.api_tls:
            check_api_tls(*self.api_tls)
        for address in self.api_addresses:
            check_api_address(address, tls=bool(self.api_tls))
        if self.init_path and not str(self.init_path).startswith("/"):
            raise ValueError(f"--init-path must be an absolute path, not {self.init_path!r}")
        if self.userns_layers not in ("auto", "idmapped", "copy"):
            raise ValueError(f"--userns-layers must be auto, idmapped or copy, not {self.userns_layers!r}")
        if not self.stats_interval >= 0:
            raise ValueError(f"stats_interval must be >= 0 seconds, not {self.stats_interval!r}")

    @property
    def worker_names(self) -> tuple[str, ...]:
        from workers import WORKERS

        return tuple(WORKERS) if self.workers is None else self.workers

    @property
    def containers_dir(self) -> Path:
        return self.root / "containers"

    @property
    def events_keys_dir(self) -> Path:
        """The CURVE keys of remote event subscribers: the daemon's pair, ``allowed/``."""
        return self.root / "events-keys"

    @property
    def journal_dir(self) -> Path:
        return self.root / "journal"


def check_api_address(address: str, tls: bool = False) -> None:
    """An ``--api`` address: ``tcp://HOST:PORT``, or ``unix:///PATH``; anything else is refused.
    A TCP address that is not loopback needs ``tls`` (``--tlsverify``): the API gives root on
    the host to whoever reaches it.

    Raises:
        ValueError: naming the address and why.
    """
    import ipaddress

    if address.startswith("unix://"):
        if not address.removeprefix("unix://").startswith("/"):
            raise ValueError(f"--api {address}: a unix socket needs an absolute path")
        return
    if not address.startswith("tcp://"):
        raise ValueError(f"--api {address}: use tcp://127.0.0.1:PORT or unix:///PATH")
    host, _, port = address.removeprefix("tcp://").rstrip("/").rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--api {address}: the port must be a number from 1 to 65535")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        if tls:
            raise ValueError(f"--api {address}: the host must be an IP address (0.0.0.0 for every one)") from None
        loopback = False
    if not loopback and not tls:
        raise ValueError(
            f"--api {address}: refusing a non-loopback address without TLS: the Engine API gives root on this "
            "host to whoever reaches it; serve it with client certificates (--tlsverify --tlscacert FILE "
            "--tlscert FILE --tlskey FILE, as dockerd), or use 127.0.0.1 (or ::1), or the unix socket")


def check_api_tls(cacert: str = "", cert: str = "", key: str = "", *extra: str) -> None:
    """``--tlsverify``'s three files: each given and readable.

    Raises:
        ValueError: naming the flag and the file.
    """
    if extra:
        raise ValueError("api_tls is (cacert, cert, key)")
    for flag, path in (("--tlscacert", cacert), ("--tlscert", cert), ("--tlskey", key)):
        if not path:
            raise ValueError(f"--tlsverify needs {flag} FILE (the CA of the clients' certificates, the "
                             "server's certificate and its key)")
        if not os.access(path, os.R_OK):
            raise ValueError(f"{flag} {path}: cannot read the file")
