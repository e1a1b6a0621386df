"""Resource limits as cgroup file writes, per version: which file holds what (the table in
``cgroups/__init__.py``). Pure: a :class:`~supervisor.resources.Resources` in, a list of
``(controller, file, value)`` out, in the order they are written; what the unit tests check.
"""

from __future__ import annotations

from supervisor.resources import CFS_PERIOD_US, Resources, cfs_quota_us, cpu_weight


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
