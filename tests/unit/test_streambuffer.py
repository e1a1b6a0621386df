"""supervisor/streambuffer.py: one stream's unacknowledged records and the exact count of
what is lost, sans-IO."""

from __future__ import annotations

from logs.format import PARTIAL, STDOUT, Record
from supervisor.streambuffer import StreamBuffer


def record(seq: int, payload: bytes, flags: int = 0) -> Record:
    return Record(float(seq), STDOUT, seq, flags, payload)


def filled(*payloads: bytes) -> StreamBuffer:
    buffer = StreamBuffer()
    for payload in payloads:
        buffer.last += 1
        buffer.append(record(buffer.last, payload))
    return buffer


def test_an_ack_frees_what_was_stored_and_no_more():
    buffer = filled(b"a\n", b"bb\n", b"ccc\n")
    assert buffer.ack(2) == 5 and buffer.bytes == 4 and buffer.first_buffered() == 3
    assert buffer.ack(1) == 0  # an old ack changes nothing
    assert buffer.ack(99) == 4 and buffer.acked == 3  # never past what was given out


def test_a_replay_after_evictions_reports_the_exact_lost_range():
    buffer = filled(b"one\ntwo\n", b"three", b"four\n")
    buffer.records[1] = record(2, b"three", PARTIAL)  # a line's first piece: no line ends in it
    assert buffer.evict_oldest() == 8 and buffer.evict_oldest() == 5
    records, lost = buffer.replay(1)
    assert [r.seq for r in records] == [3]
    assert lost == (1, 2, 2, 13)  # seqs 1-2: two lines (the partial piece ends none), 13 bytes
    assert buffer.acked == 2 and not buffer.evicted  # settled: treated as acknowledged
