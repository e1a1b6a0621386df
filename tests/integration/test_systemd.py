"""The daemon under systemd's protocols, without systemd: a real datagram socket stands in as
NOTIFY_SOCKET, and systemd-socket-activate (Debian's systemd package) passes the bus sockets."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import DOCKYARD, ROOT, Daemon, cgroup_dirs
from tests.polling import wait_until
from tests.tools import require

pytestmark = pytest.mark.integration


class CustomDaemon(Daemon):
    """The conftest Daemon, started with a given command line prefix and extra flags."""

    def __init__(self, base: Path, prefix: list[str] = (), extra: list[str] = ()):
        super().__init__(base)
        self.prefix = list(prefix)
        self.extra = list(extra)

    def start(self, timeout: float = 20.0) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, DOCKYARD, "daemon", "--root", str(self.root), "--run", str(self.run_dir),
                 "--cgroup-parent", self.cgroup_parent, "--bridge-name", self.bridge,
                 "--bridge-subnet", self.subnet, *self.extra],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=self.env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            if (self.run_dir / "control.sock").exists() and self.cli("info").returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"daemon not ready after {timeout} s:\n{self.log()}")


class Notifications:
    """The systemd side of NOTIFY_SOCKET: a datagram socket, read by a thread as systemd
    would (promptly: the queue of a unix datagram socket is short)."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.received: list[dict[str, str]] = []
        self.arrived = threading.Condition()
        self.closing = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while not self.closing:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            with self.arrived:
                self.received.append(dict(line.split("=", 1) for line in data.decode().split("\n")))
                self.arrived.notify_all()

    def until(self, predicate, what: str, timeout: float = 20.0) -> dict[str, str]:
        """The first message (oldest first) that satisfies predicate, waiting for it."""
        with self.arrived:
            found = self.arrived.wait_for(lambda: next((m for m in self.received if predicate(m)), None), timeout)
        if found is None:
            raise AssertionError(f"no notification {what}; got {self.received}")
        return found

    def count(self, key: str) -> int:
        with self.arrived:
            return sum(key in m for m in self.received)

    def close(self) -> None:
        self.closing = True
        self.reader.join()
        self.sock.close()


@pytest.fixture
def notified_daemon(tmp_path, busybox_tar):
    if not ROOT:
        pytest.skip("needs root")
    config = tmp_path / "daemon.toml"
    config.write_text(f'stats-interval = 0.2\napi = ["unix://{tmp_path}/extra-api.sock"]\n')
    notifications = Notifications(tmp_path / "notify.sock")
    instance = CustomDaemon(tmp_path, extra=["--config", str(config)])
    instance.env.update(NOTIFY_SOCKET=str(notifications.path), WATCHDOG_USEC="200000")
    instance.config = config
    try:
        instance.start()
        instance.out("import", str(busybox_tar), "base")
        yield instance, notifications
    finally:
        instance.cleanup()
        notifications.close()


def test_ready_status_watchdog_reload_and_stopping_on_a_real_notify_socket(notified_daemon):
    daemon, notifications = notified_daemon
    ready = notifications.until(lambda m: "READY" in m, "READY=1")
    assert ready == {"READY": "1", "STATUS": "0 containers: 0 running, 0 restarting"}
    # WATCHDOG_USEC=200000: a ping every 0.1 s; wait for a few after READY.
    pings = notifications.count("WATCHDOG")
    notifications.until(lambda m: notifications.count("WATCHDOG") >= pings + 3, "three more WATCHDOG=1")
    assert all(m == {"WATCHDOG": "1"} for m in notifications.received if "WATCHDOG" in m)

    # The config file's api key: the Engine API answers there too.
    extra_api = daemon.config.parent / "extra-api.sock"
    wait_until(extra_api.exists, "the config file's api socket")
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(extra_api))
        client.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
        assert client.recv(4096).startswith(b"HTTP/1.1 200")

    ref = daemon.out("run", "-d", "base", "sleep", "1000").strip()
    notifications.until(lambda m: m.get("STATUS") == "1 containers: 1 running, 0 restarting", "the new counts")

    # Nothing of systemd's leaks to the workers (or the containers).
    monitor = int(json.loads(daemon.out("info"))["workers"]["monitor"]["pid"])
    environment = Path(f"/proc/{monitor}/environ").read_bytes().split(b"\0")
    assert not [v for v in environment if v.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_", b"LISTEN_"))]

    daemon.config.write_text('stats-interval = 0\nlog-level = "debug"\nroot = "/elsewhere"\n')
    daemon.process.send_signal(signal.SIGHUP)
    reloading = notifications.until(lambda m: "RELOADING" in m, "RELOADING=1")
    assert int(reloading["MONOTONIC_USEC"]) > 0
    notifications.until(lambda m: notifications.count("READY") >= 2, "READY=1 after the reload")
    log = daemon.log()
    assert "config reloaded" in log and "stats-interval" in log
    assert "take effect at the next start" in log and "root" in log
    assert daemon.cli("info").returncode == 0

    # A broken file on reload changes nothing, and the daemon stays up.
    daemon.config.write_text("stats-interval = -5\n")
    daemon.process.send_signal(signal.SIGHUP)
    notifications.until(lambda m: notifications.count("READY") >= 3, "READY=1 after the failed reload")
    assert "config reload failed; nothing changed" in daemon.log()

    daemon.out("rm", "-f", ref)
    assert daemon.stop() == 0
    notifications.until(lambda m: "STOPPING" in m, "STOPPING=1")
    assert cgroup_dirs(daemon.cgroup_parent) == []


def test_socket_activation_through_systemd_socket_activate(tmp_path, busybox_tar):
    if not ROOT:
        pytest.skip("needs root")
    require("systemd-socket-activate")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    activate = ["systemd-socket-activate", "-l", str(run_dir / "control.sock"), "-l", str(run_dir / "events.sock"),
                "--fdname=control:events"]
    daemon = CustomDaemon(tmp_path, prefix=activate)
    try:
        daemon.start()  # the first connection (the readiness probe) launches the daemon
        deadline = time.monotonic() + 20
        while "daemon ready" not in daemon.log() and time.monotonic() < deadline:
            time.sleep(0.05)  # the bus answers before the daemon logs that it is ready
        assert "socket_activated=\"['control', 'events']\"" in daemon.log()
        daemon.out("import", str(busybox_tar), "base")
        assert daemon.out("run", "--rm", "base", "echo", "activated") == "activated\n"
        # `events` subscribes on events.sock (with the bus.sync handshake through it) first.
        replay = daemon.out("events", "--since", "0", "--until", str(time.time()), "--filter", "event=die")
        assert "container die" in replay
        assert daemon.stop() == 0
        # The socket files belong to the activator: the daemon leaves them in place.
        assert (run_dir / "control.sock").exists()
    finally:
        daemon.cleanup()
