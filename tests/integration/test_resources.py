"""Resource limits, OOM, devices, stats and cgroup cleanup, through the real CLI on the host's
cgroups (v1 here; the v2 backend is tested on a directory tree in tests/unit/test_runtime_cgroups.py; a real v2 host runs the last test)."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import DOCKYARD, kill_cgroup, private_daemon, try_rmdir
from tests.polling import wait_until as wait_for

pytestmark = pytest.mark.integration

CGROUP = Path("/sys/fs/cgroup")
V1 = not (CGROUP / "cgroup.controllers").exists()
needs_v1 = pytest.mark.skipif(not V1, reason="these read cgroup v1 files; this host runs cgroup v2")


def cgroup_file(daemon, container: str, controller: str, name: str) -> Path:
    return CGROUP / controller / daemon.cgroup_parent / container / name


def read_int(path: Path) -> int:
    return int(path.read_text().split()[0])


def test_bad_limits_are_refused_before_anything_is_created(daemon):
    for flags, named in [
        (["--memory", "32q"], b"--memory"),
        (["--memory", "1m"], b"--memory"),
        (["--cpus", "abc"], b"--cpus"),
        (["--cpus", str(os.cpu_count() + 1)], b"--cpus"),
        (["--memory-swap", "64m"], b"--memory-swap"),
        (["--memory", "64m", "--memory-swap", "32m"], b"--memory-swap"),
        (["--cpu-shares", "1"], b"--cpu-shares"),
        (["--cpuset-cpus", "0-"], b"--cpuset-cpus"),
        (["--pids-limit", "-5"], b"--pids-limit"),
        (["--device", "/etc/passwd"], b"--device"),
    ]:
        for command in ("run", "create"):
            result = daemon.cli(command, "--rm", *flags, "base", "true") if command == "run" else \
                daemon.cli(command, *flags, "base", "true")
            assert result.returncode == 125, (flags, result.stderr)
            assert named in result.stderr, (flags, result.stderr)
    assert daemon.out("ps", "-aq") == ""


@needs_v1
def test_a_memory_hog_is_oom_killed_with_an_event_and_oomkilled(daemon):
    since = f"{time.time():.3f}"
    hog = ["base", "sh", "-c", "x=a; while true; do x=$x$x; done"]
    assert daemon.cli("run", "--rm", "--memory", "32m", *hog, timeout=60).returncode == 137
    assert daemon.cli("run", "--name", "hog", "--memory", "32m", *hog, timeout=60).returncode == 137
    document = json.loads(daemon.out("inspect", "hog"))[0]
    assert document["State"]["OOMKilled"] is True and document["State"]["ExitCode"] == 137
    assert document["HostConfig"]["Memory"] == 32 << 20
    assert document["HostConfig"]["MemorySwap"] == 64 << 20  # docker's default: twice the memory
    events = subprocess.run([DOCKYARD, "events", "--since", since, "--until", f"{time.time():.3f}",
                             "--format", "json"], capture_output=True, env=daemon.env, timeout=30)
    actions = [(e["data"]["attributes"]["name"], e["data"]["action"])
               for e in map(json.loads, events.stdout.splitlines()) if e["data"]["type"] == "container"]
    hog_actions = [action for name, action in actions if name == "hog"]
    assert hog_actions == ["create", "start", "oom", "die"]
    assert [a for _, a in actions].count("oom") == 2  # the --rm one too, before its die
    # A container that exits normally is not marked.
    daemon.out("run", "--name", "calm", "--memory", "32m", "base", "true")
    assert json.loads(daemon.out("inspect", "calm"))[0]["State"]["OOMKilled"] is False
    daemon.out("rm", "hog", "calm")


def host_root_disk() -> tuple[int, int, str]:
    """(major, minor, /dev path) of the block device that holds the host's /."""
    device = os.stat("/").st_dev
    major, minor = os.major(device), os.minor(device)
    name = Path(os.path.realpath(f"/sys/dev/block/{major}:{minor}")).name
    return major, minor, f"/dev/{name}"


