"""Live restore as a user meets it: containers outlive the daemon (SIGKILL, SIGTERM with
live restore), are adopted by the next one, and nothing they write is lost or stored twice
(docs/architecture.md, "Live restore"; docs/logs.md, "Across a daemon restart")."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests import livecheck
from tests.conftest import Daemon, cgroup_dirs, mounts_under
from tests.integration.test_interactive import Terminal

pytestmark = pytest.mark.integration

TIMEOUT = 30.0
#: A line every millisecond (busybox forks usleep: a few hundred lines a second in practice).
COUNTER = "i=0; while true; do echo $i; i=$((i+1)); usleep 1000; done"


@contextlib.contextmanager
def live_daemon(base, busybox_tar, launcher=()) -> Iterator[Daemon]:
    """A private daemon with live restore (started through ``launcher`` if given); at the end
    its containers are removed and it must stop leaving nothing behind (no keeper, cgroup or
    mount)."""
    instance = Daemon(base, ["--live-restore"], launcher)
    try:
        instance.start()
        instance.out("import", str(busybox_tar), "base")
        yield instance
        if instance.process is None or instance.process.poll() is not None:
            instance.start()
        ids = instance.out("ps", "-aq").split()
        if ids:
            instance.out("rm", "-f", *ids)
        assert instance.stop() == 0, instance.log()
        wait_for(lambda: instance.keeper_pid() is None, "the keeper to exit once it holds nothing")
        assert mounts_under(base) == [], "mounts left behind"
        assert cgroup_dirs(instance.cgroup_parent) == [], "cgroups left behind"
    finally:
        instance.cleanup()


@pytest.fixture
def live(tmp_path, busybox_tar):
    with live_daemon(tmp_path, busybox_tar) as instance:
        yield instance


@pytest.fixture
def live_netns(tmp_path, busybox_tar):
    """``live`` in a network namespace of its own (``.netns``), as test_user_networks.py's
    daemons: its bridges, veths and rules go with the namespace whatever a failed test left."""
    from tests.integration.test_user_networks import namespace

    with namespace() as name:
        with live_daemon(tmp_path, busybox_tar, ["nsenter", f"--net=/run/netns/{name}"]) as instance:
            instance.netns = name  # type: ignore[attr-defined]
            yield instance


def wait_for(condition, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polls the condition itself, bounded by the deadline


def restart(daemon: Daemon, sig: int) -> None:
    """Stop the daemon with ``sig``, leave it away 2 s (the containers write on), start it."""
    assert daemon.process is not None
    daemon.process.send_signal(sig)
    daemon.process.wait(TIMEOUT)
    time.sleep(2)  # the scenario itself: the daemon is away while the containers write
    daemon.start(timeout=120)  # adopting under a loaded machine: bounded all the same
    restored(daemon)


def restored(daemon: Daemon) -> str:
    """Until the running daemon has published its ``daemon.restore`` (the bus answers
    before the containers are adopted); that event's line."""
    assert daemon.process is not None
    mark = f"pid={daemon.process.pid})"
    found: list[str] = []

    def published() -> bool:
        events = daemon.out("events", "--since", "1h", "--until", "0s", "--filter", "type=daemon")
        found[:] = [line for line in events.splitlines() if "daemon restore" in line and line.endswith(mark)]
        return bool(found)

    wait_for(published, f"the daemon.restore event of daemon {daemon.process.pid}", timeout=120)
    return found[0]


def inspect(daemon: Daemon, name: str) -> dict:
    return json.loads(daemon.out("inspect", name))[0]


def numbers_exactly_once(daemon: Daemon, name: str) -> int:
    """`logs` of a counter container: 0, 1, 2, ... each once, in order; returns the count."""
    lines = daemon.out("logs", name).split("\n")
    assert lines[-1] == ""
    numbers = [int(line) for line in lines[:-1]]
    if numbers != list(range(len(numbers))):
        seen = set()
        duplicates = sorted({n for n in numbers if n in seen or seen.add(n)})[:5]
        missing = sorted(set(range(max(numbers) + 1)) - set(numbers))[:5]
        raise AssertionError(f"{name}: {len(numbers)} lines, duplicates {duplicates}, missing {missing}")
    return len(numbers)


