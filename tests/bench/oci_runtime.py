"""The ``oci_runtime`` step (issue 23), two rows:

* ``oci_runtime``: ``dockyard-runtime run`` of the `true` bundle against ``runc run`` and
  ``crun run`` of the same bundle, interleaved, each timed by the same helper process
  (:class:`tests.bench.tools.OciTimer`). Target: at most 1.0x runc. The CPU time of each run
  (less sensitive to a shared machine's load) is reported in a note beside it. Each run
  starts after a pause (``QUIET_SECONDS``), so that none inherits another's warm kernel
  state.
* ``oci_runtime_podman``: ``podman run --rm`` of the imported `base` image with
  ``--runtime dockyard-runtime`` against ``--runtime runc``, the same podman storage,
  interleaved. Target: at most 1.0x runc.
"""

from __future__ import annotations

import os
import shlex
import statistics
import time

from tests.bench.stats import NOT_AVAILABLE, Figure, Measure, interleaved, ratio
from tests.bench import procs
from tests.bench.tools import REPO, BenchError, OciTimer

RUNTIMES = ("dockyard-runtime", "runc", "crun")
#: A pause before each timed run, longer than an RCU grace period (5-25 ms here): a v1
#: ``cgroup.procs`` write right after another runtime's skips the grace period the first
#: one waited for (runc measured 27 ms right after such a write, 38 ms after a quiet 30 ms,
#: in one run of each), so without it a runtime's figure depends on which one ran before
#: it. Each run starts on a quiet kernel, as a lone ``run`` does.
QUIET_SECONDS = 0.05


def oci_runtime_run(bench) -> list[Figure]:
    dockyard = bench.tools.get("dockyard")
    venv_bin = os.path.dirname(dockyard.executable) if dockyard is not None else str(REPO / ".venv" / "bin")
    os.environ["PATH"] = venv_bin + os.pathsep + os.environ["PATH"]  # the helper runs it by name
    return [_bundle_run(bench), _podman_run(bench, os.path.join(venv_bin, "dockyard-runtime"))]


def _bundle_run(bench) -> Figure:
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
            time.sleep(QUIET_SECONDS)
            measures[name].add(timers[name].run_once())
    finally:
        for timer in timers.values():
            timer.__exit__(None, None, None)
    figure.notes.append(f"each run starts {QUIET_SECONDS * 1000:.0f} ms after the previous one ended (longer than a "
                        "grace period: no run finds the kernel's cgroup lock warmed by the one before)")
    cpu = {name: statistics.median(timer.cpu_samples) for name, timer in timers.items() if timer.cpu_samples}
    if cpu:
        figure.notes.append("CPU time (user+sys of the command and its reaped children), medians: "
                            + ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in cpu.items())
                            + (f"; dockyard-runtime / runc {cpu['dockyard-runtime'] / cpu['runc']:.2f}x"
                               if cpu.get("runc") and "dockyard-runtime" in cpu else ""))
    figure.ratio = ratio(measures["dockyard-runtime"].median, measures["runc"].median)
    figure.ratio_basis = "dockyard-runtime / runc"
    figure.met = None if figure.ratio is None else figure.ratio <= 1.0
    return figure


def _podman_run(bench, runtime_path: str) -> Figure:
    """``podman run --rm --network none base true`` through each runtime, interleaved."""
    names = {"dockyard-runtime": runtime_path, "runc": "runc"}
    measures = {name: Measure(tool=f"podman --runtime {name}", unit="s") for name in names}
    figure = Figure("oci_runtime_podman", "`podman run --rm base true` through the OCI runtime", "<= 1.0x runc", "s",
                    anchors=[measures["runc"]], dockyard=[measures["dockyard-runtime"]])
    podman = bench.tools.get("podman")
    if podman is None:
        for measure in measures.values():
            measure.status = bench.missing.get("podman", f"{NOT_AVAILABLE}: podman not set up")
        return figure
    commands = {}
    for name, path in names.items():
        argv = podman.run_rm(network_none=True)
        argv[argv.index("--runtime") + 1] = path
        commands[name] = argv
        figure.commands[f"podman --runtime {name}"] = shlex.join(argv)
    live = []
    for name, argv in commands.items():
        warm = procs.timed(argv, env=podman.env, timeout=60)
        if warm.ok:
            live.append(name)
        else:
            measures[name].status = f"{NOT_AVAILABLE}: {warm.failure(argv[:1] + argv[-4:])}"
    reps = bench.params.reps
    bench.log(f"oci_runtime_podman: podman run --rm through {', '.join(live)} x{reps}")
    for repetition, name in interleaved(live, reps):
        if bench.left() <= 0:
            measures[name].note = f"cut short by the time budget at repetition {repetition}"
            break
        result = procs.timed(commands[name], env=podman.env, timeout=60)
        measures[name].add(result.seconds if result.ok else None)
        if not result.ok and not measures[name].note:
            measures[name].note = result.failure(commands[name][-4:])
    figure.ratio = ratio(measures["dockyard-runtime"].median, measures["runc"].median)
    figure.ratio_basis = "dockyard-runtime / runc"
    figure.met = None if figure.ratio is None else figure.ratio <= 1.0
    return figure
