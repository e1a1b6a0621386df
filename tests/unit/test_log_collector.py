"""The log collector's catch-up against a scripted supervisor (the real one: test_logs.py)."""

from __future__ import annotations

import structlog

from logs.store import LogReader, container_directory
from workers.logcollector import Collector

CID = "c" * 64


class Supervisor:
    """Answers logs.status and logs.replay from ``given`` (seq -> payload, stdout only)."""

    def __init__(self):
        self.given: dict[int, bytes] = {}
        self.replays: list[int] = []

    async def request(self, op, args):
        if op == "logs.status":
            last = max(self.given, default=0)
            return {"containers": [{"id": CID, "options": {}, "streams": {
                "stdout": {"last": last, "acked": 0, "buffered": 0},
                "stderr": {"last": 0, "acked": 0, "buffered": 0}}}]}
        if op == "logs.replay":
            self.replays.append(args["from"])
            records = [[seq, float(seq), data, False] for seq, data in sorted(self.given.items()) if seq >= args["from"]]
            return {"records": records, "lost": None, "last": max(self.given, default=0)}
        raise AssertionError(op)


def give(supervisor: Supervisor, first: int, last: int) -> None:
    for seq in range(first, last + 1):
        supervisor.given[seq] = b"line %d\n" % seq


async def test_a_periodic_catch_up_replays_only_what_is_overdue(tmp_path):
    """Records given out after the previous periodic check are most likely still on their way
    as live events: only those the previous check saw, and that have not arrived, are
    replayed. The first catch-up (the collector starting) replays everything."""
    supervisor = Supervisor()
    collector = Collector(tmp_path, supervisor, structlog.get_logger())
    give(supervisor, 1, 3)
    await collector.catch_up()  # starting: all that is missing
    assert supervisor.replays == [1]
    give(supervisor, 4, 6)
    await collector.catch_up(periodic=True)  # 4-6 are new since the last look: on their way
    assert supervisor.replays == [1]
    give(supervisor, 7, 8)
    await collector.catch_up(periodic=True)  # 4-6 are overdue now (the bus dropped them)
    assert supervisor.replays == [1, 4]
    await collector.catch_up(periodic=True)  # nothing overdue
    assert supervisor.replays == [1, 4]
    collector.close()
    reader = LogReader(container_directory(tmp_path, CID))
    stored = b"".join(r.payload for r in reader.read(reader.start()).records)
    assert stored == b"".join(b"line %d\n" % seq for seq in range(1, 9))


def test_an_idle_collector_asks_for_the_status_rarely_and_a_dropped_tail_is_still_fetched(tmp_path):
    """Issue 26: the periodic catch-up asks logs.status (every container's) each second only
    while something happens; idle, every IDLE_CATCH_UP_INTERVAL. Records whose events all
    went missing (no event stirred it) are still stored: one idle look sees them given out,
    the next ones (now each second: the store is behind) replay them."""
    import trio
    import trio.testing

    from workers import logcollector

    clock = trio.testing.MockClock()

    class Counting(Supervisor):
        def __init__(self):
            super().__init__()
            self.looks = 0

        async def request(self, op, args):
            self.looks += op == "logs.status"
            return await super().request(op, args)

    async def main():
        supervisor = Counting()
        collector = Collector(tmp_path, supervisor, structlog.get_logger())
        give(supervisor, 1, 2)
        await collector.catch_up()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collector.catch_up_forever)
            await trio.testing.wait_all_tasks_blocked()
            supervisor.looks = 0
            for _ in range(10):  # 10 idle seconds: two looks
                clock.jump(logcollector.CATCH_UP_INTERVAL)
                await trio.testing.wait_all_tasks_blocked()
            assert supervisor.looks == 10 / logcollector.IDLE_CATCH_UP_INTERVAL
            give(supervisor, 3, 4)  # their events never come
            while not supervisor.replays[1:]:
                clock.jump(logcollector.CATCH_UP_INTERVAL)
                await trio.testing.wait_all_tasks_blocked()
            assert supervisor.replays == [1, 3]
            nursery.cancel_scope.cancel()
        collector.close()
        reader = LogReader(container_directory(tmp_path, CID))
        assert b"".join(r.payload for r in reader.read(reader.start()).records) == b"line 1\nline 2\nline 3\nline 4\n"

    trio.run(main, clock=clock)
