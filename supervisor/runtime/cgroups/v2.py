"""cgroup v2, the unified hierarchy: ``<root>/<base>/<parent>/<name>``, and delegation:
``<base>`` is the daemon's own cgroup when systemd delegated it (``Delegate=yes``), with
the daemon moved into its leaf ``<base>/supervisor`` (``cgroups/__init__.py`` has the
picture).
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Callable

from supervisor.errors import InvalidArgument
from supervisor.resources import Resources
from supervisor.runtime import cgroupfiles
from supervisor.runtime.cgroups.cgroup import Cgroup, check_name, check_swap, make_dirs, remove_dirs, removed_on_error

#: The leaf of a delegated v2 cgroup that holds the daemon (v2: no processes in inner nodes).
SUPERVISOR_LEAF = "supervisor"
#: The xattrs systemd sets on the cgroup of a unit with Delegate=yes (user.* from v251).
DELEGATE_XATTRS = ("trusted.delegate", "user.delegate")


class CgroupV2:
    """One directory in the unified hierarchy (cgroup v2), below ``base`` (a cgroup path
    relative to ``root``; empty: the root of the hierarchy)."""

    version = 2

    def __init__(self, root: str = "/sys/fs/cgroup", parent: str = "dockyard", base: str = ""):
        check_name(parent)
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
        make_dirs(self.base_dir, (SUPERVISOR_LEAF,))
        for _ in range(100):  # a process forked meanwhile shows up in the next read
            pids = _read_pids(os.path.join(self.base_dir, "cgroup.procs"))
            if not pids:
                break
            for pid in pids:
                try:
                    cgroupfiles.write(os.path.join(leaf, "cgroup.procs"), str(pid))
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
        check_name(name)
        with removed_on_error() as created:
            created.extend(make_dirs(self.base_dir, (self.parent,)))
            self._enable_controllers(self.parent_dir)
            created.extend(make_dirs(self.parent_dir, (name,)))
        return self.open(name)

    def open(self, name: str) -> Cgroup:
        check_name(name)
        return Cgroup(name, (os.path.join(self.parent_dir, name),), 2)

    def remove_parent(self) -> None:
        """Remove the parent cgroup where it is empty (when the daemon stops)."""
        remove_dirs([self.parent_dir])

    def check(self, resources: Resources) -> None:
        """Refuse a limit this host cannot set, before anything is created.

        Raises:
            InvalidArgument: naming the flag.
        """
        check_swap(resources, self._has_swap_accounting(), "memory.swap.max")

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
