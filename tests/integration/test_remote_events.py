"""Remote subscribers over CURVE (bus/remote.py, bus/remote_client.py): the same stream as a
local subscriber, keys that are not allowed get nothing, and three daemons merged, one of
them killed and restarted mid-stream, each event shown once and tagged. Every connection
is on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import DOCKYARD, private_daemon

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def listening_daemon(base: Path, busybox_tar: Path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with private_daemon(base, busybox_tar, "--events-listen", endpoint) as daemon:
        daemon.endpoint = endpoint
        yield daemon


def client_key(daemon, directory: Path, name: str, allow: bool = True) -> Path:
    subprocess.run([DOCKYARD, "events-keys", "generate", name, "--dir", str(directory)], check=True,
                   capture_output=True, env=daemon.env, timeout=30)
    if allow:
        daemon.out("events-keys", "add", name, str(directory / f"{name}.key"))
    return directory / f"{name}.key_secret"


def server_key(daemon) -> str:
    return daemon.out("events-keys", "ls", "-q").strip()


def remote_events(env, *args: str, until: float) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKYARD, "events", "--format", "json", "--until", f"{until:.3f}", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def run_and_remove(daemon, name: str) -> None:
    daemon.out("run", "--name", name, "base", "true")
    daemon.out("rm", name)


def test_a_remote_subscriber_sees_what_a_local_one_sees(tmp_path, busybox_tar):
    with listening_daemon(tmp_path / "d", busybox_tar) as daemon:
        key = client_key(daemon, tmp_path, "laptop")
        run_and_remove(daemon, "before")
        until = time.time() + 5
        remote = remote_events(daemon.env, "--remote", daemon.endpoint, f"--server-key={server_key(daemon)}",
                               "--key", str(key), "--since-seq", "0", until=until)
        local = remote_events(daemon.env, "--since-seq", "0", until=until)
        assert remote.returncode == 0, remote.stderr
        remote_seqs = [json.loads(line)["seq"] for line in remote.stdout.splitlines()]
        local_seqs = [json.loads(line)["seq"] for line in local.stdout.splitlines()]
        assert remote_seqs == local_seqs and len(remote_seqs) >= 5  # daemon.start, 4 of the container
        tagged = json.loads(remote.stdout.splitlines()[0])["daemon"]
        assert tagged["remote"] == daemon.endpoint and len(tagged["id"]) == 32
        listed = daemon.out("events-keys", "ls")
        assert "laptop" in listed and daemon.endpoint in listed


def test_a_key_that_is_not_allowed_gets_nothing(tmp_path, busybox_tar):
    with listening_daemon(tmp_path / "d", busybox_tar) as daemon:
        stranger = client_key(daemon, tmp_path, "stranger", allow=False)
        removed = client_key(daemon, tmp_path, "former")
        daemon.out("events-keys", "rm", "former")
        for key in (stranger, removed):
            done = remote_events(daemon.env, "--remote", daemon.endpoint, f"--server-key={server_key(daemon)}",
                                 "--key", str(key), "--since-seq", "0", until=time.time() + 3)
            assert done.stdout == ""
            assert "refused this client's key" in done.stderr
        assert json.loads(daemon.out("info"))["bus"]["remote_refused"] >= 2
        bad = daemon.cli("events-keys", "add", "bad", "not-a-key-at-all")
        assert bad.returncode != 0


def test_three_daemons_merged_one_killed_and_restarted_mid_stream(tmp_path, busybox_tar):
    with contextlib.ExitStack() as stack:
        daemons = [stack.enter_context(listening_daemon(tmp_path / f"d{i}", busybox_tar)) for i in range(3)]
        key = client_key(daemons[0], tmp_path / "keys", "fleet")  # one client key pair for all three
        for daemon in daemons[1:]:
            daemon.out("events-keys", "add", "fleet", str(key.with_suffix(".key")))
        args = ["events", "--format", "json", "--key", str(key)]
        for daemon in daemons:
            args += ["--remote", daemon.endpoint, f"--server-key={server_key(daemon)}"]
        watcher = subprocess.Popen([DOCKYARD, *args, "--since-seq", "0"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=daemons[0].env)
        try:
            run_and_remove(daemons[0], "zero-a")
            daemons[1].stop(signal.SIGKILL)
            run_and_remove(daemons[2], "two-a")
            daemons[1].start()
            run_and_remove(daemons[1], "one-a")
            for i, daemon in enumerate(daemons):
                run_and_remove(daemon, f"last-{i}")
            seen: dict[str, list[int]] = {}
            names: dict[str, list[str]] = {}
            deadline = time.monotonic() + 60
            while sum(n.count("destroy") for n in names.values()) < 6 and time.monotonic() < deadline:
                line = watcher.stdout.readline()
                assert line, watcher.stderr.read()
                envelope = json.loads(line)
                remote = envelope["daemon"]["remote"]
                seen.setdefault(remote, []).append(envelope["seq"])
                names.setdefault(remote, []).append(envelope["data"].get("action"))
        finally:
            watcher.terminate()
            watcher.wait(10)
            watcher.stdout.close()
            watcher.stderr.close()
        for daemon in daemons:
            local = [json.loads(line)["seq"] for line in remote_events(daemon.env, "--since-seq", "0",
                                                                      until=time.time()).stdout.splitlines()]
            assert seen[daemon.endpoint] == local, daemon.endpoint  # each event once, in order, none missing
