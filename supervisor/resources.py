"""Resource limits of a container: docker's flags, parsed, validated and converted. Pure: no
file is read or written here (the cgroup backends in :mod:`supervisor.runtime.cgroups` write
the values; :mod:`supervisor.stats` reads the usage).

Every value is kept as docker keeps it in ``HostConfig`` (bytes, nano-CPUs, shares), with 0
meaning "not set" and -1 meaning "unlimited" where docker allows it:

    flag                  field               unit / syntax                   docker's name
    --memory, -m          memory              bytes, 6m minimum               Memory
    --memory-swap         memory_swap         bytes of memory+swap, -1        MemorySwap
    --memory-reservation  memory_reservation  bytes (soft limit)              MemoryReservation
    --cpus                nano_cpus           CPUs, 0.01 .. (1e9 per CPU)     NanoCpus
    --cpu-shares, -c      cpu_shares          2 .. 262144 (relative weight)   CpuShares
    --cpuset-cpus         cpuset_cpus         "0-2,4"                         CpusetCpus
    --pids-limit          pids_limit          processes, -1 unlimited         PidsLimit
    --device              devices             /dev/X[:/dev/Y[:rwm]]           Devices
    --device-cgroup-rule  device_cgroup_rules "c 7:128 rwm", "b 8:* r"        DeviceCgroupRules

Like docker, a memory limit without --memory-swap gets memory+swap = twice the memory.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from supervisor.errors import InvalidArgument

#: docker's RAMInBytes: a number, an optional binary unit, an optional "b".
_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([bkmgtp])?(?:i?b)?\Z", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*\Z")
_DEVICE_PERMISSIONS = re.compile(r"^[rwm]{1,3}\Z")
#: docker's devices cgroup rule: a type, MAJOR:MINOR (a number or *), permissions.
_DEVICE_CGROUP_RULE = re.compile(r"^[abc] (\d+|\*):(\d+|\*) [rwm]{1,3}\Z")

MIN_MEMORY = 6 << 20  # docker: "Minimum memory limit allowed is 6MB"
MIN_SHARES, MAX_SHARES = 2, 262144
NANO_CPUS = 1_000_000_000
CFS_PERIOD_US = 100_000  # docker's and the kernel's default period
MIN_CFS_QUOTA_US = 1000  # the kernel's minimum quota

#: The flag that sets each field, for error messages.
FLAGS = {
    "memory": "--memory",
    "memory_swap": "--memory-swap",
    "memory_reservation": "--memory-reservation",
    "nano_cpus": "--cpus",
    "cpu_shares": "--cpu-shares",
    "cpuset_cpus": "--cpuset-cpus",
    "pids_limit": "--pids-limit",
    "devices": "--device",
    "device_cgroup_rules": "--device-cgroup-rule",
}
#: What the bus calls a field in a request: the spec key, or the CLI flag's name.
ALIASES = {"cpus": "nano_cpus"}
#: The fields `dockyard update` may change (devices need a new /dev).
UPDATABLE = ("memory", "memory_swap", "memory_reservation", "nano_cpus", "cpu_shares", "cpuset_cpus", "pids_limit")


def _bad(field: str, value: Any, why: str) -> InvalidArgument:
    return InvalidArgument(f"invalid value {value!r} for {FLAGS[field]}: {why}", field=field, flag=FLAGS[field])


def parse_size(value: Any, field: str = "memory") -> int:
    """``64m`` / ``1.5g`` / ``1024`` / an int to bytes (binary units, as docker); ``-1`` stays -1."""
    if isinstance(value, bool):
        raise _bad(field, value, "not a size")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if text == "-1":
            return -1
        match = _SIZE.match(text)
        if not match:
            raise _bad(field, value, "use a number with an optional unit b, k, m or g (e.g. 64m)")
        number = int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])
    else:
        raise _bad(field, value, "not a size")
    if number < -1:
        raise _bad(field, value, "a size cannot be negative")
    return number


def parse_cpus(value: Any) -> int:
    """``0.5`` (CPUs, as a number or text) to nano-CPUs."""
    if isinstance(value, bool):
        raise _bad("nano_cpus", value, "not a number of CPUs")
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise _bad("nano_cpus", value, "not a number of CPUs (e.g. 0.5)") from None
    if not cpus >= 0 or cpus != cpus or cpus == float("inf"):
        raise _bad("nano_cpus", value, "must be a positive number of CPUs")
    return round(cpus * NANO_CPUS)


def parse_int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise _bad(field, value, "not a whole number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _bad(field, value, "not a whole number") from None


def parse_cpu_list(text: str) -> list[int]:
    """``0-2,4`` to [0, 1, 2, 4]."""
    cpus: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


@dataclass(frozen=True)
class DeviceMapping:
    """``--device /dev/X[:/dev/Y[:rwm]]``: a host device the container may use."""

    host: str
    container: str
    permissions: str = "rwm"

    @classmethod
    def parse(cls, text: str) -> DeviceMapping:
        if not isinstance(text, str):
            raise _bad("devices", text, "not a device mapping")
        parts = text.split(":")
        if len(parts) == 2 and _DEVICE_PERMISSIONS.match(parts[1]):
            parts = [parts[0], parts[0], parts[1]]
        if len(parts) > 3 or not parts[0]:
            raise _bad("devices", text, "use /dev/HOST[:/dev/CONTAINER[:rwm]]")
        host = parts[0]
        container = parts[1] if len(parts) > 1 and parts[1] else host
        permissions = parts[2] if len(parts) > 2 else "rwm"
        if not host.startswith("/") or not container.startswith("/") or "\x00" in text:
            raise _bad("devices", text, "device paths must be absolute")
        if not _DEVICE_PERMISSIONS.match(permissions) or len(set(permissions)) != len(permissions):
            raise _bad("devices", text, "permissions are some of r, w and m")
        return cls(host, container, permissions)

    def __str__(self) -> str:
        return f"{self.host}:{self.container}:{self.permissions}"


@dataclass(frozen=True)
class Resources:
    """A container's limits, validated on construction (see the module docstring)."""

    memory: int = 0
    memory_swap: int = 0
    memory_reservation: int = 0
    nano_cpus: int = 0
    cpu_shares: int = 0
    cpuset_cpus: str = ""
    pids_limit: int = 0
    devices: tuple[str, ...] = ()
    #: devices cgroup rules allowed besides the standard devices and --device (cgroup v1's
    #: devices.allow; v2 has no devices files: module docstring of runtime/cgroups)
    device_cgroup_rules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "cpuset_cpus":
                if not isinstance(value, str):
                    raise _bad(item.name, value, "not a CPU list")
            elif item.name == "devices":
                if not isinstance(value, (tuple, list)):
                    raise _bad(item.name, value, "not a list of device mappings")
                object.__setattr__(self, "devices", tuple(str(DeviceMapping.parse(d)) for d in value))
            elif item.name == "device_cgroup_rules":
                if not isinstance(value, (tuple, list)):
                    raise _bad(item.name, value, "not a list of rules")
                for rule in value:
                    if not isinstance(rule, str) or not _DEVICE_CGROUP_RULE.match(rule):
                        raise _bad(item.name, rule, "use TYPE MAJOR:MINOR PERMISSIONS, e.g. 'c 7:128 rwm' (a, b or c; "
                                                    "a number or *; some of r, w, m)")
                object.__setattr__(self, "device_cgroup_rules", tuple(value))
            elif type(value) is not int:
                raise _bad(item.name, value, "not a whole number")
        if self.memory < 0 or self.memory_reservation < 0 or self.nano_cpus < 0 or self.cpu_shares < 0:
            negative = next(n for n in ("memory", "memory_reservation", "nano_cpus", "cpu_shares") if getattr(self, n) < 0)
            raise _bad(negative, getattr(self, negative), "cannot be negative")
        if self.memory and self.memory < MIN_MEMORY:
            raise _bad("memory", self.memory, "the minimum memory limit is 6m")
        if self.memory_swap < -1:
            raise _bad("memory_swap", self.memory_swap, "use a size, or -1 for unlimited swap")
        if self.memory_swap > 0:
            if not self.memory:
                raise _bad("memory_swap", self.memory_swap, "a swap limit needs a memory limit (--memory) too")
            if self.memory_swap < self.memory:
                raise _bad("memory_swap", self.memory_swap,
                           f"memory+swap must be at least the memory limit ({self.memory} bytes); "
                           "update --memory-swap with --memory")
        elif self.memory_swap == 0 and self.memory:
            object.__setattr__(self, "memory_swap", 2 * self.memory)  # docker's default
        if self.memory and self.memory_reservation > self.memory:
            raise _bad("memory_reservation", self.memory_reservation, "must be smaller than the memory limit")
        if self.nano_cpus and cfs_quota_us(self.nano_cpus) < MIN_CFS_QUOTA_US:
            raise _bad("nano_cpus", self.nano_cpus / NANO_CPUS, "the minimum is 0.01 CPUs")
        if self.cpu_shares and not MIN_SHARES <= self.cpu_shares <= MAX_SHARES:
            raise _bad("cpu_shares", self.cpu_shares, f"must be between {MIN_SHARES} and {MAX_SHARES}")
        if self.cpuset_cpus:
            if not _CPU_LIST.match(self.cpuset_cpus):
                raise _bad("cpuset_cpus", self.cpuset_cpus, "use CPU numbers and ranges, e.g. 0-2,4")
            for part in self.cpuset_cpus.split(","):
                low, _, high = part.partition("-")
                if high and int(high) < int(low):
                    raise _bad("cpuset_cpus", self.cpuset_cpus, f"the range {part} is backwards")
        if self.pids_limit < -1:
            raise _bad("pids_limit", self.pids_limit, "use a positive number, or -1 for unlimited")

    # --- the bus ----------------------------------------------------------------------

    @classmethod
    def from_map(cls, data: Any, base: Resources | None = None) -> Resources:
        """Values as the CLI sends them (``"64m"``, ``"0.5"``) or as a record stores them
        (ints). With ``base``, the fields given replace those of ``base`` (``update``)."""
        if not isinstance(data, dict):
            raise InvalidArgument("spec.resources: must be a map")
        values: dict[str, Any] = {}
        for key, value in data.items():
            name = ALIASES.get(key, key)
            if name not in FLAGS:
                raise InvalidArgument(f"spec.resources: unknown field {key!r} (known: {', '.join([*FLAGS, *ALIASES])})")
            if name in ("memory", "memory_swap", "memory_reservation"):
                values[name] = parse_size(value, name)
            elif name == "nano_cpus":
                values[name] = parse_cpus(value) if key == "cpus" else parse_int(value, name)
            elif name in ("cpu_shares", "pids_limit"):
                values[name] = parse_int(value, name)
            elif name == "cpuset_cpus":
                if not isinstance(value, str):
                    raise _bad(name, value, "not a CPU list")
                values[name] = value.strip()
            else:
                if not isinstance(value, (list, tuple)):
                    raise _bad(name, value, "not a list of device mappings" if name == "devices" else "not a list of rules")
                values[name] = tuple(value)
        if base is None:
            return cls(**values)
        if "memory" in values and "memory_swap" not in values and base.memory_swap == 2 * base.memory:
            values["memory_swap"] = 0  # it was docker's default: it follows the new memory limit
        return replace(base, **values)

    def to_map(self) -> dict[str, Any]:
        data = asdict(self)
        data["devices"] = list(self.devices)
        data["device_cgroup_rules"] = list(self.device_cgroup_rules)
        if not self.device_cgroup_rules:  # a record an earlier dockyard still reads
            del data["device_cgroup_rules"]
        return data

    def host_config(self) -> dict[str, Any]:
        """The fields of docker's inspect ``HostConfig``."""
        return {
            "Memory": self.memory,
            "MemorySwap": self.memory_swap,
            "MemoryReservation": self.memory_reservation,
            "NanoCpus": self.nano_cpus,
            "CpuShares": self.cpu_shares,
            "CpusetCpus": self.cpuset_cpus,
            "PidsLimit": self.pids_limit or None,
            "Devices": [
                {"PathOnHost": m.host, "PathInContainer": m.container, "CgroupPermissions": m.permissions}
                for m in map(DeviceMapping.parse, self.devices)
            ],
            "DeviceCgroupRules": list(self.device_cgroup_rules) or None,
        }

    def check_host(self, cpu_count: int) -> None:
        """Refuse what this host cannot give (as dockerd does at create)."""
        if self.nano_cpus > cpu_count * NANO_CPUS:
            raise _bad("nano_cpus", self.nano_cpus / NANO_CPUS,
                       f"the range is 0.01 to {cpu_count}.00: this host has {cpu_count} CPUs")
        if self.cpuset_cpus:
            missing = [cpu for cpu in parse_cpu_list(self.cpuset_cpus) if cpu >= cpu_count]
            if missing:
                raise _bad("cpuset_cpus", self.cpuset_cpus, f"this host has no CPU {missing[0]} (it has 0-{cpu_count - 1})")


# --- conversions for the cgroup files ------------------------------------------------------


def cfs_quota_us(nano_cpus: int, period_us: int = CFS_PERIOD_US) -> int:
    """CPUs to a CFS quota per ``period_us`` (0.5 CPU -> 50000 of 100000)."""
    return nano_cpus * period_us // NANO_CPUS


def cpu_weight(shares: int) -> int:
    """cgroup v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000), runc's formula."""
    return 1 + ((shares - 2) * 9999) // 262142


STANDARD_DEVICES = (
    "c 1:3 rwm",  # null
    "c 1:5 rwm",  # zero
    "c 1:7 rwm",  # full
    "c 1:8 rwm",  # random
    "c 1:9 rwm",  # urandom
    "c 5:0 rwm",  # tty
    "c 5:1 rwm",  # console
    "c 5:2 rwm",  # ptmx
    "c 136:* rwm",  # pts/*
)


def device_rule(kind: str, major: int, minor: int, permissions: str) -> str:
    """A devices cgroup rule (``b 8:0 rwm``)."""
    return f"{kind} {major}:{minor} {permissions}"
