"""Control groups for containers: one cgroup per container, under a ``dockyard`` parent.

Two backends with one interface, picked by :func:`detect`:

- :class:`CgroupV2` (the unified hierarchy, ``<root>/cgroup.controllers`` exists):
  ``<root>/<base>/<parent>/<name>``, with the parent's available controllers enabled for its
  children in ``<parent>/cgroup.subtree_control``. ``<base>`` is empty (the root of the
  hierarchy), unless the daemon's own cgroup was delegated to it (systemd's ``Delegate=yes``
  marks it with the ``trusted.delegate`` xattr): then ``<base>`` is that cgroup, so that the
  unit's accounting, ``systemctl status`` and ``KillMode=`` see the containers. v2 lets only
  leaves hold processes, so :meth:`CgroupV2.enter` first moves the daemon (and whatever else
  is in ``<base>``) into the leaf ``<base>/supervisor``::

      <root>/system.slice/dockyard.service/     delegated: ours below, no process of its own
      ├── supervisor/                           the daemon, its workers, its fork server
      └── <parent>/                             "dockyard" by default
          └── <container id>/                   one container
- :class:`CgroupV1`: ``<root>/<controller>/<parent>/<name>`` in each hierarchy of
  :data:`V1_CONTROLLERS` that is mounted; a hierarchy co-mounting several of them
  (``cpu,cpuacct``) is used once. The ``systemd`` named hierarchy and ``unified`` are
  not ours to use.

The container's init stage joins the cgroup by writing its pid to every file of
:attr:`Cgroup.procs_files` before it unshares its cgroup namespace. Nothing here remounts
or reconfigures the host's hierarchies; the roots are parameters, so tests can use a plain
directory tree.

Limits (:meth:`Cgroup.apply`) are written after the cgroup is created and before the init
stage joins it, and again by ``dockyard update``. Each backend turns a
:class:`~supervisor.resources.Resources` into a list of ``(controller, file, value)`` writes
(:meth:`Cgroup.limit_writes`, pure, what the unit tests check), then writes them in order:

    v1                                      v2
    memory.limit_in_bytes                   memory.max
    memory.memsw.limit_in_bytes             memory.swap.max   (swap alone: memsw - memory)
    memory.soft_limit_in_bytes              memory.low
    cpu.cfs_period_us + cpu.cfs_quota_us    cpu.max           ("quota period")
    cpu.shares                              cpu.weight        (runc's formula from shares)
    cpuset.cpus                             cpuset.cpus
    pids.max                                pids.max

Devices: v1 writes ``a`` to devices.deny, then the standard devices and ``--device`` ones
to devices.allow. v2 has no devices files (it takes a BPF program, not loaded here): the
supervisor drops CAP_MKNOD instead (docs/architecture.md).

OOM kills are counted by the kernel per cgroup: ``oom_kill`` in memory.oom_control (v1,
kernel 4.13 and later) or memory.events (v2). :meth:`Cgroup.oom_kills` reads it once, when
the container has exited and before its cgroup is removed: no process, thread or eventfd
per container.
"""

from __future__ import annotations

import errno
import os
import posixpath
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.errors import InvalidArgument
from supervisor.resources import CFS_PERIOD_US, FLAGS, STANDARD_DEVICES, Resources, cfs_quota_us, cpu_weight

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "blkio")
CPUSET_FILES = ("cpuset.cpus", "cpuset.mems")  # empty in a new v1 cpuset cgroup, which then refuses tasks
#: Files a kernel may lack; a write to one is skipped (docker's default memsw without swap).
OPTIONAL_FILES = ("memory.memsw.limit_in_bytes", "memory.swap.max")
#: Controllers whose absence only means "no such limit here" (a v1 host may not mount them).
OPTIONAL_CONTROLLERS = ("devices",)
UNLIMITED_V1 = "-1"
#: The leaf of a delegated v2 cgroup that holds the daemon (v2: no processes in inner nodes).
SUPERVISOR_LEAF = "supervisor"
#: The xattrs systemd sets on the cgroup of a unit with Delegate=yes (user.* from v251).
DELEGATE_XATTRS = ("trusted.delegate", "user.delegate")


