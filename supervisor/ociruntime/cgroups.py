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
import sys
import _signal  # the C module: signal.py imports enum (~2 ms of every run) for names we do not print
import time

from supervisor.ociruntime.errors import RuntimeCommandError
from supervisor.runtime import cgroupfiles

DEFAULT_PARENT = "/dockyard-runtime"
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio", "blkio",
                  "perf_event", "hugetlb", "pids", "rdma", "misc")
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


def resolve_paths(cgroups_path: str, container_id: str, mounts: dict[str, str], own: dict[str, str]) -> dict[str, str]:
    """The container's directory for each controller (one per hierarchy's mount point)."""
    if ":" in cgroups_path:
        raise RuntimeCommandError(f"cgroupsPath {cgroups_path!r} is a systemd path: dockyard-runtime has no systemd "
                                  "cgroup driver (use the cgroupfs manager)")
    path = cgroups_path or f"{DEFAULT_PARENT}/{container_id}"
    if ".." in path.split("/"):
        raise RuntimeCommandError(f"cgroupsPath {cgroups_path!r} must not contain '..'")
    result = {}
    for controller, point in mounts.items():
        base = "/" if path.startswith("/") else own.get(controller, "/")
        result[controller] = os.path.normpath(os.path.join(point, base.lstrip("/"), path.lstrip("/")))
    return result


class BundleCgroup:
    """The container's cgroup directories (``paths``: controller to directory)."""

    def __init__(self, paths: dict[str, str]):
        self.paths = paths

    @classmethod
    def for_bundle(cls, cgroups_path: str, container_id: str) -> BundleCgroup:
        with open("/proc/self/mountinfo") as file:
            mounts = hierarchies(file.read())
        with open("/proc/self/cgroup") as file:
            own = own_cgroups(file.read())
        return cls(resolve_paths(cgroups_path, container_id, mounts, own))

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
            try:
                if self.version == 2:
                    _make_v2(path)
                elif controller == "cpuset":
                    _make_cpuset(path)
                else:
                    os.makedirs(path, 0o755, exist_ok=True)
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


def own_procs_files(text: str, base: str = "/sys/fs/cgroup") -> list[str]:
    """The ``cgroup.procs`` of this process's own cgroups, from /proc/self/cgroup's ``text``,
    under the usual mount points (``base/<controllers>``, the v2 tree at ``base/unified`` on
    a hybrid host or at ``base`` itself), in the order of the file."""
    files = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        path = parts[2].lstrip("/")
        for directory in ([parts[1].removeprefix("name=")] if parts[1] else ["unified", ""]):
            files.append(os.path.join(base, directory, path, "cgroup.procs"))
    return files


class AttachWarmUp:
    """Start the kernel's wait for a cgroup move now, in a thread, so that the container's
    own move (``launch.InitStage.join_cgroups``, an exec's stage 0) finds it done.

    Theory: every write to a ``cgroup.procs`` takes the kernel's one global
    ``cgroup_threadgroup_rwsem`` for writing, and the first writer after a quiet spell waits
    for an RCU grace period (``rcu_sync_enter``: 5-25 ms on this 2-CPU VM, no CPU), the
    longest single step of a ``run``. A writer that comes while that wait is under way
    waits only for its rest; one that comes within a grace period after the last writer
    left does not wait at all. ``create`` can move stage 0 only once it has imported its
    modules, read the config, made the cgroups and forked (~5-10 ms of CPU after the
    command line is parsed), so this writes our own pid into our own cgroup (no move: the
    kernel sees the process is there already) from a thread as soon as the command is
    known, and the wait runs while the command does that work. runc pays the same wait
    (its parent writes ``runc init``'s pid) and does not overlap it. Best effort: a cgroup
    we cannot write, or a kernel that behaves otherwise, only loses the overlap.

    The kernel holds ``cgroup_mutex`` during the wait, as for any move: the command's own
    cgroup mkdirs, if they come before it ends, wait for its rest (not longer than the
    move itself would have waited). When the container's move comes more than a grace
    period after this one ended, it waits in full as before: the host then sees one more
    such wait, the command none more.
    """

    def __init__(self, cgroup_text: str | None = None):
        self.path = ""
        self.finished = None
        try:
            if cgroup_text is None:
                with open("/proc/self/cgroup", "rb") as file:
                    cgroup_text = file.read().decode()
        except OSError:
            return
        fd = -1
        for path in own_procs_files(cgroup_text):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except OSError:
                continue
            self.path = path
            break
        if fd < 0:
            return
        import _thread  # not threading: its import costs more than this saves in CPU

        self.finished = _thread.allocate_lock()
        self.finished.acquire()
        # The new thread needs the GIL, which this one holds while it imports and releases
        # only for moments (file reads) that the other thread rarely catches: without a short
        # switch interval it would start ~5 ms (the default interval) late. It is put back
        # once the write is done.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0001)
        _thread.start_new_thread(self._write, (fd, str(os.getpid()).encode(), interval))

    def _write(self, fd: int, pid: bytes, interval: float) -> None:
        try:
            os.write(fd, pid)
        except OSError:
            pass  # best effort (class docstring)
        finally:
            os.close(fd)
            sys.setswitchinterval(interval)
            self.finished.release()

    def wait(self, timeout: float) -> bool:
        """True once the write is done (tests: the command itself never waits for it)."""
        return self.finished is not None and self.finished.acquire(timeout=timeout)
