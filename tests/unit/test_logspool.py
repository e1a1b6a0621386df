"""supervisor/logspool.py: a stream's output spool (a memfd), on real pipes and memfds."""

from __future__ import annotations

import os

import pytest

from logs.options import LogOptions
from supervisor.logbuffer import ContainerLog
from supervisor.logspool import HEADER, MAGIC, POSITION_AT, PUNCH_STEP, Spool, SpoolFull, unstored


@pytest.fixture
def spool_fd():
    fd = os.memfd_create("test-spool", os.MFD_CLOEXEC)
    yield fd
    os.close(fd)


@pytest.fixture
def pipe():
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def test_a_read_moves_the_output_into_the_spool_and_the_buffer(spool_fd, pipe):
    spool = Spool(spool_fd)
    os.write(pipe[1], b"one\ntwo\n")
    buffer = bytearray(16)
    assert spool.read_from(pipe[0], memoryview(buffer)) == 8
    assert bytes(buffer[:8]) == b"one\ntwo\n"
    assert spool.read_back(0) == b"one\ntwo\n"
    with pytest.raises(BlockingIOError):
        spool.read_from(pipe[0], memoryview(buffer))


def test_the_end_of_the_pipe_reads_zero(spool_fd):
    read_end, write_end = os.pipe2(os.O_NONBLOCK)
    os.write(write_end, b"last")
    os.close(write_end)
    spool = Spool(spool_fd)
    view = memoryview(bytearray(8))
    assert spool.read_from(read_end, view) == 4
    assert spool.read_from(read_end, view) == 0
    os.close(read_end)


def test_a_source_that_cannot_be_spliced_is_read_and_written(spool_fd):
    master, slave = os.openpty()
    os.set_blocking(master, False)
    os.write(slave, b"tty\n")
    spool = Spool(spool_fd)
    view = memoryview(bytearray(64))
    count = spool.read_from(master, view)
    assert not spool.splice
    assert spool.read_back(0) == bytes(view[:count])
    os.close(master)
    os.close(slave)


def test_a_new_daemon_finds_what_was_read_and_not_stored(spool_fd, pipe):
    spool = Spool(spool_fd)
    spool.release(10, 0)  # records through seq 10 are of earlier runs
    os.write(pipe[1], b"a\nbb\nccc\ndddd\n")
    spool.read_from(pipe[0], memoryview(bytearray(64)))
    spool.release(11, 2)  # "a\n" acknowledged
    again = Spool(spool_fd)  # the next daemon, after a SIGKILL
    assert (again.released_seq, again.released, again.end) == (11, 2, 14)
    # The store has seq 12 ("bb\n") too: it was stored, not yet acknowledged.
    seq, offset = unstored(again, 12, lambda after: iter([3]) if after == 11 else iter(()))
    assert (seq, offset) == (12, 5)
    assert again.read_back(offset) == b"ccc\ndddd\n"


def test_nothing_stored_after_the_release_reads_back_from_it(spool_fd, pipe):
    spool = Spool(spool_fd)
    spool.release(3, 0)
    os.write(pipe[1], b"x\ny")
    spool.read_from(pipe[0], memoryview(bytearray(8)))
    assert unstored(Spool(spool_fd), 3, lambda after: iter(())) == (3, 0)
    assert Spool(spool_fd).read_back(0) == b"x\ny"


CAPACITY = 64 << 10


def _stream(spool, pipe, chunks, size=4096, release_each=True):
    """Write ``chunks`` chunks of ``size`` bytes through the pipe into the spool; each
    released once read (as if stored at once) unless ``release_each`` is false."""
    view = memoryview(bytearray(size))
    for index in range(chunks):
        os.write(pipe[1], bytes([65 + index % 26]) * size)
        assert spool.read_from(pipe[0], view) == size
        if release_each:
            spool.release(index + 1, spool.end)


