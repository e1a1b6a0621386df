"""supervisor/runtime/cgroups/ without root, on directory trees: detecting the version, each
backend's layout and limit files, v2's delegation under systemd, OOM counts, killing and
removing a cgroup."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from pathlib import Path

import pytest

from supervisor.errors import InvalidArgument
from supervisor.resources import Resources, cpu_weight
from supervisor.runtime import cgroups
from supervisor.runtime.cgroups import STANDARD_DEVICES, CgroupV2, delegated_base, detect, own_v2_cgroup
from supervisor.runtime.cgroups.cgroup import removed_on_error
from tests.cgroup_trees import v1_tree, v2_tree

MiB = 1 << 20

@pytest.fixture
def v1_root(tmp_path: Path) -> Path:
    """Like a systemd host: cpu and cpuacct co-mounted behind symlinks, a named systemd
    hierarchy, an empty unified mount, no blkio."""
    root = tmp_path / "cgroup"
    for name in ("cpu,cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "systemd", "unified"):
        (root / name).mkdir(parents=True)
    (root / "cpu").symlink_to("cpu,cpuacct")
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    (root / "cpuset" / "cpuset.cpus").write_text("0-3\n")
    (root / "cpuset" / "cpuset.mems").write_text("0\n")
    return root


def test_detect(tmp_path: Path, v1_root: Path) -> None:
    assert isinstance(cgroups.detect(str(v1_root)), cgroups.CgroupV1)
    v2_root = tmp_path / "v2"
    v2_root.mkdir()
    (v2_root / "cgroup.controllers").write_text("cpu memory pids\n")
    backend = cgroups.detect(str(v2_root), parent="mine")
    assert isinstance(backend, cgroups.CgroupV2)
    assert backend.parent == "mine"


def test_v1_creates_one_dir_per_hierarchy(v1_root: Path) -> None:
    group = cgroups.CgroupV1(str(v1_root), parent="dy").create("c1")
    expected = [v1_root / name / "dy" / "c1" for name in ("cpu", "cpuset", "memory", "pids", "devices", "freezer")]
    assert [Path(p) for p in group.paths] == expected
    assert all(path.is_dir() for path in expected)
    assert not (v1_root / "systemd" / "dy").exists()
    assert not (v1_root / "unified" / "dy").exists()
    assert group.procs_files == tuple(f"{p}/cgroup.procs" for p in group.paths)


def test_v1_copies_cpuset_into_new_dirs(v1_root: Path) -> None:
    cgroups.CgroupV1(str(v1_root), parent="dy").create("c1")
    for directory in (v1_root / "cpuset" / "dy", v1_root / "cpuset" / "dy" / "c1"):
        assert (directory / "cpuset.cpus").read_text() == "0-3"
        assert (directory / "cpuset.mems").read_text() == "0"
    assert not (v1_root / "memory" / "dy" / "cpuset.cpus").exists()


def test_v1_open_and_remove(v1_root: Path) -> None:
    backend = cgroups.CgroupV1(str(v1_root), parent="dy")
    backend.create("c1")
    backend.create("c2")
    for file in (v1_root / "cpuset" / "dy" / "c1").iterdir():  # cgroupfs files go with rmdir; these do not
        file.unlink()
    group = backend.open("c1")
    group.remove()
    assert not any((v1_root / name / "dy" / "c1").exists() for name in ("cpu", "cpuset", "memory", "pids"))
    assert (v1_root / "pids" / "dy" / "c2").is_dir()
    group.remove()  # again: missing dirs are fine
    assert backend.open("never-created").pids() == []


def test_v2_creates_and_enables_controllers(tmp_path: Path) -> None:
    root = tmp_path / "v2"
    (root / "dy").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    (root / "dy" / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "dy" / "cgroup.subtree_control").write_text("")
    backend = cgroups.CgroupV2(str(root), parent="dy")
    group = backend.create("c1")
    assert group.paths == (str(root / "dy" / "c1"),)
    assert (root / "dy" / "c1").is_dir()
    assert (root / "dy" / "cgroup.subtree_control").read_text().split() == ["+cpu", "+memory", "+pids"]
    backend.open("c1").remove()
    assert not (root / "dy" / "c1").exists()


def test_v2_without_controller_files(tmp_path: Path) -> None:
    group = cgroups.CgroupV2(str(tmp_path), parent="dy").create("c1")
    assert Path(group.paths[0]).is_dir()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
def test_cgroup_names_are_single_components(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidArgument):
        cgroups.CgroupV2(str(tmp_path)).create(name)


def test_pids_and_kill_all(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        group = cgroups.CgroupV2(str(tmp_path), parent="dy").create("c1")
        Path(group.procs_files[0]).write_text(f"{sleeper.pid}\n")
        assert group.pids() == [sleeper.pid]
        group.kill_all()
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        group.kill_all()  # a pid that is gone is fine
    finally:
        sleeper.kill()
        sleeper.wait()


# --- limits, devices and OOM counts on trees of each version -------------------------------

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


def test_cgroupfs_entries_name_each_hierarchy_once_by_its_own_name(v1_root: Path) -> None:
    """What the container's /sys/fs/cgroup binds: a co-mount reached through `cpu` is named
    `cpu,cpuacct` (the stage links `cpu` and `cpuacct` to it); v2 is one cgroup2 mount."""
    group = cgroups.CgroupV1(str(v1_root), parent="dy").create("c1")
    entries = [entry.split("\t") for entry in group.cgroupfs_entries]
    assert entries == [[name, str(v1_root / name / "dy" / "c1")]
                       for name in ("cpu,cpuacct", "cpuset", "memory", "pids", "devices", "freezer")]
    assert cgroups.Cgroup("c1", ("/x/dy/c1",), 2).cgroupfs_entries == ("cgroup2",)


def test_removed_on_error_removes_what_the_block_made(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        with removed_on_error() as created:
            for name in ("parent", "parent/child"):
                os.mkdir(tmp_path / name)
                created.append(str(tmp_path / name))
            os.mkdir(tmp_path / "missing" / "x")
    assert list(tmp_path.iterdir()) == []
    with removed_on_error() as created:
        os.mkdir(tmp_path / "kept")
        created.append(str(tmp_path / "kept"))
    assert (tmp_path / "kept").is_dir()


def test_v2_create_removes_its_parent_when_the_container_cgroup_cannot_be_made(tmp_path: Path) -> None:
    backend = cgroups.CgroupV2(str(tmp_path), parent="dy")
    with pytest.raises(OSError) as raised:
        backend.create("x" * 300)  # a single component, but longer than a file name may be
    assert raised.value.errno == errno.ENAMETOOLONG
    assert not (tmp_path / "dy").exists()
