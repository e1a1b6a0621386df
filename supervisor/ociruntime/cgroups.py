"""A bundle's cgroup: ``linux.cgroupsPath`` laid out in the host's hierarchies, and
``linux.resources`` written into it (at ``create`` and by ``update``); its processes, its
freezer (``pause``/``resume``), its figures (``events --stats``) and its removal.

Paths are as runc's cgroupfs driver takes them: an absolute cgroupsPath is below each
hierarchy's root, a relative one below the runtime's own cgroup, an empty one is
``/dockyard-runtime/<id>``. A systemd path (``slice:prefix:name``) is refused: the runtime
has no systemd driver (``--systemd-cgroup`` is refused too). On cgroup v1 (and hybrid hosts,
whose unified hierarchy holds no controller) the container gets a directory in every v1
hierarchy; on a pure v2 host one directory, its controllers enabled in the parents.

:func:`v1_writes` and :func:`v2_writes` turn a resources object into file writes (pure,
unit-tested); :class:`BundleCgroup` does the I/O.
"""

from __future__ import annotations

import errno
import os
import _signal  # the C module: signal.py imports enum (~2 ms of every run) for names we do not print
import time

from supervisor.ociruntime.errors import RuntimeCommandError
from supervisor.runtime import cgroupfiles

DEFAULT_PARENT = "/dockyard-runtime"
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio", "blkio",
                  "perf_event", "hugetlb", "pids", "rdma", "misc")
CREATE_ATTEMPTS = 3  # a concurrent delete may remove the default parent between our mkdirs
REMOVE_TIMEOUT = 5.0  # seconds for the processes of a killed cgroup to be gone before rmdir
FREEZE_TIMEOUT = 5.0


def _device_rule(rule: dict) -> str:
    kind = rule.get("type") or "a"
    if kind == "a":
        return "a"
    major = "*" if rule.get("major") in (None, -1) else str(rule["major"])
    minor = "*" if rule.get("minor") in (None, -1) else str(rule["minor"])
    return f"{kind} {major}:{minor} {rule.get('access') or 'rwm'}"


#: The devices a container may always use (runc's AllowedDevices): null, zero, full, tty,
#: random, urandom, console, /dev/pts/*, ptmx, tun.
DEFAULT_DEVICE_RULES = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 5:0 rwm", "c 1:8 rwm", "c 1:9 rwm",
                        "c 5:1 rwm", "c 136:* rwm", "c 5:2 rwm", "c 10:200 rwm")


def _pids_writes(resources: dict) -> list[tuple[str, str, str]]:
    """``pids.max``, the same file on both versions (a limit of 0 or less: none)."""
    limit = (resources.get("pids") or {}).get("limit")
    return [] if limit is None else [("pids", "pids.max", "max" if limit <= 0 else str(limit))]


