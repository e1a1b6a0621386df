"""bus/remote.py's keys and endpoints, and the publisher's subscription-only replay
(``replay.<token>.<seq>.``) over real ZeroMQ ipc sockets."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import zmq

from bus import codec, remote
from bus.batches import decode_events
from bus.client import AsyncClient
from bus.remote import AllowedKeys, RemoteError
from bus.server import BusServer
from bus.stats import BusStats

from tests.bus_harness import GUARD, until
from tests.bus_harness import client, handlers, log, run_dir, server, waits  # noqa: F401 - fixtures
from tests.unit.test_bus_publisher import raw_subscriber


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1", "ipc:///x", "tcp://:80", "tcp://h:99999", "tcp://h:1/p", "h:1"])
def test_an_endpoint_must_be_tcp_host_port(endpoint: str) -> None:
    with pytest.raises(RemoteError, match="tcp://HOST:PORT"):
        remote.check_endpoint(endpoint)


def test_check_endpoint_gives_host_and_port() -> None:
    assert remote.check_endpoint("tcp://127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert remote.check_endpoint("tcp://[::1]:7000") == ("::1", 7000)


def test_allowed_keys_follow_the_directory_and_count_refusals(tmp_path: Path) -> None:
    stats = BusStats()
    allowed = AllowedKeys(tmp_path / "allowed", stats)
    public, _ = zmq.curve_keypair()
    assert not allowed.callback(remote.ZAP_DOMAIN, public)
    remote.add_key(tmp_path / "allowed", "laptop", public.decode())
    assert allowed.callback(remote.ZAP_DOMAIN, public)
    assert not allowed.callback("another-domain", public)
    assert remote.list_keys(tmp_path / "allowed") == [("laptop", public)]
    assert remote.remove_key(tmp_path / "allowed", "laptop") and not remote.remove_key(tmp_path / "allowed", "laptop")
    assert not allowed.callback(remote.ZAP_DOMAIN, public)
    assert stats.remote_refused == 3 and allowed.accepted == 1


@pytest.mark.parametrize("name, key, message", [
    ("../escape", "x" * 40, "invalid key name"),
    (".hidden", "x" * 40, "invalid key name"),
    ("ok", "short", "not a CURVE public key"),
    ("ok", "é" * 40, "not a CURVE key"),
])
def test_add_key_refuses_bad_names_and_keys_and_writes_nothing(tmp_path: Path, name: str, key: str, message: str) -> None:
    with pytest.raises(RemoteError, match=message):
        remote.add_key(tmp_path / "allowed", name, key)
    assert not list((tmp_path / "allowed").glob("*")) if (tmp_path / "allowed").exists() else True


def test_server_keys_are_made_once_with_a_private_secret(tmp_path: Path) -> None:
    public, secret = remote.server_keys(tmp_path / "keys")
    assert (tmp_path / "keys" / "server.key_secret").stat().st_mode & 0o777 == 0o600
    assert remote.server_keys(tmp_path / "keys") == (public, secret)
    assert remote.load_key(tmp_path / "keys" / "server.key") == public
    with pytest.raises(RemoteError, match="cannot read"):
        remote.load_key(tmp_path / "nothing.key")


async def test_a_replay_subscription_gets_the_journal_then_its_end(server: BusServer, client: AsyncClient,
                                                                   run_dir: Path) -> None:
    journal = [server.publish("container.c.start", {"n": i}, channel="events").as_map() for i in range(5)]
    asked = []

    def replayer(after: int):
        asked.append(after)
        return [event for event in journal if event["seq"] > after], server.last_seq("events"), 0

    server.publisher.replayer = replayer
    server.publisher.identity = {"id": "d1", "name": "host"}
    async with raw_subscriber(client, run_dir, b"replay.tok.2.", "replaysync") as sub:
        topics, envelopes = [], []
        with trio.fail_after(GUARD):
            while not envelopes or envelopes[-1].topic != "replay.end":
                topic, body = codec.split_event((await sub.recv())[0])
                batch, bad = decode_events(body)  # queued together: one frame (bus/batches.py)
                topics.append(topic)
                envelopes.extend(batch)
                assert bad == 0
    assert asked == [2]
    assert set(topics) == {b"replay.tok.2."} and len(envelopes) == 4
    assert [e.seq for e in envelopes[:3]] == [3, 4, 5]
    assert envelopes[3].topic == "replay.end"
    assert envelopes[3].data == {"last_seq": 5, "lost": 0, "daemon": {"id": "d1", "name": "host"}}


async def test_malformed_replay_subscriptions_are_counted(server: BusServer, client: AsyncClient) -> None:
    server.publisher.replayer = lambda after: ([], 0, 0)
    async with client.subscribe(["replay.x.", "replay.tok.notanumber.", "replay..3."]):
        await until(lambda: server.stats.replays_refused == 3, "three refused replays")
    assert server.stats.replays == 0
