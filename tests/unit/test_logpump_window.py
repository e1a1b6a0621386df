"""supervisor/logpump.py's two windows (issue 26): lines are held back for the short window
while someone reads the container's output live, for the long one while only the log
collector does; a read, a new live reader and the container's exit take what is held at
once. Real pipes, trio's mock clock."""

from __future__ import annotations

import time

import trio
import trio.testing

from logs.options import LogOptions
from supervisor.logbuffer import ContainerLog

from tests.unit.test_logpump import FrameSink, Pipes, records

WINDOW = 0.005
HOLD = 0.2


def new_log(sink, watched=None):
    return ContainerLog("c" * 64, LogOptions.from_map({}), {}, sink.publish, sink.drop, watched=watched)


def data(sink):
    return [(stream, payload) for stream, payload, _ in records(sink)]


def run(test):
    clock = trio.testing.MockClock()

    async def main():
        sink = FrameSink()
        await test(sink, clock)

    trio.run(main, clock=clock)


async def two_held_lines(pipes, sink):
    """A first line (taken at once, after a quiet spell), then one read right after it and
    held back, and one more left in the pipe (the holding pump sleeps)."""
    pipes.write("stdout", b"zero\n")
    await trio.testing.wait_all_tasks_blocked()
    assert data(sink) == [("stdout", b"zero\n")]
    sink.events.clear()
    pipes.write("stdout", b"one\n")
    await trio.testing.wait_all_tasks_blocked()
    pipes.write("stdout", b"two\n")
    await trio.testing.wait_all_tasks_blocked()


def test_nobody_reading_live_lines_are_held_for_the_long_window_never_longer():
    """Only the collector takes the records: lines a millisecond apart are held back for the
    long window (one record, its ts the first line's read) and taken exactly when it ends; a
    lone line after a quiet spell is taken at once."""

    async def test(sink, clock):
        log = new_log(sink)
        pipes = Pipes(log)
        async with trio.open_nursery() as nursery:
            pipes.start(nursery, WINDOW, HOLD)
            await trio.testing.wait_all_tasks_blocked()
            before = time.time()
            await two_held_lines(pipes, sink)
            read_one = time.time()
            clock.jump(HOLD * 0.99)
            await trio.testing.wait_all_tasks_blocked()
            assert sink.events == []  # held: the long window has not ended
            clock.jump(HOLD * 0.01)
            await trio.testing.wait_all_tasks_blocked()
            assert data(sink) == [("stdout", b"one\ntwo\n")]
            assert before <= records(sink)[0][2] <= read_one  # ts: when the first line was read
            clock.jump(60)
            pipes.write("stdout", b"lone\n")
            await trio.testing.wait_all_tasks_blocked()
            assert data(sink)[-1] == ("stdout", b"lone\n")  # not held at all
            nursery.cancel_scope.cancel()
        await pipes.close()

    run(test)


def test_a_live_reader_gets_the_short_window():
    """A `logs -f` waiting (followers), one that just answered (followed_until) or a bus
    subscriber to the container's log topics (watched): the short window."""

    async def test(sink, clock):
        watching = {"bus": False}
        log = new_log(sink, watched=lambda container_id: watching["bus"])
        pipes = Pipes(log)
        async with trio.open_nursery() as nursery:
            pipes.start(nursery, WINDOW, HOLD)
            await trio.testing.wait_all_tasks_blocked()
            for make_live in ("followers", "followed_until", "bus"):
                clock.jump(60)  # a quiet spell
                if make_live == "followers":
                    log.followers = 1
                elif make_live == "followed_until":
                    log.followers, log.followed_until = 0, trio.current_time() + 60
                else:
                    log.followed_until, watching["bus"] = 0.0, True
                await two_held_lines(pipes, sink)
                clock.jump(WINDOW)
                await trio.testing.wait_all_tasks_blocked()
                assert data(sink) == [("stdout", b"one\ntwo\n")], make_live
                sink.events.clear()
            nursery.cancel_scope.cancel()
        await pipes.close()

    run(test)


def test_a_read_or_a_new_live_reader_takes_the_held_lines_at_once():
    """flush() (a `logs` read, a `logs -f` or an attach coming) makes the held lines a record
    at once, with what the pipe holds (written before the read was asked): no window to wait
    out, whichever it is."""

    async def test(sink, clock):
        log = new_log(sink)
        pipes = Pipes(log)
        async with trio.open_nursery() as nursery:
            pipes.start(nursery, WINDOW, HOLD)
            await trio.testing.wait_all_tasks_blocked()
            await two_held_lines(pipes, sink)
            assert sink.events == []
            log.flush()  # synchronous: the records exist when it returns
            assert data(sink) == [("stdout", b"one\ntwo\n")]
            nursery.cancel_scope.cancel()
        await pipes.close()

    run(test)


def test_the_exit_takes_the_held_lines_and_nothing_is_held_after_it():
    async def test(sink, clock):
        log = new_log(sink)
        pipes = Pipes(log)
        async with trio.open_nursery() as nursery:
            pipes.start(nursery, WINDOW, HOLD)
            await trio.testing.wait_all_tasks_blocked()
            await two_held_lines(pipes, sink)
            log.finish()  # pid 1 exited
            assert data(sink) == [("stdout", b"one\ntwo\n")]
            pipes.write("stdout", b"three\n")  # a child that outlives pid 1, right after
            await trio.testing.wait_all_tasks_blocked()
            assert data(sink)[-1] == ("stdout", b"three\n")
            nursery.cancel_scope.cancel()
        await pipes.close()

    run(test)


def test_held_lines_keep_their_order_across_stdout_and_stderr_in_the_long_window():
    """As with the short window: a stream that reads output first takes the other's held
    lines (and what its pipe holds) first; the ts of the records increase."""

    async def test(sink, clock):
        log = new_log(sink)
        pipes = Pipes(log, ("stdout", "stderr"))
        async with trio.open_nursery() as nursery:
            pipes.start(nursery, WINDOW, HOLD)
            await trio.testing.wait_all_tasks_blocked()
            pipes.write("stdout", b"o0\n")
            await trio.testing.wait_all_tasks_blocked()
            pipes.write("stdout", b"o1\n")
            await trio.testing.wait_all_tasks_blocked()  # held for the long window
            pipes.write("stdout", b"o2\n")  # left in the pipe: the pump sleeps
            pipes.write("stderr", b"e1\n")
            await trio.testing.wait_all_tasks_blocked()
            pipes.write("stdout", b"o3\n")
            await trio.testing.wait_all_tasks_blocked()
            pipes.write("stderr", b"e2\n")
            await trio.testing.wait_all_tasks_blocked()
            clock.jump(HOLD)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        await pipes.close()
        assert data(sink) == [("stdout", b"o0\n"), ("stdout", b"o1\no2\n"), ("stderr", b"e1\n"), ("stdout", b"o3\n"),
                              ("stderr", b"e2\n")]
        ts = [ts for _, _, ts in records(sink)]
        assert ts == sorted(ts)

    run(test)
