"""docs/events.md is the wire reference: its operation table (generated from
supervisor/operations.py) must list exactly the ops the daemon answers, and the built-in ops'
results must have the keys declared for them (issue 15 item 9: bus.sync answered {token} where
the page said {})."""

from __future__ import annotations

import re
from pathlib import Path

import trio
import zmq

from bus.client import AsyncClient
from bus.server import BusServer
from bus.trio_zmq import AsyncSocket
from supervisor.handlers import Handlers
from supervisor.operations import OPERATIONS

EVENTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def documented_operations() -> dict[str, str]:
    """op -> its result column, from the table under "### Operations"."""
    text = EVENTS_DOC.read_text()
    section = text.split("### Operations", 1)[1]
    rows: dict[str, str] = {}
    for line in section.splitlines()[1:]:
        if line.startswith("| op ") or line.startswith("| ---"):
            continue
        if not line.startswith("| `"):
            if rows:
                break  # the end of the table
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0].strip("`")] = cells[2]
    return rows


def daemon_operations(tmp_path: Path) -> list[str]:
    handlers = Handlers(None, None, last_event_seq=lambda: 0, bus_stats=dict)  # type: ignore[arg-type]
    return BusServer(tmp_path, handlers.table()).operations()


def test_the_operation_table_lists_exactly_the_operations_the_daemon_answers(tmp_path):
    documented = set(documented_operations())
    answered = set(daemon_operations(tmp_path))
    assert not answered - documented, f"answered but not in docs/events.md: {sorted(answered - documented)}"
    assert not documented - answered, f"in docs/events.md but not answered: {sorted(documented - answered)}"


def documented_keys(result: str) -> set[str]:
    match = re.match(r"`\{([^}]*)\}`", result)
    assert match, f"no {{...}} result in {result!r}"
    return {key.strip() for key in match.group(1).split(",") if key.strip()}


async def test_the_built_in_operations_reply_what_the_table_says(tmp_path, nursery):
    run_dir = tmp_path
    server = BusServer(run_dir, {})
    await nursery.start(server.serve)
    documented = documented_operations()
    context = zmq.Context()
    raw = context.socket(zmq.SUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(f"ipc://{run_dir / 'events.sock'}")
    raw.setsockopt(zmq.SUBSCRIBE, b"sync.doctoken")
    sub = AsyncSocket(raw)
    try:
        async with AsyncClient(run_dir, source="test") as client:
            with trio.fail_after(30):
                ping = await client.request("bus.ping")
                sync = await client.request("bus.sync", {"token": "doctoken"})
    finally:
        sub.close()
        context.term()
    assert set(ping) == documented_keys(documented["bus.ping"]) == set(OPERATIONS["bus.ping"].keys)
    assert set(sync) == documented_keys(documented["bus.sync"]) == set(OPERATIONS["bus.sync"].keys)


def test_the_operations_the_bus_serves_itself_are_declared_as_such(tmp_path):
    served = set(BusServer(tmp_path, {}).operations())
    assert served == {name for name, operation in OPERATIONS.items() if operation.served_by == "bus"}


def test_the_events_channel_is_the_same_in_the_docs_the_daemon_and_the_cli():
    from supervisor import EVENT_TYPES
    from supervisor.cli.system import EVENT_PREFIXES

    row = next(line for line in EVENTS_DOC.read_text().splitlines() if line.startswith("| `events` |"))
    documented = [topic for topic in re.findall(r"`([a-z]+\.)\*`", row.split("|")[2])]
    assert documented == [f"{kind}." for kind in EVENT_TYPES] == list(EVENT_PREFIXES)
    example = re.search(r"## An example client.*?```python\n(.*?)```", EVENTS_DOC.read_text(), re.S).group(1)
    subscribed = re.search(r"for prefix in \(([^)]*)\)", example).group(1)
    assert re.findall(r'b"([^"]+)"', subscribed) == documented
