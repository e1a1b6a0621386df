"""The supervisor's log buffer, sans bus: numbering, acks, replay, blocking and non-blocking."""

from __future__ import annotations

import trio
import trio.testing

from logs.format import STDERR, STDOUT
from logs.options import LogOptions
from supervisor.logbuffer import ContainerLog


class Sink:
    def __init__(self):
        self.events, self.dropped = [], []

    def publish(self, topic, data, channel):
        assert topic == channel
        self.events.append((topic, data))

    def drop(self, container, stream, lines, size):
        self.dropped.append((stream, lines, size))


def make(mode: str = "blocking", size: str = "4k", last=None) -> tuple[ContainerLog, Sink]:
    sink = Sink()
    clock = iter(range(1, 10**6))
    log = ContainerLog("c" * 64, LogOptions.from_map({"mode": mode, "max-buffer-size": size}), last or {},
                       sink.publish, sink.drop, clock=lambda: float(next(clock)))
    return log, sink


async def test_records_are_whole_lines_numbered_per_stream():
    log, sink = make()
    await log.write("stdout", b"a\nb")
    await log.write("stderr", b"e\n")
    await log.write("stdout", b"c\n")
    log.end_stream("stdout")
    assert [(t.rsplit(".", 1)[1], d["seq"], d["data"]) for t, d in sink.events] == [
        ("stdout", 1, b"a\n"), ("stderr", 1, b"e\n"), ("stdout", 2, b"bc\n")]
    assert log.status()["stdout"] == {"last": 2, "acked": 0, "buffered": 5}
    log.ack(STDOUT, 2)
    log.ack(STDERR, 1)
    assert log.bytes == 0 and log.settled()


async def test_seqs_go_on_from_the_store():
    log, sink = make(last={STDOUT: 41, STDERR: 7})
    await log.write("stdout", b"x\n")
    assert sink.events[0][1]["seq"] == 42


async def test_blocking_mode_waits_for_an_ack_and_loses_nothing():
    log, sink = make(size="4k")
    line = b"y" * 1023 + b"\n"
    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def writer():
            for _ in range(8):
                await log.write("stdout", line)
            done.set()

        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert log.waiting and not done.is_set() and len(sink.events) == 4
        log.ack(STDOUT, 4)
        await trio.testing.wait_all_tasks_blocked()
        assert len(sink.events) == 8 and log.waiting
        log.finish()  # the container exited: never block again
        await done.wait()
    assert [d["seq"] for _, d in sink.events] == list(range(1, 9))
    replay = log.replay(STDOUT, 5)
    assert [r[0] for r in replay["records"]] == [5, 6, 7, 8] and replay["lost"] is None
    assert sink.dropped == []


async def test_non_blocking_mode_evicts_and_reports_only_what_was_asked_for_and_gone():
    log, sink = make(mode="non-blocking", size="4k")
    for index in range(10):
        await log.write("stdout", b"%d\n" % index * 512)  # 1 KiB, 512 lines per record
    assert not log.waiting and log.bytes <= 4096
    # A live collector stored records 1..3 although they were evicted: no loss for them.
    log.ack(STDOUT, 3)
    replay = log.replay(STDOUT, 4)
    assert replay["lost"] == [4, 6, 3 * 512, 3 * 1024]
    assert [r[0] for r in replay["records"]] == [7, 8, 9, 10]
    assert sink.dropped == [("stdout", 1536, 3072)]
    assert log.replay(STDOUT, 7)["lost"] is None  # reported once


async def test_a_long_line_is_cut_into_partial_records():
    log, sink = make(size="8m")
    await log.write("stdout", b"z" * (3 << 20) + b"\n")
    assert [(len(d["data"]), d["partial"]) for _, d in sink.events] == [(1 << 20, True)] * 3 + [(1, False)]


async def test_both_streams_blocked_at_once_are_both_released():
    """The stdout and stderr pumps can wait for room together: an ack, or the container's
    exit, must wake both (a lost wake-up left a pump blocked until the drain deadline and the
    rest of its pipe unread)."""
    log, sink = make(size="4k")
    line = b"z" * 4095 + b"\n"
    released = []

    async def pump(stream):
        await log.write(stream, line)
        released.append(stream)

    with trio.fail_after(5):  # a lost wake-up hangs here
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, "stdout")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(pump, "stderr")
            await trio.testing.wait_all_tasks_blocked()
            assert released == [] and log.waiting
            log.finish()
    assert sorted(released) == ["stderr", "stdout"]


async def test_unstored_counts_what_was_given_out_before_a_moment_and_not_stored():
    log, _ = make(size="64k")
    assert log.unstored() is None
    await log.write("stdout", b"one\n")  # ts 1
    await log.write("stderr", b"err\n")  # ts 2
    await log.write("stdout", b"three\n")  # ts 3
    through = {code: buffer.last for code, buffer in log.streams.items()}
    await log.write("stdout", b"later\n")  # given out after the moment: not counted
    assert log.unstored(through) == {"records": 3, "bytes": 14, "since": 1.0}
    assert log.unstored() == {"records": 4, "bytes": 20, "since": 1.0}
    log.ack(STDOUT, 1)
    assert log.unstored(through) == {"records": 2, "bytes": 10, "since": 2.0}
    log.ack(STDERR, 1)
    log.ack(STDOUT, 2)
    assert log.unstored(through) is None
    assert log.unstored() == {"records": 1, "bytes": 6, "since": 4.0}


def test_a_collector_counts_as_there_for_a_window_after_its_last_request():
    from supervisor.logbuffer import CollectorSightings

    now = [100.0]
    sightings = CollectorSightings(window=10.0, clock=lambda: now[0], wall=lambda: 1.7e9 + now[0])
    assert not sightings.recent() and sightings.last_seen is None
    sightings.seen()
    now[0] += 9.9
    assert sightings.recent() and sightings.last_seen == 1.7e9 + 100.0
    now[0] += 0.1
    assert not sightings.recent()
