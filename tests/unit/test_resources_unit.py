"""Resource limits without root: docker's syntax, conversions, and the usage read from
directory trees in each cgroup version's file format (the backends writing the limits:
test_runtime_cgroups.py)."""

from __future__ import annotations

import os

import pytest

from supervisor import stats
from supervisor.errors import InvalidArgument
from supervisor.resources import DeviceMapping, Resources, cfs_quota_us, cpu_weight, parse_cpus, parse_size
from supervisor.spec import ContainerSpec
from tests.cgroup_trees import v1_tree, v2_tree

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


# --- usage read from each version's files (the trees: tests/cgroup_trees.py) ---------------

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


def test_device_cgroup_rules_in_docker_s_syntax_are_kept_and_written_to_the_devices_cgroup():
    resources = Resources.from_map({"device_cgroup_rules": ["c 7:128 rwm", "b 8:* r", "a *:* m"]})
    assert resources.device_cgroup_rules == ("c 7:128 rwm", "b 8:* r", "a *:* m")
    assert Resources.from_map(resources.to_map()) == resources
    assert "device_cgroup_rules" not in Resources().to_map()  # records an earlier dockyard still reads
    assert resources.host_config()["DeviceCgroupRules"] == ["c 7:128 rwm", "b 8:* r", "a *:* m"]
    for bad in ("c 7 rwm", "x 1:2 r", "c 1:2 rwx", "c 1:2"):
        with pytest.raises(InvalidArgument, match="--device-cgroup-rule"):
            Resources.from_map({"device_cgroup_rules": [bad]})
    from supervisor.lifecycle.privileges import device_rules

    spec = ContainerSpec(image="base", resources=resources)
    assert device_rules(spec)[-3:] == ("c 7:128 rwm", "b 8:* r", "a *:* m")
