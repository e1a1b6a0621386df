"""Live restore figures (issue 21): ``scripts/bench.sh --only live_restore``.

* ``restore_memory``: memory per idle container with live restore, at ``many`` running: the
  growth of the daemon's and the keeper's PSS and the output spools' pages, per container
  (figure 6, ``many``, counts the keeper the same way);
* ``restore_time``: from starting a daemon (after a SIGKILL) to all ``many`` containers
  adopted (the daemon's "containers restored" log line, which says how long adopting took);
* ``restore_throughput``: the 200 MB producer of figure 7 stored through the keeper's spools
  (live restore on) against the same daemon with ``--live-restore=false`` (before issue 21),
  the two alternating (which goes first alternates too). The wall time is the figure; the
  daemon's own CPU over the same window (``/proc/PID/stat``: the pumps, the spools' copies)
  is in the notes, a steadier sign than the wall time on a loaded machine.
"""

from __future__ import annotations

import os
import re
import signal
import time

from tests.bench import procs
from tests.bench.figures import Bench, _start_all
from tests.bench.lines import parse_stat
from tests.bench.stats import Figure, Measure
from tests.bench.tools import Dockyard

RESTORED = re.compile(r'event="containers restored" adopted=(\d+) exited=(\d+) not_adoptable=(\d+) seconds=([\d.]+)')


def _restart(tool: Dockyard, sig: int, extra: tuple[str, ...] = ()) -> float:
    """Stop the daemon with ``sig`` and start it again; seconds until it answered."""
    assert tool.process is not None
    tool.process.send_signal(sig)
    tool.process.wait(120)
    started = time.perf_counter()
    tool.start_daemon(extra)
    return time.perf_counter() - started


def _restored(tool: Dockyard, count: int, timeout: float = 300) -> tuple[int, float] | None:
    """(containers adopted, seconds adopting took) from the newest daemon's log line."""
    path = tool.workspace.path / "dockyard-daemon.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = RESTORED.findall(path.read_text(errors="replace")) if path.exists() else []
        if found and int(found[-1][0]) + int(found[-1][1]) >= count:
            return int(found[-1][0]), float(found[-1][3])
        time.sleep(0.1)
    return None


def _settled(tool: Dockyard, quiet: float = 0.2, timeout: float = 5.0) -> None:
    """Until the daemon and its workers (its descendants) have used less than 20 ms of CPU
    in ``quiet`` seconds (at most ``timeout``): a daemon just started spends 0.3-0.5 s of CPU
    in its first quarter second (its workers' start), which a producer timed at once shares
    the 2 CPUs with; that start is not the output's cost and only adds noise to both rows."""
    assert tool.process is not None

    def used() -> float:
        total = 0.0
        for pid in {tool.process.pid} | procs.descendants(procs.process_table(), tool.process.pid):
            try:
                total += _cpu_seconds(pid)
            except OSError:
                continue  # gone meanwhile
        return total

    deadline = time.monotonic() + timeout
    before = used()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = used()
        if now - before < 0.02:
            return
        before = now


def _cpu_seconds(pid: int) -> float:
    """A process's CPU seconds so far (utime + stime, all its threads). Raises OSError when
    it is gone."""
    with open(f"/proc/{pid}/stat") as stat:
        return parse_stat(stat.read()).ticks / os.sysconf("SC_CLK_TCK")


def _daemon_cpu(tool: Dockyard) -> float:
    """The daemon process's CPU seconds so far."""
    assert tool.process is not None
    return _cpu_seconds(tool.process.pid)


def _producer_seconds(tool: Dockyard, megabytes: int, name: str,
                      cpu: Measure | None = None) -> float | None:
    """Seconds from ``run`` to ``wait``'s return for ``megabytes`` MB of output, None if
    ``logs`` does not give every byte back; the daemon's CPU meanwhile goes to ``cpu``."""
    line = "0123456789abcdefghijklmnopqrstuvwxyz0123"
    make = f"i=0; while [ $i -lt 24390 ]; do echo {line}; i=$((i+1)); done > /tmp/mb"
    cats = f"i=0; while [ $i -lt {megabytes} ]; do cat /tmp/mb; i=$((i+1)); done"
    run = tool.run_detached(("sh", "-c", f"{make}; {cats}"))
    run[run.index("base"):run.index("base")] = ["--name", name, "--log-opt", "max-size=256m"]
    start, used = time.perf_counter(), _daemon_cpu(tool)
    ok = tool.time(run, timeout=600).ok and tool.time([*tool.cli(), "wait", name], timeout=600).ok
    seconds = time.perf_counter() - start
    if cpu is not None and ok:
        cpu.add(_daemon_cpu(tool) - used)
    read = procs.counted([*tool.cli(), "logs", name], env=tool.env, timeout=600)
    tool.time(tool.remove([name]))
    return seconds if ok and read.stdout_bytes == 24390 * 41 * megabytes else None


