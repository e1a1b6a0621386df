"""The daemon against a careless or hostile bus client (issues 15.12, 25.4): more connections
than its open-file limit, tens of thousands of pipelined requests, a client that leaves with
requests pending. The daemon stays up, answers the others, and gives the memory back."""

from __future__ import annotations

import json
import os
import resource
import socket
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from logs.options import LogOptions
from supervisor.logspool import capacity_for
from tests.polling import wait_until

pytestmark = pytest.mark.integration


def info(daemon) -> dict:
    return json.loads(daemon.out("info"))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def request_frame(op: str, request_id: int, args: dict) -> bytes:
    return msgpack.packb({"v": 1, "topic": f"request.{op}", "seq": request_id, "ts": time.time(),
                          "source": "test", "data": args})


def test_connections_past_the_open_file_limit_are_refused_and_ps_still_answers(daemon) -> None:
    container = daemon.out("run", "-d", "base", "sleep", "1000").strip()
    pid = daemon.process.pid
    # 1024 descriptors: the bound becomes 256 connections per socket, 64 per client process.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, 1024))
    held = []
    try:
        for path, count in ((daemon.run_dir / "control.sock", 1500), (daemon.run_dir / "events.sock", 500)):
            for _ in range(count):
                raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                raw.connect(str(path))
                held.append(raw)
        assert daemon.process.poll() is None, daemon.log()
        assert container[:12] in daemon.out("ps")
        bus = wait_until(lambda: (stats := info(daemon)["bus"])["connections_refused"] >= 2000 - 128 and stats,
                         "the excess connections refused")
        # This process's share, and the workers' and the CLI's own connections.
        assert bus["connections"] <= 64 + 8 and bus["subscribers"] <= 64 + 8
        assert len(os.listdir(f"/proc/{pid}/fd")) < 512
    finally:
        for raw in held:
            raw.close()
    wait_until(lambda: info(daemon)["bus"]["connections"] <= 8, "the held connections gone")
    assert container[:12] in daemon.out("ps")
    daemon.out("rm", "-f", container)
    assert "bus refused a connection: too many" in daemon.log()


def test_waits_of_a_client_that_disconnects_are_cancelled_and_memory_comes_back(daemon) -> None:
    container = daemon.out("run", "-d", "base", "sleep", "1000").strip()
    pid = daemon.process.pid
    before = rss_bytes(pid)
    context = zmq.Context()
    try:
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.SNDHWM, 0)
        dealer.connect(f"ipc://{daemon.run_dir / 'control.sock'}")
        for request_id in range(1, 50_001):
            dealer.send(request_frame("container.wait", request_id, {"container": container}))
        # The first 1024 wait; every one after is refused at once (too_many_requests).
        reply = msgpack.unpackb(dealer.recv())
        assert reply["seq"] == 1025 and reply["data"]["error"]["code"] == "too_many_requests", reply
        # It reads no more: once its queue of unread refusals is full the daemon disconnects it.
        wait_until(lambda: info(daemon)["bus"]["clients_cut_off"] == 1, "the client disconnected")
    finally:
        context.destroy(linger=0)
    # Its 1024 waits are cancelled (in_flight still counts the info request that reports it,
    # and whatever the workers have asked).
    bus = wait_until(lambda: (stats := info(daemon)["bus"])["requests_cancelled"] >= 1024 and stats,
                     "the waits cancelled")
    assert bus["in_flight"] < 16, bus
    after = rss_bytes(pid)
    assert after < before + 32 * 1024 * 1024, f"RSS {before} -> {after}"
    daemon.out("rm", "-f", container)


def test_a_pipelining_client_over_the_cap_gets_an_error_reply_at_once(daemon) -> None:
    container = daemon.out("run", "-d", "base", "sleep", "1000").strip()
    context = zmq.Context()
    try:
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"ipc://{daemon.run_dir / 'control.sock'}")
        for request_id in range(1, 1024 + 6):
            dealer.send(request_frame("container.wait", request_id, {"container": container}))
        assert dealer.poll(30_000), "no reply within 30 s"
        replies = [msgpack.unpackb(dealer.recv()) for _ in range(5)]
        assert [reply["seq"] for reply in replies] == [1025, 1026, 1027, 1028, 1029]
        for reply in replies:
            assert reply["data"]["error"]["code"] == "too_many_requests"
            assert "1024 requests without a reply" in reply["data"]["error"]["message"]
        daemon.out("kill", container)
        waited = [msgpack.unpackb(dealer.recv()) for _ in range(1024)]
        assert all(reply["data"]["ok"] for reply in waited)
    finally:
        context.destroy(linger=0)
    daemon.out("rm", "-f", container)


def test_a_subscriber_that_never_reads_is_cut_off_and_daemon_memory_stays_bounded(daemon) -> None:
    pid = daemon.process.pid
    before = rss_bytes(pid)
    workers = len(info(daemon)["workers"])  # each of the daemon's workers subscribes once
    wait_until(lambda: info(daemon)["bus"]["subscribers"] == workers, "the workers subscribed")
    context = zmq.Context()
    try:
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 1)
        sub.setsockopt(zmq.SUBSCRIBE, b"log.")
        sub.connect(f"ipc://{daemon.run_dir / 'events.sock'}")
        wait_until(lambda: info(daemon)["bus"]["subscribers"] > workers, "the subscriber connected")
        container = daemon.out("run", "-d", "base", "sh", "-c", "dd if=/dev/zero bs=65536 count=3200 2>/dev/null")
        container = container.strip()
        peak = before
        def exited() -> bool:
            nonlocal peak
            peak = max(peak, rss_bytes(pid))
            return json.loads(daemon.out("inspect", container))[0]["State"]["Status"] == "exited"
        wait_until(exited, "the container's 200 MB written", timeout=120)
    finally:
        context.destroy(linger=0)
    # It was disconnected long before the end: what the daemon held for it stayed bounded
    # (64 MiB), besides the busy stream's own output spool, a ring the daemon keeps mapped
    # while the stream writes (supervisor/logspool.py: the log buffer and two records).
    ring = capacity_for(LogOptions().max_buffer_size)
    assert peak < before + 64 * 1024 * 1024 + ring, f"RSS {before} -> peak {peak} (ring {ring})"
    wait_until(lambda: info(daemon)["bus"]["subscribers"] == workers, "the subscriber gone")
    assert info(daemon)["bus"]["subscribers_cut_off"] == 1
    # The daemon gives the memory back within seconds of the subscriber's leaving.
    after = wait_until(lambda: (now := rss_bytes(pid)) < before + 32 * 1024 * 1024 and now,
                       f"RSS back near {before >> 20} MiB (peak {peak >> 20} MiB)", timeout=15)
    daemon.out("rm", container)
