"""Container specs: what a user asked for, validated once, on construction.

A :class:`ContainerSpec` is frozen: every later stage (store, runtime, inspect) can trust it.
``from_map`` is the door from the bus: unknown keys and wrong types are refused with an
:class:`~supervisor.errors.InvalidArgument` that names the field.
"""

from __future__ import annotations

import re
import signal
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from logs.errors import InvalidLogOption
from logs.options import LogOptions
from supervisor.errors import InvalidArgument
from supervisor.resources import Resources
from supervisor.restart import RestartPolicy

NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+\Z")
HOSTNAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,62})\Z")
USER = re.compile(r"^[a-zA-Z0-9_.-]+(:[a-zA-Z0-9_.-]+)?\Z")
ENV_KEY = re.compile(r"^[^=\x00]+\Z")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_STOP_TIMEOUT = 10


def parse_signal(value: str | int) -> int:
    """``9``, ``KILL`` or ``SIGKILL`` to 9; raises InvalidArgument for anything else."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        number = int(value)
        if 0 < number < signal.NSIG:
            return number
        raise InvalidArgument(f"invalid signal {value!r}: out of range 1..{signal.NSIG - 1}")
    name = str(value).upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidArgument(f"invalid signal {value!r}: no such signal") from None


@dataclass(frozen=True)
class ContainerSpec:
    """What to run. Takes what a Python caller naturally passes and keeps it in the frozen
    spec's own types: a list of strings for ``cmd``, ``env``, ``entrypoint``, ``publish``,
    ``add_host``, ``dns``, ``volumes``, ``mounts``, ``tmpfs``, ``volumes_from`` and ``ulimits``
    (kept as a tuple); ``"64m"`` for ``shm_size`` (kept in bytes); a map for ``env`` (``{"A": "1"}``, kept as
    ``("A=1",)``), ``resources`` (``{"memory": "64m"}``, as :meth:`Resources.from_map`) and
    ``log_options`` (``{"max-size": "10m"}``, as :meth:`LogOptions.from_map`); a signal name
    for ``stop_signal``. Anything else is refused with an InvalidArgument that names the field
    and what it takes.
    """

    image: str
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    name: str = ""
    auto_remove: bool = False
    stop_timeout: int = DEFAULT_STOP_TIMEOUT
    stop_signal: int = int(signal.SIGTERM)
    resources: Resources = Resources()
    restart: str = "no"  # restart policy: no, on-failure[:N], always, unless-stopped
    # The --health-* flags the user gave (HealthConfig fields; test ["NONE"]: --no-healthcheck),
    # merged with the image's HEALTHCHECK at create (supervisor/health.py).
    healthcheck: dict[str, Any] | None = None
    tty: bool = False  # -t: a pseudo-terminal as its stdio (docs/interactive.md)
    open_stdin: bool = False  # -i: its stdin is a pipe (or the terminal) clients can write to
    #: None keeps the image's ENTRYPOINT; () resets it (``--entrypoint ""``), as docker.
    entrypoint: tuple[str, ...] | None = None
    log_options: LogOptions = LogOptions()
    # Networking (supervisor/network/, docs/network.md).
    network: str = "bridge"  # bridge, none, host, container:NAME or a user-defined network's name
    publish: tuple[str, ...] = ()  # -p [HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp]
    publish_all: bool = False  # -P: the image's exposed ports on random host ports
    add_host: tuple[str, ...] = ()  # --add-host HOST:IP
    dns: tuple[str, ...] = ()  # --dns IP
    dns_search: tuple[str, ...] = ()  # --dns-search DOMAIN
    dns_option: tuple[str, ...] = ()  # --dns-option OPTION
    # The user-defined networks it is on, in order (docker's EndpointsConfig; the first is
    # `network` when that names one): {name: {aliases: [..], ipv4: "", ipv6: ""}}.
    endpoints: dict[str, Any] = field(default_factory=dict, hash=False)
    # Security (supervisor/privileges.py, docs/security.md).
    cap_add: tuple[str, ...] = ()  # CAP_NAME or ALL, normalised
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    security_opt: tuple[str, ...] = ()  # seccomp=unconfined|<profile JSON>, no-new-privileges[=bool]
    group_add: tuple[str, ...] = ()  # group names or ids
    sysctls: tuple[str, ...] = ()  # KEY=VALUE, namespaced keys only (a map is accepted too)
    userns_mode: str = ""  # "host": no user namespace under the daemon's --userns-remap (docker's --userns)
    uts: str = ""  # "host": the host's UTS namespace, its hostname (docker's --uts); "": one of its own
    # Volumes and mounts (supervisor/mounts.py parses them, docs/volumes.md): the flags as given.
    volumes: tuple[str, ...] = ()  # -v HOST:CONTAINER[:OPTS], NAME:CONTAINER[:OPTS], CONTAINER
    mounts: tuple[str, ...] = ()  # --mount type=...,source=...,target=...
    tmpfs: tuple[str, ...] = ()  # --tmpfs PATH[:OPTIONS]
    volumes_from: tuple[str, ...] = ()  # --volumes-from CONTAINER[:ro|rw]
    read_only: bool = False  # --read-only: the root filesystem read-only
    # Limits real images need (supervisor/ulimits.py): --ulimit NAME=SOFT[:HARD], --shm-size (bytes; 0: 64m).
    ulimits: tuple[str, ...] = ()
    shm_size: int = 0
    # Labels (-l/--label, --label-file; supervisor/labels.py): KEY=VALUE, later ones win; a map is
    # accepted too. The image's labels are merged under them at create (Resolved.labels).
    labels: tuple[str, ...] = ()
    # --init: a tiny init (tini) as pid 1 that forwards signals and reaps zombies; None: the
    # daemon's default (``dockyard daemon --init``), decided at create. --init-path: its host file.
    init: bool | None = None
    init_path: str = ""

    def __post_init__(self) -> None:
        _normalise(self)
        if not isinstance(self.image, str) or not self.image:
            raise InvalidArgument(f"spec.image: an image name is required, not {_given(self.image)}")
        _strings("cmd", self.cmd)
        _strings("env", self.env)
        if self.entrypoint is not None:
            _strings("entrypoint", self.entrypoint)
        for entry in self.env:
            key, eq, _ = entry.partition("=")
            if not eq or not ENV_KEY.match(key):
                raise InvalidArgument(f"spec.env: {entry!r} is not KEY=VALUE")
        if self.workdir and not self.workdir.startswith("/"):
            raise InvalidArgument(f"spec.workdir: {self.workdir!r} is not an absolute path")
        if "\x00" in self.workdir:
            raise InvalidArgument("spec.workdir: contains a NUL byte")
        if self.user and not USER.match(self.user):
            raise InvalidArgument(f"spec.user: {self.user!r} is not USER[:GROUP] or UID[:GID]")
        if self.hostname and not HOSTNAME.match(self.hostname):
            raise InvalidArgument(f"spec.hostname: {self.hostname!r} is not a valid hostname")
        if self.name and not NAME.match(self.name):
            raise InvalidArgument(
                f"spec.name: {self.name!r} is invalid: use [a-zA-Z0-9][a-zA-Z0-9_.-]+"
            )
        if type(self.auto_remove) is not bool:
            raise InvalidArgument("spec.auto_remove: must be true or false")
        if type(self.stop_timeout) is not int or self.stop_timeout < 0:
            raise InvalidArgument(f"spec.stop_timeout: {self.stop_timeout!r} is not a whole number of seconds >= 0")
        if type(self.stop_signal) is not int or not 0 < self.stop_signal < signal.NSIG:
            raise InvalidArgument(f"spec.stop_signal: {self.stop_signal!r} is not a signal number")
        if not isinstance(self.resources, Resources):
            raise InvalidArgument(
                f"spec.resources: must be a map of limits (e.g. {{'memory': '64m'}}) or a Resources, "
                f"not {_given(self.resources)}")
        if self.healthcheck is not None:
            object.__setattr__(self, "healthcheck", _health_flags(self.healthcheck))
        policy = RestartPolicy.parse(self.restart)
        object.__setattr__(self, "restart", str(policy))
        if policy.name != "no" and self.auto_remove:
            raise InvalidArgument(f"conflicting options: --restart {policy} and --rm", flag="--restart")
        _check_network(self)
        _check_security(self)
        _check_mounts(self)
        _check_limits(self)
        _check_labels_and_init(self)
        for flag in ("tty", "open_stdin"):
            if type(getattr(self, flag)) is not bool:
                raise InvalidArgument(f"spec.{flag}: must be true or false")
        if not isinstance(self.log_options, LogOptions):
            raise InvalidArgument(
                f"spec.log_options: must be a map of --log-opt keys (e.g. {{'max-size': '10m'}}) or a LogOptions, "
                f"not {_given(self.log_options)}")

    @property
    def label_map(self) -> dict[str, str]:
        """``labels`` as docker shows them: ``{key: value}``."""
        return dict(entry.partition("=")[::2] for entry in self.labels)

    @property
    def restart_policy(self) -> RestartPolicy:
        return RestartPolicy.parse(self.restart)

    @classmethod
    def from_map(cls, data: Any) -> ContainerSpec:
        if not isinstance(data, dict):
            raise InvalidArgument("spec: must be a map")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgument(f"spec: unknown field(s) {', '.join(map(str, unknown))}")
        if "image" not in data:
            raise InvalidArgument("spec.image: an image name is required")
        values = dict(data)
        if values.get("entrypoint") is not None:
            if not isinstance(values["entrypoint"], (list, tuple)):
                raise InvalidArgument("spec.entrypoint: must be a list of strings")
            values["entrypoint"] = tuple(values["entrypoint"])
        for key in ("cmd", "env", "labels", "publish", "add_host", "dns", "dns_search", "dns_option", *_SECURITY_LISTS,
                    *_MOUNT_LISTS):
            if key in values and not (key in ("sysctls", "labels") and isinstance(values[key], dict)):
                if not isinstance(values[key], (list, tuple)):
                    raise InvalidArgument(f"spec.{key}: must be a list of strings")
                values[key] = tuple(values[key])
        if "resources" in values:
            values["resources"] = Resources.from_map(values["resources"])
        if "log_options" in values:
            try:
                values["log_options"] = LogOptions.from_map(values["log_options"])
            except InvalidLogOption as exc:
                raise InvalidArgument(exc.message, flag="--log-opt", key=exc.key) from None
        if "stop_signal" in values and isinstance(values["stop_signal"], str):
            values["stop_signal"] = parse_signal(values["stop_signal"])
        for key in ("image", "workdir", "user", "hostname", "name", "init_path", "userns_mode", "uts"):
            if key in values and not isinstance(values[key], str):
                raise InvalidArgument(f"spec.{key}: must be a string")
        return cls(**values)

    def to_map(self) -> dict[str, Any]:
        data = asdict(self)
        data["cmd"] = list(self.cmd)
        data["env"] = list(self.env)
        data["labels"] = list(self.labels)
        data["entrypoint"] = None if self.entrypoint is None else list(self.entrypoint)
        data["resources"] = self.resources.to_map()
        data["log_options"] = self.log_options.to_map()
        for key in ("publish", "add_host", "dns", "dns_search", "dns_option", "labels", *_SECURITY_LISTS, *_MOUNT_LISTS):
            data[key] = list(getattr(self, key))
        if not self.uts:  # a record an earlier dockyard still reads
            del data["uts"]
        return data

    @property
    def security_options(self) -> Any:
        """The parsed ``security_opt`` (privileges.SecurityOptions)."""
        from supervisor import privileges

        return privileges.parse_security_options(self.security_opt)

    def parsed_mounts(self) -> list[Any]:
        """The -v, --mount and --tmpfs mounts, parsed (supervisor.mounts.Mount), in that order."""
        return _parsed_mounts(self)


def _check_network(spec: ContainerSpec) -> None:
    from supervisor import network
    from supervisor.network.ports import parse_publish

    object.__setattr__(spec, "network", network.parse_mode(spec.network))
    for key in ("publish", "add_host", "dns", "dns_search", "dns_option"):
        _strings(key, getattr(spec, key))
    object.__setattr__(spec, "endpoints", network.check_endpoints(spec.network, spec.endpoints))
    if type(spec.publish_all) is not bool:
        raise InvalidArgument("spec.publish_all: must be true or false")
    for entry in spec.publish:
        parse_publish(entry)
    for entry in spec.add_host:
        network.parse_add_host(entry)
    for entry in spec.dns:
        network.parse_dns(entry)
    if (spec.network in ("host", "none") or spec.network.startswith("container:")) and (spec.publish or spec.publish_all):
        raise InvalidArgument(
            f"published ports need the bridge network (or a user-defined one), not --network {spec.network}",
            flag="--publish"
        )
    if spec.network.startswith("container:") and (spec.add_host or spec.dns or spec.hostname or spec.dns_search
                                                  or spec.dns_option):
        raise InvalidArgument(
            f"--network {spec.network} shares that container's network: --add-host, --dns and --hostname "
            "cannot be set", flag="--network"
        )


#: The security fields that hold a list of strings.
_SECURITY_LISTS = ("cap_add", "cap_drop", "security_opt", "group_add", "sysctls")


def _check_security(spec: ContainerSpec) -> None:
    """The security fields (supervisor/privileges.py), normalised: capability names to
    CAP_NAME, sysctls given as a map to KEY=VALUE entries."""
    from supervisor import privileges

    if isinstance(spec.sysctls, dict):
        object.__setattr__(spec, "sysctls", tuple(f"{key}={value}" for key, value in spec.sysctls.items()))
    for key in _SECURITY_LISTS:
        if isinstance(getattr(spec, key), list):
            object.__setattr__(spec, key, tuple(getattr(spec, key)))
        _strings(key, getattr(spec, key))
    if type(spec.privileged) is not bool:
        raise InvalidArgument("spec.privileged: must be true or false")
    if spec.userns_mode not in ("", "host"):
        raise InvalidArgument(f"invalid value {spec.userns_mode!r} for --userns: only 'host' is supported "
                              "(the daemon's --userns-remap decides the mapping)", flag="--userns")
    if spec.uts not in ("", "host"):
        raise InvalidArgument(f"invalid value {spec.uts!r} for --uts: only 'host' is supported", flag="--uts")
    if spec.uts and spec.hostname:
        raise InvalidArgument("conflicting options: --hostname and --uts host (the host's hostname)", flag="--uts")
    if spec.uts:  # the host's: its names are not the container's to change
        for entry in spec.sysctls:
            key = str(entry).partition("=")[0].replace("/", ".")
            if key in ("kernel.hostname", "kernel.domainname"):
                raise InvalidArgument(f"--sysctl {key} is not allowed in the host's UTS namespace (--uts host)",
                                      flag="--sysctl")
    for key, flag in (("cap_add", "--cap-add"), ("cap_drop", "--cap-drop")):
        names = tuple(privileges.capability(name, flag) for name in getattr(spec, key))
        object.__setattr__(spec, key, tuple(dict.fromkeys(names)))
    privileges.parse_security_options(spec.security_opt)
    object.__setattr__(spec, "group_add", tuple(privileges.check_group(entry) for entry in spec.group_add))
    object.__setattr__(spec, "sysctls", tuple(privileges.check_sysctl(entry, spec.network) for entry in spec.sysctls))


_MOUNT_LISTS = ("volumes", "mounts", "tmpfs", "volumes_from", "ulimits")


def _parsed_mounts(spec: ContainerSpec) -> list[Any]:
    from supervisor import mounts

    try:
        parsed = [mounts.parse_volume(entry) for entry in spec.volumes]
        parsed += [mounts.parse_mount(entry) for entry in spec.mounts]
        parsed += [mounts.parse_tmpfs(entry) for entry in spec.tmpfs]
        mounts.check_unique(parsed)
    except mounts.MountError as exc:
        raise InvalidArgument(exc.message, flag=exc.flag) from None
    return parsed


def _check_mounts(spec: ContainerSpec) -> None:
    """The mount flags parse as docker's (the messages are docker's: supervisor/mounts.py)."""
    from supervisor import mounts

    for key in _MOUNT_LISTS:
        _strings(key, getattr(spec, key))
    if type(spec.read_only) is not bool:
        raise InvalidArgument("spec.read_only: must be true or false")
    _parsed_mounts(spec)
    for entry in spec.volumes_from:
        try:
            mounts.parse_volumes_from(entry)
        except mounts.MountError as exc:
            raise InvalidArgument(exc.message, flag=exc.flag) from None


def _check_limits(spec: ContainerSpec) -> None:
    """--ulimit and --shm-size as docker parses them; a size given as text (``64m``) kept in bytes."""
    from supervisor import ulimits

    try:
        for entry in spec.ulimits:
            ulimits.parse_ulimit(entry)
        if isinstance(spec.shm_size, str):
            object.__setattr__(spec, "shm_size", ulimits.parse_shm_size(spec.shm_size))
    except ulimits.LimitError as exc:
        raise InvalidArgument(exc.message, flag=exc.flag) from None
    if type(spec.shm_size) is not int or (spec.shm_size and spec.shm_size < 4096):
        raise InvalidArgument(f"spec.shm_size: {spec.shm_size!r} is not a size in bytes (at least 4096)",
                              flag="--shm-size")


def _check_labels_and_init(spec: ContainerSpec) -> None:
    """Labels as KEY=VALUE entries (a map accepted), a boolean (or unset) --init and an
    absolute --init-path."""
    if isinstance(spec.labels, dict):
        for key, value in spec.labels.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidArgument(f"spec.labels: a map of labels takes strings, not {key!r}: {_given(value)}",
                                      flag="--label")
        object.__setattr__(spec, "labels", tuple(f"{key}={value}" for key, value in spec.labels.items()))
    if isinstance(spec.labels, list):
        object.__setattr__(spec, "labels", tuple(spec.labels))
    _strings("labels", spec.labels)
    for entry in spec.labels:
        key, eq, _ = entry.partition("=")
        if not eq or not key.strip():
            raise InvalidArgument(f"spec.labels: {entry!r} is not KEY=VALUE", flag="--label")
    if spec.init is not None and type(spec.init) is not bool:
        raise InvalidArgument("spec.init: must be true, false or null (the daemon's default)", flag="--init")
    if not isinstance(spec.init_path, str) or (spec.init_path and not spec.init_path.startswith("/")):
        raise InvalidArgument(f"spec.init_path: {spec.init_path!r} is not an absolute path", flag="--init-path")
    if "\x00" in spec.init_path:
        raise InvalidArgument("spec.init_path: contains a NUL byte", flag="--init-path")


def _health_flags(flags: Any) -> dict[str, Any]:
    """The user's health check fields, checked and normalised (durations in seconds)."""
    from supervisor.health import HealthConfig

    if not isinstance(flags, dict):
        raise InvalidArgument("spec.healthcheck: must be a map")
    checked = HealthConfig.from_map({"test": ["NONE"], **flags}).to_map()
    return {key: checked[key] for key in flags}


