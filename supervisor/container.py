"""A container as the supervisor knows it: its record (what is persisted) and, while it runs,
its process and the tasks that watch it. Lifecycle operations live in :mod:`supervisor.lifecycle`;
Linux mechanics live in :mod:`supervisor.runtime`; this module knows neither."""

from __future__ import annotations

import random
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import trio

from supervisor.health import HealthConfig, HealthState
from supervisor.spec import ContainerSpec
from supervisor.state import Status, advance

ZERO_TIME = "0001-01-01T00:00:00Z"
#: The container record's format. A daemon leaves a record of a later version alone (a
#: downgrade of dockyard: lifecycle/reconcile.py); a record without one is version 1.
RECORD_VERSION = 1

_ADJECTIVES = (
    "brave calm eager fond gentle happy jolly keen lucid merry nimble proud quiet "
    "rapid sharp steady swift tidy vivid witty bold bright clever daring"
).split()
_NAMES = (
    "babbage bohr curie darwin dijkstra einstein euler fermi galileo hopper knuth "
    "lamport lovelace maxwell newton noether pascal ritchie shannon thompson turing"
).split()


def status_running(container: Container) -> bool:
    """Its process exists (running or paused)."""
    return container.status.running


def random_name() -> str:
    return f"{random.choice(_ADJECTIVES)}_{random.choice(_NAMES)}"


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Attachment(Protocol):
    """A client that receives a container's output as it is produced (``run`` without -d)."""

    async def send(self, stream: str, data: bytes) -> None: ...