def _mapped(fd):
    """Whether this process maps the memfd ``fd`` (its header, while the stream is busy)."""
    inode = os.fstat(fd).st_ino
    with open("/proc/self/maps") as maps:
        return any(len(fields) > 5 and fields[4] == str(inode) and "memfd:" in fields[5]
                   for fields in (line.split(maxsplit=5) for line in maps))


def _position(fd):
    return int.from_bytes(os.pread(fd, 8, POSITION_AT), "little")


def test_the_kernel_stores_where_the_output_ends_in_the_same_splice(spool_fd, pipe):
    """The write position in the header moves with each read (splice's off_out points into
    the mapped header): there is no write of it of our own that a SIGKILL could miss."""
    spool = Spool(spool_fd, CAPACITY)
    assert _position(spool_fd) == HEADER
    os.write(pipe[1], b"12345")
    spool.read_from(pipe[0], memoryview(bytearray(3)))
    assert _position(spool_fd) == HEADER + 3
    spool.read_from(pipe[0], memoryview(bytearray(8)))
    assert _position(spool_fd) == HEADER + 5
    assert Spool(spool_fd).end == 5


def test_a_busy_stream_writes_into_the_same_pages_again(spool_fd, pipe):
    """Ten laps of the ring: the memfd never holds more pages than the ring and its header
    (the old layout allocated a page for every 4 KiB read, and punched it once released)."""
    spool = Spool(spool_fd, CAPACITY)
    _stream(spool, pipe, 10 * CAPACITY // 4096)
    assert os.fstat(spool_fd).st_blocks * 512 <= HEADER + CAPACITY
    assert spool.end == 10 * CAPACITY


def test_an_idle_spool_gives_its_pages_back_and_then_each_page_as_it_is_released(spool_fd, pipe):
    spool = Spool(spool_fd, CAPACITY)
    _stream(spool, pipe, CAPACITY // 4096 + 3)  # a lap and a bit: every page was written
    _stream(spool, pipe, 2, release_each=False)  # read, not stored yet
    held = os.fstat(spool_fd).st_blocks * 512
    assert _mapped(spool_fd)
    spool.trim()
    assert os.fstat(spool_fd).st_blocks * 512 == HEADER + 2 * 4096 < held  # the header and the unstored
    assert spool.read_back(spool.released) == b"A" * 4096 + b"B" * 4096
    spool.release(99, spool.end)
    assert os.fstat(spool_fd).st_blocks * 512 == HEADER
    assert not _mapped(spool_fd)  # nor a page of the daemon's memory
    _stream(spool, pipe, 1, release_each=False)  # busy again: pages are kept from now on
    spool.release(100, spool.end)
    assert os.fstat(spool_fd).st_blocks * 512 == HEADER + 4096


def _mapped_bytes(fd):
    """How many bytes of the memfd ``fd`` this process maps (0: none)."""
    inode = os.fstat(fd).st_ino
    total = 0
    with open("/proc/self/maps") as maps:
        for fields in (line.split(maxsplit=5) for line in maps):
            if len(fields) > 5 and fields[4] == str(inode) and "memfd:" in fields[5]:
                start, end = (int(address, 16) for address in fields[0].split("-"))
                total += end - start
    return total


def test_a_busy_stream_reads_its_output_out_of_the_mapped_ring(spool_fd, pipe):
    """What splice put in the ring is copied out of the daemon's mapping of it (no pread of
    every read: issue 21's throughput), across the ring's end too; an idle spool is not
    mapped at all."""
    spool = Spool(spool_fd, CAPACITY)
    _stream(spool, pipe, CAPACITY // 4096 - 1)  # up to a page before the ring's end
    assert _mapped_bytes(spool_fd) == HEADER + CAPACITY
    output = bytes(range(256)) * 48  # 12 KiB: the ring's last page and two at its start
    os.write(pipe[1], output)
    view = memoryview(bytearray(len(output)))
    assert spool.read_from(pipe[0], view) == len(output)
    assert bytes(view) == output == spool.read_back(CAPACITY - 4096)
    spool.release(99, spool.end)
    spool.trim()
    assert _mapped_bytes(spool_fd) == 0


def test_a_new_daemon_finds_the_unstored_output_across_the_end_of_the_ring(spool_fd, pipe):
    spool = Spool(spool_fd, CAPACITY)
    _stream(spool, pipe, CAPACITY // 4096 - 1)  # up to a page before the ring's end
    seq = spool.released_seq
    _stream(spool, pipe, 3, release_each=False)  # the last page of the ring and two at its start
    assert _position(spool_fd) == HEADER + 2 * 4096
    again = Spool(spool_fd)  # the next daemon, after a SIGKILL: the capacity from the header
    assert (again.capacity, again.released, again.end) == (CAPACITY, CAPACITY - 4096, CAPACITY + 2 * 4096)
    assert unstored(again, seq, lambda after: iter(())) == (seq, CAPACITY - 4096)
    assert again.read_back(CAPACITY - 4096) == b"A" * 4096 + b"B" * 4096 + b"C" * 4096
    os.write(pipe[1], b"more\n")  # and it goes on where the last daemon stopped
    again.read_from(pipe[0], memoryview(bytearray(16)))
    assert Spool(spool_fd).read_back(CAPACITY + 2 * 4096) == b"more\n"


def test_a_full_ring_reads_nothing_until_output_is_released(spool_fd, pipe):
    """Unstored output is never overwritten: a ring holding capacity - 1 unreleased bytes
    raises SpoolFull and leaves the rest in the pipe."""
    spool = Spool(spool_fd, CAPACITY)
    _stream(spool, pipe, CAPACITY // 4096 - 1, release_each=False)
    os.write(pipe[1], b"x" * 8192)
    view = memoryview(bytearray(8192))
    assert spool.read_from(pipe[0], view) == 4095
    with pytest.raises(SpoolFull):
        spool.read_from(pipe[0], view)
    spool.release(1, 8192)
    assert spool.read_from(pipe[0], view) == 8192 - 4095
    assert spool.read_back(CAPACITY - 4096) == b"x" * 8192
    assert Spool(spool_fd).read_back(4096)[-8192:] == b"x" * 8192


def test_a_spool_of_the_daemon_before_the_ring_is_continued_as_it_was_written(spool_fd, pipe):
    """An upgrade: the containers' spools (linear, DYSPOOL1) were written by the old daemon."""
    header = MAGIC + (5).to_bytes(8, "little") + (2).to_bytes(8, "little")
    os.pwrite(spool_fd, header.ljust(HEADER, b"\0") + b"a\nbb\n", 0)
    spool = Spool(spool_fd, CAPACITY)
    assert (spool.ring, spool.released_seq, spool.released, spool.end) == (False, 5, 2, 5)
    assert spool.read_back(2) == b"bb\n"
    chunk = b"z" * 4096
    view = memoryview(bytearray(len(chunk)))
    for _ in range(PUNCH_STEP * 3 // len(chunk)):
        os.write(pipe[1], chunk)
        spool.read_from(pipe[0], view)
    held = os.fstat(spool_fd).st_blocks
    spool.release(6, PUNCH_STEP * 3)  # released pages are given back at once, as before
    assert os.fstat(spool_fd).st_blocks < held
    assert os.fstat(spool_fd).st_size == HEADER + 5 + PUNCH_STEP * 3  # offsets stay valid


def test_the_log_releases_the_spool_as_the_collector_acknowledges(spool_fd, pipe):
    published = []
    log = ContainerLog("c" * 64, LogOptions(), {}, lambda *args: published.append(args), lambda *args: None)
    spool = Spool(spool_fd)
    log.use_spool("stdout", spool)
    os.write(pipe[1], b"1\n22\n")
    spool.read_from(pipe[0], memoryview(bytearray(8)))
    log.add("stdout", b"1\n", False)
    log.add("stdout", b"22\n", False)
    log.ack(1, 1)  # stdout is stream 1
    assert (spool.released_seq, spool.released) == (1, 2)
    log.ack(1, 2)
    assert (spool.released_seq, spool.released) == (2, 5)
    assert Spool(spool_fd).read_back(5) == b""