def v1_limit_writes(resources: Resources) -> list[tuple[str, str, str]]:
    """The cgroup v1 files for ``resources``, in order. Unset limits are not written."""
    writes = []
    if resources.memory:
        writes.append(("memory", "memory.limit_in_bytes", str(resources.memory)))
    if resources.memory_swap:
        writes.append(("memory", "memory.memsw.limit_in_bytes", str(resources.memory_swap)))
    if resources.memory_reservation:
        writes.append(("memory", "memory.soft_limit_in_bytes", str(resources.memory_reservation)))
    if resources.nano_cpus:
        writes.append(("cpu", "cpu.cfs_period_us", str(CFS_PERIOD_US)))
        writes.append(("cpu", "cpu.cfs_quota_us", str(cfs_quota_us(resources.nano_cpus))))
    if resources.cpu_shares:
        writes.append(("cpu", "cpu.shares", str(resources.cpu_shares)))
    if resources.cpuset_cpus:
        writes.append(("cpuset", "cpuset.cpus", resources.cpuset_cpus))
    if resources.pids_limit:
        writes.append(("pids", "pids.max", "max" if resources.pids_limit < 0 else str(resources.pids_limit)))
    return writes


def v2_limit_writes(resources: Resources) -> list[tuple[str, str, str]]:
    """The cgroup v2 files for ``resources``, in order. Unset limits are not written."""
    writes = []
    if resources.memory:
        writes.append(("memory", "memory.max", str(resources.memory)))
    if resources.memory_swap:
        swap = "max" if resources.memory_swap < 0 else str(resources.memory_swap - resources.memory)
        writes.append(("memory", "memory.swap.max", swap))
    if resources.memory_reservation:
        writes.append(("memory", "memory.low", str(resources.memory_reservation)))
    if resources.nano_cpus:
        writes.append(("cpu", "cpu.max", f"{cfs_quota_us(resources.nano_cpus)} {CFS_PERIOD_US}"))
    if resources.cpu_shares:
        writes.append(("cpu", "cpu.weight", str(cpu_weight(resources.cpu_shares))))
    if resources.cpuset_cpus:
        writes.append(("cpuset", "cpuset.cpus", resources.cpuset_cpus))
    if resources.pids_limit:
        writes.append(("pids", "pids.max", "max" if resources.pids_limit < 0 else str(resources.pids_limit)))
    return writes


@dataclass(frozen=True)
class Cgroup:
    """One container's cgroup: a directory in each hierarchy.

    ``controllers`` maps a controller to its directory (v1: one per hierarchy; v2: every
    controller to the one directory)."""

    name: str
    paths: tuple[str, ...]
    version: int = 1
    controllers: tuple[tuple[str, str], ...] = ()

    @property
    def procs_files(self) -> tuple[str, ...]:
        return tuple(os.path.join(path, "cgroup.procs") for path in self.paths)

    def file(self, controller: str, name: str) -> str | None:
        """The path of ``name`` of ``controller``, None when that controller is not mounted."""
        for known, path in self.controllers:
            if known == controller:
                return os.path.join(path, name)
        if self.version == 2 and self.paths:
            return os.path.join(self.paths[0], name)
        return None

    # --- limits -----------------------------------------------------------------------

    def limit_writes(self, resources: Resources) -> list[tuple[str, str, str]]:
        """The ``(controller, file, value)`` writes that set ``resources``, in order."""
        return v2_limit_writes(resources) if self.version == 2 else v1_limit_writes(resources)

    def device_writes(self, allowed: tuple[str, ...]) -> list[tuple[str, str, str]]:
        """Deny every device but the standard ones and ``allowed`` rules (v1 only)."""
        if self.version == 2:
            return []
        rules = [("devices", "devices.deny", "a")]
        rules += [("devices", "devices.allow", rule) for rule in (*STANDARD_DEVICES, *allowed)]
        return rules

    def apply(self, resources: Resources, devices: tuple[str, ...] | None = None) -> None:
        """Write the limits (and, given ``devices``, the device rules) into the cgroup.

        A missing optional file (memsw without swap accounting, in docker's default of
        twice the memory) is skipped; on v1, memory and memory+swap are written in the
        order the kernel accepts (memory <= memsw at every step).

        Raises:
            OSError: the kernel refused a value; its message names the file and value.
        """
        writes = self.limit_writes(resources)
        if devices is not None:
            writes += self.device_writes(devices)
        index = 0
        while index < len(writes):
            controller, name, value = writes[index]
            following = writes[index + 1] if index + 1 < len(writes) else None
            try:
                self._write(controller, name, value)
            except OSError as exc:
                # v1: raising memory above the current memsw needs memsw raised first.
                if exc.errno == errno.EINVAL and name == "memory.limit_in_bytes" and following and following[1] == "memory.memsw.limit_in_bytes":
                    self._write(*following)
                    self._write(controller, name, value)
                    index += 2
                    continue
                raise
            index += 1

    def _write(self, controller: str, name: str, value: str) -> None:
        path = self.file(controller, name)
        if path is None:
            if controller in OPTIONAL_CONTROLLERS:
                return
            raise OSError(errno.ENOENT, f"cannot set {name} of cgroup {self.name}: the {controller} controller is not mounted")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        except FileNotFoundError:
            if name in OPTIONAL_FILES:
                return
            raise OSError(errno.ENOENT, f"cannot set {name} of cgroup {self.name}: the file is missing", path) from None
        try:
            os.write(fd, value.encode())
        except OSError as exc:
            raise OSError(exc.errno, f"cannot set {name} of cgroup {self.name} to {value!r}: {os.strerror(exc.errno)}", path) from None
        finally:
            os.close(fd)

    def oom_kills(self) -> int:
        """How many processes the OOM killer killed in this cgroup (0 if unknown)."""
        if self.version == 2:
            path = self.file("memory", "memory.events")
        else:
            path = self.file("memory", "memory.oom_control")
        if path is None:
            return 0
        try:
            with open(path) as file:
                for line in file:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def pids(self) -> list[int]:
        """The processes in the cgroup, in every hierarchy, as pids of our pid namespace."""
        found: set[int] = set()
        for path in self.procs_files:
            try:
                with open(path) as file:
                    found.update(int(line) for line in file if line.strip())
            except FileNotFoundError:
                continue
        return sorted(found)

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to every process in the cgroup."""
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def remove(self, timeout: float = 5.0) -> None:
        """rmdir the cgroup in every hierarchy. A missing directory is fine; EBUSY (processes
        still exiting) is retried until ``timeout`` seconds have passed.

        Raises:
            OSError: a directory could not be removed.
        """
        deadline = time.monotonic() + timeout
        for path in self.paths:
            delay = 0.001
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                        reason = f"cannot remove cgroup {self.name}: {os.strerror(exc.errno)}"
                        raise OSError(exc.errno, reason, path) from None
                time.sleep(delay)  # the kernel offers no event for "the last task left"
                delay = min(delay * 2, 0.05)

    def kill_and_remove(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the cgroup, then rmdir it in every hierarchy. A process
        forked while this runs (EBUSY) is killed in the next round, until ``timeout``.

        Raises:
            OSError: a directory could not be removed.
        """
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            self.kill_all(signal.SIGKILL)
            try:
                self.remove(timeout=0)
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)  # the killed processes are still exiting
            delay = min(delay * 2, 0.05)


