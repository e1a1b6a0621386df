"""The on-disk format of the log store, sans-IO: segment headers, records, index entries,
and the cutter that turns a stream's chunks into records.

A container's log is a directory of *segments* ``00000001.log``, ``00000002.log``, ... (the
number only grows) and beside each a sparse *index* ``00000001.idx``::

    segment  = header record*
    header   = "DYLOGSEG" u16 version u16 header_size u64 last_stdout u64 last_stderr f64 max_ts u32 0
    record   = u32 length u32 crc f64 ts u64 seq u8 stream u8 flags u16 0 payload[length]
    index    = entry*
    entry    = u64 offset f64 max_ts_before u64 last_stdout_before u64 last_stderr_before

All little-endian. ``crc`` covers the record's fields after it and its payload: CRC-32C
(Castagnoli, computed by the CPU's crc32 instruction where there is one: ~18 GB/s here against
~2 GB/s for zlib's CRC-32) in version 2 segments, zlib's CRC-32 in version 1 segments, which
are still read (a writer that finds one goes on in a new version 2 segment). A record's
payload is one or more whole lines of one stream (the last one may lack its newline at the end
of a stream), or, with ``PARTIAL``, the first piece of a line that goes on in the stream's next
record. A ``DROPPED`` record is a marker: its payload is four u64 (first seq, last seq, lines,
bytes) of records that were lost, and its seq is the last lost one, so each stream's seqs stay
gap-free on disk.

The segment header carries the state before its first record (each stream's last seq, the
greatest ts so far), so a writer recovering from a crash needs only the last segment. An index
entry is written before the first record of a segment and then before any record that starts
``INDEX_INTERVAL`` bytes or more after the previous entry; ``max_ts_before`` is the greatest ts of
every record before that offset, in this segment and the ones before, so it never decreases and
a binary search for "the last entry whose max_ts_before < T" finds where records at or after
T may start, even if a few records were stored out of time order.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from crc32c import crc32c

from logs.errors import CorruptLog

MAGIC = b"DYLOGSEG"
#: The version new segments get.
VERSION = 2
#: Each readable version's record checksum: checksum(data, running value).
CHECKSUMS: dict[int, Callable[..., int]] = {1: zlib.crc32, 2: crc32c}
SEGMENT_HEADER = struct.Struct("<8sHHQQdI")
RECORD_HEADER = struct.Struct("<IIdQBBH")
RECORD_META = struct.Struct("<dQBBH")  # the part of RECORD_HEADER the crc covers
INDEX_ENTRY = struct.Struct("<QdQQ")
INDEX_INTERVAL = 128 * 1024
#: The largest payload a record may have; a longer line is cut into PARTIAL pieces.
MAX_RECORD = 1 << 20
DROPPED_PAYLOAD = struct.Struct("<QQQQ")

STDOUT, STDERR = 1, 2
STREAMS = {"stdout": STDOUT, "stderr": STDERR}
STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr"}

PARTIAL = 1
DROPPED = 2
KNOWN_FLAGS = PARTIAL | DROPPED


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    last_stdout: int = 0
    last_stderr: int = 0
    max_ts: float = 0.0
    version: int = VERSION

    def pack(self) -> bytes:
        return SEGMENT_HEADER.pack(MAGIC, self.version, SEGMENT_HEADER.size, self.last_stdout, self.last_stderr,
                                   self.max_ts, 0)

    @classmethod
    def parse(cls, data: bytes, where: str) -> SegmentHeader:
        if len(data) < SEGMENT_HEADER.size:
            raise CorruptLog(where, 0, f"the header is cut short ({len(data)} of {SEGMENT_HEADER.size} bytes)")
        magic, version, size, last_stdout, last_stderr, max_ts, _ = SEGMENT_HEADER.unpack_from(data)
        if magic != MAGIC:
            raise CorruptLog(where, 0, "not a dockyard log segment (bad magic)")
        if version not in CHECKSUMS or size != SEGMENT_HEADER.size:
            raise CorruptLog(where, 0, f"unsupported segment version {version} (header size {size})")
        if max_ts != max_ts:
            raise CorruptLog(where, 0, "the header's time is not a number")
        return cls(last_stdout, last_stderr, max_ts, version)


@dataclass(frozen=True, slots=True)
class Record:
    ts: float
    stream: int  # STDOUT or STDERR
    seq: int
    flags: int
    payload: bytes

    @property
    def size(self) -> int:
        """Bytes on disk."""
        return RECORD_HEADER.size + len(self.payload)

    @property
    def dropped(self) -> tuple[int, int, int, int]:
        """(first seq, last seq, lines, bytes) of a DROPPED marker."""
        return DROPPED_PAYLOAD.unpack(self.payload)


def dropped_message(stream: str, first: int, last: int, lines: int, size: int) -> bytes:
    """What a reader shows in place of a ``DROPPED`` marker of ``stream``, for people."""
    return (f"dockyard: {lines} lines ({size} bytes) of {stream} were dropped here: the log buffer was full "
            f"(--log-opt mode=non-blocking; records {first}-{last})\n").encode()


def record_header(ts: float, stream: int, seq: int, flags: int, payload: bytes, version: int = VERSION) -> bytes:
    meta = RECORD_META.pack(ts, seq, stream, flags, 0)
    checksum = CHECKSUMS[version]
    crc = checksum(payload, checksum(meta))
    return struct.pack("<II", len(payload), crc) + meta


def dropped_marker(ts: float, stream: int, first: int, last: int, lines: int, size: int) -> Record:
    return Record(ts, stream, last, DROPPED, DROPPED_PAYLOAD.pack(first, last, lines, size))


class Incomplete(Exception):
    """The buffer ends inside a record: read more (or, at the end of a segment that is still
    being written, the record is not there yet)."""


def parse_record(buffer: bytes | memoryview, offset: int, where: str, base: int = 0, version: int = VERSION) -> Record:
    """The record at ``offset`` of ``buffer`` (in a segment of ``version``), its payload
    checked against its crc.

    ``base`` is the file offset of ``buffer[0]``, for error messages. Raises Incomplete when
    the buffer ends inside the record, CorruptLog when the bytes cannot be a record.
    """
    end_of_header = offset + RECORD_HEADER.size
    if end_of_header > len(buffer):
        raise Incomplete()
    length, crc, ts, seq, stream, flags, reserved = RECORD_HEADER.unpack_from(buffer, offset)
    if length > MAX_RECORD or stream not in STREAM_NAMES or flags & ~KNOWN_FLAGS or reserved or ts != ts:
        raise CorruptLog(where, base + offset, "not a record header (bad length, stream, flags or time)")
    if flags & DROPPED and length != DROPPED_PAYLOAD.size:
        raise CorruptLog(where, base + offset, "a dropped-lines marker of the wrong size")
    end = end_of_header + length
    if end > len(buffer):
        raise Incomplete()
    payload = bytes(buffer[end_of_header:end])
    checksum = CHECKSUMS[version]
    if checksum(payload, checksum(buffer[offset + 8 : end_of_header])) != crc:
        raise CorruptLog(where, base + offset, "bad checksum")
    return Record(ts, stream, seq, flags, payload)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    offset: int
    max_ts_before: float
    last_stdout: int
    last_stderr: int

    def pack(self) -> bytes:
        return INDEX_ENTRY.pack(self.offset, self.max_ts_before, self.last_stdout, self.last_stderr)


def parse_index(data: bytes, segment_size: int) -> list[IndexEntry]:
    """The usable entries of an index file: whole entries, at increasing offsets inside the
    segment, with non-decreasing times. The index is only a hint: it stops at the first entry
    that breaks a rule (a torn write, a hostile file), and readers scan from there."""
    entries: list[IndexEntry] = []
    previous_offset, previous_ts = SEGMENT_HEADER.size - 1, float("-inf")
    for position in range(0, len(data) - INDEX_ENTRY.size + 1, INDEX_ENTRY.size):
        entry = IndexEntry(*INDEX_ENTRY.unpack_from(data, position))
        if not previous_offset < entry.offset < segment_size or not entry.max_ts_before >= previous_ts:
            break
        entries.append(entry)
        previous_offset, previous_ts = entry.offset, entry.max_ts_before
    return entries


class RecordCutter:
    """Cuts one stream's chunks into record payloads, sans-IO: each payload ends at a newline
    (one C-level ``rfind`` per chunk, no per-line work), the bytes after the last newline wait
    for the next chunk, and a line longer than ``max_record`` goes out in PARTIAL pieces.

    ``feed`` and ``flush`` return ``[(payload, partial)]``.
    """

    __slots__ = ("max_record", "_pending")

    def __init__(self, max_record: int = MAX_RECORD):
        self.max_record = max_record
        self._pending = b""

    @property
    def pending(self) -> int:
        return len(self._pending)

    def feed(self, chunk: bytes) -> list[tuple[bytes, bool]]:
        if self._pending:
            chunk = self._pending + chunk
            self._pending = b""
        out: list[tuple[bytes, bool]] = []
        limit = self.max_record
        while len(chunk) > limit:
            cut = chunk.rfind(b"\n", 0, limit)
            if cut < 0:
                out.append((chunk[:limit], True))
                chunk = chunk[limit:]
            else:
                out.append((chunk[: cut + 1], False))
                chunk = chunk[cut + 1 :]
        cut = chunk.rfind(b"\n")
        if cut == len(chunk) - 1:
            if chunk:
                out.append((chunk, False))
        elif cut >= 0:
            out.append((chunk[: cut + 1], False))
            self._pending = chunk[cut + 1 :]
        else:
            self._pending = chunk
        return out

    def flush(self) -> list[tuple[bytes, bool]]:
        """The stream ended: what is left, as a last record without a newline."""
        if not self._pending:
            return []
        pending, self._pending = self._pending, b""
        return [(pending, False)]