def v1_writes(resources: dict, devices: list | None = None) -> list[tuple[str, str, str]]:
    """The ``(controller, file, value)`` writes of ``linux.resources`` on cgroup v1, in order.
    ``devices`` (the stage's ``[path, type, major, minor, ...]`` entries) are allowed too."""
    writes: list[tuple[str, str, str]] = []
    memory = resources.get("memory") or {}
    for key, name in (("limit", "memory.limit_in_bytes"), ("swap", "memory.memsw.limit_in_bytes"),
                      ("reservation", "memory.soft_limit_in_bytes"), ("kernel", "memory.kmem.limit_in_bytes"),
                      ("kernelTCP", "memory.kmem.tcp.limit_in_bytes"), ("swappiness", "memory.swappiness")):
        if memory.get(key) is not None:
            writes.append(("memory", name, str(memory[key])))
    if memory.get("disableOOMKiller"):
        writes.append(("memory", "memory.oom_control", "1"))
    cpu = resources.get("cpu") or {}
    for key, controller, name in (("shares", "cpu", "cpu.shares"), ("period", "cpu", "cpu.cfs_period_us"),
                                  ("quota", "cpu", "cpu.cfs_quota_us"), ("realtimePeriod", "cpu", "cpu.rt_period_us"),
                                  ("realtimeRuntime", "cpu", "cpu.rt_runtime_us"), ("cpus", "cpuset", "cpuset.cpus"),
                                  ("mems", "cpuset", "cpuset.mems")):
        if cpu.get(key) not in (None, "", 0) or (key == "quota" and cpu.get(key) is not None):
            writes.append((controller, name, str(cpu[key])))
    writes += _pids_writes(resources)
    block = resources.get("blockIO") or {}
    if block.get("weight"):
        writes.append(("blkio", "blkio.weight", str(block["weight"])))
    if block.get("leafWeight"):
        writes.append(("blkio", "blkio.leaf_weight", str(block["leafWeight"])))
    for device in block.get("weightDevice") or []:
        if device.get("weight") is not None:
            writes.append(("blkio", "blkio.weight_device", f"{device['major']}:{device['minor']} {device['weight']}"))
        if device.get("leafWeight") is not None:
            writes.append(("blkio", "blkio.leaf_weight_device",
                           f"{device['major']}:{device['minor']} {device['leafWeight']}"))
    for key, name in (("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
                      ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
                      ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
                      ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device")):
        for device in block.get(key) or []:
            writes.append(("blkio", name, f"{device['major']}:{device['minor']} {device['rate']}"))
    for limit in resources.get("hugepageLimits") or []:
        writes.append(("hugetlb", f"hugetlb.{limit['pageSize']}.limit_in_bytes", str(limit["limit"])))
    network = resources.get("network") or {}
    if network.get("classID") is not None:
        writes.append(("net_cls", "net_cls.classid", str(network["classID"])))
    for priority in network.get("priorities") or []:
        writes.append(("net_prio", "net_prio.ifpriomap", f"{priority['name']} {priority['priority']}"))
    rules = resources.get("devices")
    if rules is not None or devices:
        writes.append(("devices", "devices.deny", "a"))
        for rule in rules or []:
            writes.append(("devices", "devices.allow" if rule.get("allow") else "devices.deny", _device_rule(rule)))
        for rule in DEFAULT_DEVICE_RULES:
            writes.append(("devices", "devices.allow", rule))
        for path, kind, major, minor, *_ in devices or []:
            if kind != "p":
                writes.append(("devices", "devices.allow", f"{'c' if kind == 'u' else kind} {major}:{minor} rwm"))
    return writes


def v2_writes(resources: dict) -> list[tuple[str, str, str]]:
    """The writes of ``linux.resources`` on cgroup v2 (memory, cpu, cpuset, pids, io weight)."""
    writes: list[tuple[str, str, str]] = []
    memory = resources.get("memory") or {}
    if memory.get("limit") is not None:
        writes.append(("memory", "memory.max", "max" if memory["limit"] < 0 else str(memory["limit"])))
    if memory.get("reservation") is not None:
        writes.append(("memory", "memory.low", str(memory["reservation"])))
    if memory.get("swap") is not None and memory.get("limit") is not None and memory["swap"] >= 0:
        writes.append(("memory", "memory.swap.max", str(max(memory["swap"] - memory["limit"], 0))))
    cpu = resources.get("cpu") or {}
    if cpu.get("shares"):
        writes.append(("cpu", "cpu.weight", str(1 + ((cpu["shares"] - 2) * 9999) // 262142)))
    if cpu.get("quota") is not None or cpu.get("period"):
        quota = cpu.get("quota")
        writes.append(("cpu", "cpu.max", f"{'max' if quota in (None, -1) else quota} {cpu.get('period') or 100000}"))
    for key in ("cpus", "mems"):
        if cpu.get(key):
            writes.append(("cpuset", f"cpuset.{key}", cpu[key]))
    writes += _pids_writes(resources)
    block = resources.get("blockIO") or {}
    if block.get("weight"):
        writes.append(("io", "io.bfq.weight", str(block["weight"])))
    return writes


def hierarchies(mountinfo: str) -> dict[str, str]:
    """Each v1 controller (and ``name=`` hierarchy) to its mount point, from the text of
    /proc/self/mountinfo; ``{"": point}`` alone on a pure v2 host."""
    found: dict[str, str] = {}
    unified = ""
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option in V1_CONTROLLERS or option.startswith("name="):
                    found.setdefault(option, fields[4])
        elif tail[0] == "cgroup2":
            unified = fields[4]
    if not found and unified:
        return {"": unified}
    return found


def own_cgroups(text: str) -> dict[str, str]:
    """/proc/self/cgroup's text: each controller (or ``name=``) to the process's path."""
    paths = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def resolve_paths(cgroups_path: str, container_id: str, mounts: dict[str, str], own: dict[str, str],
                  default_parent: str = DEFAULT_PARENT) -> dict[str, str]:
    """The container's directory for each controller (one per hierarchy's mount point)."""
    if ":" in cgroups_path:
        raise RuntimeCommandError(f"cgroupsPath {cgroups_path!r} is a systemd path: dockyard-runtime has no systemd "
                                  "cgroup driver (use the cgroupfs manager)")
    path = cgroups_path or f"{default_parent}/{container_id}"
    if ".." in path.split("/"):
        raise RuntimeCommandError(f"cgroupsPath {cgroups_path!r} must not contain '..'")
    result = {}
    for controller, point in mounts.items():
        base = "/" if path.startswith("/") else own.get(controller, "/")
        result[controller] = os.path.normpath(os.path.join(point, base.lstrip("/"), path.lstrip("/")))
    return result


class BundleCgroup:
    """The container's cgroup directories (``paths``: controller to directory), and the
    ``parents`` to remove with the last of their containers: the runtime's own default parent
    (``/dockyard-runtime``) of a container without a ``cgroupsPath``, never a caller's."""

    def __init__(self, paths: dict[str, str], parents: list[str] | None = None):
        self.paths = paths
        self.parents = list(parents or ())

    @classmethod
    def for_bundle(cls, cgroups_path: str, container_id: str, default_parent: str = DEFAULT_PARENT) -> BundleCgroup:
        with open("/proc/self/mountinfo") as file:
            mounts = hierarchies(file.read())
        with open("/proc/self/cgroup") as file:
            own = own_cgroups(file.read())
        paths = resolve_paths(cgroups_path, container_id, mounts, own, default_parent)
        parents = [] if cgroups_path else sorted({os.path.dirname(path) for path in paths.values()})
        return cls(paths, parents)

    @property
    def version(self) -> int:
        return 2 if set(self.paths) == {""} else 1

    def directories(self) -> list[str]:
        return sorted(set(self.paths.values()))

    @property
    def procs_files(self) -> list[str]:
        return [os.path.join(path, "cgroup.procs") for path in self.directories()]

    def create(self) -> None:
        """Make the directories (cpuset's cpus and mems inherited on the way, as v1 wants).

        Raises:
            RuntimeCommandError: naming the directory and the cause.
        """
        for controller, path in self.paths.items():
            for attempt in range(CREATE_ATTEMPTS):
                try:
                    if self.version == 2:
                        _make_v2(path)
                    elif controller == "cpuset":
                        _make_cpuset(path)
                    else:
                        os.makedirs(path, 0o755, exist_ok=True)
                    break
                except FileNotFoundError:  # the last container of our parent removed it meanwhile
                    if attempt + 1 < CREATE_ATTEMPTS:
                        continue
                    raise RuntimeCommandError(f'cannot create the cgroup "{path}": {os.strerror(errno.ENOENT)}') from None
                except OSError as exc:
                    raise RuntimeCommandError(f'cannot create the cgroup "{path}": {os.strerror(exc.errno)}') from None

    def file(self, controller: str, name: str) -> str | None:
        path = self.paths.get("" if self.version == 2 else controller)
        return None if path is None else os.path.join(path, name)

    def apply(self, resources: dict, devices: list | None = None) -> None:
        """Write ``linux.resources`` (and allow ``devices``).

        Raises:
            RuntimeCommandError: a controller is missing, or the kernel refused a value.
        """
        writes = v2_writes(resources) if self.version == 2 else v1_writes(resources, devices)
        for index, (controller, name, value) in enumerate(writes):
            path = self.file(controller, name)
            if path is None:
                raise RuntimeCommandError(f"cannot set {name}: the {controller} cgroup controller is not mounted")
            try:
                cgroupfiles.write(path, value)
            except OSError as exc:
                # v1 refuses a memory limit above memsw (and memsw below memory): the other first.
                following = writes[index + 1] if index + 1 < len(writes) else None
                if exc.errno == errno.EINVAL and name == "memory.limit_in_bytes" and following \
                        and following[1] == "memory.memsw.limit_in_bytes":
                    try:
                        cgroupfiles.write(self.file("memory", following[1]) or "", following[2])
                        cgroupfiles.write(path, value)
                        continue
                    except OSError as retry:
                        exc = retry
                if exc.errno == errno.ENOENT and name == "memory.memsw.limit_in_bytes":
                    raise RuntimeCommandError("cannot set memory.memsw.limit_in_bytes: this kernel has no swap "
                                              "accounting (swapaccount=1)") from None
                raise RuntimeCommandError(f"cannot set {name} to {value!r}: {os.strerror(exc.errno)}") from None

    def pids(self) -> list[int]:
        for name in ("pids", "memory", "freezer", "cpu", "") if self.version == 1 else ("",):
            path = self.paths.get(name)
            if path is not None:
                try:
                    with open(os.path.join(path, "cgroup.procs")) as file:
                        return [int(line) for line in file.read().split()]
                except FileNotFoundError:
                    return []
        return []

    def signal_all(self, sig: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def freeze(self, frozen: bool) -> None:
        """pause/resume: the freezer's state, waited for (supervisor/runtime/freezer.py).

        Raises:
            RuntimeCommandError: no freezer, or it did not settle in FREEZE_TIMEOUT.
        """
        from supervisor.runtime import freezer  # pause, resume and a paused one's kill only

        path = self.file(*freezer.freezer_file(self.version))
        if path is None or not os.path.exists(path):
            raise RuntimeCommandError("cannot pause or resume: the freezer cgroup controller is not available")
        try:
            freezer.set_frozen(path, self.version, frozen, FREEZE_TIMEOUT)
        except OSError as exc:  # TimeoutError included
            raise RuntimeCommandError(f"cannot {'pause' if frozen else 'resume'}: {exc}") from None

    def remove(self) -> None:
        """Kill what is left, wait for it to go, remove the directories.

        Raises:
            RuntimeCommandError: a directory could not be removed in REMOVE_TIMEOUT.
        """
        self.signal_all(_signal.SIGKILL)
        deadline = time.monotonic() + REMOVE_TIMEOUT
        for path in self.directories():
            try:  # a killed process leaves its cgroup only once reaped: kill again, retry every 10 ms
                cgroupfiles.remove_directory(path, deadline, on_busy=lambda: self.signal_all(_signal.SIGKILL),
                                             delay=0.01, max_delay=0.01)
            except OSError as exc:
                raise RuntimeCommandError(f'cannot remove the cgroup "{path}": {os.strerror(exc.errno)}') from None
        for parent in self.parents:
            try:  # only once empty: another container's directory (EBUSY) keeps it
                os.rmdir(parent)
            except OSError:
                pass

    def stats(self) -> dict:
        """runc's ``events --stats`` figures that the cgroup has (cpu, memory, pids)."""
        def number(controller: str, name: str) -> int:
            path = self.file(controller, name)
            try:
                with open(path or "") as file:
                    return int(file.read().split()[0])
            except (OSError, ValueError, IndexError):
                return 0

        percpu_path = self.file("cpuacct", "cpuacct.usage_percpu")
        try:
            with open(percpu_path or "") as file:
                percpu = [int(value) for value in file.read().split()]
        except (OSError, ValueError):
            percpu = []
        return {
            "cpu": {"usage": {"total": number("cpuacct", "cpuacct.usage"), "percpu": percpu}},
            "memory": {"usage": {"usage": number("memory", "memory.usage_in_bytes"),
                                 "max": number("memory", "memory.max_usage_in_bytes"),
                                 "limit": number("memory", "memory.limit_in_bytes"),
                                 "failcnt": number("memory", "memory.failcnt")}},
            "pids": {"current": number("pids", "pids.current"), "limit": number("pids", "pids.max")},
        }


def _missing_levels(path: str) -> list[str]:
    """The directories that ``path`` needs made, its first missing ancestor first."""
    missing = []
    current = path
    while not os.path.isdir(current):
        missing.append(current)
        current = os.path.dirname(current)
    return missing[::-1]


def _make_cpuset(path: str) -> None:
    """Make each missing level, copying cpus and mems from its parent (v1 refuses tasks in a
    cpuset that has none)."""
    for directory in _missing_levels(path):
        os.mkdir(directory, 0o755)
        parent = os.path.dirname(directory)
        for name in ("cpuset.cpus", "cpuset.mems"):
            with open(os.path.join(parent, name)) as file:
                value = file.read().strip()
            cgroupfiles.write(os.path.join(directory, name), value)


def _make_v2(path: str) -> None:
    """Make each missing level, the parent's controllers enabled for its children."""
    for directory in _missing_levels(path):
        parent = os.path.dirname(directory)
        try:
            with open(os.path.join(parent, "cgroup.controllers")) as file:
                controllers = file.read().split()
            cgroupfiles.write(os.path.join(parent, "cgroup.subtree_control"), " ".join("+" + name for name in controllers))
        except OSError:
            pass  # best effort: a controller in use by the parent's processes stays off
        os.mkdir(directory, 0o755)