def _check_swap(resources: Resources, has_accounting: bool, name: str) -> None:
    explicit = resources.memory_swap not in (0, 2 * resources.memory)  # not docker's default
    if explicit and not has_accounting:
        raise InvalidArgument(
            f"cannot set --memory-swap: this host has no swap accounting ({name} is missing); "
            "leave --memory-swap out",
            flag=FLAGS["memory_swap"],
        )


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\x00" in name:
        raise InvalidArgument(f"cgroup name {name!r} is not a single path component")


def _make_dirs(base: str, parts: tuple[str, ...]) -> list[str]:
    """mkdir base/parts[0]/parts[1]... ; returns the directories created, in order."""
    created = []
    path = base
    for part in parts:
        path = os.path.join(path, part)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            continue
        created.append(path)
    return created


def _remove_dirs(paths: list[str]) -> None:
    for path in reversed(paths):
        try:
            os.rmdir(path)
        except OSError:
            pass


class CgroupV1:
    """One directory per controller hierarchy (cgroup v1)."""

    version = 1

    def __init__(self, root: str = "/sys/fs/cgroup", parent: str = "dockyard"):
        _check_name(parent)
        self.root = root
        self.parent = parent
        self._hierarchies: list[str] | None = None

    def hierarchies(self) -> list[str]:
        """The mounted hierarchies of V1_CONTROLLERS, each once (co-mounts are symlinks to
        one directory, ``cpu -> cpu,cpuacct``). Found once: the host's mounts do not change
        under a running daemon, and the eight realpath calls are on every container start."""
        if self._hierarchies is None:
            self._hierarchies = self._find_hierarchies()
        return list(self._hierarchies)

    def _find_hierarchies(self) -> list[str]:
        seen: set[str] = set()
        found = []
        for controller in V1_CONTROLLERS:
            path = os.path.join(self.root, controller)
            real = os.path.realpath(path)
            if os.path.isdir(real) and real not in seen:
                seen.add(real)
                found.append(path)
        return found

    def create(self, name: str) -> Cgroup:
        _check_name(name)
        created: list[str] = []
        try:
            for hierarchy in self.hierarchies():
                new_dirs = _make_dirs(hierarchy, (self.parent, name))
                created.extend(new_dirs)
                for path in new_dirs:
                    _inherit_cpuset(path)
        except OSError:
            _remove_dirs(created)
            raise
        return self.open(name)

    def open(self, name: str) -> Cgroup:
        """The cgroup ``name`` as it would be created (for cleanup after a restart)."""
        _check_name(name)
        hierarchies = self.hierarchies()
        paths = tuple(os.path.join(h, self.parent, name) for h in hierarchies)
        controllers = tuple(
            (controller, os.path.join(self.root, controller, self.parent, name))
            for controller in V1_CONTROLLERS
            if os.path.isdir(os.path.join(self.root, controller))
        )
        return Cgroup(name, paths, 1, controllers)

    def remove_parent(self) -> None:
        """Remove the parent cgroup where it is empty (when the daemon stops)."""
        _remove_dirs([os.path.join(h, self.parent) for h in self.hierarchies()])

    @property
    def parent_path(self) -> str:
        """Where the containers' cgroups are, for people (``info``)."""
        return os.path.join(self.root, "<controller>", self.parent)

    def enter(self) -> None:
        """Nothing to prepare on v1: the parent is created with the first container."""

    def has_controller(self, controller: str) -> bool:
        """Whether containers get ``controller`` (its hierarchy is mounted)."""
        return os.path.isdir(os.path.join(self.root, controller))

    def check(self, resources: Resources) -> None:
        """Refuse a limit this host cannot set, before anything is created.

        Raises:
            InvalidArgument: naming the flag.
        """
        _check_swap(resources, self._has_swap_accounting(), "memory.memsw.limit_in_bytes")

    def _has_swap_accounting(self) -> bool:
        return os.path.exists(os.path.join(self.root, "memory", "memory.memsw.limit_in_bytes"))