#: The fields that hold a list of strings.
_STRING_LISTS = ("cmd", "env", "entrypoint", "publish", "add_host", "dns", "dns_search", "dns_option", "volumes", "mounts",
                 "tmpfs", "volumes_from", "ulimits", "labels")


def _normalise(spec: ContainerSpec) -> None:
    """Lists to tuples, maps to their types, a signal name to its number (see ContainerSpec)."""
    for key in _STRING_LISTS:
        if isinstance(getattr(spec, key), list):
            object.__setattr__(spec, key, tuple(getattr(spec, key)))
    if isinstance(spec.env, dict):
        object.__setattr__(spec, "env", tuple(_env_entry(key, value) for key, value in spec.env.items()))
    if isinstance(spec.resources, dict):
        try:
            object.__setattr__(spec, "resources", Resources.from_map(spec.resources))
        except InvalidArgument as exc:
            if exc.message.startswith("spec.resources"):
                raise
            raise InvalidArgument(f"spec.resources.{exc.details.get('field', '')}: {exc.message}",
                                  **exc.details) from None
    if isinstance(spec.log_options, dict):
        try:
            object.__setattr__(spec, "log_options", LogOptions.from_map(spec.log_options))
        except InvalidLogOption as exc:
            raise InvalidArgument(f"spec.log_options: {exc.message}", flag="--log-opt", key=exc.key) from None
    if isinstance(spec.stop_signal, str):
        try:
            object.__setattr__(spec, "stop_signal", parse_signal(spec.stop_signal))
        except InvalidArgument as exc:
            raise InvalidArgument(f"spec.stop_signal: {exc.message}") from None


