"""The log store on a real filesystem (tmp_path): records, rotation, the index, recovery from
a crash, and corrupt or hostile files. No root needed."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logs.errors import CorruptLog
from logs.format import (
    DROPPED,
    INDEX_ENTRY,
    MAX_RECORD,
    PARTIAL,
    RECORD_HEADER,
    SEGMENT_HEADER,
    STDERR,
    STDOUT,
    VERSION,
    Record,
    RecordCutter,
    SegmentHeader,
    dropped_marker,
    parse_record,
    record_header,
)
from logs.store import END, MORE, UNTIL, LogReader, LogWriter, count_lines, index_path, list_segments, segment_path


def lines_of(n: int, start: int = 0) -> bytes:
    return b"".join(b"line %d\n" % i for i in range(start, start + n))


def write_lines(writer: LogWriter, count: int, per_record: int = 10, t0: float = 1000.0, stream: int = STDOUT):
    seq = writer.last[stream]
    records = []
    for first in range(0, count, per_record):
        seq += 1
        records.append(Record(t0 + first, stream, seq, 0, lines_of(min(per_record, count - first), first)))
    writer.append(records)
    return records


def read_all(reader: LogReader, **kwargs) -> list[Record]:
    records, position = [], kwargs.pop("position", None) or reader.start()
    while True:
        page = reader.read(position, **kwargs)
        records += page.records
        position = page.position
        if page.status != MORE:
            return records


def payload(records: list[Record]) -> bytes:
    return b"".join(r.payload for r in records)


def test_records_come_back_in_order_with_their_fields(tmp_path):
    writer = LogWriter(tmp_path, max_size=1 << 20, max_file=3)
    writer.append([Record(1.5, STDOUT, 1, 0, b"out\n"), Record(2.5, STDERR, 1, 0, b"err\n"),
                   Record(3.5, STDOUT, 2, PARTIAL, b"long"), Record(3.6, STDOUT, 3, 0, b" line\n")])
    records = read_all(LogReader(tmp_path))
    assert [(r.ts, r.stream, r.seq, r.flags, r.payload) for r in records] == [
        (1.5, STDOUT, 1, 0, b"out\n"), (2.5, STDERR, 1, 0, b"err\n"),
        (3.5, STDOUT, 2, PARTIAL, b"long"), (3.6, STDOUT, 3, 0, b" line\n")]


def test_rotation_keeps_max_file_segments_and_readers_follow_it(tmp_path):
    writer = LogWriter(tmp_path, max_size=8192, max_file=3)
    reader = LogReader(tmp_path)
    first_page = reader.read(reader.start())
    assert first_page.records == [] and first_page.status == END
    write_lines(writer, 200)  # ~1.8 KB
    page = reader.read(first_page.position)
    assert payload(page.records) == lines_of(200)
    write_lines(writer, 2000, t0=5000)  # several rotations
    assert len(list_segments(tmp_path)) == 3 and list_segments(tmp_path)[-1] > 3
    assert all(os.path.getsize(segment_path(tmp_path, n)) <= 8192 for n in list_segments(tmp_path))
    # A reader that was in segment 1 (deleted now) carries on at the oldest segment kept.
    rest = read_all(reader, position=page.position)
    assert rest[0].ts > page.records[-1].ts
    assert payload(rest).endswith(lines_of(2000)[-1000:])


def segment_records(path) -> list[Record]:
    """Every record of one segment file, parsed and checked."""
    data = path.read_bytes()
    header = SegmentHeader.parse(data[:SEGMENT_HEADER.size], str(path))
    records, position = [], SEGMENT_HEADER.size
    while position < len(data):
        record = parse_record(data, position, str(path), 0, header.version)
        records.append(record)
        position += record.size
    return records


def assert_max_size_kept(directory, max_size: int) -> list[Record]:
    """What max-size promises: a segment is at most max_size, or holds one record that is
    bigger than the whole limit. Returns the records of the segments kept, oldest first."""
    kept = []
    for number in list_segments(directory):
        path = segment_path(directory, number)
        records = segment_records(path)
        size = os.path.getsize(path)
        assert size == SEGMENT_HEADER.size + sum(r.size for r in records)
        assert size <= max_size or (len(records) == 1 and SEGMENT_HEADER.size + records[0].size > max_size), \
            (number, size, [r.size for r in records])
        kept += records
    return kept


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.integers(0, 3 * 4096), min_size=1, max_size=8), min_size=1, max_size=8),
       reopen=st.lists(st.booleans(), min_size=8, max_size=8))
def test_a_segment_outgrows_max_size_only_with_a_single_record_and_none_is_split(tmp_path_factory, batches, reopen):
    directory = tmp_path_factory.mktemp("log")
    max_size = 4096
    writer = LogWriter(directory, max_size=max_size, max_file=1000)
    written, seq = [], 0
    for batch, again in zip(batches, reopen):
        records = []
        for length in batch:
            seq += 1
            records.append(Record(float(seq), STDOUT, seq, 0, bytes([seq % 251]) * length))
        writer.append(records)
        written += records
        if again:  # a restarted collector goes on in the last segment
            writer.close()
            writer = LogWriter(directory, max_size=max_size, max_file=1000)
    writer.close()
    stored = assert_max_size_kept(directory, max_size)
    assert [(r.seq, r.payload) for r in stored] == [(r.seq, r.payload) for r in written]


def test_a_record_of_the_largest_size_gets_a_segment_of_its_own(tmp_path):
    writer = LogWriter(tmp_path, max_size=4096, max_file=10)
    big = Record(2.0, STDOUT, 2, 0, b"y" * MAX_RECORD)
    writer.append([Record(1.0, STDOUT, 1, 0, b"before\n"), big, Record(3.0, STDOUT, 3, 0, b"after\n")])
    writer.close()
    stored = assert_max_size_kept(tmp_path, 4096)
    assert [r.seq for r in stored] == [1, 2, 3] and stored[1].payload == big.payload
    assert [len(segment_records(segment_path(tmp_path, n))) for n in list_segments(tmp_path)] == [1, 1, 1]


def test_a_reader_at_the_end_of_a_segment_moves_to_the_next_one_without_losing_records(tmp_path):
    writer = LogWriter(tmp_path, max_size=4096, max_file=100)
    reader = LogReader(tmp_path)
    position = reader.start()
    got = []
    for batch in range(30):
        write_lines(writer, 200, t0=batch * 1000)
        page = reader.read(position, max_bytes=300)
        got += page.records
        position = page.position
    got += read_all(reader, position=position)
    assert len(list_segments(tmp_path)) > 3
    assert [r.seq for r in got] == list(range(1, 601))


def test_since_until_and_tail_return_exactly_the_right_records(tmp_path):
    writer = LogWriter(tmp_path, max_size=64 << 10, max_file=100)
    records = [Record(1000.0 + i, STDOUT if i % 3 else STDERR, i + 1, 0, b"record %d\nsecond %d\n" % (i, i))
               for i in range(20_000)]
    writer.append(records)
    reader = LogReader(tmp_path)
    assert len(list_segments(tmp_path)) > 5
    position = reader.seek_time(1000.0 + 15_000)
    assert position > reader.start()  # the index let it skip ahead
    since = read_all(reader, position=position, since=1000.0 + 15_000)
    assert [r.seq for r in since] == list(range(15_001, 20_001))
    window = read_all(reader, position=reader.seek_time(1000.0 + 7_777), since=1000.0 + 7_777, until=1000.0 + 7_800)
    assert [r.seq for r in window] == list(range(7_778, 7_802))
    position, skip = reader.tail_position(3)
    tail = read_all(reader, position=position, skip_lines=skip)
    assert payload(tail) == b"second 19998\nrecord 19999\nsecond 19999\n"
    position, skip = reader.tail_position(4, until=1000.0 + 100)
    tail = read_all(reader, position=position, skip_lines=skip, until=1000.0 + 100)
    assert payload(tail) == b"record 99\nsecond 99\nrecord 100\nsecond 100\n"
    position, skip = reader.tail_position(10**9)
    assert len(read_all(reader, position=position, skip_lines=skip)) == 20_000


def test_a_line_longer_than_a_record_comes_back_whole(tmp_path):
    cutter = RecordCutter(max_record=1000)
    line = bytes(range(256)).replace(b"\n", b"x") * 20 + b"\n"
    pieces = []
    for offset in range(0, len(line), 333):
        pieces += cutter.feed(line[offset:offset + 333])
    pieces += cutter.flush()
    assert [len(p) for p, _ in pieces] == [1000] * 5 + [121]
    assert [partial for _, partial in pieces] == [True] * 5 + [False]
    writer = LogWriter(tmp_path, max_size=1 << 20, max_file=2)
    writer.append(Record(1.0, STDOUT, i + 1, PARTIAL if partial else 0, p) for i, (p, partial) in enumerate(pieces))
    reader = LogReader(tmp_path)
    assert payload(read_all(reader)) == line
    position, skip = reader.tail_position(1)
    assert payload(read_all(reader, position=position, skip_lines=skip)) == line


def test_the_cutter_cuts_at_newlines_only():
    cutter = RecordCutter()
    assert cutter.feed(b"a\nb") == [(b"a\n", False)]
    assert cutter.feed(b"c\nd\n") == [(b"bc\nd\n", False)]
    assert cutter.feed(b"tail") == []
    assert cutter.flush() == [(b"tail", False)] and cutter.flush() == []


def test_a_killed_writer_recovers_its_seqs_and_cuts_a_torn_record(tmp_path):
    writer = LogWriter(tmp_path, max_size=1 << 20, max_file=2)
    write_lines(writer, 50_000, per_record=50)  # 1000 records, several index entries
    write_lines(writer, 10, stream=STDERR)
    os.close(writer._fd)  # "killed": nothing flushed or closed properly
    path = segment_path(tmp_path, 1)
    size = os.path.getsize(path)
    with open(path, "ab") as torn:
        torn.write(struct.pack("<II", 100, 0) + b"half a header")
    again = LogWriter(tmp_path, max_size=1 << 20, max_file=2)
    assert again.last == {STDOUT: 1000, STDERR: 1} and again.truncated == 21
    assert os.path.getsize(path) == size
    again.append([Record(9e9, STDOUT, 1001, 0, b"after\n")])
    assert read_all(LogReader(tmp_path))[-1].payload == b"after\n"


def test_a_lost_index_is_rebuilt_and_queries_still_work(tmp_path):
    writer = LogWriter(tmp_path, max_size=1 << 20, max_file=2)
    write_lines(writer, 1000, per_record=1)
    writer.close()
    index_path(tmp_path, 1).write_bytes(b"\xff" * (INDEX_ENTRY.size * 2 + 5))  # garbage
    reader = LogReader(tmp_path)
    assert [r.seq for r in read_all(reader, position=reader.seek_time(1500), since=1500)] == list(range(501, 1001))
    again = LogWriter(tmp_path, max_size=1 << 20, max_file=2)
    assert again.last[STDOUT] == 1000


def test_corrupt_and_hostile_segments_give_a_clear_error(tmp_path):
    writer = LogWriter(tmp_path, max_size=1 << 20, max_file=2)
    write_lines(writer, 100)
    writer.close()
    path = segment_path(tmp_path, 1)
    data = bytearray(path.read_bytes())
    data[SEGMENT_HEADER.size + RECORD_HEADER.size + 2] ^= 0xFF  # a payload byte
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLog, match="corrupt at byte 40: bad checksum"):
        read_all(LogReader(tmp_path))
    data[SEGMENT_HEADER.size:SEGMENT_HEADER.size + 4] = struct.pack("<I", 0xFFFFFFF0)  # a huge length
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLog, match="not a record header"):
        read_all(LogReader(tmp_path))
    path.write_bytes(b"not a log at all" * 10)
    with pytest.raises(CorruptLog, match="bad magic"):
        read_all(LogReader(tmp_path))
    path.unlink()
    path.symlink_to("/etc/passwd")
    with pytest.raises(CorruptLog, match="symbolic link"):
        read_all(LogReader(tmp_path))
    # The writer does not crash on it either: it carries on in a new segment.
    path.unlink()
    path.write_bytes(b"garbage")
    writer = LogWriter(tmp_path, max_size=1 << 20, max_file=2)
    assert writer.number == 2 and writer.last == {STDOUT: 0, STDERR: 0}


def test_a_version_1_segment_is_read_and_its_writer_goes_on_in_a_new_version_2_segment(tmp_path):
    """Segments written before CRC-32C (version 1, zlib's CRC-32) stay readable."""
    import zlib

    assert VERSION == 2
    old = [Record(10.0 + i, STDOUT, i + 1, 0, b"old line %d\n" % i) for i in range(3)]
    body = b"".join(record_header(r.ts, r.stream, r.seq, r.flags, r.payload, version=1) + r.payload for r in old)
    segment_path(tmp_path, 1).write_bytes(SegmentHeader(version=1).pack() + body)
    # The crc really is zlib's: a version 2 reading of these bytes would fail.
    first = old[0]
    header = record_header(first.ts, first.stream, first.seq, first.flags, first.payload, version=1)
    assert struct.unpack_from("<I", header, 4)[0] == zlib.crc32(first.payload, zlib.crc32(header[8:]))
    assert payload(read_all(LogReader(tmp_path))) == b"old line 0\nold line 1\nold line 2\n"
    assert LogReader(tmp_path).last_seqs() == {STDOUT: 3, STDERR: 0}

    writer = LogWriter(tmp_path, max_size=1 << 20, max_file=3)
    assert writer.number == 2 and writer.last == {STDOUT: 3, STDERR: 0}
    writer.append([Record(20.0, STDOUT, 4, 0, b"new line\n")])
    writer.close()
    assert LogReader(tmp_path).header(2).version == 2
    assert payload(read_all(LogReader(tmp_path))) == b"old line 0\nold line 1\nold line 2\nnew line\n"
    assert payload(read_all(LogReader(tmp_path), position=LogReader(tmp_path).tail_position(2)[0])) == (
        b"old line 2\nnew line\n")


def test_markers_and_line_counts():
    marker = dropped_marker(5.0, STDOUT, 10, 19, 1234, 56789)
    assert marker.flags == DROPPED and marker.seq == 19 and marker.dropped == (10, 19, 1234, 56789)
    assert count_lines(marker) == 0
    assert count_lines(Record(0, STDOUT, 1, 0, b"a\nb\n")) == 2
    assert count_lines(Record(0, STDOUT, 1, 0, b"a\nb")) == 2
    assert count_lines(Record(0, STDOUT, 1, PARTIAL, b"ab")) == 0
