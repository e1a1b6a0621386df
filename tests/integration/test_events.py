"""The events channel as docs/events.md describes it, followed to the letter (issue 15 item
7): the page's example client, run as written, sees no gap when a worker restarts, and
`dockyard events` shows the same events live as it replays from the journal. Filters the
daemon evaluates (bus/filters.py), cursors (`--since-seq`) and a journal too small for the
cursor (issue 22)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import DOCKYARD, private_daemon
from tests.polling import wait_until

pytestmark = pytest.mark.integration

EVENTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"
GUARD = 30.0  # seconds: a hang guard, not a timing assertion


class LineReader:
    """A process's stdout lines, read by a thread, so a test can wait for one with a timeout."""

    def __init__(self, process: subprocess.Popen, parse=lambda line: line):
        self.process = process
        self.lines: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(parse,), daemon=True)
        self.thread.start()

    def _read(self, parse) -> None:
        for line in self.process.stdout:
            self.lines.put(parse(line))
        self.lines.put(None)

    def next(self, timeout: float):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        assert line is not None, f"{self.process.args[:3]} ended early"
        return line

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.thread.join(10)
        self.process.stdout.close()


def documented_client(run_dir: Path) -> LineReader:
    """docs/events.md's example client, as written but for the run dir."""
    text = EVENTS_DOC.read_text()
    code = re.search(r"## An example client.*?```python\n(.*?)```", text, re.S).group(1)
    assert code.count("ipc:///run/dockyard/") == 2
    code = code.replace("ipc:///run/dockyard/", f"ipc://{run_dir}/")
    process = subprocess.Popen([sys.executable, "-u", "-c", code], stdout=subprocess.PIPE, text=True)
    return LineReader(process)


class Watcher(LineReader):
    """`dockyard events --format json ...`, running."""

    def __init__(self, daemon, *args: str):
        super().__init__(subprocess.Popen([DOCKYARD, "events", "--format", "json", *args],
                                          stdout=subprocess.PIPE, env=daemon.env), json.loads)


def worker_pid(daemon, name: str) -> int | None:
    return json.loads(daemon.out("info"))["workers"][name]["pid"]


def test_a_worker_restart_is_no_gap_for_the_documented_subscriber_and_shows_live_as_replayed(daemon):
    subscriber = documented_client(daemon.run_dir)
    reply = subscriber.next(timeout=GUARD)  # it prints the bus.sync reply once subscribed
    assert reply is not None and "'ok': True" in reply, reply
    # Values of one key are alternatives: the image events let the test see when the live
    # stream is subscribed; the worker events are what it is about.
    watcher = Watcher(daemon, "--filter", "type=image", "--filter", "type=worker")
    try:
        # Live for sure: the watcher printed an event made after it started (no --since).
        marker = None
        deadline = time.monotonic() + GUARD
        while marker is None:
            assert time.monotonic() < deadline, "dockyard events never showed an image tag"
            daemon.out("tag", "base", f"marker:{len(daemon.out('images').splitlines())}")
            marker = watcher.next(timeout=0.5)
        old = worker_pid(daemon, "logcollector")
        assert old
        os.kill(old, signal.SIGKILL)
        live = [marker]
        while not (live[-1]["topic"] == "worker.logcollector.start" and live[-1]["seq"] > marker["seq"]):
            envelope = watcher.next(timeout=GUARD)
            assert envelope is not None, f"no worker events live; saw {[e['topic'] for e in live]}"
            live.append(envelope)
        wait_until(lambda: worker_pid(daemon, "logcollector") not in (None, old), what="the new collector")
        daemon.out("run", "--rm", "--name", "after-restart", "base", "true")

        topics = [e["topic"] for e in live if e["topic"].startswith("worker.")]
        assert topics == ["worker.logcollector.die", "worker.logcollector.restart", "worker.logcollector.start"]
        assert live[1]["data"]["attributes"]["exitCode"] == -signal.SIGKILL

        # The documented client: every seq of the channel, the workers' included, in order.
        seen = [subscriber.next(timeout=GUARD)]
        while not (seen[-1] is None or ".destroy {" in seen[-1] and "'after-restart'" in seen[-1]):
            seen.append(subscriber.next(timeout=GUARD))
        assert seen[-1] is not None, f"the documented client stopped short: {seen}"
        assert not [line for line in seen if line.startswith("missed")], seen
        seqs = [int(line.split()[0]) for line in seen]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gaps in {seqs}"
        assert {e["topic"] for e in live[1:]} <= {line.split()[1] for line in seen}

        # Live and replayed: the same envelopes, the same filter.
        replayed = [json.loads(line) for line in daemon.out(
            "events", "--since", "0", "--until", f"{time.time():.3f}", "--format", "json",
            "--filter", "type=image", "--filter", "type=worker").splitlines()]
        replayed = [e for e in replayed if marker["seq"] <= e["seq"] <= live[-1]["seq"]]
        assert replayed == live
    finally:
        watcher.close()
        subscriber.close()


