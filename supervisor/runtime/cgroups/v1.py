"""cgroup v1: ``<root>/<controller>/<parent>/<name>`` in each mounted hierarchy of
:data:`V1_CONTROLLERS`; a hierarchy co-mounting several of them (``cpu,cpuacct``) is used
once. The ``systemd`` named hierarchy and ``unified`` are not ours to use.
"""

from __future__ import annotations

import os

from supervisor.resources import Resources
from supervisor.runtime.cgroups.cgroup import Cgroup, check_name, check_swap, make_dirs, remove_dirs, removed_on_error

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "blkio")
CPUSET_FILES = ("cpuset.cpus", "cpuset.mems")  # empty in a new v1 cpuset cgroup, which then refuses tasks
UNLIMITED_V1 = "-1"


class CgroupV1:
    """One directory per controller hierarchy (cgroup v1)."""

    version = 1

    def __init__(self, root: str = "/sys/fs/cgroup", parent: str = "dockyard"):
        check_name(parent)
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
        check_name(name)
        with removed_on_error() as created:
            for hierarchy in self.hierarchies():
                new_dirs = make_dirs(hierarchy, (self.parent, name))
                created.extend(new_dirs)
                for path in new_dirs:
                    _inherit_cpuset(path)
        return self.open(name)

    def open(self, name: str) -> Cgroup:
        """The cgroup ``name`` as it would be created (for cleanup after a restart)."""
        check_name(name)
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
        remove_dirs([os.path.join(h, self.parent) for h in self.hierarchies()])

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
        check_swap(resources, self._has_swap_accounting(), "memory.memsw.limit_in_bytes")

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

