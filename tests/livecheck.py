"""Issue 21's "done when", tried as a new user would: containers running and printing,
``kill -9`` the daemon, start it again; ``dockyard ps`` shows the same containers Up since
their original start, ``dockyard logs`` of each has no gap, and ``dockyard events --since
1m`` shows the restore.

``scripts/live-restore-check.sh [--count N]`` runs it on a private daemon (100 containers by
default; everything it made is removed at the end); tests/integration/test_live_restore.py
runs :func:`verify` on 20.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

#: A numbered line every millisecond (busybox forks usleep: a few hundred lines a second).
COUNTER = "i=0; while true; do echo $i; i=$((i+1)); usleep 1000; done"


def started(daemon, names: list[str]) -> dict[str, tuple[str, int]]:
    """Each container's (StartedAt, Pid), from one ``inspect``."""
    documents = json.loads(daemon.out("inspect", *names))
    return {document["Name"].lstrip("/"): (document["State"]["StartedAt"], document["State"]["Pid"])
            for document in documents}


def gaps(text: str) -> str:
    """Why a counter's ``logs`` is not 0, 1, 2, ... each once, in order ("" if it is)."""
    lines = text.split("\n")
    if lines[-1] != "":
        return f"its last line is cut: {lines[-1]!r}"
    try:
        numbers = [int(line) for line in lines[:-1]]
    except ValueError as exc:
        return f"a line is not a number: {exc}"
    if not numbers:
        return "no output"
    if numbers == list(range(len(numbers))):
        return ""
    seen: set[int] = set()
    duplicates = sorted({n for n in numbers if n in seen or seen.add(n)})[:5]
    missing = sorted(set(range(max(numbers) + 1)) - set(numbers))[:5]
    return f"{len(numbers)} lines, duplicated {duplicates}, missing {missing}"


def restore_event(daemon) -> str:
    """The newest ``daemon restore`` line of ``events --since 1m`` ("" if none)."""
    events = daemon.out("events", "--since", "1m", "--until", "0s", "--filter", "type=daemon")
    found = [line for line in events.splitlines() if "daemon restore" in line]
    return found[-1] if found else ""


def verify(daemon, names: list[str], before: dict[str, tuple[str, int]]) -> list[str]:
    """What a user would check after the restart; the problems found (none: done)."""
    problems = []
    line = restore_event(daemon)  # first: the restore is the newest thing within the minute
    adopted = line.split("adopted=", 1)[1].split(", exited=", 1)[0].split("; ") if "adopted=" in line else []
    if sorted(adopted) != sorted(names):
        problems.append(f"events --since 1m: no daemon restore adopting all {len(names)}: {line!r}")
    rows = dict(line.split("|", 1) for line in daemon.out("ps", "--format", "{{.Names}}|{{.Status}}").splitlines())
    for name in names:
        if not rows.get(name, "").startswith("Up "):
            problems.append(f"ps: {name} is not Up: {rows.get(name)!r}")
    after = started(daemon, names)
    for name in names:
        if after.get(name) != before[name]:
            problems.append(f"inspect: {name} started at {after.get(name)}, not {before[name]} (StartedAt, Pid)")
    for name in names:
        problem = gaps(daemon.out("logs", name))
        if problem:
            problems.append(f"logs {name}: {problem}")
    return problems


def wait_for(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)  # polls the condition itself, bounded by the deadline


def main(argv: list[str] | None = None) -> int:
    from tests.conftest import Daemon
    from tests.rootfs import build_rootfs_tar

    parser = argparse.ArgumentParser(prog="scripts/live-restore-check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100, help="containers running and printing (default 100)")
    parser.add_argument("--away", type=float, default=2.0, help="seconds without a daemon (default 2)")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="dockyard-livecheck."))
    daemon = Daemon(base, ["--live-restore"])
    names = [f"counter{index}" for index in range(args.count)]
    try:
        daemon.start(timeout=120)
        daemon.out("import", str(build_rootfs_tar(base / "busybox.tar")), "base")
        print(f"starting {args.count} containers that print a numbered line every millisecond", flush=True)
        for name in names:
            daemon.out("run", "-d", "--name", name, "base", "sh", "-c", COUNTER)
        before = started(daemon, names)
        assert daemon.process is not None
        print(f"kill -9 {daemon.process.pid} (the daemon); {args.away} s without it; start it again", flush=True)
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait(60)
        time.sleep(args.away)  # the scenario itself: the containers print on while no daemon runs
        begun = time.monotonic()
        daemon.start(timeout=600)
        wait_for(lambda: "daemon restore" in restore_event(daemon), "the daemon.restore event", 600)
        print(f"the daemon answers and has restored after {time.monotonic() - begun:.1f} s", flush=True)
        problems = verify(daemon, names, before)
        for problem in problems:
            print(f"FAIL {problem}")
        if not problems:
            print(f"OK: ps shows the {args.count} containers Up since their original start, logs of each has "
                  "no gap, events --since 1m shows the restore")
        return 1 if problems else 0
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            ids = daemon.out("ps", "-aq").split()
            if ids:
                daemon.out("rm", "-f", *ids, timeout=600)
            daemon.stop()  # nothing runs: the keeper is told to exit once it holds nothing
            wait_for(lambda: daemon.keeper_pid() is None, "the keeper to exit", 60)
        daemon.cleanup()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