def _inherit_cpuset(path: str) -> None:
    """Copy cpuset.cpus and cpuset.mems from the parent when they are empty (v1 only)."""
    parent = os.path.dirname(path)
    for name in CPUSET_FILES:
        try:
            with open(os.path.join(parent, name)) as file:
                value = file.read().strip()
        except FileNotFoundError:
            return  # not a cpuset hierarchy
        try:
            with open(os.path.join(path, name)) as file:
                if file.read().strip():
                    continue
        except FileNotFoundError:
            pass
        with open(os.path.join(path, name), "w") as file:
            file.write(value)


class CgroupV2:
    """One directory in the unified hierarchy (cgroup v2), below ``base`` (a cgroup path
    relative to ``root``; empty: the root of the hierarchy)."""

    version = 2

    def __init__(self, root: str = "/sys/fs/cgroup", parent: str = "dockyard", base: str = ""):
        _check_name(parent)
        self.root = root
        self.parent = parent
        self.base = base.strip("/")
        if self.base and parent == SUPERVISOR_LEAF:
            raise InvalidArgument(f"cgroup parent {parent!r} is the daemon's own leaf in {self.base}: pick another name")
        self.base_dir = os.path.join(root, self.base) if self.base else root
        self.parent_dir = os.path.join(self.base_dir, parent)

    @property
    def parent_path(self) -> str:
        """Where the containers' cgroups are, for people (``info``)."""
        return self.parent_dir

    def enter(self) -> None:
        """With a delegated ``base``: move every process in it (the daemon, at least) into its
        leaf ``supervisor``, then enable the controllers it has for its children. Processes
        the daemon starts later (workers, fork server, containers' init stages) start there.

        Raises:
            OSError: a step failed; its message names the cgroup.
        """
        if not self.base:
            return
        leaf = os.path.join(self.base_dir, SUPERVISOR_LEAF)
        _make_dirs(self.base_dir, (SUPERVISOR_LEAF,))
        for _ in range(100):  # a process forked meanwhile shows up in the next read
            pids = _read_pids(os.path.join(self.base_dir, "cgroup.procs"))
            if not pids:
                break
            for pid in pids:
                try:
                    _write_file(os.path.join(leaf, "cgroup.procs"), str(pid))
                except ProcessLookupError:
                    continue  # it exited
                except OSError as exc:
                    raise OSError(exc.errno, f"cannot move process {pid} into cgroup {leaf}: {os.strerror(exc.errno)}",
                                  leaf) from None
        else:
            raise OSError(errno.EBUSY, f"cannot empty cgroup {self.base_dir} into its leaf: processes keep appearing",
                          self.base_dir)
        self._enable_controllers(self.base_dir)

    def has_controller(self, controller: str) -> bool:
        """Whether containers get ``controller``: the parent's parent enables it for its
        children (the root's by whoever owns it, systemd; a delegated base's by :meth:`enter`)."""
        try:
            with open(os.path.join(self.base_dir, "cgroup.subtree_control")) as file:
                return controller in file.read().split()
        except FileNotFoundError:
            return False

    def create(self, name: str) -> Cgroup:
        _check_name(name)
        created = _make_dirs(self.base_dir, (self.parent,))
        try:
            self._enable_controllers(self.parent_dir)
            created.extend(_make_dirs(self.parent_dir, (name,)))
        except OSError:
            _remove_dirs(created)
            raise
        return self.open(name)

    def open(self, name: str) -> Cgroup:
        _check_name(name)
        return Cgroup(name, (os.path.join(self.parent_dir, name),), 2)

    def remove_parent(self) -> None:
        """Remove the parent cgroup where it is empty (when the daemon stops)."""
        _remove_dirs([self.parent_dir])

    def check(self, resources: Resources) -> None:
        """Refuse a limit this host cannot set, before anything is created.

        Raises:
            InvalidArgument: naming the flag.
        """
        _check_swap(resources, self._has_swap_accounting(), "memory.swap.max")

    def _has_swap_accounting(self) -> bool:
        parent = self.parent_dir
        if not os.path.isdir(parent):
            return True  # not known before the parent exists; the write will tell
        return os.path.exists(os.path.join(parent, "memory.swap.max"))

    @staticmethod
    def _enable_controllers(parent: str) -> None:
        """Enable for the children every controller the parent has, one at a time: one that
        cannot be enabled (say, cpu with a realtime task around) must not stop the others."""
        try:
            with open(os.path.join(parent, "cgroup.controllers")) as file:
                available = file.read().split()
        except FileNotFoundError:
            return
        for controller in available:
            try:
                fd = os.open(os.path.join(parent, "cgroup.subtree_control"), os.O_WRONLY | os.O_APPEND)
                try:
                    os.write(fd, f"+{controller}\n".encode())
                finally:
                    os.close(fd)
            except OSError:
                pass