@needs_v1
def test_a_node_made_for_the_host_disk_cannot_be_opened(daemon):
    major, minor, path = host_root_disk()
    assert Path(path).exists()
    # The devices cgroup refuses the mknod itself (as under docker); head then finds nothing.
    # (This VM refuses reads of its disk even to the host's root, so the mknod is what shows
    # the cgroup at work: without the cgroup, CAP_MKNOD lets it succeed.)
    result = daemon.cli("run", "--rm", "base", "sh", "-c", f"mknod /tmp/disk b {major} {minor}; head -c 1 /tmp/disk")
    assert result.returncode != 0 and result.stdout == b""
    assert b"mknod: /tmp/disk: Operation not permitted" in result.stderr
    # The standard devices still work.
    out = daemon.out("run", "--rm", "base", "sh", "-c", "echo x > /dev/null; head -c 3 /dev/zero | wc -c; head -c 4 /dev/urandom | wc -c")
    assert out.split() == ["3", "4"]
    # --device allows a device: an unattached loop device can be made and opened (it reads
    # as empty). Without --device the same is refused.
    if not Path("/dev/loop0").is_block_device():
        pytest.skip("the --device half needs /dev/loop0 on the host (modprobe loop)")
    loop = os.stat("/dev/loop0").st_rdev
    make_and_open = f"mknod /tmp/loop b {os.major(loop)} {os.minor(loop)} && head -c 1 /tmp/loop && echo opened"
    allowed = daemon.cli("run", "--rm", "--device", "/dev/loop0", "base", "sh", "-c", make_and_open)
    assert (allowed.returncode, allowed.stdout) == (0, b"opened\n"), allowed.stderr
    refused = daemon.cli("run", "--rm", "base", "sh", "-c", make_and_open)
    assert refused.returncode != 0 and b"Operation not permitted" in refused.stderr
    read_only = daemon.cli("run", "--rm", "--device", "/dev/loop0:/dev/loop0:rm", "base", "sh", "-c",
                           f"mknod /tmp/loop b {os.major(loop)} {os.minor(loop)} && echo x > /tmp/loop")
    assert read_only.returncode != 0 and b"Operation not permitted" in read_only.stderr


@needs_v1
def test_device_appears_in_the_containers_dev_with_the_hosts_numbers(daemon):
    if not Path("/dev/loop0").is_block_device():
        pytest.skip("needs /dev/loop0 on the host (modprobe loop)")
    host = os.stat("/dev/loop0")
    expected = f"{os.major(host.st_rdev):x},{os.minor(host.st_rdev):x} {stat.S_IMODE(host.st_mode):o}"
    out = daemon.out("run", "--rm", "--device", "/dev/loop0:/dev/xvdb", "base", "sh", "-c",
                     "stat -c '%t,%T %a %F' /dev/xvdb && head -c 1 /dev/xvdb && echo opened")
    assert out.split("\n")[0] == f"{expected} block special file" and "opened" in out
    assert daemon.cli("run", "--rm", "base", "ls", "/dev/xvdb").returncode != 0  # not without --device
    outside = daemon.cli("run", "--rm", "--device", "/dev/loop0:/tmp/loop", "base", "true")
    assert outside.returncode == 125 and b"under /dev/" in outside.stderr


@needs_v1
def test_a_fork_loop_is_contained_by_the_pids_limit(daemon):
    fork_loop = "for i in $(seq 100); do sleep 100 & done; wait"
    # As pid 1, busybox sh gives up at the first fork the kernel refuses.
    alone = daemon.cli("run", "--rm", "--pids-limit", "20", "base", "sh", "-c", fork_loop)
    assert alone.returncode == 2 and b"can't fork" in alone.stderr
    # In a subshell, so that the container outlives it and can be counted.
    container = daemon.out("run", "-d", "--pids-limit", "20", "base", "sh", "-c", f"({fork_loop}); sleep 1000").strip()
    assert read_int(cgroup_file(daemon, container, "pids", "pids.max")) == 20
    events = cgroup_file(daemon, container, "pids", "pids.events")  # "max N": forks refused
    wait_for(lambda: int(events.read_text().split()[1]) > 0, what="a refused fork")
    procs = cgroup_file(daemon, container, "pids", "cgroup.procs")
    wait_for(lambda: b"sleep 1000" in b"".join(
        Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") for pid in procs.read_text().split()
        if Path(f"/proc/{pid}").exists()), what="the loop to end")
    assert 2 <= len(procs.read_text().split()) <= 20
    assert read_int(cgroup_file(daemon, container, "pids", "pids.current")) <= 20
    daemon.out("run", "--rm", "base", "true")  # the host (and the daemon) can still start processes
    daemon.out("stop", "-t", "1", container)
    assert json.loads(daemon.out("inspect", container))[0]["State"]["Running"] is False
    daemon.out("rm", container)


