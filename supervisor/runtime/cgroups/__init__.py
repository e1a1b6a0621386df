"""Control groups for containers: one cgroup per container, under a ``dockyard`` parent.

A small package behind this module's names (``from supervisor.runtime import cgroups``;
``cgroups.detect(root, parent)``): ``limits.py`` turns resource limits into the files of
each version (pure), ``cgroup.py`` is one container's cgroup (:class:`Cgroup`, written the
same way on both versions), ``v1.py`` and ``v2.py`` are the two layouts of the backends
(and v2's delegation), and :func:`detect` here picks one. Why a package: the two versions
differ in layout and in what is set up before the first container (v2's delegation), and
each reads best on its own, as youki's ``cgroups/v1`` and ``cgroups/v2``.

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

import os

from supervisor.resources import STANDARD_DEVICES
from supervisor.runtime.cgroups.cgroup import OPTIONAL_CONTROLLERS, OPTIONAL_FILES, Cgroup
from supervisor.runtime.cgroups.limits import v1_limit_writes, v2_limit_writes
from supervisor.runtime.cgroups.v1 import CPUSET_FILES, V1_CONTROLLERS, CgroupV1
from supervisor.runtime.cgroups.v2 import (
    DELEGATE_XATTRS,
    SUPERVISOR_LEAF,
    CgroupV2,
    delegated_base,
    is_delegated,
    own_v2_cgroup,
)

__all__ = [
    "CPUSET_FILES",
    "DELEGATE_XATTRS",
    "OPTIONAL_CONTROLLERS",
    "OPTIONAL_FILES",
    "STANDARD_DEVICES",
    "SUPERVISOR_LEAF",
    "V1_CONTROLLERS",
    "Cgroup",
    "CgroupV1",
    "CgroupV2",
    "delegated_base",
    "detect",
    "is_delegated",
    "own_v2_cgroup",
    "v1_limit_writes",
    "v2_limit_writes",
]


def detect(root: str = "/sys/fs/cgroup", parent: str = "dockyard", own_cgroup_file: str = "/proc/self/cgroup") -> CgroupV1 | CgroupV2:
    """The backend for the host: v2 when ``<root>/cgroup.controllers`` exists, else v1. On v2,
    containers go below the daemon's own cgroup when it was delegated (:func:`delegated_base`,
    the process's cgroup read from ``own_cgroup_file``)."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        base = delegated_base(own_v2_cgroup(own_cgroup_file), lambda path: is_delegated(root, path))
        return CgroupV2(root, parent, base)
    return CgroupV1(root, parent)