@dataclass
class Resolved:
    """What the container runs: the spec merged with its image's config."""

    argv: list[str]
    env: list[str]
    workdir: str
    user: str
    hostname: str
    #: The image's labels with the container's over them (docker's merge), as inspect shows them.
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class Container:
    id: str
    name: str
    spec: ContainerSpec
    image_id: str
    image_ref: str
    resolved: Resolved
    directory: Path
    layers: list[str]
    created: str = field(default_factory=now_rfc3339)
    status: Status = Status.CREATED
    pid: int = 0
    start_time: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    restart_count: int = 0
    oom_killed: bool = False
    user_stopped: bool = False  # the user's stop or kill ended the last run (restart policies)
    restart_attempt: int = 0  # backoff attempt of the last policy restart (0: none since start)
    healthcheck: HealthConfig | None = None  # the effective one (flags over the image's)
    log_dropped_lines: int = 0  # output lost in non-blocking log mode (supervisor/logbuffer.py)
    log_dropped_bytes: int = 0
    # Resolved at create (supervisor/lifecycle/mounts.py): binds, volumes (with their names), tmpfs.
    mounts: list[dict[str, Any]] = field(default_factory=list)
    # --userns-remap: the mapping its upper dir was made for (supervisor.userns.IdMapping.to_map), or None.
    id_mapping: dict[str, Any] | None = None
    # Runtime only, never persisted.
    process: Any = None
    cgroup: Any = None
    stopping: bool = False
    thawing: trio.Event | None = None  # set once a thaw under way ends (lifecycle/pausing.py)
    stats_reader: Any = None  # supervisor.stats.StatsReader while it runs
    last_sample: Any = None  # the sampler's last supervisor.stats.Sample
    attachments: list[Attachment] = field(default_factory=list)
    pending_restart: Any = None  # supervisor.services.restarts.PendingRestart while a policy restart waits
    health: HealthState | None = None  # since the last start, when it has a health check
    network: Any = None  # supervisor.network.manager.Attachment while it runs
    unmounted: trio.Event | None = None  # set once the last run's overlay is unmounted
    changed: trio.Event = field(default_factory=trio.Event)
    lock: trio.Lock = field(default_factory=trio.Lock)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def upper(self) -> Path:
        return self.directory / "upper"

    @property
    def work(self) -> Path:
        return self.directory / "work"

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs"

    def move(self, event: str) -> None:
        """Advance the state machine and wake everyone waiting on a change."""
        self.status = advance(self.name, self.status, event)
        self.changed.set()
        self.changed = trio.Event()

    # --- persistence ------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "id": self.id,
            "name": self.name,
            "spec": self.spec.to_map(),
            "image_id": self.image_id,
            "image_ref": self.image_ref,
            "resolved": self.resolved.__dict__,
            "directory": str(self.directory),
            "layers": self.layers,
            "created": self.created,
            "status": self.status.value,
            "pid": self.pid,
            "start_time": self.start_time,
            "exit_code": self.exit_code,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "restart_count": self.restart_count,
            "oom_killed": self.oom_killed,
            "user_stopped": self.user_stopped,
            "restart_attempt": self.restart_attempt,
            "healthcheck": self.healthcheck.to_map() if self.healthcheck else None,
            "log_dropped_lines": self.log_dropped_lines,
            "log_dropped_bytes": self.log_dropped_bytes,
            "mounts": self.mounts,
            "id_mapping": self.id_mapping,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Container:
        return cls(
            id=record["id"],
            name=record["name"],
            spec=ContainerSpec.from_map(record["spec"]),
            image_id=record["image_id"],
            image_ref=record["image_ref"],
            resolved=Resolved(**record["resolved"]),
            directory=Path(record["directory"]),
            layers=list(record["layers"]),
            created=record["created"],
            status=Status(record["status"]),
            pid=record["pid"],
            start_time=record["start_time"],
            exit_code=record["exit_code"],
            error=record["error"],
            started_at=record["started_at"],
            finished_at=record["finished_at"],
            restart_count=record.get("restart_count", 0),
            oom_killed=record.get("oom_killed", False),
            user_stopped=record.get("user_stopped", False),
            restart_attempt=record.get("restart_attempt", 0),
            healthcheck=HealthConfig.from_map(record["healthcheck"]) if record.get("healthcheck") else None,
            log_dropped_lines=record.get("log_dropped_lines", 0),
            log_dropped_bytes=record.get("log_dropped_bytes", 0),
            mounts=list(record.get("mounts", [])),
            id_mapping=record.get("id_mapping"),
        )

    # --- views ------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """One row of ``ps``."""
        return {
            "id": self.id,
            "name": self.name,
            "image": self.image_ref,
            "image_id": self.image_id,
            "command": shlex.join(self.resolved.argv),
            "created": self.created,
            "status": self.status.value,
            "exit_code": self.exit_code,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "restart_policy": self.spec.restart,
            "restart_count": self.restart_count,
            "restarting": self.pending_restart is not None,
            "health": self.health.status if self.health is not None and status_running(self) else "",
            "ports": _ports_column(self),
            "labels": dict(self.resolved.labels),
            "mounts": [mount.get("name") or mount.get("source", "") for mount in self.mounts],
            "networks": _networks(self.spec.network),
        }

    def filter_subject(self) -> dict[str, Any]:
        """What ``ps --filter`` matches (supervisor/filters.py): docker's state, the labels, the
        image, the volumes (names, bind sources and targets), the networks, the health."""
        return {
            "id": self.id,
            "name": self.name,
            "labels": self.resolved.labels,
            "state": "restarting" if self.pending_restart is not None else self.status.value,
            "started": self.started_at != ZERO_TIME,
            "exit_code": self.exit_code,
            "image_id": self.image_id,
            "created": self.created,
            "volumes": {mount.get("name") or mount.get("source", "") for mount in self.mounts}
                       | {mount["target"] for mount in self.mounts},
            "networks": _networks(self.spec.network),
            "health": self.health.status if self.health is not None else "",
        }

    def inspect(self) -> dict[str, Any]:
        """The container in the shape of ``docker inspect``, so existing tools can read it."""
        status = self.status
        restarting = self.pending_restart is not None
        return {
            "Id": self.id,
            "Created": self.created,
            "Path": self.resolved.argv[0] if self.resolved.argv else "",
            "Args": self.resolved.argv[1:],
            "State": {
                "Status": "restarting" if restarting else status.value,
                "Running": status.running,
                "Paused": status is Status.PAUSED,
                "Restarting": restarting,
                "OOMKilled": self.oom_killed,
                "Dead": status is Status.DEAD,
                "Pid": self.pid if status.running else 0,
                "ExitCode": self.exit_code,
                "Error": self.error,
                "StartedAt": self.started_at,
                "FinishedAt": self.finished_at,
                **({"Health": self.health.docker()} if self.health is not None else {}),
                "LogDropped": {"Lines": self.log_dropped_lines, "Bytes": self.log_dropped_bytes},
            },
            "Image": f"sha256:{self.image_id}",
            "Name": f"/{self.name}",
            "RestartCount": self.restart_count,
            # dockyard's own: what the monitor needs to apply restart policies (docker keeps
            # these in its config.v2.json).
            "Dockyard": {"UserStopped": self.user_stopped, "RestartAttempt": self.restart_attempt},
            "Driver": "overlay",
            "Config": {
                "Hostname": self.resolved.hostname,
                "User": self.resolved.user,
                "Env": self.resolved.env,
                "Cmd": list(self.spec.cmd) or None,
                "Image": self.image_ref,
                "WorkingDir": self.resolved.workdir,
                "Labels": dict(self.resolved.labels),
                "StopSignal": str(self.spec.stop_signal),
                "StopTimeout": self.spec.stop_timeout,
                **({"Healthcheck": self.healthcheck.docker()} if self.healthcheck else {}),
                "Tty": self.spec.tty,
                "OpenStdin": self.spec.open_stdin,
            },
            "HostConfig": {
                "AutoRemove": self.spec.auto_remove,
                "CgroupnsMode": "private",  # every container has its own cgroup namespace (runtime/namespaces.py)
                "UTSMode": self.spec.uts,
                **({"Init": self.spec.init} if self.spec.init is not None else {}),
                "RestartPolicy": self.spec.restart_policy.host_config(),
                "NetworkMode": self.spec.network,
                "PortBindings": _port_bindings(self.spec.publish),
                "PublishAllPorts": self.spec.publish_all,
                "ExtraHosts": list(self.spec.add_host) or None,
                "Dns": list(self.spec.dns),
                **_security_host_config(self.spec),
                **self.spec.resources.host_config(),
                "LogConfig": {"Type": "dockyard", "Config": {k: str(v) for k, v in self.spec.log_options.to_map().items()}},
                **_mounts_host_config(self),
                **_limits_host_config(self),
            },
            "Mounts": _mounts(self),
            "NetworkSettings": _network_settings(self),
            "GraphDriver": {
                "Name": "overlay",
                "Data": {
                    "LowerDir": ":".join(self.layers),
                    "UpperDir": str(self.upper),
                    "WorkDir": str(self.work),
                    "MergedDir": str(self.rootfs),
                },
            },
        }


