"""Fake cgroup trees for tests without root: each version's layout with the files the kernel
would make in a new cgroup, as plain files (the backends take the root as a parameter)."""

from __future__ import annotations

from pathlib import Path

from supervisor.runtime.cgroups import CgroupV1, CgroupV2, detect

V1_FILES = {
    "memory": ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.soft_limit_in_bytes",
               "memory.usage_in_bytes", "memory.oom_control"],
    "cpu": ["cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.shares"],
    "cpuacct": ["cpuacct.usage"],
    "cpuset": ["cpuset.cpus", "cpuset.mems"],
    "pids": ["pids.max", "pids.current"],
    "devices": ["devices.allow", "devices.deny"],
    "blkio": ["blkio.throttle.io_service_bytes"],
}
V2_FILES = ["cgroup.procs", "memory.max", "memory.swap.max", "memory.low", "memory.current", "memory.events",
            "cpu.max", "cpu.weight", "cpu.stat", "cpuset.cpus", "pids.max", "pids.current", "io.stat"]


def v1_tree(root: Path) -> CgroupV1:
    """A v1 layout; the kernel would make a new cgroup's files, so the fake makes them here."""
    for controller, names in V1_FILES.items():
        (root / controller).mkdir(parents=True)
        for name in names:
            (root / controller / name).write_text("0\n")
    (root / "cpuset" / "cpuset.cpus").write_text("0-3\n")
    backend = CgroupV1(str(root), "dockyard")
    for controller, names in V1_FILES.items():
        folder = root / controller / "dockyard" / "c1"
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).write_text("")
    return backend


def v2_tree(root: Path) -> CgroupV2:
    root.mkdir(exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    folder = root / "dockyard" / "c1"
    folder.mkdir(parents=True)
    (root / "dockyard" / "memory.swap.max").write_text("max\n")
    for name in V2_FILES:
        (folder / name).write_text("")
    return detect(str(root), "dockyard")
