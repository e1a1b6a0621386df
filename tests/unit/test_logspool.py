"""supervisor/logspool.py: a stream's output spool (a memfd), on real pipes and memfds."""

from __future__ import annotations

import os

import pytest

from logs.options import LogOptions
from supervisor.logbuffer import ContainerLog
from supervisor.logspool import HEADER, PUNCH_STEP, Spool, unstored


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


def test_released_pages_are_given_back(spool_fd, pipe):
    spool = Spool(spool_fd)
    spool.release(0, 0)
    chunk = b"z" * 4096
    view = memoryview(bytearray(len(chunk)))
    for _ in range(PUNCH_STEP * 3 // len(chunk)):
        os.write(pipe[1], chunk)
        spool.read_from(pipe[0], view)
    held = os.fstat(spool_fd).st_blocks
    spool.release(1, PUNCH_STEP * 3)
    assert os.fstat(spool_fd).st_blocks < held
    assert os.fstat(spool_fd).st_size == HEADER + PUNCH_STEP * 3  # offsets stay valid


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