def _env_entry(key: Any, value: Any) -> str:
    """One KEY=VALUE of an environment given as a map."""
    if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidArgument(
            f"spec.env: a map of environment variables takes string keys and string (or number) values, "
            f"not {key!r}: {_given(value)}")
    return f"{key}={value}"


def _given(value: Any) -> str:
    """What a caller passed, for an error message: ``'echo hi' (str)``."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _strings(field: str, values: tuple[str, ...]) -> None:
    if not isinstance(values, tuple):
        raise InvalidArgument(f"spec.{field}: must be a list of strings, not {_given(values)}")
    for value in values:
        if not isinstance(value, str):
            raise InvalidArgument(f"spec.{field}: must be a list of strings, but holds {_given(value)}")
    if any("\x00" in v for v in values):
        raise InvalidArgument(f"spec.{field}: contains a NUL byte")


def merge_env(*layers: tuple[str, ...] | list[str]) -> list[str]:
    """Later layers override earlier ones by key, keeping first-seen order (docker's rule)."""
    merged: dict[str, str] = {}
    for layer in layers:
        for entry in layer:
            key, _, value = entry.partition("=")
            merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def terminal_env(env: tuple[str, ...] | list[str], tty: bool) -> list[str]:
    """With a terminal (``-t``), ``TERM=xterm`` unless the image or the user set TERM, as
    docker does (for ``run -t`` and ``exec -t``; not shown in inspect's Config.Env)."""
    if tty and not any(entry.startswith("TERM=") for entry in env):
        return [*env, "TERM=xterm"]
    return list(env)
