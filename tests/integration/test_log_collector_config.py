"""Configurations with and without a log collector (issue 15 item 6): the sample config and
the "Workers as their own units" section of docs/operations.md, run as written; and a
daemon without a collector, which must say so wherever a user looks (its log at start,
`dockyard info`, `dockyard logs`) instead of showing nothing."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import DOCKYARD, ROOT, private_daemon
from tests.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not ROOT, reason="needs root")]

OPERATIONS_DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
INSTALLED = "/opt/dockyard/.venv/bin/dockyard"  # where the doc's units find the CLI
TEN_MB = 10 << 20
#: A container that writes 10 MiB of 100-byte lines to stdout, more than the buffer (4 MiB).
CHATTY = f"yes {'x' * 99} | head -c {TEN_MB}"


def section(title: str) -> str:
    text = OPERATIONS_DOC.read_text()
    start = text.index(f"\n### {title}\n")
    end = text.find("\n#", start + 1)
    while end != -1 and text[end + 1:end + 4] not in ("## ", "###"):  # "# " inside code blocks
        end = text.find("\n#", end + 1)
    return text[start:end if end != -1 else None]


def code_block(text: str, language: str) -> str:
    match = re.search(rf"```{language}\n(.*?)```", text, re.S)
    assert match, f"no {language} block"
    return match.group(1)


def sample_config(tmp_path: Path) -> Path:
    """docs/operations.md's /etc/dockyard/daemon.toml, as written."""
    path = tmp_path / "daemon.toml"
    path.write_text(code_block(section("The config file and reload"), "toml"))
    return path


def info(daemon) -> dict:
    return json.loads(daemon.out("info"))


def run_chatty(daemon, name: str) -> None:
    """Runs CHATTY to its end (a hang guard bounds it) and checks every byte is in its log."""
    daemon.out("run", "-d", "--name", name, "base", "sh", "-c", CHATTY)
    assert daemon.out("wait", name, timeout=120).strip() == "0"
    logs = daemon.cli("logs", name, timeout=120)
    assert logs.returncode == 0, logs.stderr.decode()
    assert len(logs.stdout) == TEN_MB and logs.stderr == b""


def test_the_sample_config_stores_logs(tmp_path, busybox_tar):
    config = sample_config(tmp_path)
    # Flags win over the file: only the paths are the test's own (private daemon).
    with private_daemon(tmp_path, busybox_tar, "--config", str(config)) as daemon:
        facts = info(daemon)
        assert facts["warnings"] == [], facts["warnings"]
        assert facts["workers"]["logcollector"]["running"]
        run_chatty(daemon, "chatty")
        daemon.out("rm", "chatty")
    assert "log collector is not among" not in daemon.log()


def test_workers_as_their_own_units_as_written(tmp_path, busybox_tar):
    text = section("Workers as their own units")
    units = code_block(text, "ini")
    daemon_command = re.search(r"ExecStart=(\S+ daemon .*)", units).group(1).split()
    worker_command = re.search(r"ExecStart=(\S+ worker %i)", units).group(1).split()
    instances = sorted(set(re.findall(r"dockyard-worker@(\w+)", text)))
    assert instances == ["logcollector", "monitor"]
    assert daemon_command[0] == worker_command[0] == INSTALLED
    config = sample_config(tmp_path)
    flags = [str(config) if arg == "/etc/dockyard/daemon.toml" else arg for arg in daemon_command[2:]]
    with private_daemon(tmp_path, busybox_tar, *flags) as daemon:
        assert info(daemon)["workers"] == {}
        env = {**daemon.env, "DOCKYARD_ROOT": str(daemon.root)}
        workers = [subprocess.Popen([DOCKYARD, *(arg.replace("%i", name) for arg in worker_command[1:])],
                                    env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
                   for name in instances]
        try:
            wait_until(lambda: info(daemon)["logs"]["collector"]["present"], what="the collector's unit")
            assert info(daemon)["warnings"] == []
            run_chatty(daemon, "chatty")
            # The monitor's unit applies restart policies.
            daemon.out("run", "-d", "--name", "failing", "--restart", "on-failure:1", "base", "false")
            def restarted_and_exited_again() -> bool:
                document = json.loads(daemon.out("inspect", "failing"))[0]
                state = document["State"]
                return document["RestartCount"] == 1 and state["Status"] == "exited" and not state["Restarting"]

            wait_until(restarted_and_exited_again, what="the monitor restarting a failed container")
            daemon.out("rm", "-f", "chatty", "failing")
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                assert worker.wait(30) == 0
    assert "log collector is not among" in daemon.log()  # --workers none: the daemon cannot know


def test_without_a_log_collector_every_place_says_so(tmp_path, busybox_tar):
    with private_daemon(tmp_path, busybox_tar, "--workers", "monitor") as daemon:
        wait_until(lambda: "log collector is not among the daemon's workers" in daemon.log(),
                   what="the daemon's warning at start")
        shown = daemon.cli("info")
        facts = json.loads(shown.stdout)
        assert facts["logs"]["collector"] == {"present": False, "last_seen": None}
        assert "no log collector is running" in facts["warnings"][0]
        assert b"WARNING: no log collector is running" in shown.stderr

        # A container that wrote a little and exited: logs says what waits, and fails.
        daemon.out("run", "--name", "quiet", "base", "echo", "hello")
        for follow in ((), ("-f",)):
            logs = daemon.cli("logs", *follow, "quiet", timeout=30)
            assert (logs.returncode, logs.stdout) == (1, b""), logs
            message = logs.stderr.decode()
            assert "6 bytes (1 records) of container quiet's output are waiting for a log collector, since" in message
            assert "no log collector is running" in message

        # A chatty one: it stays blocked, and info and logs say so.
        daemon.out("run", "-d", "--name", "chatty", "base", "sh", "-c", CHATTY)
        blocked = wait_until(lambda: [row for row in info(daemon)["logs"]["unstored"]
                                      if row["name"] == "chatty" and row["blocked"]], what="chatty blocked")
        assert blocked[0]["bytes"] >= 4 << 20 and blocked[0]["since"] > 0
        assert any("chatty" in warning and "blocked" in warning for warning in info(daemon)["warnings"])
        logs = daemon.cli("logs", "chatty", timeout=30)
        assert logs.returncode == 1 and logs.stdout == b""
        assert "the container is blocked writing until it is stored" in logs.stderr.decode()

        # A collector on its own unblocks it and stores everything, the earlier output too.
        env = {**daemon.env, "DOCKYARD_ROOT": str(daemon.root)}
        collector = subprocess.Popen([DOCKYARD, "worker", "logcollector"], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert daemon.out("wait", "chatty", timeout=120).strip() == "0"
            assert len(daemon.out("logs", "chatty", timeout=120)) == TEN_MB
            assert daemon.out("logs", "quiet") == "hello\n"
            facts = info(daemon)
            assert facts["logs"]["collector"]["present"] and facts["warnings"] == []
        finally:
            collector.send_signal(signal.SIGTERM)
            assert collector.wait(30) == 0
        daemon.out("rm", "quiet", "chatty")