@needs_v1
def test_a_fork_bomb_without_flags_stops_at_the_default_pids_limit(daemon):
    """Issue 25, item 6: the daemon's --default-pids-limit (4096) holds a container that sets
    no --pids-limit."""
    assert json.loads(daemon.out("info"))["default_pids_limit"] == 4096
    bomb = "(for i in $(seq 5000); do sleep 1000 & done); sleep 1000"
    container = daemon.out("run", "-d", "base", "sh", "-c", bomb).strip()
    try:
        document = json.loads(daemon.out("inspect", container))[0]
        assert document["HostConfig"]["PidsLimit"] == 4096
        assert read_int(cgroup_file(daemon, container, "pids", "pids.max")) == 4096
        events = cgroup_file(daemon, container, "pids", "pids.events")  # "max N": forks refused
        wait_for(lambda: int(events.read_text().split()[1]) > 0, what="a refused fork", timeout=120)
        assert read_int(cgroup_file(daemon, container, "pids", "pids.current")) <= 4096
        daemon.out("run", "--rm", "base", "true")  # the host (and the daemon) can still start processes
    finally:
        daemon.out("rm", "-f", container)
    own = daemon.out("create", "--pids-limit", "20", "base", "true").strip()
    unlimited = daemon.out("create", "--pids-limit", "-1", "base", "true").strip()
    limits = {ref: json.loads(daemon.out("inspect", ref))[0]["HostConfig"]["PidsLimit"] for ref in (own, unlimited)}
    assert limits == {own: 20, unlimited: -1}
    daemon.out("rm", own, unlimited)


@needs_v1
def test_the_default_pids_limit_comes_from_the_flag_or_the_config_file(tmp_path, busybox_tar):
    config = tmp_path / "daemon.toml"
    config.write_text("default-pids-limit = -1\n")
    for flags, expected, cgroup_value in [(("--config", str(config)), None, "max"),
                                          (("--config", str(config), "--default-pids-limit", "64"), 64, "64")]:
        with private_daemon(tmp_path / f"d{len(flags)}", busybox_tar, *flags) as other:
            assert json.loads(other.out("info"))["default_pids_limit"] == expected
            container = other.out("run", "-d", "base", "sleep", "1000").strip()
            assert cgroup_file(other, container, "pids", "pids.max").read_text().strip() == cgroup_value
            other.out("rm", "-f", container)
    bad = subprocess.run([DOCKYARD, "daemon", "--root", str(tmp_path / "bad"), "--default-pids-limit", "0"],
                         capture_output=True, timeout=60)
    assert bad.returncode == 2 and b"default pids limit" in bad.stderr


