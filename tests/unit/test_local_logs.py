"""An embedded Supervisor's side of the logs, without a kernel: output stored in its own
process (log_store="local") or let go ("none"), so a container never waits for a collector
that is not there; and the event callback's one shape, whose exceptions never escape."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from logs.format import MAX_RECORD, STDOUT, Record, dropped_marker
from logs.options import LogOptions
from logs.store import LogReader, LogWriter, container_directory
from supervisor import Config, Supervisor
from supervisor.locallogs import LocalLogStore, read_records
from supervisor.logbuffer import ContainerLog
from supervisor.logpump import OWN_MIN, pump

CID = "c" * 64


class Sink:
    def __init__(self):
        self.events, self.dropped = [], []

    def publish(self, topic, data, channel, payload=None):
        self.events.append((topic, data, payload))

    def drop(self, container, stream, lines, size):
        self.dropped.append((container, stream, lines, size))


class Log:
    """A structlog-shaped logger that keeps what it was told (a fake, not a mock)."""

    def __init__(self):
        self.lines = []

    def error(self, event, **fields):
        self.lines.append(("error", event, fields))

    warning = info = error


def output(lines: int) -> bytes:
    return b"".join(b"line %08d of the output\n" % number for number in range(lines))


async def pump_through(log: ContainerLog, written: bytes) -> None:
    """Write ``written`` into a pipe and pump it into ``log`` to its end (10 s at most)."""
    read_end, write_end = os.pipe()
    source = trio.lowlevel.FdStream(read_end)

    async def writer():
        stream = trio.lowlevel.FdStream(write_end)
        try:
            await stream.send_all(written)
        finally:
            await stream.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await pump(log, "stdout", source, [])
    await source.aclose()


def stored(root) -> bytes:
    reader = LogReader(container_directory(root, CID))
    return b"".join(bytes(record.payload) for record in reader.read(reader.start(), 1 << 30).records)


async def test_a_locally_stored_log_never_waits_for_a_collector(tmp_path):
    """12 MiB through a 4 KiB blocking buffer: each record is stored and freed as it is cut
    (the big ones from the buffer they were read into), so the pump never waits."""
    sink, log_out = Sink(), Log()
    store = LocalLogStore(tmp_path, sink.drop, log_out)
    log = ContainerLog(CID, LogOptions.from_map({"max-buffer-size": "4k", "max-size": "4m"}), {}, sink.publish,
                       sink.drop, keep=store.keep)
    written = output((12 << 20) // 25) + b"L" * (OWN_MIN + 10) + b"\n" + b"the last line, without a newline"
    await pump_through(log, written)
    store.close()
    assert stored(tmp_path) == written
    assert log.settled() and log.bytes == 0 and not log.waiting
    assert any(payload is not None for _, _, payload in sink.events)  # big records kept their buffer
    assert sink.dropped == [] and log_out.lines == [] and store.failures == 0
    assert LogReader(container_directory(tmp_path, CID)).segments() == [1, 2, 3, 4]  # rotated at max-size


async def test_log_store_none_lets_records_go_unstored(tmp_path):
    seen = []
    sup = Supervisor(Config(root=tmp_path / "root", run_dir=tmp_path / "run"), log_store="none",
                     publish=lambda topic, data, channel: seen.append(len(data["data"])))
    assert sup.local_logs is None
    log = sup.logs.open(CID, LogOptions.from_map({"max-buffer-size": "4k"}))
    written = output(100_000)
    await pump_through(log, written)
    assert log.settled() and log.bytes == 0 and sum(seen) == len(written)
    assert not sup.logs.directory(CID).exists()


async def test_output_that_cannot_be_stored_is_counted_as_dropped_and_logged_and_the_container_goes_on(tmp_path):
    root = tmp_path / "root"
    root.write_text("a file where the store's directory should be")
    sink, log_out = Sink(), Log()
    store = LocalLogStore(root, sink.drop, log_out)
    log = ContainerLog(CID, LogOptions.from_map({"max-buffer-size": "4k"}), {}, sink.publish, sink.drop,
                       keep=store.keep)
    await pump_through(log, b"one\ntwo\n")
    assert log.settled() and store.failures == 1
    assert sink.dropped == [(CID, "stdout", 2, 8)]
    [(level, event, fields)] = log_out.lines
    assert level == "error" and "cannot store" in event and fields["container"] == CID and fields["error"]


async def test_read_records_gives_every_stored_record_and_says_what_was_lost(tmp_path):
    directory = container_directory(tmp_path, CID)
    writer = LogWriter(directory, 64 << 10, 100)
    records = [Record(float(seq), STDOUT, seq, 0, b"%d\n" % seq * 1000) for seq in range(1, 200)]
    writer.append(records)
    writer.append([dropped_marker(300.0, STDOUT, 200, 209, 10, 40)])
    writer.close()
    read = [item async for item in read_records(directory, lambda stream, lost: f"{stream} lost {lost}".encode(),
                                                 max_bytes=10_000)]
    assert [data for _, _, data in read[:-1]] == [record.payload for record in records]
    assert read[-1] == ("stdout", 300.0, b"stdout lost (200, 209, 10, 40)")


# --- the event callback: one shape, whatever the record's size ------------------------------


def supervisor(tmp_path, publish, log=None) -> Supervisor:
    return Supervisor(Config(root=tmp_path / "root", run_dir=tmp_path / "run"), publish=publish, log=log or Log())


async def test_the_event_callback_gets_a_big_records_bytes_in_data_like_a_small_ones(tmp_path):
    """docs/operations.md: publish(topic, data, channel), the output in data["data"] (bytes).
    A record of OWN_MIN or more is published from its read buffer: the callback still gets
    three arguments and the bytes."""
    events = []

    def on_event(topic, data, channel):  # exactly the documented signature
        events.append((topic, channel, data))

    sup = supervisor(tmp_path, on_event)
    log = sup.logs.open(CID, LogOptions())
    big = b"B" * (MAX_RECORD - 1) + b"\n"
    await pump_through(log, b"small\n" + big)
    assert [(topic, channel) for topic, channel, _ in events] == [(f"log.{CID}.stdout", f"log.{CID}.stdout")] * 2
    assert [data["data"] for _, _, data in events] == [b"small\n", big]
    assert all(type(data["data"]) is bytes and set(data) == {"seq", "ts", "data", "partial"} for _, _, data in events)
    assert sup.callback_errors == 0
    sup.local_logs.close()
    assert stored(tmp_path / "root") == b"small\n" + big


async def test_an_exception_in_the_event_callback_is_logged_and_counted_never_raised(tmp_path):
    calls = []

    def on_event(topic, data, channel):
        calls.append(len(data["data"]))
        raise KeyError("line")

    log_out = Log()
    sup = supervisor(tmp_path, on_event, log_out)
    log = sup.logs.open(CID, LogOptions())
    await pump_through(log, b"one\n" + b"B" * OWN_MIN + b"\n")  # big records: from their read buffer
    await pump_through(log, b"two\n")  # a small one
    assert sum(calls) == 4 + OWN_MIN + 1 + 4 and sup.callback_errors == len(calls) >= 2
    assert log.settled()  # the output went on to the store
    first = log_out.lines[0]
    assert first[0] == "error" and "event callback" in first[1]
    assert first[2]["topic"] == f"log.{CID}.stdout" and first[2]["error"] == "KeyError: 'line'"
    assert isinstance(first[2]["exc_info"], KeyError)
    assert len(log_out.lines) == 1  # at most one a second
    sup.local_logs.close()


def test_a_callback_that_cannot_be_called_as_documented_is_refused_at_once(tmp_path):
    async def on_event(topic, data, channel):
        pass

    with pytest.raises(TypeError, match="publish must be a plain function"):
        supervisor(tmp_path, on_event)
    with pytest.raises(ValueError, match="log_store must be one of local, collector, none"):
        Supervisor(Config(root=tmp_path / "root", run_dir=tmp_path / "run"), log_store="disk")
