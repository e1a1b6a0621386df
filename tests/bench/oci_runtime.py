"""The ``oci_runtime`` step (issue 23): ``dockyard-runtime run`` of the `true` bundle against
``runc run`` and ``crun run`` of the same bundle, interleaved, each timed by the same helper
process (:class:`tests.bench.tools.OciTimer`). Target: at most 1.0x runc. The CPU time of
each run (less sensitive to a shared machine's load) is reported in a note beside it."""

from __future__ import annotations

import os
import shlex
import statistics

from tests.bench.stats import NOT_AVAILABLE, Figure, Measure, interleaved, ratio
from tests.bench.tools import REPO, BenchError, OciTimer

RUNTIMES = ("dockyard-runtime", "runc", "crun")


def oci_runtime_run(bench) -> list[Figure]:
    dockyard = bench.tools.get("dockyard")
    venv_bin = os.path.dirname(dockyard.executable) if dockyard is not None else str(REPO / ".venv" / "bin")
    os.environ["PATH"] = venv_bin + os.pathsep + os.environ["PATH"]  # the helper runs it by name
    measures = {name: Measure(tool=f"{name} run", unit="s") for name in RUNTIMES}
    figure = Figure("oci_runtime", "OCI runtime run, start-to-exit of `true`", "<= 1.0x runc", "s",
                    anchors=[measures["runc"], measures["crun"]], dockyard=[measures["dockyard-runtime"]])
    timers: dict[str, OciTimer] = {}
    try:
        for name in RUNTIMES:
            timer = OciTimer(name, bench.workspace)
            try:
                timers[name] = timer.__enter__()
                figure.commands[f"{name} run"] = shlex.join(timer.argv("ID"))
                measures[name].note = timer.note
            except BenchError as exc:
                measures[name].status = f"{NOT_AVAILABLE}: {exc}"
        reps = bench.params.api_reps
        bench.log(f"oci_runtime: {', '.join(timers)} run x{reps}")
        for repetition, name in interleaved(list(timers), reps):
            if bench.left() <= 0:
                measures[name].note = f"cut short by the time budget at repetition {repetition}"
                break
            measures[name].add(timers[name].run_once())
    finally:
        for timer in timers.values():
            timer.__exit__(None, None, None)
    cpu = {name: statistics.median(timer.cpu_samples) for name, timer in timers.items() if timer.cpu_samples}
    if cpu:
        figure.notes.append("CPU time (user+sys of the command and its reaped children), medians: "
                            + ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in cpu.items())
                            + (f"; dockyard-runtime / runc {cpu['dockyard-runtime'] / cpu['runc']:.2f}x"
                               if cpu.get("runc") and "dockyard-runtime" in cpu else ""))
    figure.ratio = ratio(measures["dockyard-runtime"].median, measures["runc"].median)
    figure.ratio_basis = "dockyard-runtime / runc"
    figure.met = None if figure.ratio is None else figure.ratio <= 1.0
    return [figure]