def live_restore(bench: Bench) -> list[Figure]:
    params = bench.params
    tool = bench.tools.get("dockyard")
    memory = Figure("restore_memory", f"live restore: memory per idle container at {params.many} running",
                    "<= 0.1 MB", "MB")
    restore = Figure("restore_time", f"live restore: daemon start to {params.many} containers adopted", "< 2 s", "s")
    throughput = Figure("restore_throughput", f"live restore: {params.logs_mb} MB of output stored, with the keeper "
                        "against --live-restore=false", ">= 0.9x", "s")
    if not isinstance(tool, Dockyard):
        for figure in (memory, restore, throughput):
            figure.status = "not available: no dockyard"
        return [memory, restore, throughput]
    bench.log(f"live restore: {params.logs_mb} MB with and without the keeper, then {params.many} adopted")
    with_keeper, without = Measure("dockyard live restore", "s"), Measure("dockyard --live-restore=false", "s")
    cpu_with, cpu_without = Measure("daemon CPU, live restore", "s"), Measure("daemon CPU, --live-restore=false", "s")
    for repetition in range(params.restore_reps):
        order = ((("--live-restore=false",), without, cpu_without), (("--live-restore",), with_keeper, cpu_with))
        for flags, measure, cpu in order[::-1] if repetition % 2 else order:
            _restart(tool, signal.SIGTERM, flags)
            _settled(tool)
            measure.add(_producer_seconds(tool, params.logs_mb, f"dockyard-bench-restore-{repetition}", cpu))
    throughput.dockyard, throughput.anchors = [with_keeper], [without]
    if cpu_with.median and cpu_without.median:
        throughput.notes.append(f"the daemon's own CPU over the same window (medians of {len(cpu_with.samples)}): "
                                f"{cpu_with.median:.2f} s with the keeper's spools, {cpu_without.median:.2f} s "
                                f"with --live-restore=false ({cpu_without.median / cpu_with.median:.2f}x)")
    if with_keeper.median and without.median:
        throughput.ratio = without.median / with_keeper.median
        throughput.ratio_basis = "throughput with the keeper / without"
        throughput.met = throughput.ratio >= 0.9
    # Memory and adoption at `many`: a fresh daemon with live restore, and one container
    # first, so that the keeper exists and both processes made their first-launch allocations.
    _restart(tool, signal.SIGTERM, ("--live-restore",))
    warm = tool.time(tool.run_detached(("sleep", "1000")))
    time.sleep(1.0)
    before = {name: (procs.pss_kib(pid) or 0) / 1024 for name, pid in tool.daemons().items()}
    before_spools = tool.held_mb()
    seconds, ids, error = _start_all(tool, params.many, workers=4,
                                     deadline=time.monotonic() + max(30.0, min(params.many_fill_seconds, bench.left())))
    try:
        note = f"at {len(ids)} running (filled in {seconds:.0f} s){'; ' + error if error else ''}"
        time.sleep(1.0)
        daemons = tool.daemons()
        parts, total = [], 0.0
        for name, pid in daemons.items():
            growth = (procs.pss_kib(pid) or 0) / 1024 - before.get(name, 0.0)
            parts.append(f"{name} {growth / max(len(ids), 1):.4f} MB")
            total += growth
        spools = tool.held_mb() - before_spools
        parts.append(f"output spools {spools / max(len(ids), 1):.4f} MB")
        total += spools
        per = Measure("dockyard", "MB")
        per.add(total / len(ids) if ids else None)
        per.note = f"{note}: {', '.join(parts)}"
        memory.dockyard = [per]
        memory.met = per.median is not None and per.median <= 0.1
        adopt = Measure("dockyard", "s")
        started = time.perf_counter()
        answered = _restart(tool, signal.SIGKILL)
        result = _restored(tool, len(ids))
        if result is not None:
            adopted, took = result
            adopt.add(time.perf_counter() - started)
            adopt.note = (f"{adopted} of {len(ids)} adopted; from the daemon's exec: bus answering after "
                          f"{answered:.2f} s, adoption itself {took:.2f} s (its log)")
        else:
            adopt.add(None)
            adopt.note = "no 'containers restored' line in time"
        restore.dockyard = [adopt]
        restore.met = adopt.median is not None and adopt.median < 2.0
    finally:
        for begin in range(0, len(ids), 100):
            tool.time(tool.remove(ids[begin: begin + 100]), timeout=600)
        if warm.ok:
            tool.time(tool.remove(warm.stdout.split()[-1:]))
    return [memory, restore, throughput]
