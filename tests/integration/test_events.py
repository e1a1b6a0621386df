"""The events channel as docs/events.md describes it, followed to the letter (issue 15 item
7): a subscriber to the prefixes the page lists sees no gap when a worker restarts, and
`dockyard events` shows the same events live as it replays from the journal."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from tests.conftest import DOCKYARD
from tests.polling import wait_until

pytestmark = pytest.mark.integration

EVENTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"
GUARD = 30.0  # seconds: a hang guard, not a timing assertion


def documented_prefixes() -> list[str]:
    """The `events` channel's topics, from the page's channel table."""
    row = next(line for line in EVENTS_DOC.read_text().splitlines() if line.startswith("| `events` |"))
    prefixes = [topic for topic in re.findall(r"`([a-z]+\.)\*`", row.split("|")[2])]
    assert prefixes, f"no topics in {row!r}"
    return prefixes


class DocumentedSubscriber:
    """A client written from docs/events.md alone: a SUB to the channel's prefixes and
    sync.<token>, then bus.sync on a DEALER, as "An example client" does."""

    def __init__(self, run_dir: Path):
        self.context = zmq.Context()
        self.sub = self.context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(f"ipc://{run_dir / 'events.sock'}")
        for prefix in documented_prefixes():
            self.sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        dealer = self.context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"ipc://{run_dir / 'control.sock'}")
        token = os.urandom(8).hex()
        self.sub.setsockopt(zmq.SUBSCRIBE, f"sync.{token}".encode())
        dealer.send(msgpack.packb({"v": 1, "topic": "request.bus.sync", "seq": 1, "ts": time.time(),
                                   "source": "doc-example", "data": {"token": token}}))
        assert dealer.poll(GUARD * 1000), "no reply to bus.sync"
        assert msgpack.unpackb(dealer.recv())["data"]["ok"]
        dealer.close()

    def next(self) -> dict:
        assert self.sub.poll(GUARD * 1000), "no event arrived"
        topic, frame = self.sub.recv_multipart()
        return msgpack.unpackb(frame)

    def close(self) -> None:
        self.sub.close()
        self.context.term()


class Watcher:
    """`dockyard events ...` running, its output lines read by a thread (so a test can wait
    for a line with a timeout)."""

    def __init__(self, daemon, *args: str):
        self.process = subprocess.Popen([DOCKYARD, "events", "--format", "json", *args],
                                        stdout=subprocess.PIPE, env=daemon.env)
        self.lines: queue.Queue[dict | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def next(self, timeout: float) -> dict | None:
        try:
            envelope = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        assert envelope is not None, "dockyard events ended early"
        return envelope

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.thread.join(10)
        self.process.stdout.close()


def worker_pid(daemon, name: str) -> int | None:
    return json.loads(daemon.out("info"))["workers"][name]["pid"]


def test_a_worker_restart_is_no_gap_for_the_documented_subscriber_and_shows_live_as_replayed(daemon):
    subscriber = DocumentedSubscriber(daemon.run_dir)
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
        assert live[1]["data"]["attributes"]["exitCode"] == str(-signal.SIGKILL)

        # The documented subscriber: every seq of the channel, the workers' included, in order.
        seen = [subscriber.next()]
        while not (seen[-1]["topic"].endswith(".destroy") and
                   seen[-1]["data"]["attributes"].get("name") == "after-restart"):
            seen.append(subscriber.next())
        seqs = [e["seq"] for e in seen]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gaps in {seqs}"
        assert {e["topic"] for e in live[1:]} <= {e["topic"] for e in seen}

        # Live and replayed: the same envelopes, the same filter.
        replayed = [json.loads(line) for line in daemon.out(
            "events", "--since", "0", "--until", f"{time.time():.3f}", "--format", "json",
            "--filter", "type=image", "--filter", "type=worker").splitlines()]
        replayed = [e for e in replayed if marker["seq"] <= e["seq"] <= live[-1]["seq"]]
        assert replayed == live
    finally:
        watcher.close()
        subscriber.close()
