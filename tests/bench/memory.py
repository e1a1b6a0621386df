"""Memory per idle container (figures 5 and 6, issue 26): what a tool's processes hold for
``count`` idle containers, split into the parts that grow with the count and the fixed ones.

* **daemon growth**: the PSS growth of the long-lived daemons (dockyard's daemon and keeper,
  dockerd and containerd) over the containers; issue 26's target is <= 0.05 MB per idle
  container for dockyard's daemon.
* **fixed helpers**: processes that existed before the containers and are not a daemon
  (dockyard's workers: the log collector, the monitor, the fork server). Their PSS is a
  fixed cost, reported in MB in all; only their growth is a cost per container.
* **per-container helpers**: processes that came with the containers (conmon, shims).

The all-in row (issue 9's "memory per idle container", target <= 0.2 MB) still divides
everything, the fixed helpers included, by the count, as it always did; its note says how
much of it is fixed. The daemon-growth row stands beside it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.bench import procs
from tests.bench.lines import worker_label
from tests.bench.stats import NOT_AVAILABLE, Figure, Measure, fastest, ratio
from tests.bench.tools import BenchError, CliTool

DAEMON_TARGET_MB = 0.05


@dataclass
class Baseline:
    """PSS (MB) before the containers: the daemons by name, the other helpers by pid."""

    daemons: dict[str, float]
    fixed: dict[int, tuple[str, float]]


def baseline(tool: CliTool) -> Baseline:
    daemons = {name: (procs.pss_kib(pid) or 0) / 1024 for name, pid in tool.daemons().items()}
    table = procs.process_table()
    fixed = {}
    for pid in tool.helpers([]):
        label = worker_label(table[pid].cmdline, table[pid].comm) if pid in table else str(pid)
        fixed[pid] = (label, (procs.pss_kib(pid) or 0) / 1024)
    return Baseline(daemons, fixed)


@dataclass
class Reading:
    """What ``count`` idle containers cost, in MB in all (divide by ``count`` for a row)."""

    count: int
    daemon_growth: dict[str, float]
    #: The helpers that were there before: label -> (PSS before, PSS now).
    fixed: dict[str, tuple[float, float]] = field(default_factory=dict)
    helpers_mb: float = 0.0     # processes that came with the containers
    helpers: int = 0
    helper_label: str = "helpers"
    spools_mb: float | None = None  # dockyard's output spools (memfds in no PSS)

    @property
    def fixed_before(self) -> float:
        return sum(before for before, _ in self.fixed.values())

    @property
    def fixed_growth(self) -> float:
        return sum(now - before for before, now in self.fixed.values())

    def per_container(self) -> float:
        """The all-in figure: daemon growth + every helper's PSS (the fixed ones whole) +
        spools, per container."""
        fixed_now = self.fixed_before + self.fixed_growth
        return (sum(self.daemon_growth.values()) + fixed_now + self.helpers_mb + (self.spools_mb or 0)) / self.count

    def daemon_per_container(self) -> float:
        return sum(self.daemon_growth.values()) / self.count

    def breakdown(self) -> str:
        """The parts of :meth:`per_container`, each per container."""
        count = self.count
        parts = []
        if self.fixed:
            parts.append(f"fixed helpers {self.fixed_before / count:.3f} MB ({self.fixed_before:.1f} MB in all "
                         f"divided by {count}) + their growth {self.fixed_growth / count:.3f} MB")
        if self.helpers or not self.fixed:
            parts.append(f"{self.helper_label} {self.helpers_mb / count:.3f} MB ({self.helpers} processes)")
        parts += [f"{name} growth {growth / count:.3f} MB" for name, growth in self.daemon_growth.items()]
        if self.spools_mb is not None:
            parts.append(f"output spools {self.spools_mb / count:.3f} MB")
        return ", ".join(parts)

    def fixed_note(self) -> str:
        """The fixed helpers in MB in all (empty when there are none)."""
        if not self.fixed:
            return ""
        each = ", ".join(f"{label} {now:.1f}" for label, (_, now) in sorted(self.fixed.items()))
        return (f"fixed helpers, there before the containers, MB in all (not per container): {each}; "
                f"{self.fixed_before:.1f} MB before, {self.fixed_growth:+.2f} MB with {self.count} containers")


def reading(tool: CliTool, ids: Sequence[str], before: Baseline) -> Reading:
    """The memory of ``ids`` idle containers against ``before``."""
    result = Reading(len(ids), {}, helper_label=tool.helper_label or "helpers")
    for pid in tool.helpers(ids):
        pss = (procs.pss_kib(pid) or 0) / 1024
        if pid in before.fixed:
            label, then = before.fixed[pid]
            old_before, old_now = result.fixed.get(label, (0.0, 0.0))
            result.fixed[label] = (old_before + then, old_now + pss)
        else:
            result.helpers_mb += pss
            result.helpers += 1
    for name, pid in tool.daemons().items():
        result.daemon_growth[name] = (procs.pss_kib(pid) or 0) / 1024 - before.daemons.get(name, 0.0)
    held = getattr(tool, "held_mb", None)
    if held is not None:
        result.spools_mb = held()
    return result


def daemon_figure(key: str, title: str, measures: dict[str, Measure]) -> Figure:
    """The daemon-growth row beside an all-in memory row (issue 26)."""
    podman = measures["podman"]
    if podman.status == "ok":
        podman.status = f"{NOT_AVAILABLE}: podman has no daemon (conmon, per container, is in the all-in row)"
    figure = Figure(key, title, f"dockyard daemon <= {DAEMON_TARGET_MB} MB per container (issue 26)", "MB",
                    anchors=[measures["docker"], podman], dockyard=[measures["dockyard"]])
    best = fastest(figure.anchors)
    figure.ratio = ratio(measures["dockyard"].median, best.median if best else None)
    figure.ratio_basis = f"dockyard / {best.tool}" if best else ""
    figure.met = None if measures["dockyard"].median is None else measures["dockyard"].median <= DAEMON_TARGET_MB
    figure.notes.append("PSS growth of the daemons over the idle containers, per container: dockyard's daemon "
                        "(and keeper if any); docker's dockerd + containerd. Helper processes are not in this row")
    return figure


def memory(bench) -> list[Figure]:
    """``--only memory``: the memory rows alone, ``concurrent`` idle containers per tool,
    started 4 at a time, one reading each (added to every ``--only`` run; issue 26)."""
    from tests.bench.figures import SLEEP, _all_running, _start_all  # figures imports this module

    count = bench.params.concurrent
    names = ["dockyard", "podman", "docker"]
    live = [n for n in names if n in bench.tools]
    total = {n: bench.measure_for(n, "MB") for n in names}
    daemon = {n: bench.measure_for(n, "MB") for n in names}
    notes: list[str] = []
    bench.log(f"memory: {count} idle containers per tool, one reading ({', '.join(live)})")
    for name in live:
        tool = bench.tools[name]
        before = baseline(tool)
        _, ids, error = _start_all(tool, count, workers=4)
        try:
            if len(ids) < count or not _all_running(tool, ids):
                total[name].add(None)
                daemon[name].add(None)
                total[name].note = error or f"only {len(ids)} of {count} started and running"
                continue
            time.sleep(1.0)  # as in figure 5: helpers finish their start-up allocations
            try:
                found = reading(tool, ids, before)
            except BenchError as exc:
                total[name].add(None)
                total[name].note = str(exc)
                continue
            total[name].add(found.per_container())
            if found.daemon_growth:  # podman has no daemon: no sample, the row says so
                daemon[name].add(found.daemon_per_container())
            total[name].note = found.breakdown()
            if found.fixed_note():
                notes.append(f"{name}: {found.fixed_note()}")
        finally:
            if ids:
                tool.time(tool.remove(ids), timeout=300)
    return all_in_figures("memory", f"memory per idle container ({count} `sleep`), PSS", total, daemon, count,
                          notes, commands={n: " ".join(bench.tools[n].run_detached(SLEEP)) for n in live})


def all_in_figures(key: str, title: str, total: dict[str, Measure], daemon: dict[str, Measure], count: int,
                   fixed_notes: list[str], commands: dict[str, str] | None = None) -> list[Figure]:
    """The all-in row (issue 9's target) and the daemon-growth row (issue 26's)."""
    anchors = [total["podman"], total["docker"]]
    best = fastest(anchors)
    figure = Figure(key, title, "<= 0.2 MB", "MB", anchors=anchors, dockyard=[total["dockyard"]],
                    commands=commands or {})
    figure.ratio = ratio(total["dockyard"].median, best.median if best else None)
    figure.ratio_basis = f"dockyard / {best.tool}" if best else ""
    figure.met = None if total["dockyard"].median is None else total["dockyard"].median <= 0.2
    figure.notes.append("podman: conmon PSS per container; docker: containerd-shim PSS + dockerd and containerd "
                        "growth per container; dockyard: daemon growth + its helpers' PSS, the fixed ones "
                        "(workers there before any container) divided by the count too; see the daemon row below")
    figure.notes.extend(fixed_notes)
    return [figure, daemon_figure(f"{key}_daemon", f"daemon growth per idle container at {count}, PSS",
                                  daemon)]
