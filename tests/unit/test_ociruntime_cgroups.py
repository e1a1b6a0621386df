"""cgroupsPath and linux.resources to cgroup files (supervisor/ociruntime/cgroups.py): pure."""

from __future__ import annotations

import pytest

from supervisor.ociruntime.cgroups import hierarchies, own_cgroups, resolve_paths, v1_writes, v2_writes
from supervisor.ociruntime.errors import RuntimeCommandError

MOUNTINFO = """\
30 25 0:26 / /sys/fs/cgroup rw shared:6 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw shared:7 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw shared:8 - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw shared:11 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/memory rw shared:12 - cgroup cgroup rw,memory
"""


def test_v1_hierarchies_are_read_from_mountinfo_and_the_empty_unified_one_is_left_out():
    assert hierarchies(MOUNTINFO) == {"name=systemd": "/sys/fs/cgroup/systemd", "cpu": "/sys/fs/cgroup/cpu,cpuacct",
                                      "cpuacct": "/sys/fs/cgroup/cpu,cpuacct", "memory": "/sys/fs/cgroup/memory"}
    pure_v2 = "31 25 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    assert hierarchies(pure_v2) == {"": "/sys/fs/cgroup"}


def test_absolute_relative_and_default_paths_as_runc():
    mounts = {"memory": "/sys/fs/cgroup/memory"}
    own = own_cgroups("5:memory:/user.slice\n")
    assert resolve_paths("/pod/c1", "c1", mounts, own) == {"memory": "/sys/fs/cgroup/memory/pod/c1"}
    assert resolve_paths("pod/c1", "c1", mounts, own) == {"memory": "/sys/fs/cgroup/memory/user.slice/pod/c1"}
    assert resolve_paths("", "c1", mounts, own) == {"memory": "/sys/fs/cgroup/memory/dockyard-runtime/c1"}
    with pytest.raises(RuntimeCommandError, match="systemd path"):
        resolve_paths("system.slice:docker:c1", "c1", mounts, own)
    with pytest.raises(RuntimeCommandError, match="must not contain"):
        resolve_paths("/a/../../b", "c1", mounts, own)


def test_v1_writes_cover_the_resources_in_order():
    resources = {"memory": {"limit": 100, "swap": 200, "swappiness": 10}, "cpu": {"shares": 512, "quota": 5000,
                 "period": 10000, "cpus": "0"}, "pids": {"limit": 0}, "blockIO": {"weight": 300,
                 "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}]},
                 "hugepageLimits": [{"pageSize": "2MB", "limit": 4096}], "network": {"classID": 7},
                 "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 10,
                                                                "minor": 229, "access": "rw"}]}
    writes = v1_writes(resources, [["/dev/fuse2", "c", 10, 230, 0o666, 0, 0]])
    assert writes[:3] == [("memory", "memory.limit_in_bytes", "100"), ("memory", "memory.memsw.limit_in_bytes", "200"),
                          ("memory", "memory.swappiness", "10")]
    assert ("cpu", "cpu.cfs_period_us", "10000") in writes and ("cpuset", "cpuset.cpus", "0") in writes
    assert writes.index(("cpu", "cpu.cfs_period_us", "10000")) < writes.index(("cpu", "cpu.cfs_quota_us", "5000"))
    assert ("pids", "pids.max", "max") in writes
    assert ("blkio", "blkio.throttle.read_bps_device", "8:0 1000") in writes
    assert ("hugetlb", "hugetlb.2MB.limit_in_bytes", "4096") in writes
    devices = [write for write in writes if write[0] == "devices"]
    assert devices[:3] == [("devices", "devices.deny", "a"), ("devices", "devices.deny", "a"),
                           ("devices", "devices.allow", "c 10:229 rw")]
    assert devices[-1] == ("devices", "devices.allow", "c 10:230 rwm")


def test_v2_writes_convert_shares_and_quota():
    writes = v2_writes({"memory": {"limit": 100, "swap": 300}, "cpu": {"shares": 1024, "quota": 5000},
                        "pids": {"limit": 10}})
    assert ("memory", "memory.max", "100") in writes and ("memory", "memory.swap.max", "200") in writes
    assert ("cpu", "cpu.weight", "39") in writes and ("cpu", "cpu.max", "5000 100000") in writes
    assert ("pids", "pids.max", "10") in writes