def events(daemon, *args: str) -> tuple[list[dict], str]:
    """`dockyard events ARGS --format json` up to now (a replay): the envelopes and stderr."""
    done = subprocess.run([DOCKYARD, "events", "--format", "json", "--until", f"{time.time():.3f}", *args],
                          capture_output=True, text=True, env=daemon.env, timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_filters_are_evaluated_by_the_daemon_live_and_replayed(daemon):
    cursor = events(daemon, "--since", "0")[0][-1]["seq"]
    # --since-seq: whatever happens before the watcher has subscribed comes in its replay
    watcher = subprocess.Popen([DOCKYARD, "events", "--format", "json", "--since-seq", str(cursor), "--filter", "event=die",
                                "--filter", "event=destroy", "--filter", "container=wanted"],
                               stdout=subprocess.PIPE, text=True, env=daemon.env)
    try:
        assert daemon.cli("run", "--rm", "--name", "other", "base", "sh", "-c", "exit 2").returncode == 2
        daemon.out("run", "--rm", "--name", "wanted", "base", "true")
        live = []
        while len(live) < 2:
            line = watcher.stdout.readline()
            assert line, "the filtered stream ended early"
            live.append(json.loads(line))
    finally:
        watcher.terminate()
        watcher.wait(10)
        watcher.stdout.close()
    assert [(e["data"]["action"], e["data"]["attributes"]["name"]) for e in live] == [("die", "wanted"), ("destroy", "wanted")]
    replayed, _ = events(daemon, "--since", "0", "--filter", "event=die", "--filter", "container=wanted")
    assert [e["seq"] for e in replayed] == [live[0]["seq"]]
    # values of one key OR, different keys AND
    replayed, _ = events(daemon, "--since", "0", "--filter", "event=die", "--filter", "container=other",
                         "--filter", "container=wanted", "--filter", "type=container")
    assert sorted(e["data"]["attributes"]["name"] for e in replayed) == ["other", "wanted"]


def test_a_bad_filter_is_refused_before_anything_is_asked(daemon):
    done = daemon.cli("events", "--filter", "colour=red", "--since", "0")
    assert done.returncode == 2 and "invalid filter key 'colour'" in done.stderr.decode()


def run_and_remove(daemon, name: str) -> None:
    """create, start, die, destroy: all published when this returns (no --rm race)."""
    daemon.out("run", "--name", name, "base", "true")
    daemon.out("rm", name)


def test_since_seq_replays_exactly_what_came_after(daemon):
    run_and_remove(daemon, "one")
    everything, _ = events(daemon, "--since", "0")
    cursor = everything[-1]["seq"]
    run_and_remove(daemon, "two")
    after, stderr = events(daemon, "--since-seq", str(cursor))
    assert stderr == ""
    assert [e["seq"] for e in after] == list(range(cursor + 1, cursor + 1 + len(after)))
    assert [(e["data"]["action"], e["data"]["attributes"]["name"]) for e in after] == [
        ("create", "two"), ("start", "two"), ("die", "two"), ("destroy", "two")]


def test_a_cursor_older_than_the_journal_says_how_many_were_lost(tmp_path, busybox_tar):
    with private_daemon(tmp_path, busybox_tar, "--events-journal", "4") as small:
        for name in ("aa", "bb", "cc"):
            run_and_remove(small, name)
        kept, _ = events(small, "--since", "0")
        assert 2 <= len(kept) <= 4
        newest = kept[-1]["seq"]
        after, stderr = events(small, "--since-seq", "0")
        assert [e["seq"] for e in after] == [e["seq"] for e in kept] == list(range(newest - len(kept) + 1, newest + 1))
        assert f"{newest - len(kept)} events after seq 0 are older than the daemon's journal" in stderr


def test_format_templates_use_dockers_event_fields(daemon):
    run_and_remove(daemon, "templated")
    done = daemon.cli("events", "--since", "0", "--until", f"{time.time():.3f}", "--filter", "container=templated",
                      "--format", "{{.Type}}/{{.Action}}/{{.Actor.Attributes.name}}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == ["container/create/templated", "container/start/templated",
                                            "container/die/templated", "container/destroy/templated"]
    refused = daemon.cli("events", "--format", "{{.Nope}}")
    assert refused.returncode == 2 and b"no field .Nope" in refused.stderr
