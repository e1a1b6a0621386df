"""Control groups for containers: one cgroup per container, under a ``dockyard`` parent.

Two backends with one interface, picked by :func:`detect`:

- :class:`CgroupV2` (the unified hierarchy, ``<root>/cgroup.controllers`` exists):
  ``<root>/<parent>/<name>``, with the parent's available controllers enabled for its
  children in ``<parent>/cgroup.subtree_control``.
- :class:`CgroupV1`: ``<root>/<controller>/<parent>/<name>`` in each hierarchy of
  :data:`V1_CONTROLLERS` that is mounted; a hierarchy co-mounting several of them
  (``cpu,cpuacct``) is used once. The ``systemd`` named hierarchy and ``unified`` are
  not ours to use.

The container's init stage joins the cgroup by writing its pid to every file of
:attr:`Cgroup.procs_files` before it unshares its cgroup namespace. Nothing here remounts
or reconfigures the host's hierarchies; the roots are parameters, so tests can use a plain
directory tree.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass

from supervisor.errors import InvalidArgument

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "blkio")
CPUSET_FILES = ("cpuset.cpus", "cpuset.mems")  # empty in a new v1 cpuset cgroup, which then refuses tasks


@dataclass(frozen=True)
class Cgroup:
    """One container's cgroup: a directory in each hierarchy."""

    name: str
    paths: tuple[str, ...]

    @property
    def procs_files(self) -> tuple[str, ...]:
        return tuple(os.path.join(path, "cgroup.procs") for path in self.paths)

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

    def hierarchies(self) -> list[str]:
        """The mounted hierarchies of V1_CONTROLLERS, each once (co-mounts are symlinks to
        one directory, ``cpu -> cpu,cpuacct``)."""
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
        return Cgroup(name, tuple(os.path.join(h, self.parent, name) for h in self.hierarchies()))

    def remove_parent(self) -> None:
        """Remove the parent cgroup where it is empty (when the daemon stops)."""
        _remove_dirs([os.path.join(h, self.parent) for h in self.hierarchies()])


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
    """One directory in the unified hierarchy (cgroup v2)."""

    version = 2

    def __init__(self, root: str = "/sys/fs/cgroup", parent: str = "dockyard"):
        _check_name(parent)
        self.root = root
        self.parent = parent

    def create(self, name: str) -> Cgroup:
        _check_name(name)
        parent = os.path.join(self.root, self.parent)
        created = _make_dirs(self.root, (self.parent,))
        try:
            self._enable_controllers(parent)
            created.extend(_make_dirs(parent, (name,)))
        except OSError:
            _remove_dirs(created)
            raise
        return self.open(name)

    def open(self, name: str) -> Cgroup:
        _check_name(name)
        return Cgroup(name, (os.path.join(self.root, self.parent, name),))

    def remove_parent(self) -> None:
        """Remove the parent cgroup where it is empty (when the daemon stops)."""
        _remove_dirs([os.path.join(self.root, self.parent)])

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


def detect(root: str = "/sys/fs/cgroup", parent: str = "dockyard") -> CgroupV1 | CgroupV2:
    """The backend for the host: v2 when ``<root>/cgroup.controllers`` exists, else v1."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return CgroupV2(root, parent)
    return CgroupV1(root, parent)
