"""bus/remote_client.py against a real BusServer listening with CURVE on 127.0.0.1: what a
remote subscriber that fell behind takes from its socket at a time. trio.fail_after is only
a hang guard."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio
import zmq
import zmq.auth

from bus import remote
from bus.batches import BATCH_EVENTS
from bus.connections import unread_bytes
from bus.remote_client import SHOWN_PER_CALL, RemoteStream
from bus.server import BusServer

from tests.bus_harness import until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def listening(tmp_path: Path, nursery: trio.Nursery) -> BusServer:
    server = BusServer(tmp_path / "run", {}, source="testd", events_listen=f"tcp://127.0.0.1:{free_port()}",
                       events_keys=tmp_path / "keys")
    server.publisher.replayer = lambda after: ([], server.last_seq("events"), 0)
    server.publisher.identity = {"id": "d1", "name": "host"}
    await nursery.start(server.serve)
    return server


@pytest.fixture
def stream(tmp_path: Path, listening: BusServer):
    public_file, secret_file = zmq.auth.create_certificates(tmp_path, "client")
    remote.add_key(tmp_path / "keys" / "allowed", "client", remote.load_key(public_file).decode())
    server_public, _ = remote.server_keys(tmp_path / "keys")
    context = zmq.Context()
    assert listening.events_endpoint is not None
    remote_stream = RemoteStream(context, listening.events_endpoint, server_key=server_public,
                                 public_key=remote.load_key(secret_file),
                                 secret_key=remote.load_key(secret_file, secret=True), prefixes=["bench."])
    yield remote_stream
    remote_stream.close()
    context.destroy(linger=0)


async def test_a_backlog_is_taken_a_bounded_batch_at_a_time_and_nothing_is_lost(
        listening: BusServer, stream: RemoteStream) -> None:
    def synced() -> bool:
        stream.on_monitor()
        assert stream.on_messages() == []
        return stream.synced

    await until(synced, "the remote subscriber's first replay")
    count = 20 * BATCH_EVENTS
    for i in range(count):
        listening.publish("bench.data", {"i": i}, channel="events")
    # Everything handed to libzmq and received by the subscriber's kernel (SIOCOUTQ 0):
    # the whole backlog is there for the first call to take.
    peers = listening.connections.peers["events"]
    await until(lambda: listening.stats.events_sent >= count and peers.live_fds()
                and all(unread_bytes(fd) == 0 for fd in peers.live_fds()), "the backlog sent")
    batches: list[list[int]] = []
    with trio.fail_after(30):
        while sum(map(len, batches)) < count:
            if stream.socket.poll(0):
                batches.append([envelope.data["i"] for envelope in stream.on_messages()])
            else:
                await trio.sleep(0.01)  # the subscriber's io thread still decrypting
    assert max(map(len, batches)) < SHOWN_PER_CALL + BATCH_EVENTS  # stops after the message that reaches it
    assert [i for batch in batches for i in batch] == list(range(count))
    assert stream.replays == 1  # no gap in seq