def _security_host_config(spec: Any) -> dict[str, Any]:
    """The security fields of docker's HostConfig (docs/security.md)."""
    return {
        "CapAdd": list(spec.cap_add) or None,
        "CapDrop": list(spec.cap_drop) or None,
        "Privileged": spec.privileged,
        "SecurityOpt": list(spec.security_opt) or None,
        "GroupAdd": list(spec.group_add) or None,
        "Sysctls": dict(entry.split("=", 1) for entry in spec.sysctls) or None,
        "UsernsMode": spec.userns_mode,
    }


def _mounts_host_config(container: Container) -> dict[str, Any]:
    from supervisor.mounts import host_config

    return host_config(container.spec)


def _limits_host_config(container: Container) -> dict[str, Any]:
    from supervisor.ulimits import DEFAULT_SHM_SIZE, parse_ulimit

    limits = [parse_ulimit(entry) for entry in container.spec.ulimits]
    return {"ShmSize": container.spec.shm_size or DEFAULT_SHM_SIZE,
            "Ulimits": [{"Name": name, "Soft": soft, "Hard": hard} for name, soft, hard in limits] or None}


def _mounts(container: Container) -> list[dict[str, Any]]:
    from supervisor.mounts import inspect_mounts

    return inspect_mounts(container.mounts)


def _network_settings(container: Container) -> dict[str, Any]:
    if container.network is not None and container.status.running:
        settings = container.network.settings()
    else:
        settings = {"Bridge": "", "IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": "", "Ports": {},
                    "Networks": {}}
    settings["Networks"] = configured_networks(container.spec, settings["Networks"])
    return settings


#: docker's EndpointSettings of a network a container is on but not attached to now (it is not running).
_BLANK_ENDPOINT = {"IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "", "NetworkID": "",
                   "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "",
                   "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DNSNames": None}


def configured_networks(spec: Any, attached: dict[str, Any]) -> dict[str, Any]:
    """docker's NetworkSettings.Networks: every network the spec puts the container on (its
    mode, then its ``endpoints``), attached ones as they are, the others blank (a stopped
    container, as docker shows it); ``IPAMConfig`` holds the addresses asked for (``--ip``)."""
    mode = spec.network
    names = [] if mode.startswith("container:") else [mode] if mode in ("bridge", "host", "none") else []
    names += [name for name in spec.endpoints if name not in names]
    networks: dict[str, Any] = {}
    for name in names:
        config = spec.endpoints.get(name) or {}
        entry = dict(attached.get(name) or {**_BLANK_ENDPOINT, "Aliases": list(config.get("aliases") or []) or None})
        asked = {key: config[field] for key, field in (("IPv4Address", "ipv4"), ("IPv6Address", "ipv6"))
                 if config.get(field)}
        entry["IPAMConfig"] = asked or None
        networks[name] = entry
    for name, entry in attached.items():
        networks.setdefault(name, entry)
    return networks


def _port_bindings(publish: tuple[str, ...]) -> dict[str, list[dict[str, str]]]:
    from supervisor.network.ports import parse_publish

    bindings: dict[str, list[dict[str, str]]] = {}
    for mapping in (mapping for entry in publish for mapping in parse_publish(entry)):
        host_port = str(mapping.host_port or "") + (f"-{mapping.host_port_end}" if mapping.host_port_end else "")
        bindings.setdefault(mapping.key, []).append({"HostIp": mapping.host_ip, "HostPort": host_port})
    return bindings


def _networks(mode: str) -> list[str]:
    """The networks ps shows and ``--filter network=`` matches: the mode's name (none for
    ``container:NAME``, which shares another's)."""
    return [] if mode.startswith("container:") else [mode]


def _ports_column(container: Container) -> str:
    """ps's PORTS, as docker: ``127.0.0.1:8080->80/tcp, 81/udp``."""
    if container.network is None or not container.status.running:
        return ""
    return ", ".join(f"{m.host(port)}->{m.key}" for m, port in container.network.ports)
