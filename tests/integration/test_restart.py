"""Restart policies end to end: a real daemon with its monitor worker, real containers, the
real CLI. Waits poll the condition itself with a deadline; nothing asserts on timing."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bus.client import Client
from bus.errors import RemoteError
from tests.conftest import DOCKYARD, cgroup_dirs, mounts_under
from tests.polling import process_gone, wait_until as wait_for

pytestmark = pytest.mark.integration


def inspect(daemon, ref: str) -> dict:
    return json.loads(daemon.out("inspect", "--type", "container", ref))[0]


def events(daemon, ref: str) -> list[dict]:
    """Every journaled event of one container, oldest first."""
    text = daemon.out("events", "--since", "0", "--until", str(time.time()), "--format", "json",
                      "--filter", f"container={ref}")
    return [json.loads(line)["data"] for line in text.splitlines()]


def actions(daemon, ref: str) -> list[str]:
    return [event["action"] for event in events(daemon, ref)]


def monitor_pid(daemon) -> int:
    status = json.loads(daemon.out("info"))["workers"]["monitor"]
    return status["pid"] if status["running"] else 0


def barrier(daemon) -> None:
    """Returns once the monitor has handled every event published before this call: it
    handles events in order, and this one's die asks for a restart."""
    ref = daemon.out("run", "-d", "--restart", "on-failure:1", "base", "sh", "-c", "exit 7").strip()
    wait_for(lambda: inspect(daemon, ref)["RestartCount"] == 1, "the barrier container's restart")
    wait_for(lambda: inspect(daemon, ref)["State"]["Status"] == "exited", "the barrier container's second exit")
    daemon.out("rm", ref)