def test_twenty_counters_survive_five_sigkills_with_every_line_once(live):
    names = [f"counter{index}" for index in range(20)]
    for name in names:
        live.out("run", "-d", "--name", name, "base", "sh", "-c", COUNTER)
    started = livecheck.started(live, names)
    for _ in range(5):
        restart(live, signal.SIGKILL)
    # The "done when" as a user checks it (scripts/live-restore-check.sh: 100): `ps`
    # shows them Up since their original start, `logs` without a gap, `events --since 1m`.
    assert livecheck.verify(live, names, started) == []
    events = live.out("events", "--since", "1h", "--until", "0s", "--filter", "type=daemon")
    assert events.count("daemon restore") == 6, events  # the first start's, and one per restart
    adopted = restored(live).split("adopted=", 1)[1].split(", exited=", 1)[0]
    assert sorted(adopted.split("; ")) == sorted(names)
    live.out("stop", "-t", "1", *names)
    for name in names:  # at ~300 lines a second, 10 s of running leaves thousands
        assert numbers_exactly_once(live, name) > 1000


def test_sigterm_with_live_restore_leaves_them_running_and_the_next_daemon_adopts_them(live):
    names = [f"term{index}" for index in range(5)]
    for name in names:
        live.out("run", "-d", "--name", name, "base", "sh", "-c", COUNTER)
    pids = {name: inspect(live, name)["State"]["Pid"] for name in names}
    for _ in range(2):
        restart(live, signal.SIGTERM)
    for name in names:
        assert inspect(live, name)["State"]["Pid"] == pids[name]
        assert inspect(live, name)["State"]["Running"]
    live.out("stop", "-t", "1", *names)
    for name in names:
        assert numbers_exactly_once(live, name) > 500


def test_without_live_restore_sigterm_stops_them_all(tmp_path, busybox_tar):
    instance = Daemon(tmp_path, ["--live-restore=false"])
    try:
        instance.start()
        instance.out("import", str(busybox_tar), "base")
        for index in range(3):
            instance.out("run", "-d", "--name", f"plain{index}", "base", "sh", "-c", COUNTER)
        pids = [inspect(instance, f"plain{index}")["State"]["Pid"] for index in range(3)]
        assert instance.stop() == 0
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}")
        assert instance.keeper_pid() is None
        instance.start()
        for index in range(3):
            state = inspect(instance, f"plain{index}")["State"]
            assert not state["Running"] and state["ExitCode"] != 255
        instance.out("rm", "plain0", "plain1", "plain2")
        assert instance.stop() == 0
        assert cgroup_dirs(instance.cgroup_parent) == []
    finally:
        instance.cleanup()


def test_an_exit_while_the_daemon_is_away_keeps_its_code_and_its_restart_policy_fires(live):
    # It exits 7 once the file exists; the daemon is killed before that.
    script = "while [ ! -e /tmp/go ]; do usleep 10000; done; echo bye; exit 7"
    live.out("run", "-d", "--name", "quitter", "--restart", "on-failure:1", "base", "sh", "-c", script)
    pid = inspect(live, "quitter")["State"]["Pid"]
    assert live.process is not None
    live.process.send_signal(signal.SIGKILL)
    live.process.wait(TIMEOUT)
    with open(f"/proc/{pid}/root/tmp/go", "w"):
        pass
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), "the container to exit while the daemon is away")
    live.start(timeout=120)
    assert "exited=quitter" in restored(live)
    wait_for(lambda: inspect(live, "quitter")["RestartCount"] >= 1, "the on-failure restart")
    events = live.out("events", "--since", "1h", "--until", "0s", "--filter", "container=quitter")
    assert "exitCode=7" in events, events
    assert "bye" in live.out("logs", "quitter")


def test_attach_to_a_terminal_after_a_restart_echoes_and_resizes(live):
    live.out("run", "-dit", "--name", "shell", "base", "sh")
    restart(live, signal.SIGKILL)
    terminal = Terminal(live, "attach", "shell", rows=30, columns=100)
    try:
        terminal.send(b"echo hel''lo\r")
        terminal.expect(b"hello\r\n")
        terminal.resize(33, 111)  # SIGWINCH to the CLI: its resize goes before the keys typed after it
        terminal.send(b"stty size\r")
        terminal.expect(b"33 111\r\n")
        terminal.send(b"\x10\x11")  # detach
        assert terminal.wait() == 0
    finally:
        terminal.close()
    assert inspect(live, "shell")["State"]["Running"]


