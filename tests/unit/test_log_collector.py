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
