"""The event socket (bus/publisher.py) over real ZeroMQ ipc sockets: seq, frames, the
zero-copy payload, load, subscribers that read nothing.

No root needed: the run dir is a fresh temporary directory. trio.fail_after is only a hang
guard, never an assertion about speed.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import zmq

from bus import codec
from bus import filters as bus_filters
from bus import publisher as bus_publisher
from bus.client import AsyncClient
from bus.errors import BusError
from bus.server import BusServer
from bus.trio_zmq import AsyncSocket

from tests.bus_harness import GUARD, Waits, start_server, until
from tests.bus_harness import client, handlers, log, run_dir, server, waits  # noqa: F401 - fixtures


async def test_seq_is_gap_free_per_channel(server: BusServer, client: AsyncClient) -> None:
    async with client.subscribe(["events.", "log."]) as events:
        expected = []
        for i in range(300):
            expected.append(server.publish("events.thing", {"i": i}, channel="events"))
            if i % 3 == 0:
                expected.append(server.publish("log.web.stdout", {"line": i}, channel="log.web"))
        with pytest.raises(BusError):  # cannot be encoded: no seq is used up
            server.publish("events.thing", {"bad": {1, 2}}, channel="events")
        expected.append(server.publish("events.thing", {"i": "last"}, channel="events"))
        received = []
        with trio.fail_after(GUARD):
            for _ in expected:
                received.append(await events.receive())
    assert received == expected
    for channel, prefix in (("events", "events."), ("log.web", "log.")):
        seqs = [envelope.seq for envelope in received if envelope.topic.startswith(prefix)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert server.last_seq(channel) == len(seqs)
        gaps = codec.GapDetector()
        for seq in seqs:
            gaps.feed(seq)
        assert gaps.missed == 0


@asynccontextmanager
async def raw_subscriber(client: AsyncClient, run_dir: Path, prefix: bytes, token: str):
    """A plain SUB socket on the events socket (not the client's), synced with bus.sync."""
    context = zmq.Context()
    raw = context.socket(zmq.SUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(f"ipc://{run_dir / 'events.sock'}")
    raw.setsockopt(zmq.SUBSCRIBE, prefix)
    raw.setsockopt(zmq.SUBSCRIBE, f"sync.{token}".encode())
    sub = AsyncSocket(raw)
    try:
        await client.request("bus.sync", {"token": token})
        yield sub
    finally:
        sub.close()
        context.term()


async def test_published_frames_are_the_topic_nul_and_exactly_codec_encode(server: BusServer, client: AsyncClient, run_dir: Path) -> None:
    async with raw_subscriber(client, run_dir, b"x.", "rawtoken") as sub:
        published = [
            server.publish("x.y", {"n": 1, "b": b"\x00bytes", "f": 1.5, "l": [None, True]}, channel="x"),
            server.publish("x.z", None, channel="x"),
        ]
        with trio.fail_after(GUARD):
            for envelope in published:
                assert await sub.recv() == [codec.event_frame(envelope.topic, codec.encode(envelope))]


async def test_a_payload_published_from_its_buffer_is_the_frame_codec_encode_makes(
    server: BusServer, client: AsyncClient, run_dir: Path
) -> None:
    """publish(payload=(buffer, start, end)): the frame is written around the payload in its
    own buffer (no copy of it), and is byte for byte what codec.encode makes of the event
    with data["data"] = those bytes; too little room or payload falls back to a copy."""
    room = bus_publisher.PAYLOAD_ROOM
    big = bytearray(room + 300_000)
    big[room:] = b"0123456789abcdef\n" * (300_000 // 17) + b"x" * (300_000 % 17)
    small = bytearray(room + 100)
    small[room:] = b"s" * 100
    cramped = bytearray(10 + 100_000)
    cramped[10:] = b"c" * 100_000
    async with raw_subscriber(client, run_dir, b"log.", "payloadtoken") as sub:
        published = []
        for buffer, start in ((big, room), (small, room), (cramped, 10)):
            published.append(server.publish("log.c.stdout", {"seq": 1, "ts": 2.5, "partial": False},
                                            channel="log.c.stdout", payload=(buffer, start, len(buffer))))
        assert isinstance(published[0].data["data"], memoryview)  # the buffer's own bytes
        assert published[0].data["data"].obj is big
        with trio.fail_after(GUARD):
            for envelope, buffer, start in zip(published, (big, small, cramped), (room, room, 10)):
                expected = codec.Envelope(topic=envelope.topic, seq=envelope.seq, source=envelope.source, ts=envelope.ts,
                                          data={"seq": 1, "ts": 2.5, "partial": False, "data": bytes(buffer[start:])})
                assert await sub.recv() == [codec.event_frame("log.c.stdout", codec.encode(expected))]
        with pytest.raises(ValueError):
            server.publish("log.c.stdout", {"data": b"x"}, channel="log.c.stdout", payload=(big, room, len(big)))


async def test_publisher_and_router_under_load_do_not_stall(
    server: BusServer, run_dir: Path, nursery: trio.Nursery
) -> None:
    """The edge-triggered ZMQ_FD case: the ROUTER's receiving task parks while request
    tasks send on the same socket, and the XPUB task is busy; a lost wake-up would hang a
    request or the subscriber, and the guard would fire."""
    events_total = 20_000
    async with AsyncClient(run_dir) as subscriber:
        async with subscriber.subscribe(["load."]) as events:

            async def publish() -> None:
                for i in range(events_total):
                    server.publish("load.event", {"i": i}, channel="load")
                    if i % 500 == 0:
                        await trio.lowlevel.checkpoint()

            async def requests(worker: int) -> None:
                async with AsyncClient(run_dir) as own:
                    for i in range(150):
                        assert (await own.request("echo", {"w": worker, "i": i}))["args"] == {"w": worker, "i": i}

            async def stream_requests() -> None:
                async with AsyncClient(run_dir) as own:
                    for _ in range(50):
                        assert await own.request("count", {"n": 20}) == {"count": 20}

            with trio.fail_after(GUARD * 2):
                async with trio.open_nursery() as load:
                    load.start_soon(publish)
                    for worker in range(4):
                        load.start_soon(requests, worker)
                    load.start_soon(stream_requests)
                    gaps = codec.GapDetector()
                    for _ in range(events_total):
                        gaps.feed((await events.receive()).seq)
    assert gaps.last == events_total and gaps.missed == 0


async def test_a_subscriber_that_reads_nothing_is_disconnected_and_a_reader_keeps_up(
    run_dir: Path, waits: Waits, nursery: trio.Nursery
) -> None:
    server = await start_server(nursery, run_dir, waits, subscriber_queue_bytes=1 << 20)
    context = zmq.Context()
    try:
        stuck = context.socket(zmq.SUB)
        stuck.setsockopt(zmq.LINGER, 0)
        stuck.setsockopt(zmq.RCVHWM, 1)
        stuck.setsockopt(zmq.RECONNECT_IVL, -1)
        stuck.setsockopt(zmq.SUBSCRIBE, b"")
        stuck.connect(f"ipc://{run_dir / 'events.sock'}")
        await until(lambda: server.stats.subscribers == 1, "the stuck subscriber connected")
        async with AsyncClient(run_dir) as client, client.subscribe(["big."]) as events:
            received = []

            async def read() -> None:
                while True:
                    envelope = await events.receive()
                    if envelope.topic == "big.end":
                        return
                    received.append(envelope.seq)

            with trio.fail_after(GUARD):
                async with trio.open_nursery() as readers:
                    readers.start_soon(read)
                    while server.stats.subscribers_cut_off == 0:
                        server.publish("big.thing", {"pad": bytes(64 << 10)}, channel="big")
                        await trio.sleep(0.001)  # let the reader and the events task run
                    server.publish("big.end", {}, channel="big")
        assert len(received) > 16 and received == list(range(1, len(received) + 1))  # nothing lost
        assert server.stats.subscribers_cut_off == 1  # the stuck one, not the reader
    finally:
        context.destroy(linger=0)


async def test_a_filtered_subscription_receives_only_what_passes(server: BusServer, client: AsyncClient) -> None:
    server.publisher.filter_channel = "events"
    dies = bus_filters.topic_of({"event": ["die"], "label": ["app=web"]})

    def lifecycle(action: str, app: str) -> dict:
        return {"type": "container", "action": action, "id": "c1", "attributes": {"name": "c", "app": app}}

    async with client.subscribe([dies]) as filtered, client.subscribe(["container."]) as everything:
        assert len(server.publisher.filters) == 1
        published = []
        for i in range(200):
            published.append(server.publish("container.c1.start", lifecycle("start", "web"), channel="events"))
            published.append(server.publish("container.c1.die", lifecycle("die", "web" if i % 2 else "db"), channel="events"))
        server.publish("log.c1.stdout", lifecycle("die", "web"), channel="log.c1.stdout")  # not the filtered channel
        wanted = [envelope for envelope in published if envelope.data["action"] == "die"
                  and envelope.data["attributes"]["app"] == "web"]
        with trio.fail_after(GUARD):
            received = [await filtered.receive() for _ in wanted]
            everything_received = [await everything.receive() for _ in published]
        assert received == wanted  # the same envelopes, events-channel seq and all
        assert everything_received == published  # the unfiltered subscriber is untouched
        assert filtered.filter_gaps.missed == 0
        # nothing else came: the next thing on the filtered subscription is a new match
        marker = server.publish("container.c1.die", lifecycle("die", "web"), channel="events")
        with trio.fail_after(GUARD):
            assert await filtered.receive() == marker
    # the last unsubscription (the socket's close) forgets it
    await until(lambda: len(server.publisher.filters) == 0, "the filter forgotten")


async def test_filters_or_values_of_a_key_and_all_keys_and_send_no_frame_for_what_none_passes(
        server: BusServer, client: AsyncClient) -> None:
    """Several filtered subscribers at once, on different keys (bus/filters.py's index), and
    no unfiltered one: each gets exactly what its filter passes, and an event no filter
    passes is not sent at all (no frame; counted as unsubscribed)."""
    server.publisher.filter_channel = "events"
    either = bus_filters.topic_of({"event": ["die", "oom"]})  # same key: OR
    both = bus_filters.topic_of({"event": ["die"], "label": ["app=web"]})  # different keys: AND
    labelled = bus_filters.topic_of({"label": ["app=web"]})  # no indexed key: asked for every event

    def lifecycle(action: str, app: str) -> dict:
        return {"type": "container", "action": action, "id": "c1", "attributes": {"name": "c", "app": app}}

    async with client.subscribe([either]) as got_either, client.subscribe([both]) as got_both, \
            client.subscribe([labelled]) as got_labelled:
        frames, unsubscribed = server.stats.event_frames, server.stats.events_unsubscribed
        published = [server.publish(f"container.c1.{action}", lifecycle(action, app), channel="events")
                     for action in ("start", "die", "oom", "kill") for app in ("web", "db") for _ in range(3)]
        expected = {
            "either": [e for e in published if e.data["action"] in ("die", "oom")],
            "both": [e for e in published if e.data["action"] == "die" and e.data["attributes"]["app"] == "web"],
            "labelled": [e for e in published if e.data["attributes"]["app"] == "web"],
        }
        received = {}
        with trio.fail_after(GUARD):
            for name, subscription in (("either", got_either), ("both", got_both), ("labelled", got_labelled)):
                received[name] = [await subscription.receive() for _ in expected[name]]
        assert received == expected
        # Nobody takes container.*: every event went out only as its filters' copies, one frame each.
        assert server.stats.events_unsubscribed - unsubscribed == len(published)
        assert server.stats.event_frames - frames == sum(map(len, expected.values()))
        passes_none = server.publish("container.c1.start", lifecycle("start", "db"), channel="events")
        marker = server.publish("container.c1.die", lifecycle("die", "web"), channel="events")
        with trio.fail_after(GUARD):
            for subscription in (got_either, got_both, got_labelled):
                assert await subscription.receive() == marker  # passes_none came to no one
        assert passes_none.seq == marker.seq - 1
        assert server.stats.event_frames - frames == sum(map(len, expected.values())) + 3
        for subscription in (got_either, got_both, got_labelled):
            assert subscription.filter_gaps.missed == 0


async def test_a_filter_that_does_not_decode_is_counted_not_served(server: BusServer, client: AsyncClient) -> None:
    server.publisher.filter_channel = "events"
    async with client.subscribe(["filter.this-is-no-filter."]):
        assert len(server.publisher.filters) == 0
        assert server.stats.filters_refused == 1


def test_filter_gaps_count_the_numbers_that_never_came() -> None:
    from bus.connect import FilterGaps

    gaps = FilterGaps()
    for number in (5, 6, 9, 10):  # joined at 5: not a gap; 7 and 8 lost
        gaps.seen(f"filter.abc.{number}".encode())
    gaps.seen(b"container.x.die")  # unfiltered topics are not its business
    gaps.seen(b"filter.other.1")
    assert gaps.missed == 2


def test_subscribers_read_both_wire_revisions() -> None:
    from bus.connect import event

    old = codec.Envelope(topic="container.c.die", seq=4, data={"exitCode": "0"}, v=1)
    new = codec.Envelope(topic="container.c.die", seq=5, data={"exitCode": "0"})
    assert event([b"container.c.die", codec.encode(old)]) == (b"container.c.die", old)  # an older daemon: 2 frames
    assert event([codec.event_frame(new.topic, codec.encode(new))]) == (b"container.c.die", new)
    filtered = b"filter.abc.3\x00" + codec.encode(new)
    assert event([filtered]) == (b"filter.abc.3", new)
    assert event([b"container.other.die\x00" + codec.encode(new)]) is None  # the topic lies
    assert event([b"no nul"]) is None and event([b"a", b"b", b"c"]) is None


async def test_a_subscriber_to_one_containers_log_topics_is_known_the_collectors_log_prefix_is_not(
        server: BusServer, client: AsyncClient) -> None:
    """Issue 26: the daemon holds a container's lines back for the short window only while
    someone reads them live; a bus subscriber to that container's ``log.<id>`` topics does
    (and its subscription calls on_log_subscription, which flushes what is held), the log
    collector's ``log.`` for every container does not. The last one leaving is seen too."""
    web, db = "a" * 64, "b" * 64
    came = []
    server.publisher.on_log_subscription = lambda: came.append(True)
    async with client.subscribe(["log.", "container."]):
        assert not server.publisher.watches_log(web) and came == []
        async with client.subscribe([f"log.{web}.stderr"]):
            assert server.publisher.watches_log(web) and not server.publisher.watches_log(db)
            assert came == [True]
            async with client.subscribe(["log.aaa"]):  # a prefix of its id
                assert server.publisher.watches_log(web)
        await until(lambda: not server.publisher.watches_log(web), "the unsubscriptions")
        assert not server.publisher.watches_log(db)


async def test_a_backlog_goes_out_in_batches_of_one_topic_split_across_frames(
        server: BusServer, client: AsyncClient, run_dir: Path) -> None:
    """Issue 22: what the publisher has queued goes out several envelopes to a frame (wire
    revision 3), a run of one topic per frame, at most BATCH_BYTES (a bigger backlog is
    split across frames); in order, nothing lost; an event published alone is alone."""
    from bus.batches import BATCH_BYTES, decode_events

    async with raw_subscriber(client, run_dir, b"x.", "batchtoken") as sub:
        published = [server.publish("x.y", {"i": i, "pad": "p" * 100}, channel="x") for i in range(2000)]
        published += [server.publish("x.z", {"i": i}, channel="x") for i in range(3)]
        published += [server.publish("x.y", {"i": i}, channel="x") for i in range(2)]
        frames = []
        received = []
        with trio.fail_after(GUARD):
            while len(received) < len(published):
                (frame,) = await sub.recv()
                topic, body = codec.split_event(frame)
                envelopes, bad = decode_events(body)
                assert bad == 0 and {e.topic.encode() for e in envelopes} == {topic}
                frames.append((topic, len(envelopes), len(frame)))
                received += envelopes
        assert received == published
        assert [e.seq for e in received] == list(range(1, 2006))
        assert len([f for f in frames if f[0] == b"x.y"]) >= 2000 * 100 // BATCH_BYTES + 1 + 1  # split
        assert all(size <= BATCH_BYTES + 64 for _, _, size in frames)
        assert frames[-2:] == [(b"x.z", 3, frames[-2][2]), (b"x.y", 2, frames[-1][2])]
        alone = server.publish("x.y", {"i": "alone"}, channel="x")
        with trio.fail_after(GUARD):
            assert await sub.recv() == [codec.event_frame("x.y", codec.encode(alone))]  # a map, not an array


async def test_a_topic_no_subscription_takes_is_not_sent_and_is_counted(
        server: BusServer, client: AsyncClient, run_dir: Path) -> None:
    """The publisher knows every prefix subscribed (XPUB passes each subscription, and the
    last unsubscription): it neither batches nor sends what nobody takes, and counts it."""
    async with raw_subscriber(client, run_dir, b"x.", "wanttoken") as sub:
        for i in range(50):
            server.publish("y.nobody", {"i": i}, channel="y")
        wanted = server.publish("x.someone", {}, channel="x")
        with trio.fail_after(GUARD):
            assert await sub.recv() == [codec.event_frame("x.someone", codec.encode(wanted))]
        assert server.stats.events_unsubscribed == 50
        async with raw_subscriber(client, run_dir, b"y.", "wanttoken2") as later:
            now = server.publish("y.nobody", {"i": "now"}, channel="y")
            with trio.fail_after(GUARD):
                assert await later.recv() == [codec.event_frame("y.nobody", codec.encode(now))]
        assert server.stats.events_unsubscribed == 50
    await until(lambda: not server.publisher._subscribed - {b""} - {p for p in server.publisher._subscribed
                                                                   if p.startswith(b"sync.")},
                "the subscriptions gone")
    server.publish("x.someone", {}, channel="x")
    await until(lambda: server.stats.events_unsubscribed == 51, "the event nobody takes counted")


async def test_the_sync_client_reads_a_batch_one_envelope_at_a_time(server: BusServer, run_dir: Path) -> None:
    from bus.client import Client
    from tests.bus_harness import in_thread

    ready = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def read(count: int) -> list[codec.Envelope]:
        with Client(run_dir) as sync_client, sync_client.subscribe(["x."], timeout=GUARD) as events:
            trio.from_thread.run_sync(ready.set, trio_token=token)
            return [next(events) for _ in range(count)]

    async with trio.open_nursery() as nursery:
        got: list[list[codec.Envelope]] = []

        async def run() -> None:
            got.append(await in_thread(read, 1500))

        nursery.start_soon(run)
        with trio.fail_after(GUARD):
            await ready.wait()
        published = [server.publish("x.y", {"i": i}, channel="x") for i in range(1500)]
    assert got == [published]
    assert server.stats.events_sent == 1500 and server.stats.event_frames < 1500  # it did come in batches