def test_on_failure_3_restarts_exactly_three_times_with_growing_delays(daemon):
    ref = daemon.out("run", "-d", "--restart", "on-failure:3", "base", "sh", "-c", "exit 3").strip()
    wait_for(lambda: actions(daemon, ref).count("die") == 4, "four exits")
    barrier(daemon)
    seen = events(daemon, ref)
    assert [e["action"] for e in seen] == ["create"] + ["start", "die", "restart"] * 3 + ["start", "die"]
    restarts = [e["attributes"] for e in seen if e["action"] == "restart"]
    assert [r["attempt"] for r in restarts] == [1, 2, 3]
    assert [r["delay"] for r in restarts] == [0.1, 0.2, 0.4]
    assert {r["exitCode"] for r in restarts} == {3} and restarts[-1]["restartCount"] == 3
    document = inspect(daemon, ref)
    assert document["RestartCount"] == 3
    assert document["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert document["State"]["Status"] == "exited" and document["State"]["ExitCode"] == 3
    assert document["State"]["Restarting"] is False

    # The supervisor answers one exit once, whoever asks: a second request is refused.
    exit_id = document["State"]["FinishedAt"]
    with Client(daemon.run_dir) as client:
        request = {"container": ref, "exit": exit_id, "attempt": 1, "delay": 5.0}
        assert client.request("container.schedule_restart", request)["restart_count"] == 4
        assert inspect(daemon, ref)["State"]["Status"] == "restarting"
        assert "Restarting (3)" in daemon.out("ps")  # listed without -a, as docker does
        with pytest.raises(RemoteError) as again:
            client.request("container.schedule_restart", request)
        assert again.value.code == "conflict" and "already scheduled" in again.value.message
        daemon.out("stop", ref)  # a user's stop ends a pending restart
        assert inspect(daemon, ref)["State"]["Status"] == "exited"
        with pytest.raises(RemoteError) as stopped:
            client.request("container.schedule_restart", request)
        assert stopped.value.code == "conflict" and "the user stopped it" in stopped.value.message
    assert actions(daemon, ref).count("start") == 4


def test_a_user_start_resets_the_restart_count(daemon):
    ref = daemon.out("run", "-d", "--restart", "on-failure:1", "base", "sh", "-c", "exit 1").strip()
    wait_for(lambda: actions(daemon, ref).count("die") == 2, "two exits")
    barrier(daemon)
    assert inspect(daemon, ref)["RestartCount"] == 1
    daemon.out("start", ref)
    wait_for(lambda: actions(daemon, ref).count("die") == 4, "two more exits after the user's start")
    barrier(daemon)
    assert inspect(daemon, ref)["RestartCount"] == 1


def test_a_kill_with_the_stop_signal_or_sigkill_is_a_user_stop_another_signal_is_not(daemon):
    ref = daemon.out("run", "-d", "--restart", "always", "base", "sleep", "1000").strip()
    daemon.out("kill", "-s", "HUP", ref)  # pid 1 without a handler: the kernel ignores it
    assert inspect(daemon, ref)["Dockyard"]["UserStopped"] is False
    daemon.out("kill", ref)
    wait_for(lambda: inspect(daemon, ref)["State"]["Status"] == "exited", "the kill to end it")
    barrier(daemon)
    document = inspect(daemon, ref)
    assert document["Dockyard"]["UserStopped"] is True
    assert (document["State"]["Status"], document["RestartCount"]) == ("exited", 0)
    daemon.out("rm", ref)


def test_policies_across_a_daemon_restart(daemon):
    # Oldest first: the monitor's resync goes newest first, so `kept` is considered last.
    kept = daemon.out("run", "-d", "--restart", "always", "--name", "kept", "--stop-timeout", "0", "base", "sleep", "1000").strip()
    back = daemon.out("run", "-d", "--restart", "always", "--name", "back", "--stop-timeout", "0", "base", "sleep", "1000").strip()
    stays = daemon.out("run", "-d", "--restart", "unless-stopped", "--name", "stays", "--stop-timeout", "0", "base", "sleep", "1000").strip()
    plain = daemon.out("run", "-d", "--name", "plain", "--stop-timeout", "0", "base", "sleep", "1000").strip()
    daemon.out("stop", "-t", "0", "back", "stays")  # the user's stops: not failures
    barrier(daemon)
    assert [inspect(daemon, ref)["State"]["Status"] for ref in (kept, back, stays, plain)] == \
        ["running", "exited", "exited", "running"]
    assert inspect(daemon, stays)["Dockyard"]["UserStopped"] is True

    assert daemon.stop() == 0
    daemon.start()
    # always: back, even the one the user stopped (docker); unless-stopped: stays stopped.
    wait_for(lambda: inspect(daemon, kept)["State"]["Running"], "`always` to come back")
    wait_for(lambda: inspect(daemon, back)["State"]["Running"], "the user-stopped `always` to come back")
    barrier(daemon)
    assert inspect(daemon, stays)["State"]["Status"] == "exited"
    assert inspect(daemon, plain)["State"]["Status"] == "exited"
    restart = [e for e in events(daemon, kept) if e["action"] == "restart"][-1]["attributes"]
    assert restart["attempt"] == 1
    daemon.out("rm", "-f", kept, back)


def test_monitor_killed_while_a_container_crash_loops_never_restarts_twice(daemon):
    ref = daemon.out("run", "-d", "--restart", "always", "base", "sh", "-c", "sleep 0.1; exit 1").strip()
    killed = 0
    deadline = time.monotonic() + 60
    while killed < 4 and time.monotonic() < deadline:
        pid = monitor_pid(daemon)
        count = inspect(daemon, ref)["RestartCount"]
        if pid and count > killed:  # one kill per restart, at varying points of the loop
            os.kill(pid, signal.SIGKILL)
            killed += 1
            wait_for(lambda: monitor_pid(daemon) not in (0, pid), "the daemon to restart its monitor")
        time.sleep(0.02)
    assert killed == 4
    wait_for(lambda: inspect(daemon, ref)["RestartCount"] > killed, "the loop to go on after the kills")
    daemon.out("stop", "-t", "0", ref)
    barrier(daemon)
    seen = events(daemon, ref)
    restarts = [e["attributes"] for e in seen if e["action"] == "restart"]
    # Each exit got at most one restart, and the backoff carried on across monitors.
    assert [int(r["attempt"]) for r in restarts] == list(range(1, len(restarts) + 1))
    assert [int(r["restartCount"]) for r in restarts] == list(range(1, len(restarts) + 1))
    order = [e["action"] for e in seen if e["action"] in ("start", "die", "restart")]
    for earlier, later in zip(order, order[1:]):
        assert (earlier, later) in {("start", "die"), ("die", "restart"), ("restart", "start"), ("die", "start")}, order
    assert inspect(daemon, ref)["RestartCount"] == len(restarts)
    assert order.count("start") in (len(restarts), len(restarts) + 1)


def test_kill_9_of_the_daemon_then_restart_reconciles_and_leaks_nothing(daemon, tmp_path):
    always = daemon.out("run", "-d", "--restart", "always", "base", "sleep", "1000").strip()
    plain = daemon.out("run", "-d", "base", "sleep", "1000").strip()
    pids = {ref: inspect(daemon, ref)["State"]["Pid"] for ref in (always, plain)}
    monitor = monitor_pid(daemon)
    assert all(pids.values()) and monitor
    daemon.process.kill()
    daemon.process.wait()
    wait_for(lambda: process_gone(monitor), "the old monitor to end with its daemon")
    assert not any(process_gone(pid) for pid in pids.values())  # containers outlive a daemon kill

    daemon.start()
    assert all(process_gone(pid) for pid in pids.values())  # reconciled before the daemon is ready
    document = inspect(daemon, plain)
    assert (document["State"]["Status"], document["State"]["ExitCode"]) == ("exited", 255)
    assert "daemon stopped" in document["State"]["Error"]
    wait_for(lambda: inspect(daemon, always)["State"]["Running"], "`always` to run again")
    assert inspect(daemon, always)["State"]["Pid"] != pids[always]
    # Only the running container has a cgroup; nothing is mounted in the host namespace.
    names = {Path(d).name for parent in cgroup_dirs(daemon.cgroup_parent) for d in map(str, Path(parent).iterdir())
             if Path(d).is_dir()}
    assert names == {always}
    assert mounts_under(tmp_path) == []
    daemon.out("rm", "-f", always)


def _processes_with_argv(argv: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == argv:
                    found.append(int(entry.name))
            except OSError:
                continue
    return [pid for pid in found if not process_gone(pid)]


def _mounted_anywhere(path: str) -> list[str]:
    """Mounts of ``path`` (or below it) in the mount namespace of any process."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found += [line for line in (entry / "mountinfo").read_text().splitlines() if path in line]
            except OSError:
                continue
    return found


def _leftovers(daemon, container: str, argv: bytes) -> dict:
    """Whatever of ``container`` (not running) is still on the host."""
    document = inspect(daemon, container)
    leftovers = {
        "running": document["State"]["Running"],
        "cgroups": [d for parent in cgroup_dirs(daemon.cgroup_parent) if (d := Path(parent) / container).exists()],
        "processes": _processes_with_argv(argv),
        "mounts": _mounted_anywhere(str(daemon.root / "containers" / container)),
        "veth": os.path.exists(f"/sys/class/net/dy{container[:11]}"),
        "leases": json.loads(daemon.out("info"))["network"]["leases"],
    }
    return {key: value for key, value in leftovers.items() if value}


def test_a_daemon_killed_during_a_start_leaves_nothing_after_its_restart(daemon):
    """Issue 15, item 13: SIGKILL the daemon at some point of a `start`, restart it: the
    container is not running and nothing of it is left, whatever its record said."""
    seed = secrets.randbits(32)
    rng = random.Random(seed)
    marker = str(rng.randrange(10**6, 10**7))
    argv = b"sleep\0" + marker.encode() + b"\0"
    container = daemon.out("create", "base", "sleep", marker).strip()
    base = Path("/sys/fs/cgroup")
    cgroups = [hierarchy / daemon.cgroup_parent / container for hierarchy in [base, *base.iterdir()]]
    kill_points = ["cgroup made", "process started"] + ["random"] * 10
    for attempt, point in enumerate(kill_points):
        starter = subprocess.Popen([DOCKYARD, "start", container], env=daemon.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if point == "cgroup made":  # after _launch made the cgroup, before the record says running
                wait_until_fast(lambda: any(path.exists() for path in cgroups) or starter.poll() is not None)
            elif point == "process started":
                wait_until_fast(lambda: _processes_with_argv(argv) or starter.poll() is not None)
            else:
                # Where the kill lands is what varies; nothing below depends on it.
                time.sleep(rng.uniform(0, 0.3))
            daemon.process.kill()
            daemon.process.wait()
        finally:
            starter.wait(timeout=60)
        daemon.start()
        left = _leftovers(daemon, container, argv)
        assert left == {}, f"try {attempt} (kill point {point}, seed {seed}) left {left}\n{daemon.log()[-3000:]}"
        assert inspect(daemon, container)["State"]["Status"] in ("created", "exited")
    daemon.out("rm", container)


def wait_until_fast(condition, timeout: float = 30.0) -> None:
    """Poll ``condition`` without sleeping: the moment it becomes true is a kill point."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the kill point"


# --- health checks: the monitor asks every interval, the supervisor runs the command in the
# container (exec) and keeps the state.


def test_health_check_flips_to_unhealthy_and_back(daemon):
    bad = daemon.cli("run", "-d", "--health-cmd", "true", "--health-interval", "soon", "base", "true")
    assert bad.returncode == 125 and b"--health-interval" in bad.stderr
    assert daemon.out("ps", "-aq") == ""  # refused before anything was created

    ref = daemon.out("run", "-d", "--health-cmd", "test -f /tmp/ok", "--health-interval", "200ms",
                     "--health-retries", "2", "base", "sleep", "1000").strip()
    document = inspect(daemon, ref)
    assert document["Config"]["Healthcheck"] == {"Test": ["CMD-SHELL", "test -f /tmp/ok"], "Interval": 200_000_000,
                                                 "Timeout": 30 * 10**9, "StartPeriod": 0, "Retries": 2}

    def status() -> str:
        return inspect(daemon, ref)["State"]["Health"]["Status"]

    wait_for(lambda: status() == "unhealthy", "two failed probes")
    assert "(unhealthy)" in daemon.out("ps")
    daemon.out("exec", ref, "touch", "/tmp/ok")
    wait_for(lambda: status() == "healthy", "a probe that passes")
    assert "(healthy)" in daemon.out("ps")
    daemon.out("exec", ref, "rm", "/tmp/ok")
    wait_for(lambda: status() == "unhealthy", "the probes to fail again")
    health = inspect(daemon, ref)["State"]["Health"]
    assert health["FailingStreak"] >= 2 and len(health["Log"]) == 5
    assert {entry["ExitCode"] for entry in health["Log"][-2:]} == {1}
    changes = [e["attributes"]["health_status"] for e in events(daemon, ref) if e["action"] == "health_status"]
    assert changes == ["unhealthy", "healthy", "unhealthy"]

    daemon.out("stop", "-t", "0", ref)
    with Client(daemon.run_dir) as client, pytest.raises(RemoteError) as stopped:
        client.request("container.health_check", {"container": ref})
    assert stopped.value.code == "invalid_state"
    daemon.out("rm", ref)