def detect(root: str = "/sys/fs/cgroup", parent: str = "dockyard", own_cgroup_file: str = "/proc/self/cgroup") -> CgroupV1 | CgroupV2:
    """The backend for the host: v2 when ``<root>/cgroup.controllers`` exists, else v1. On v2,
    containers go below the daemon's own cgroup when it was delegated (:func:`delegated_base`,
    the process's cgroup read from ``own_cgroup_file``)."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        base = delegated_base(own_v2_cgroup(own_cgroup_file), lambda path: is_delegated(root, path))
        return CgroupV2(root, parent, base)
    return CgroupV1(root, parent)


def own_v2_cgroup(path: str = "/proc/self/cgroup") -> str | None:
    """The unified-hierarchy cgroup of the process (``0::/system.slice/x.service``), or None."""
    try:
        with open(path) as file:
            for line in file:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def delegated_base(own: str | None, delegated: Callable[[str], bool]) -> str:
    """The cgroup (relative to the root) that holds the daemon's containers on v2: its own
    cgroup when ``delegated(own)``, or the parent of its own when it is already in that
    cgroup's ``supervisor`` leaf (a second start in the same process, or systemd's
    ``DelegateSubgroup=supervisor``); else "" (the root of the hierarchy)."""
    if not own or own == "/" or own.startswith("/.."):  # "/..": outside our cgroup namespace
        return ""
    if delegated(own):
        return own.strip("/")
    parent, leaf = posixpath.split(own.rstrip("/"))
    if leaf == SUPERVISOR_LEAF and parent != "/" and delegated(parent):
        return parent.strip("/")
    return ""


def is_delegated(root: str, cgroup: str) -> bool:
    """Whether systemd marked ``cgroup`` (a path below ``root``) as delegated (Delegate=yes)."""
    path = os.path.join(root, cgroup.strip("/"))
    for name in DELEGATE_XATTRS:
        try:
            if os.getxattr(path, name).strip() in (b"1", b"yes", b"true"):
                return True
        except OSError:
            continue
    return False


def _read_pids(path: str) -> list[int]:
    try:
        with open(path) as file:
            return [int(line) for line in file if line.strip()]
    except FileNotFoundError:
        return []


def _write_file(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
