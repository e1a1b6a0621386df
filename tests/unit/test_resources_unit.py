"""Resource limits without root: docker's syntax, conversions, and both cgroup backends
writing limits and reading usage on directory trees in each version's file format."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor import stats
from supervisor.errors import InvalidArgument
from supervisor.resources import DeviceMapping, Resources, cfs_quota_us, cpu_weight, parse_cpus, parse_size
from supervisor.runtime.cgroups import STANDARD_DEVICES, CgroupV1, CgroupV2, delegated_base, detect, own_v2_cgroup
from supervisor.spec import ContainerSpec

MiB = 1 << 20


@pytest.mark.parametrize("text, expected", [
    ("64m", 64 * MiB), ("64M", 64 * MiB), ("64mb", 64 * MiB), ("1g", 1 << 30), ("1.5g", 3 << 29),
    ("512k", 512 << 10), ("100", 100), ("100b", 100), (1234, 1234), ("-1", -1),
])
def test_sizes_use_dockers_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "m", "64q", "6 4m", "-2", "1e3", True, 1.5])
def test_bad_sizes_are_refused_naming_the_flag(text):
    with pytest.raises(InvalidArgument, match="--memory-swap"):
        parse_size(text, "memory_swap")


def test_cpus_are_nano_cpus_and_become_a_cfs_quota():
    assert parse_cpus("0.5") == 500_000_000 and parse_cpus(2) == 2_000_000_000
    assert cfs_quota_us(parse_cpus("0.5")) == 50_000 and cfs_quota_us(parse_cpus("1.5")) == 150_000
    for bad in ("abc", "-1", "nan", "inf", None):
        with pytest.raises(InvalidArgument, match="--cpus"):
            parse_cpus(bad)
    with pytest.raises(InvalidArgument, match="--cpus.*0.01"):
        Resources(nano_cpus=parse_cpus("0.001"))


def test_shares_become_a_v2_weight_with_runcs_formula():
    assert [cpu_weight(s) for s in (2, 1024, 262144)] == [1, 39, 10000]


def test_resources_are_validated_on_construction():
    assert Resources(memory=64 * MiB).memory_swap == 128 * MiB  # docker's default
    assert Resources(memory=64 * MiB, memory_swap=-1).memory_swap == -1
    for kwargs, flag in [
        ({"memory": MiB}, "--memory"),
        ({"memory_swap": 64 * MiB}, "--memory-swap"),  # needs --memory
        ({"memory": 64 * MiB, "memory_swap": 32 * MiB}, "--memory-swap"),
        ({"memory": 64 * MiB, "memory_reservation": 128 * MiB}, "--memory-reservation"),
        ({"cpu_shares": 1}, "--cpu-shares"),
        ({"cpu_shares": 262145}, "--cpu-shares"),
        ({"cpuset_cpus": "0-"}, "--cpuset-cpus"),
        ({"cpuset_cpus": "3-1"}, "--cpuset-cpus"),
        ({"pids_limit": -2}, "--pids-limit"),
        ({"devices": ["dev/sda"]}, "--device"),
        ({"devices": ["/dev/sda:/dev/xvda:rwx"]}, "--device"),
    ]:
        with pytest.raises(InvalidArgument, match=flag):
            Resources(**kwargs)
    with pytest.raises(InvalidArgument, match="--cpus.*4 CPUs"):
        Resources(nano_cpus=parse_cpus(8)).check_host(4)
    with pytest.raises(InvalidArgument, match="--cpuset-cpus.*no CPU 4"):
        Resources(cpuset_cpus="0,4").check_host(4)


def test_device_mappings_follow_dockers_syntax():
    assert str(DeviceMapping.parse("/dev/sda")) == "/dev/sda:/dev/sda:rwm"
    assert str(DeviceMapping.parse("/dev/sda:r")) == "/dev/sda:/dev/sda:r"
    assert str(DeviceMapping.parse("/dev/sda:/dev/xvda:rw")) == "/dev/sda:/dev/xvda:rw"


def test_a_spec_carries_resources_through_the_bus_and_the_record():
    spec = ContainerSpec.from_map({"image": "base", "resources": {"memory": "32m", "cpus": "0.5", "pids_limit": "20"}})
    assert (spec.resources.memory, spec.resources.nano_cpus, spec.resources.pids_limit) == (32 * MiB, 500_000_000, 20)
    assert ContainerSpec.from_map(spec.to_map()) == spec
    with pytest.raises(InvalidArgument, match="unknown field 'swap'"):
        ContainerSpec.from_map({"image": "base", "resources": {"swap": 1}})


def test_an_update_keeps_what_it_does_not_change_and_the_default_swap_follows():
    base = Resources(memory=64 * MiB, pids_limit=20)
    updated = Resources.from_map({"memory": "256m"}, base=base)
    assert (updated.memory, updated.memory_swap, updated.pids_limit) == (256 * MiB, 512 * MiB, 20)
    explicit = Resources(memory=64 * MiB, memory_swap=100 * MiB)
    with pytest.raises(InvalidArgument, match="--memory-swap"):  # docker: update both together
        Resources.from_map({"memory": "256m"}, base=explicit)


# --- backends on directory trees -----------------------------------------------------------

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


LIMITS = Resources(memory=64 * MiB, memory_reservation=32 * MiB, nano_cpus=500_000_000, cpu_shares=512,
                   cpuset_cpus="0-1", pids_limit=20)


def test_v1_writes_each_limit_to_its_controllers_file(tmp_path):
    backend = v1_tree(tmp_path)
    cgroup = backend.open("c1")
    cgroup.apply(LIMITS, devices=("b 8:0 rw",))
    folder = lambda controller: tmp_path / controller / "dockyard" / "c1"  # noqa: E731
    assert (folder("memory") / "memory.limit_in_bytes").read_text() == str(64 * MiB)
    assert (folder("memory") / "memory.memsw.limit_in_bytes").read_text() == str(128 * MiB)
    assert (folder("memory") / "memory.soft_limit_in_bytes").read_text() == str(32 * MiB)
    assert (folder("cpu") / "cpu.cfs_period_us").read_text() == "100000"
    assert (folder("cpu") / "cpu.cfs_quota_us").read_text() == "50000"
    assert (folder("cpu") / "cpu.shares").read_text() == "512"
    assert (folder("cpuset") / "cpuset.cpus").read_text() == "0-1"
    assert (folder("pids") / "pids.max").read_text() == "20"
    # A plain file keeps only the last write; the rules, in order, are what the kernel gets.
    assert (folder("devices") / "devices.deny").read_text() == "a"
    assert (folder("devices") / "devices.allow").read_text() == "b 8:0 rw"
    assert [value for _, name, value in cgroup.device_writes(("b 8:0 rw",))] == ["a", *STANDARD_DEVICES, "b 8:0 rw"]
    assert "c 1:3 rwm" in STANDARD_DEVICES and "c 136:* rwm" in STANDARD_DEVICES


def test_v1_without_swap_accounting_refuses_an_explicit_swap_limit_and_skips_the_default(tmp_path):
    backend = v1_tree(tmp_path)
    for folder in (tmp_path / "memory", tmp_path / "memory" / "dockyard" / "c1"):
        (folder / "memory.memsw.limit_in_bytes").unlink()
    with pytest.raises(InvalidArgument, match="--memory-swap.*swap accounting"):
        backend.check(Resources(memory=64 * MiB, memory_swap=-1))
    backend.check(Resources(memory=64 * MiB))  # docker's default: skipped, not an error
    backend.open("c1").apply(Resources(memory=64 * MiB))


def test_v2_writes_the_unified_files(tmp_path):
    backend = v2_tree(tmp_path)
    assert isinstance(backend, CgroupV2)
    cgroup = backend.open("c1")
    cgroup.apply(Resources(**{**LIMITS.to_map(), "memory_swap": 96 * MiB}), devices=("b 8:0 rw",))
    folder = tmp_path / "dockyard" / "c1"
    read = lambda name: (folder / name).read_text()  # noqa: E731
    assert read("memory.max") == str(64 * MiB)
    assert read("memory.swap.max") == str(32 * MiB)  # swap alone: memory+swap - memory
    assert read("memory.low") == str(32 * MiB)
    assert read("cpu.max") == "50000 100000"
    assert read("cpu.weight") == str(cpu_weight(512)) == "20"
    assert read("cpuset.cpus") == "0-1"
    assert read("pids.max") == "20"
    assert not (folder / "devices.allow").exists()  # v2 has no devices files
    cgroup.apply(Resources(memory=64 * MiB, memory_swap=-1, pids_limit=-1))
    assert (read("memory.swap.max"), read("pids.max")) == ("max", "max")


def test_oom_kills_are_read_from_each_versions_counter(tmp_path):
    v1 = v1_tree(tmp_path / "v1").open("c1")
    oom_control = tmp_path / "v1" / "memory" / "dockyard" / "c1" / "memory.oom_control"
    oom_control.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    assert v1.oom_kills() == 0
    oom_control.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert v1.oom_kills() == 2
    v2 = v2_tree(tmp_path / "v2").open("c1")
    (tmp_path / "v2" / "dockyard" / "c1" / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert v2.oom_kills() == 1


def test_stats_are_read_from_v1_files(tmp_path):
    cgroup = v1_tree(tmp_path).open("c1")
    folder = lambda controller: tmp_path / controller / "dockyard" / "c1"  # noqa: E731
    (folder("cpuacct") / "cpuacct.usage").write_text("1500000000\n")
    (folder("memory") / "memory.usage_in_bytes").write_text(f"{10 * MiB}\n")
    (folder("memory") / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # no limit
    (folder("pids") / "pids.current").write_text("3\n")
    (folder("blkio") / "blkio.throttle.io_service_bytes").write_text(
        "254:0 Read 4096\n254:0 Write 8192\n254:0 Sync 0\n254:0 Async 12288\n254:0 Total 12288\n"
        "7:0 Read 100\n7:0 Write 0\nTotal 12388\n")
    reader = stats.StatsReader(cgroup, host_memory=2 << 30)
    first = reader.read(now=10.0)
    assert (first.cpu_usage_ns, first.memory_usage, first.memory_limit, first.pids) == (1_500_000_000, 10 * MiB, 2 << 30, 3)
    assert (first.block_read, first.block_write) == (4196, 8192)
    (folder("cpuacct") / "cpuacct.usage").write_text("2000000000\n")
    (folder("memory") / "memory.limit_in_bytes").write_text(f"{64 * MiB}\n")
    second = reader.read(now=11.0)  # the same open files, read again
    row = stats.record("c1" * 32, "web", second, first)
    assert row["cpu_percent"] == 50.0 and row["memory_limit"] == 64 * MiB
    assert row["memory_percent"] == pytest.approx(10 / 64 * 100, abs=0.01)
    reader.close()


def test_stats_are_read_from_v2_files(tmp_path):
    cgroup = v2_tree(tmp_path).open("c1")
    folder = tmp_path / "dockyard" / "c1"
    (folder / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    (folder / "memory.current").write_text(f"{5 * MiB}\n")
    (folder / "memory.max").write_text("max\n")
    (folder / "pids.current").write_text("7\n")
    (folder / "io.stat").write_text("254:0 rbytes=1000 wbytes=2000 rios=1 wios=2 dbytes=0 dios=0\n"
                                    "7:0 rbytes=24 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n")
    sample = stats.StatsReader(cgroup, host_memory=1 << 30).read(now=1.0)
    assert sample == stats.Sample(1.0, 2_500_000_000, 5 * MiB, 1 << 30, 7, 1024, 2000)
    (folder / "memory.max").write_text(f"{32 * MiB}\n")
    assert stats.StatsReader(cgroup, host_memory=1 << 30).read().memory_limit == 32 * MiB


def test_cpu_percent_is_percent_of_one_cpu():
    before, after = stats.Sample(0.0, cpu_usage_ns=0), stats.Sample(2.0, cpu_usage_ns=3_000_000_000)
    assert stats.cpu_percent(before, after) == 150.0  # 1.5 CPUs busy
    assert stats.cpu_percent(None, after) == 0.0
    assert stats.host_memory("MemTotal:        2000 kB\nMemFree: 1 kB\n") == 2_048_000


def test_a_missing_cgroup_file_reads_as_zero(tmp_path):
    cgroup = v1_tree(tmp_path).open("c1")
    os.unlink(tmp_path / "blkio" / "dockyard" / "c1" / "blkio.throttle.io_service_bytes")
    sample = stats.StatsReader(cgroup, host_memory=MiB).read()
    assert (sample.block_read, sample.block_write) == (0, 0)


# --- cgroup v2 under systemd: containers below the daemon's own (delegated) cgroup -----------


def test_a_delegated_cgroup_is_the_base_of_the_v2_layout():
    marked = {"/system.slice/dockyard.service"}
    delegated = marked.__contains__
    assert delegated_base("/system.slice/dockyard.service", delegated) == "system.slice/dockyard.service"
    # Already in its leaf (a second Supervisor in the process, or DelegateSubgroup=supervisor).
    assert delegated_base("/system.slice/dockyard.service/supervisor", delegated) == "system.slice/dockyard.service"
    for own in ("/user.slice/user-0.slice/session-3.scope", "/system.slice/dockyard.service/other", "/", None,
                "/../outside"):
        assert delegated_base(own, delegated) == ""  # the root of the hierarchy, as before


def test_the_v2_cgroup_of_the_process_is_read_from_proc(tmp_path):
    hybrid = tmp_path / "cgroup"
    hybrid.write_text("9:name=systemd:/system.slice/x.service\n8:pids:/system.slice/x.service\n0::/system.slice/x.service\n")
    assert own_v2_cgroup(str(hybrid)) == "/system.slice/x.service"
    hybrid.write_text("8:pids:/\n")
    assert own_v2_cgroup(str(hybrid)) is None
    assert own_v2_cgroup(str(tmp_path / "missing")) is None


def test_v2_containers_go_below_a_delegated_cgroup_and_the_root_layout_stays(tmp_path):
    root = tmp_path / "v2"
    unit = root / "system.slice" / "dockyard.service"
    unit.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (unit / "cgroup.controllers").write_text("cpu memory pids\n")
    (unit / "cgroup.subtree_control").write_text("")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("0::/system.slice/dockyard.service\n")
    os.setxattr(unit, "user.delegate", b"1")  # what systemd sets for Delegate=yes (and trusted.delegate)
    backend = detect(str(root), "dockyard", own_cgroup_file=str(proc))
    assert isinstance(backend, CgroupV2) and backend.base == "system.slice/dockyard.service"
    cgroup = backend.create("c1")
    assert cgroup.paths == (str(unit / "dockyard" / "c1"),) and (unit / "dockyard" / "c1").is_dir()
    assert cgroup.procs_files == (str(unit / "dockyard" / "c1" / "cgroup.procs"),)
    assert not backend.has_controller("pids")  # not enabled for the children yet
    (unit / "cgroup.subtree_control").write_text("cpu memory pids\n")  # as enter() has the kernel do
    assert backend.has_controller("pids")
    cgroup.remove()
    backend.remove_parent()
    assert not (unit / "dockyard").exists()
    with pytest.raises(InvalidArgument, match="the daemon's own leaf"):
        CgroupV2(str(root), "supervisor", "system.slice/dockyard.service")
    os.removexattr(unit, "user.delegate")  # not delegated: the root of the hierarchy, as before
    backend = detect(str(root), "dockyard", own_cgroup_file=str(proc))
    assert backend.base == "" and backend.open("c1").paths == (str(root / "dockyard" / "c1"),)