def test_a_published_port_stays_bound_while_the_daemon_is_away_and_answers_after(live):
    import socket

    from tests.integration.test_network import fetch, free_port

    port = free_port()
    live.out("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:80", "base", "httpd", "-f", "-p", "80", "-h", "/etc")
    hostname = live.out("exec", "web", "hostname").strip()
    assert fetch(f"http://127.0.0.1:{port}/hostname") == hostname + "\n"
    assert live.process is not None
    live.process.send_signal(signal.SIGKILL)
    live.process.wait(TIMEOUT)
    # No daemon: the keeper holds the listening socket, so a client connects (the kernel's
    # backlog) and waits instead of being refused.
    waiting = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        waiting.sendall(b"GET /hostname HTTP/1.0\r\n\r\n")
        live.start(timeout=120)
        restored(live)
        answer = b""
        while chunk := waiting.recv(4096):
            answer += chunk
        assert answer.endswith(hostname.encode() + b"\n"), answer
    finally:
        waiting.close()
    assert fetch(f"http://127.0.0.1:{port}/hostname") == hostname + "\n"
    assert live.out("port", "web") == f"80/tcp -> 127.0.0.1:{port}\n"


def test_a_container_on_a_user_network_keeps_its_names_its_dns_and_its_port(live_netns):
    from tests.integration.test_network import free_port
    from tests.integration.test_user_networks import subnet

    daemon = live_netns
    daemon.out("network", "create", "--subnet", subnet(), "app")
    port, loopback_port = free_port(), free_port()
    daemon.out("run", "-d", "--name", "web", "--network", "app", "--network-alias", "www", "-p", f"{port}:80",
               "-p", f"127.0.0.1:{loopback_port}:80", "base", "httpd", "-f", "-p", "80", "-h", "/etc")
    daemon.out("run", "-d", "--name", "client", "--network", "app", "base", "sleep", "1000")
    hostname = daemon.out("exec", "web", "hostname").strip() + "\n"
    host = daemon.subnet.rsplit(".", 1)[0] + ".1"  # an address of the host (the default bridge's)
    before = {name: inspect(daemon, name) for name in ("web", "client")}

    def answers() -> None:
        for name in ("web", "www"):  # resolvable by name (and alias) from another container
            assert daemon.out("exec", "client", "wget", "-qO-", f"http://{name}/hostname") == hostname, name
        ping = daemon.cli("exec", "web", "ping", "-c1", "-W2", "client")  # it still resolves others
        assert ping.returncode == 0, ping.stdout + ping.stderr
        for address, published_port in ((host, port), ("127.0.0.1", loopback_port)):
            published = subprocess.run(["nsenter", f"--net=/run/netns/{daemon.netns}", "busybox", "wget", "-qO-",
                                        f"http://{address}:{published_port}/hostname"], capture_output=True, timeout=30)
            assert published.stdout.decode() == hostname, (address, published.stderr)

    answers()
    restart(daemon, signal.SIGKILL)
    line = restored(daemon)
    assert sorted(line.split("adopted=", 1)[1].split(", exited=", 1)[0].split("; ")) == ["client", "web"], line
    for name in ("web", "client"):
        after = inspect(daemon, name)
        assert after["State"]["Running"], after["State"]
        assert (after["State"]["Pid"], after["State"]["StartedAt"]) == (before[name]["State"]["Pid"],
                                                                       before[name]["State"]["StartedAt"])
        assert after["NetworkSettings"]["Networks"] == before[name]["NetworkSettings"]["Networks"]
    answers()
    assert daemon.out("port", "web") == f"80/tcp -> 0.0.0.0:{port}\n80/tcp -> 127.0.0.1:{loopback_port}\n"
    web = before["web"]["Id"][:12]
    daemon.out("rm", "-f", "web")  # the adopted endpoint is released as any: its names go with it
    assert daemon.cli("exec", "client", "ping", "-c1", "-W1", "www").returncode != 0
    rules = subprocess.run(["ip", "netns", "exec", daemon.netns, "iptables-save"], capture_output=True, text=True,
                           timeout=30).stdout
    assert f"dockyard:{web}" not in rules, rules  # the adopted rules were the ones installed, removed with it