def host_idle_seconds() -> float:
    """Idle CPU time of the whole host, in CPU-seconds (/proc/stat: idle + iowait)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


@needs_v1
def test_half_a_cpu_is_half_a_cpu(daemon):
    container = daemon.out("run", "-d", "--cpus", "0.5", "base", "sh", "-c", "while :; do :; done").strip()
    assert read_int(cgroup_file(daemon, container, "cpu", "cpu.cfs_quota_us")) == 50_000
    usage = cgroup_file(daemon, container, "cpuacct", "cpuacct.usage")
    throttled = cgroup_file(daemon, container, "cpu", "cpu.stat")
    time.sleep(0.5)  # past the start-up
    began, used_before, idle_before = time.monotonic(), read_int(usage), host_idle_seconds()
    throttled_before = int(throttled.read_text().split()[3])  # nr_throttled
    time.sleep(3)  # a measurement of the limit over 30 CFS periods, not a wait for an event
    elapsed = time.monotonic() - began
    used = (read_int(usage) - used_before) / 1e9 / elapsed
    idle = (host_idle_seconds() - idle_before) / elapsed
    assert used <= 0.6, f"{used:.2f} CPUs"
    assert int(throttled.read_text().split()[3]) > throttled_before  # the quota, not the host, held it
    # The floor: it may get less only if the host had no CPU to spare (a loaded machine).
    assert used >= 0.4 or idle < 0.1, f"{used:.2f} CPUs while the host had {idle:.2f} CPUs idle"
    daemon.out("rm", "-f", container)


@needs_v1
def test_update_changes_the_limits_of_a_running_container(daemon):
    container = daemon.out("run", "-d", "--memory", "64m", "--cpus", "1", "base", "sleep", "1000").strip()
    limit = cgroup_file(daemon, container, "memory", "memory.limit_in_bytes")
    memsw = cgroup_file(daemon, container, "memory", "memory.memsw.limit_in_bytes")
    assert (read_int(limit), read_int(memsw)) == (64 << 20, 128 << 20)
    daemon.out("update", "--memory", "48m", container)
    assert (read_int(limit), read_int(memsw)) == (48 << 20, 96 << 20)
    daemon.out("update", "--memory", "256m", "--cpus", "0.25", "--pids-limit", "30", container)  # above the old memsw
    assert (read_int(limit), read_int(memsw)) == (256 << 20, 512 << 20)
    assert read_int(cgroup_file(daemon, container, "cpu", "cpu.cfs_quota_us")) == 25_000
    assert read_int(cgroup_file(daemon, container, "pids", "pids.max")) == 30
    host_config = json.loads(daemon.out("inspect", container))[0]["HostConfig"]
    assert (host_config["Memory"], host_config["NanoCpus"], host_config["PidsLimit"]) == (256 << 20, 250_000_000, 30)
    refused = daemon.cli("update", "--memory", "1m", container)
    assert refused.returncode == 1 and b"--memory" in refused.stderr
    assert read_int(limit) == 256 << 20
    daemon.out("rm", "-f", container)


@needs_v1
def test_stats_match_the_cgroup_files(daemon):
    container = daemon.out("run", "-d", "--name", "measured", "--memory", "64m", "base", "sh", "-c",
                           "sleep 1000 & sleep 1000 & wait").strip()
    pids_current = cgroup_file(daemon, container, "pids", "pids.current")
    wait_for(lambda: read_int(pids_current) == 3, what="three processes")
    row = json.loads(daemon.out("stats", "--no-stream", "--format", "json"))
    usage = read_int(cgroup_file(daemon, container, "memory", "memory.usage_in_bytes"))
    assert row["id"] == container and row["name"] == "measured"
    assert row["memory_limit"] == 64 << 20 and row["pids"] == 3
    assert abs(row["memory_usage"] - usage) < 1 << 20 and row["memory_usage"] > 0
    assert row["memory_percent"] == pytest.approx(row["memory_usage"] / (64 << 20) * 100, abs=0.01)
    assert row["cpu_usage_ns"] <= read_int(cgroup_file(daemon, container, "cpuacct", "cpuacct.usage"))
    assert 0 <= row["cpu_percent"] < 50  # sleeping
    table = daemon.out("stats", "--no-stream", "measured").splitlines()
    assert table[0].split() == ["CONTAINER", "ID", "NAME", "CPU", "%", "MEM", "USAGE", "/", "LIMIT", "MEM", "%", "PIDS", "BLOCK", "I/O"]
    assert table[1].split()[:2] == [container[:12], "measured"] and "64MiB" in table[1]
    # Streaming: the sampler's stats.<id> events, once a second.
    watcher = subprocess.Popen([DOCKYARD, "stats", "--format", "json", "measured"], stdout=subprocess.PIPE, env=daemon.env)
    try:
        streamed = [json.loads(watcher.stdout.readline()) for _ in range(2)]
    finally:
        watcher.terminate()
        watcher.wait(10)
        watcher.stdout.close()
    assert [r["id"] for r in streamed] == [container] * 2 and streamed[1]["time"] > streamed[0]["time"]
    assert streamed[1]["memory_limit"] == 64 << 20 and streamed[1]["pids"] == 3
    daemon.out("rm", "-f", container)


def test_run_rm_cycles_leave_no_cgroup_behind(daemon):
    """200 run/rm cycles over the bus (the CLI's own start-up would be most of the time)."""
    from bus.client import Client

    cycles, workers = 200, 4

    def cycle_many(count: int) -> list[int]:
        codes = []
        with Client(daemon.run_dir) as client:
            for _ in range(count):
                spec = {"image": "base", "cmd": ["true"], "resources": {"memory": "16m", "pids_limit": 10}}
                container = client.request("container.run", {"spec": spec, "attach": False})["id"]
                codes.append(client.request("container.wait", {"container": container})["exit_code"])
                client.request("container.remove", {"container": container})
        return codes

    with ThreadPoolExecutor(workers) as pool:
        codes = [code for batch in pool.map(cycle_many, [cycles // workers] * workers) for code in batch]
    assert codes == [0] * cycles
    assert daemon.out("ps", "-aq") == ""
    leftovers = [str(child) for hierarchy in CGROUP.iterdir()
                 for child in (hierarchy / daemon.cgroup_parent).glob("*") if child.is_dir()]
    assert leftovers == []


def _v2_controllers() -> set[str]:
    try:
        return set((CGROUP / "cgroup.controllers").read_text().split())
    except FileNotFoundError:
        return set()


@pytest.mark.skipif(
    not {"memory", "pids", "cpu"} <= _v2_controllers(),
    reason="no real cgroup v2 with the memory, pids and cpu controllers here: this host runs cgroup v1 "
    "(hybrid; its v2 tree at /sys/fs/cgroup/unified has no controllers). The v2 backend is tested on a "
    "directory tree in the v2 file format in tests/unit/test_runtime_cgroups.py.",
)
def test_limits_on_a_real_cgroup_v2_host(daemon):
    container = daemon.out("run", "-d", "--memory", "64m", "--pids-limit", "20", "--cpus", "0.5",
                           "base", "sleep", "1000").strip()
    try:
        folder = CGROUP / daemon.cgroup_parent / container
        assert (folder / "memory.max").read_text().strip() == str(64 * 1024 * 1024)
        assert (folder / "pids.max").read_text().strip() == "20"
        assert (folder / "cpu.max").read_text().split()[0] == "50000"
        daemon.out("update", "--memory", "96m", container)
        assert (folder / "memory.max").read_text().strip() == str(96 * 1024 * 1024)
        oom = daemon.cli("run", "--rm", "--memory", "32m", "base", "sh", "-c", "x=a; while true; do x=$x$x; done")
        assert oom.returncode == 137
    finally:
        daemon.out("rm", "-f", container)


# --- cgroup v2 under systemd (issue 15, item 10) -------------------------------------------


def _v2_mount() -> Path | None:
    """A cgroup2 mount of the host: /sys/fs/cgroup on a v2 host, its `unified` tree on a hybrid
    one (no controllers there, but the layout, the moves and the removals are the kernel's)."""
    for candidate in (CGROUP, CGROUP / "unified"):
        if (candidate / "cgroup.controllers").exists():
            return candidate
    return None


def _v2_cgroup_of(pid: int) -> str:
    return next(line[3:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if line.startswith("0::"))


def _remove_tree(path: Path) -> None:
    """Kill whatever is left below ``path`` and remove its cgroups, deepest first."""
    if not path.exists():
        return
    for folder in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        kill_cgroup(folder)
        try_rmdir(folder)
    kill_cgroup(path)
    try_rmdir(path)


@pytest.mark.skipif(_v2_mount() is None, reason="no cgroup2 mount on this host")
@pytest.mark.parametrize("delegated", [True, False], ids=["delegated", "not-delegated"])
def test_on_cgroup_v2_containers_live_below_the_daemons_delegated_cgroup(tmp_path, busybox_tar, delegated):
    """A daemon whose cgroup systemd delegated (Delegate=yes: the trusted.delegate xattr) moves
    itself into <its cgroup>/supervisor and makes containers in <its cgroup>/<parent>/<id>; one
    whose cgroup is not delegated keeps the root layout <root>/<parent>/<id>."""
    mount = _v2_mount()
    unit = mount / f"dyt-{secrets.token_hex(4)}.service"  # as systemd makes a unit's cgroup
    unit.mkdir()
    try:
        if delegated:
            try:
                os.setxattr(unit, "trusted.delegate", b"1")
            except OSError as exc:
                pytest.skip(f"cannot mark a cgroup as delegated here: {exc}")
        launcher = ("sh", "-c", f'echo $$ > {unit}/cgroup.procs && exec "$@"', "sh")
        with private_daemon(tmp_path / "d", busybox_tar, "--cgroup-root", str(mount), launcher=launcher) as daemon:
            own = _v2_cgroup_of(daemon.process.pid)
            info = json.loads(daemon.out("info"))
            workers = info["workers"]
            # The default pids limit needs the pids controller for the containers (none on a hybrid host's v2 tree).
            given = ((unit if delegated else mount) / "cgroup.subtree_control").read_text().split()
            assert info["default_pids_limit"] == (4096 if "pids" in given else None)
            container = daemon.out("run", "-d", "base", "sleep", "1000").strip()
            pid = json.loads(daemon.out("inspect", container))[0]["State"]["Pid"]
            parent = (unit if delegated else mount) / daemon.cgroup_parent
            folder = parent / container
            assert info["cgroup_path"] == str(parent)
            if delegated:
                assert own == f"/{unit.name}/supervisor"
                assert (unit / "cgroup.procs").read_text() == ""  # v2: no processes in an inner node
                for status in workers.values():
                    assert _v2_cgroup_of(status["pid"]) == own
                assert _v2_cgroup_of(pid) == f"/{unit.name}/{daemon.cgroup_parent}/{container}"
            else:
                assert own == f"/{unit.name}"
                assert _v2_cgroup_of(pid) == f"/{daemon.cgroup_parent}/{container}"
            assert str(pid) in (folder / "cgroup.procs").read_text().split()
            daemon.out("rm", "-f", container)
            assert not folder.exists()
        assert not (unit / daemon.cgroup_parent).exists()  # removed when the daemon stops
        assert not (mount / daemon.cgroup_parent).exists()
    finally:
        _remove_tree(unit)


# --- /sys/fs/cgroup shows the container's own cgroup (issue 17, item 13) --------------------

CGROUP_REPORT = (
    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us; "
    "grep ':memory:' /proc/self/cgroup; grep -qx 1 /sys/fs/cgroup/memory/cgroup.procs && echo pid1-inside; "
    "echo $(ls /sys/fs/cgroup); "
    "echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes || echo limit-refused; "
    "mkdir /sys/fs/cgroup/extra || echo tmpfs-refused"
)


@needs_v1
def test_on_v1_the_container_reads_its_own_limits_under_sys_fs_cgroup(daemon):
    """What the JVM, Go and Node read: with -m 256m, memory.limit_in_bytes says 268435456 (v1:
    each hierarchy's own cgroup bound read-only at its name, as runc does)."""
    hierarchies = sorted({os.path.realpath(CGROUP / name).rpartition("/")[2] for name in
                          ("cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "blkio")
                          if (CGROUP / name).is_dir()})
    names = sorted({part for hierarchy in hierarchies for part in [hierarchy, *hierarchy.split(",")]})
    result = daemon.cli("run", "--rm", "-m", "256m", "--cpus", "0.5", "base", "sh", "-c", CGROUP_REPORT)
    lines = result.stdout.decode().splitlines()
    assert lines[:5] == ["268435456", "50000", next(line for line in lines if line.endswith(":memory:/")),
                         "pid1-inside", " ".join(names)], result
    assert lines[5:] == ["limit-refused", "tmpfs-refused"], result
    assert b"Read-only file system" in result.stderr
    # The host's own files are untouched, and its limit was the container's.
    assert (CGROUP / "memory" / "memory.limit_in_bytes").read_text().strip() != "1"


@pytest.mark.skipif(_v2_mount() is None, reason="no cgroup2 mount on this host")
def test_on_v2_the_container_sees_a_cgroup2_mount_of_its_own_cgroup(tmp_path, busybox_tar):
    """v2 (here the hybrid host's controller-less unified tree): /sys/fs/cgroup is a read-only
    cgroup2 mount whose root is the container's cgroup (its cgroup namespace)."""
    mount = _v2_mount()
    with private_daemon(tmp_path / "d", busybox_tar, "--cgroup-root", str(mount)) as daemon:
        script = ("grep '^0::' /proc/self/cgroup; grep ' /sys/fs/cgroup ' /proc/mounts | cut -d' ' -f3,4; "
                  "grep -qx 1 /sys/fs/cgroup/cgroup.procs && echo pid1-inside; "
                  "mkdir /sys/fs/cgroup/extra || echo refused")
        result = daemon.cli("run", "--rm", "base", "sh", "-c", script)
        lines = result.stdout.decode().splitlines()
        assert lines[0] == "0::/", result
        kind, options = lines[1].split()
        assert kind == "cgroup2" and "ro" in options.split(","), result
        assert lines[2:] == ["pid1-inside", "refused"], result
    assert not (mount / daemon.cgroup_parent).exists()
