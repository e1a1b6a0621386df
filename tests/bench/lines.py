"""Output a line at a time (issue 26): the engine's CPU per 1000 lines stored, and the
latency of ``logs -f``, for dockyard, podman (conmon, k8s-file) and docker (dockerd +
containerd + containerd-shim, json-file) in the same run.

Theory of operation
-------------------
**CPU.** The container runs the loop of issue 26 (``echo line $i; usleep 1000``, 5000
times), wrapped so that the benchmark can see, from outside and without reading the
output, when the loop starts and ends::

    sh -c "sleep 2; exec sh -c 'LOOP; exec sleep 1000'"
          |                    |                 |
          cmdline has "sleep 2"  cmdline is LOOP's  comm is "sleep": the loop is over

The benchmark polls ``/proc/<container pid>/cmdline`` and ``comm`` every few ms. While the
container sleeps it finds the engine's processes (for dockyard the daemon, the keeper if
any, and every process below them that is not in the container: the log collector, the
monitor, the fork server ...; for podman the container's conmon; for docker dockerd,
containerd and the container's shim). When the loop starts it reads their utime + stime
(``/proc/PID/stat``, which covers every thread, also threads that have ended); it reads them
again, and looks for new engine processes, every half second; the last reading is taken
:data:`SETTLE` after the loop ended, so the engine has stored the last lines. The CPU
between the first and the last reading, divided by the lines the engine stored (counted with
``logs`` afterwards), is the figure. Nothing is subtracted: the idle floor (the same
processes' CPU per second while the container sleeps after the loop) is measured right
after and reported as a note of its own.

**Latency.** The container writes its own ``CLOCK_REALTIME`` into each line (busybox
ash's ``$EPOCHREALTIME``, expanded as the ``echo`` runs: no extra process), after a pause
that lets ``logs -f -t`` attach. The benchmark reads ``logs -f -t``'s stdout through a pipe
and takes, for each line, the time it received the line (``time.time()``, the same clock)
minus the time in the line: write to the pipe in the container -> the engine -> the store
-> ``logs -f`` -> printed. That includes everything a user sees, not only the part after the
engine's own timestamp.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tests.bench import procs
from tests.bench.stats import NOT_AVAILABLE, Figure, Measure, fastest, interleaved, percentile, ratio
from tests.bench.tools import CliTool, Dockyard

#: The loop of issue 26: ``count`` lines, ``usleep micros`` between them.
LOOP = "i=0; while [ $i -lt {count} ]; do echo line $i; usleep {micros}; i=$((i+1)); done"
#: The latency loop: each line carries the container's CLOCK_REALTIME at its write.
LATENCY_LOOP = 'i=0; while [ $i -lt {count} ]; do echo "lat $i $EPOCHREALTIME"; usleep {micros}; i=$((i+1)); done'
#: Seconds the container sleeps before the loop (the engine's start-up work ends first; the
#: reader of ``logs -f`` attaches).
PAUSE = 2
#: Seconds after the loop's end until the last CPU reading (the engine stores the last lines).
SETTLE = 0.5
#: Seconds of the idle floor's reading.
FLOOR_SECONDS = 3.0
CPU_TARGET_MS = 30.0
LATENCY_TARGET_MS = 20.0
TICK = os.sysconf("SC_CLK_TCK")


# --- pure parts (tests/unit/test_bench_lines.py) -------------------------------------------


@dataclass(frozen=True)
class CpuReading:
    """One process's cumulative CPU: utime + stime in clock ticks, and its start time (in
    ticks after boot), which tells a reused pid from the process that had it before."""

    ticks: int
    started: int


def parse_stat(text: str) -> CpuReading:
    """utime + stime and starttime from the text of ``/proc/PID/stat``. The command name
    (field 2) may hold spaces and parentheses: the fields after it start at the last ')'."""
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, starttime 22.
    return CpuReading(ticks=int(fields[11]) + int(fields[12]), started=int(fields[19]))


@dataclass
class CpuMeter:
    """CPU spent by a changing set of processes between :meth:`start` and the last
    :meth:`read`. A process seen at the start counts from its reading then; one that
    appears later counts whole (it was started during the window); one that ended
    counts up to its last reading."""

    #: (pid, start time) -> label, ticks at the start (0 for later ones), ticks last read.
    labels: dict[tuple[int, int], str] = field(default_factory=dict)
    first: dict[tuple[int, int], int] = field(default_factory=dict)
    last: dict[tuple[int, int], int] = field(default_factory=dict)
    started: bool = False

    def start(self, readings: Mapping[int, tuple[str, CpuReading]]) -> None:
        self.labels.clear()
        self.first.clear()
        self.last.clear()
        self.started = True
        for pid, (label, reading) in readings.items():
            key = (pid, reading.started)
            self.labels[key] = label
            self.first[key] = self.last[key] = reading.ticks

    def read(self, readings: Mapping[int, tuple[str, CpuReading]]) -> None:
        for pid, (label, reading) in readings.items():
            key = (pid, reading.started)
            if key not in self.first:
                self.labels[key] = label
                self.first[key] = 0
            self.last[key] = max(self.last.get(key, 0), reading.ticks)

    def per_label(self) -> dict[str, int]:
        """label -> ticks spent in the window, summed over the processes with that label."""
        spent: dict[str, int] = {}
        for key, label in self.labels.items():
            spent[label] = spent.get(label, 0) + self.last[key] - self.first[key]
        return spent


LATENCY_LINE = re.compile(rb"lat (\d+) (\d+\.\d+)\s*$")


def line_latency(line: bytes, received: float) -> tuple[int, float] | None:
    """(line number, seconds from its write to ``received``) of one line of ``logs -f``
    output whose end is ``lat N EPOCHREALTIME``; None for any other line (a prefix such as
    ``-t``'s timestamp is allowed)."""
    found = LATENCY_LINE.search(line)
    if found is None:
        return None
    return int(found.group(1)), received - float(found.group(2))


def worker_label(cmdline: str, comm: str) -> str:
    """A short name for one of dockyard's processes: the worker's name (``-m workers
    logcollector ...`` -> logcollector), ``fork server``, ``keeper``, or its comm."""
    words = cmdline.split()
    if "workers" in words and words.index("workers") + 1 < len(words) and "-m" in words:
        return words[words.index("workers") + 1]
    if "forkserver.py" in cmdline:
        return "fork server"
    if "keeper.py" in cmdline:
        return "keeper"
    return comm


# --- reading /proc ------------------------------------------------------------------------


def read_cpu(pids: Mapping[int, str]) -> dict[int, tuple[str, CpuReading]]:
    """pid -> (label, reading) of the pids that still exist."""
    found = {}
    for pid, label in pids.items():
        try:
            with open(f"/proc/{pid}/stat") as stat:
                found[pid] = (label, parse_stat(stat.read()))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def engine_processes(tool: CliTool, container_id: str, container_pid: int) -> dict[int, str]:
    """pid -> label of the processes that do the engine's work for the container."""
    table = procs.process_table()
    if isinstance(tool, Dockyard):
        assert tool.process is not None
        inside = {container_pid} | procs.descendants(table, container_pid)
        roots = {tool.process.pid: "daemon"}
        keeper = tool.keeper_pid()
        if keeper is not None:
            roots[keeper] = "keeper"
        found = dict(roots)
        for root in roots:
            for pid in procs.descendants(table, root) - inside:
                if pid in table and pid not in roots:
                    found[pid] = worker_label(table[pid].cmdline, table[pid].comm)
        return found
    found = {pid: name for name, pid in tool.daemons().items()}
    for pid in tool.helpers([container_id]):
        found[pid] = table[pid].comm if pid in table else tool.helper_label
    return found


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return file.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None


def container_pid(tool: CliTool, name: str) -> int | None:
    """The container's main process, from ``inspect`` (docker's ``State.Pid``)."""
    if isinstance(tool, Dockyard):
        pids = tool.container_pids([name])
        return next(iter(pids.values()), None)
    result = tool.time([*tool.cli(), "inspect", "--format", "{{.State.Pid}}", name])
    return int(result.stdout.strip()) if result.ok and result.stdout.strip().isdigit() else None


# --- CPU per 1000 lines ---------------------------------------------------------------------


@dataclass
class CpuRun:
    lines: int                 # lines the engine stored (``logs`` afterwards)
    seconds: float             # the loop's wall time
    ticks: dict[str, int]      # label -> CPU ticks in the window
    floor: dict[str, float]    # label -> CPU seconds per second, the container idle after it
    warning: str = ""

    @property
    def cpu_ms(self) -> float:
        return sum(self.ticks.values()) * 1000 / TICK

    def per_thousand(self, ticks: float | None = None) -> float:
        return (self.cpu_ms if ticks is None else ticks * 1000 / TICK) * 1000 / self.lines


def _detached(tool: CliTool, name: str, script: str) -> list[str]:
    argv = tool.run_detached(("sh", "-c", script))
    argv[argv.index("base"):argv.index("base")] = ["--name", name]
    return argv


def cpu_run(tool: CliTool, name: str, count: int, micros: int, timeout: float = 300) -> CpuRun:
    """One run of the loop in a container named ``name``; see the module's docstring."""
    loop = LOOP.format(count=count, micros=micros)
    inner = f"{loop}; exec sleep 1000"
    script = f"sleep {PAUSE}; exec sh -c '{inner}'"
    started = tool.time(_detached(tool, name, script))
    if not started.ok:
        raise RuntimeError(started.failure(_detached(tool, name, script)[-4:]))
    container_id = started.stdout.split()[-1]
    pid = container_pid(tool, name)
    if pid is None:
        raise RuntimeError(f"cannot find the main process of container {name}")
    engine = engine_processes(tool, container_id, pid)
    meter = CpuMeter()
    deadline = time.monotonic() + timeout
    warning = ""
    cmdline = _read_text(f"/proc/{pid}/cmdline") or ""
    if f"sleep {PAUSE};" not in cmdline:
        warning = "the loop had started before the first reading"
    while f"sleep {PAUSE};" in (cmdline := _read_text(f"/proc/{pid}/cmdline") or ""):
        if time.monotonic() > deadline:
            raise RuntimeError(f"container {name} did not start its loop in {timeout:.0f} s")
        time.sleep(0.005)
    meter.start(read_cpu(engine))
    loop_start = time.monotonic()
    next_scan = loop_start + 0.5
    while (_read_text(f"/proc/{pid}/comm") or "sleep").strip() != "sleep":
        if time.monotonic() > deadline:
            raise RuntimeError(f"container {name} did not end its loop in {timeout:.0f} s")
        if time.monotonic() >= next_scan:
            engine.update(engine_processes(tool, container_id, pid))
            meter.read(read_cpu(engine))
            next_scan += 0.5
        time.sleep(0.005)
    loop_seconds = time.monotonic() - loop_start
    time.sleep(SETTLE)
    engine.update(engine_processes(tool, container_id, pid))
    meter.read(read_cpu(engine))
    # The idle floor: the same processes while the container sleeps.
    floor_meter = CpuMeter()
    floor_meter.start(read_cpu(engine))
    floor_start = time.monotonic()
    time.sleep(FLOOR_SECONDS)
    floor_meter.read(read_cpu(engine))
    floor_seconds = time.monotonic() - floor_start
    floor = {label: ticks / TICK / floor_seconds for label, ticks in floor_meter.per_label().items()}
    stored = procs.timed([*tool.cli(), "logs", name], env=tool.env, timeout=120)
    lines = sum(1 for line in stored.stdout.splitlines() if line.startswith("line "))
    if lines != count:
        warning = "; ".join(filter(None, [warning, f"{lines} of {count} lines stored"]))
    return CpuRun(lines=lines or count, seconds=loop_seconds, ticks=meter.per_label(), floor=floor, warning=warning)


def _cpu_note(name: str, run: CpuRun) -> str:
    rate = run.lines / run.seconds if run.seconds else 0
    parts = ", ".join(f"{label} {run.per_thousand(ticks):.1f}" for label, ticks in sorted(
        run.ticks.items(), key=lambda item: -item[1]))
    floor_total = sum(run.floor.values())
    floor_ms = floor_total * 1000 * (run.seconds + SETTLE) * 1000 / run.lines
    share = run.cpu_ms / 1000 / (run.seconds + SETTLE) * 100
    return (f"{name}: {run.lines} lines in {run.seconds:.1f} s ({rate:.0f} lines/s); CPU {run.cpu_ms:.0f} ms = "
            f"{share:.1f}% of one core at that rate, {run.per_thousand() / 10:.1f}% of one core at 1000 lines/s; "
            f"per 1000 lines by process (ms): {parts}; idle floor (container asleep after the loop, "
            f"{FLOOR_SECONDS:.0f} s, not subtracted): {floor_total * 1000:.1f} ms/s, which over this window is "
            f"{floor_ms:.1f} ms per 1000 lines" + (f"; warning: {run.warning}" if run.warning else ""))


# --- logs -f latency ----------------------------------------------------------------------


def latency_run(tool: CliTool, name: str, count: int, micros: int, timeout: float = 300) -> list[float]:
    """Seconds from each line's write to its receipt through ``logs -f -t``, in line order
    (a line that never arrived is missing from the list)."""
    script = f"sleep {PAUSE}; {LATENCY_LOOP.format(count=count, micros=micros)}"
    run = _detached(tool, name, script)
    started = tool.time(run)
    if not started.ok:
        raise RuntimeError(started.failure(run[-4:]))
    reader = subprocess.Popen([*tool.cli(), "logs", "-f", "-t", name], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=tool.env,
                              start_new_session=True)
    latencies: dict[int, float] = {}
    pending = b""
    deadline = time.monotonic() + timeout
    fd = reader.stdout.fileno()
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                if len(latencies) >= count:
                    break
                continue
            chunk = os.read(fd, 65536)
            received = time.time()
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                found = line_latency(line, received)
                if found is not None:
                    latencies.setdefault(found[0], found[1])
            if len(latencies) >= count:
                break
    finally:
        procs.kill_group(reader.pid)
        reader.wait()
        reader.stdout.close()
    return [latencies[index] for index in sorted(latencies)]


# --- the step -------------------------------------------------------------------------------


def lines(bench) -> list[Figure]:
    """``--only lines``: CPU per 1000 lines and ``logs -f`` latency (issue 26)."""
    params = bench.params
    names = ["dockyard", "podman", "docker"]
    live = [n for n in names if n in bench.tools]
    cpu = {n: bench.measure_for(n, "ms") for n in names}
    runs: dict[str, list[CpuRun]] = {n: [] for n in names}
    bench.log(f"lines: {params.lines} lines, usleep 1000, CPU of the engines x{params.lines_reps} ({', '.join(live)})")
    for repetition, name in interleaved(live, params.lines_reps):
        if bench.left() <= 0:
            cpu[name].note = cpu[name].note or f"cut short by the time budget at repetition {repetition}"
            break
        tool = bench.tools[name]
        container = f"dockyard-bench-lines-{repetition}"
        try:
            run = cpu_run(tool, container, params.lines, 1000)
            runs[name].append(run)
            cpu[name].add(run.per_thousand())
        except (RuntimeError, OSError) as exc:
            cpu[name].add(None)
            cpu[name].note = cpu[name].note or f"{exc}"
        finally:
            tool.time(tool.remove([container]))
    loop = LOOP.format(count=params.lines, micros=1000)
    figure = Figure("lines_cpu", "CPU per 1000 lines at ~1000 lines/s (`usleep 1000` loop: the rate reached "
                    "is in the notes), the engine's processes",
                    f"<= {CPU_TARGET_MS:.0f} ms (podman's level; issue 26)", "ms",
                    anchors=[cpu["podman"], cpu["docker"]], dockyard=[cpu["dockyard"]],
                    commands={n: f"{' '.join(_detached(bench.tools[n], 'N', 'SCRIPT')[:-1])} "
                                 f"\"sleep {PAUSE}; exec sh -c '{loop}; exec sleep 1000'\"" for n in live})
    best = fastest(figure.anchors)
    figure.ratio = ratio(cpu["dockyard"].median, best.median if best else None)
    figure.ratio_basis = f"dockyard / {best.tool}" if best else ""
    figure.met = None if cpu["dockyard"].median is None else cpu["dockyard"].median <= CPU_TARGET_MS
    figure.notes.append("utime + stime (/proc/PID/stat, all threads) from the loop's start to 0.5 s after its end, "
                        "divided by the lines stored: dockyard = daemon + every process below it outside the "
                        "container (workers, fork server) + keeper if any; podman = the container's conmon; "
                        "docker = dockerd + containerd + the container's containerd-shim. The CLIs are not counted")
    for name in live:
        if runs[name]:
            each = ", ".join(f"{run.per_thousand():.0f}" for run in runs[name])
            figure.notes.append(f"{_cpu_note(name, runs[name][-1])} (the last of {len(runs[name])} repetitions; "
                                f"per 1000 lines in each: {each} ms)")
    return [figure, *latency_figures(bench)]


def latency_figures(bench) -> list[Figure]:
    params = bench.params
    names = ["dockyard", "podman", "docker"]
    live = [n for n in names if n in bench.tools]
    figures = []
    for key, micros, count in (("logs_latency_1ms", 1000, params.latency_lines),
                               ("logs_latency_20ms", 20000, max(50, params.latency_lines // 4))):
        p50 = {n: bench.measure_for(n, "ms") for n in names}
        p99 = {n: bench.measure_for(n, "ms") for n in names}
        notes = []
        bench.log(f"lines: logs -f -t latency, {count} lines, usleep {micros} ({', '.join(live)})")
        for name in live:
            p50[name].tool, p99[name].tool = f"{name} p50", f"{name} p99"
            if bench.left() <= 0:
                p50[name].status = p99[name].status = "skipped: time budget"
                continue
            tool = bench.tools[name]
            container = f"dockyard-bench-latency-{micros}"
            try:
                latencies = latency_run(tool, container, count, micros)
            except (RuntimeError, OSError) as exc:
                p50[name].status = p99[name].status = f"{NOT_AVAILABLE}: {exc}"
                continue
            finally:
                tool.time(tool.remove([container]))
            if not latencies:
                p50[name].add(None)
                p99[name].add(None)
                p99[name].note = "no line arrived"
                continue
            millis = [value * 1000 for value in latencies]
            p50[name].add(percentile(millis, 50))
            p99[name].add(percentile(millis, 99))
            notes.append(f"{name}: {len(millis)} of {count} lines received; max {max(millis):.1f} ms")
        figure = Figure(key, f"`logs -f -t` latency, lines ~{micros // 1000} ms apart (p50, p99)",
                        f"p99 <= {LATENCY_TARGET_MS:.0f} ms (issue 26)", "ms",
                        anchors=[p99["podman"], p50["podman"], p99["docker"], p50["docker"]],
                        dockyard=[p99["dockyard"], p50["dockyard"]],
                        commands={n: f"{' '.join(_detached(bench.tools[n], 'N', 'SCRIPT')[:-1])} \"sleep {PAUSE}; "
                                     f"{LATENCY_LOOP.format(count=count, micros=micros)}\", then "
                                     f"{' '.join([*bench.tools[n].cli(), 'logs', '-f', '-t', 'N'])}" for n in live})
        best = fastest([p99["podman"], p99["docker"]])
        figure.ratio = ratio(p99["dockyard"].median, best.median if best else None)
        figure.ratio_basis = f"dockyard p99 / {best.tool}" if best else ""
        figure.met = None if p99["dockyard"].median is None else p99["dockyard"].median <= LATENCY_TARGET_MS
        figure.notes.append("each line carries the container's CLOCK_REALTIME at its write ($EPOCHREALTIME); the "
                            "latency is the time the benchmark read the line from `logs -f -t`'s stdout minus it: "
                            "write -> engine -> store -> logs -f -> printed. usleep forks, so lines come a little "
                            "further apart than the figure says")
        figure.notes.extend(notes)
        figures.append(figure)
    return figures