def upgraded_tree(base, version: int):
    """A copy of this dockyard's code whose keeper speaks protocol ``version``: another
    dockyard version (run with PYTHONPATH pointing at it)."""
    import shutil
    from pathlib import Path

    import supervisor

    source = Path(supervisor.__file__).resolve().parent.parent
    tree = base / f"dockyard-v{version}"
    for package in ("supervisor", "logs", "bus", "workers"):
        shutil.copytree(source / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    keeper = tree / "supervisor" / "runtime" / "keeper.py"
    text = keeper.read_text()
    assert "\nVERSION = 1\n" in text
    keeper.write_text(text.replace("\nVERSION = 1\n", f"\nVERSION = {version}\n"))
    return tree


def lock_pid(path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return pid if b"keeper.py" in cmdline.read() else None
    except (OSError, ValueError, IndexError):
        return None


def test_a_keeper_of_another_version_is_reported_and_its_containers_left_running_then_adopted_by_their_own(
        live, tmp_path):
    live.out("run", "-d", "--name", "old", "base", "sh", "-c", COUNTER)
    old = inspect(live, "old")["State"]
    old_keeper = live.keeper_pid()
    assert live.process is not None
    live.process.send_signal(signal.SIGKILL)
    live.process.wait(TIMEOUT)
    new_keeper = None
    try:
        # An upgrade whose keeper protocol changed: the old keeper is left alone with "old".
        live.env["PYTHONPATH"] = str(upgraded_tree(tmp_path, 2))
        live.start(timeout=120)
        line = restored(live)
        assert (f"not_adoptable=old: held by the container keeper pid {old_keeper} ({live.run_dir}/keeper.sock), "
                "which speaks protocol 1; this dockyard speaks 2: left running, not adopted") in line, line
        assert 'event="the container keeper is of another dockyard version' in live.log()
        assert os.path.exists(f"/proc/{old['Pid']}") and live.keeper_pid() == old_keeper  # never killed
        state = inspect(live, "old")["State"]
        assert state["Status"] == "dead" and "speaks protocol 1" in state["Error"]
        live.out("run", "-d", "--name", "new", "base", "sleep", "1000")  # through a keeper of its own version
        new_keeper = lock_pid(live.run_dir / "keeper-v2.lock")
        assert new_keeper is not None and new_keeper != old_keeper
        # Back to this version (a downgrade): "old" is adopted again, "new" left to its keeper.
        live.process.send_signal(signal.SIGKILL)
        live.process.wait(TIMEOUT)
        del live.env["PYTHONPATH"]
        live.start(timeout=120)
        line = restored(live)
        assert "adopted=old," in line, line
        assert (f"not_adoptable=new: held by another dockyard's container keeper (pid {new_keeper}, "
                f"{live.run_dir}/keeper-v2.sock)") in line, line
        state = inspect(live, "old")["State"]
        assert state["Running"] and (state["Pid"], state["StartedAt"]) == (old["Pid"], old["StartedAt"])
        live.out("rm", "-f", "new")  # left alone, not killed, until asked
        live.out("stop", "-t", "1", "old")
        assert numbers_exactly_once(live, "old") > 100  # nothing it wrote meanwhile was lost
    finally:
        live.env.pop("PYTHONPATH", None)
        for pid in (new_keeper, lock_pid(live.run_dir / "keeper-v2.lock")):
            if pid is not None:  # holds the removed "new" until ended (the test started it)
                os.kill(pid, signal.SIGKILL)
                wait_for(lambda pid=pid: lock_pid(live.run_dir / "keeper-v2.lock") != pid, "the v2 keeper to end")


def test_a_paused_container_stays_paused_across_a_daemon_restart_and_unpauses_after(live):
    live.out("run", "-d", "--name", "frozen", "base", "sleep", "600")
    pid = inspect(live, "frozen")["State"]["Pid"]
    live.out("pause", "frozen")
    restart(live, signal.SIGKILL)
    state = inspect(live, "frozen")["State"]
    assert (state["Status"], state["Paused"], state["Pid"]) == ("paused", True, pid)
    live.out("unpause", "frozen")
    assert inspect(live, "frozen")["State"]["Status"] == "running"
    live.out("pause", "frozen")
    live.out("stop", "-t", "1", "frozen")  # thawed, then killed: sleep as pid 1 ignores SIGTERM
    assert inspect(live, "frozen")["State"]["ExitCode"] == 137
    live.out("rm", "frozen")
