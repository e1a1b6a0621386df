"""Entry point of the benchmark suite (issue 9): ``python -m tests.bench.run [--quick]``.

Use ``scripts/bench.sh`` (it installs the anchors and matplotlib first). Needs root. Prints
the table, writes bench-results/results.json, docs/benchmarks.md and docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shlex
import signal
import sys
import time
import traceback
from pathlib import Path

from tests.bench import (build, busload, chart, engine_api, figures, lines, liverestore, memory, networks, oci_runtime, pgbench,
                         ports, registry_pull, report, store, volumes)
from tests.bench.stats import NOT_AVAILABLE, Figure
from tests.bench.tools import REPO, BenchError, Docker, Dockyard, HostState, Podman, Workspace, versions

#: --only names -> the functions that measure them, in run order.
STEPS = {
    "run_rm": figures.run_rm,
    "api": figures.api_vs_runc,
    "bus": busload.bus_events,
    "concurrent": figures.concurrent_and_memory,
    "memory": memory.memory,
    "many": figures.many_running,
    "logs": figures.logs,
    "lines": lines.lines,
    "registry": registry_pull.registry_pull,
    "ports": ports.published_ports,
    "pgbench": pgbench.pgbench_ports,
    "oci_runtime": oci_runtime.oci_runtime_run,
    "networks": networks.user_networks,
    "engine_api": engine_api.engine_api,
    "volumes": volumes.volumes,
    "live_restore": liverestore.live_restore,
    "build": build.build,
    "store": store.store_disk,
}
#: Table order: the rows of issue 9 first, then the extra figures.
ORDER = ["run_rm_none", "run_rm_default", "cli_version", "api", "api_bridge", "memory", "memory_daemon", "memory_many",
         "memory_many_daemon", "bus", "bus_3", "bus_10", "bus_filter", "many_ps", "many_start",
         "concurrent_start", "concurrent_remove", "logs", "lines_cpu", "logs_latency_1ms", "logs_latency_20ms", "registry_pull", "ports_bulk", "ports_conns", "pgbench_tps", "oci_runtime",
         "oci_runtime_podman",
         "dns_latency", "network_run", "engine_api_run_rm", "engine_api_list", "volume_run_rm", "volume_commit",
         "restore_memory", "restore_time", "restore_throughput",
         "build_cached", "build_uncached", "build_push", "build_push_zstd", "store_disk"]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2-minute smoke run: few repetitions, few containers")
    parser.add_argument("--reps", type=int, help="repetitions of run --rm per tool (default 20)")
    parser.add_argument("--many", type=int, help="containers running at once for ps / one more (default 500)")
    parser.add_argument("--concurrent", type=int, help="containers started at once (default 50)")
    parser.add_argument("--no-many-anchors", action="store_true", help="fill only dockyard to --many")
    parser.add_argument("--budget", type=float, help="seconds for the whole run; later figures are skipped (default 900)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(STEPS)}; the memory rows are "
                        "measured too (step memory, unless concurrent or many is chosen) so every run keeps them")
    parser.add_argument("--no-memory", action="store_true",
                        help="with --only: leave the memory rows out (the run is then reported as partial)")
    parser.add_argument("--venv", type=Path, default=REPO / ".venv",
                        help="the virtualenv whose bin/dockyard is measured (default .venv)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results", help="where results.json goes")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--chart", type=Path, default=REPO / "docs" / "benchmarks.png")
    parser.add_argument("--no-doc", action="store_true", help="write results.json only (no docs/ changes)")
    return parser.parse_args(argv)


def params_from(args: argparse.Namespace) -> figures.Params:
    params = figures.Params.quick() if args.quick else figures.Params()
    for name in ("reps", "many", "concurrent", "budget"):
        if getattr(args, name) is not None:
            setattr(params, name, getattr(args, name))
    if args.no_many_anchors:
        params.many_anchors = False
    return params


#: The steps that measure the memory rows; a run without any of them is partial.
MEMORY_STEPS = ("concurrent", "many", "memory")
#: The rows that every run must have to be complete (issue 26: keep the memory rows).
MEMORY_ROWS = ("memory", "memory_daemon")


def chosen_steps(only: str | None, no_memory: bool = False) -> list[str]:
    """The steps to run, in the order given: every step but ``memory`` (whose rows
    ``concurrent`` measures) when ``only`` is None; else the named ones, with ``memory``
    added first unless a memory step is among them or ``no_memory``."""
    if not only:
        return [step for step in STEPS if step != "memory"]
    steps = [step.strip() for step in only.split(",") if step.strip()]
    unknown = [step for step in steps if step not in STEPS]
    if unknown or not steps:
        raise ValueError(f"unknown --only {', '.join(unknown) or repr(only)}; choose from {', '.join(STEPS)}")
    if not no_memory and not any(step in MEMORY_STEPS for step in steps):
        steps.insert(0, "memory")
    return steps


def partial_note(only: str | None, keys: list[str]) -> str:
    """What a run left out, for the report: empty for a full run with its memory rows."""
    missing = [key for key in MEMORY_ROWS if key not in keys]
    parts = []
    if only:
        parts.append(f"--only {only}: only these steps ran")
    if missing:
        parts.append(f"the memory rows ({', '.join(missing)}) were not measured")
    return "; ".join(parts)


def _terminate(signum, frame):  # SIGTERM runs the clean-up like Ctrl-C does
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("bench: needs root (containers, cgroups, a private dockerd)", file=sys.stderr)
        return 2
    params = params_from(args)
    try:
        steps = chosen_steps(args.only, args.no_memory)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    clock = time.monotonic()
    results: list[Figure] = []
    cleanup: list[str] = []
    log = lambda message: print(f"bench [{time.monotonic() - clock:5.0f} s] {message}", file=sys.stderr, flush=True)

    host = HostState()
    tool_versions = versions()  # before restore(): `crun --version` creates /run/crun
    interrupted = False
    workspace_path = "$BENCH"
    daemon = None
    try:
        with contextlib.ExitStack() as stack:
            workspace = stack.enter_context(Workspace())
            workspace_path = str(workspace.path)
            bench = figures.Bench(workspace=workspace, params=params, deadline=clock + params.budget, log=log)
            for make in (lambda: Dockyard(workspace, args.venv), lambda: Podman(workspace), lambda: Docker(workspace)):
                tool = make()
                log(f"setting up {tool.name}")
                try:
                    bench.tools[tool.name] = stack.enter_context(tool)
                except (BenchError, OSError) as exc:
                    bench.missing[tool.name] = f"{NOT_AVAILABLE}: {exc}"
                    log(f"  {tool.name} {bench.missing[tool.name]}")
            daemon = bench.tools.get("dockyard")
            for step in steps:
                if bench.left() <= 0:
                    log(f"skipping {step}: time budget spent")
                    continue
                try:
                    results.extend(STEPS[step](bench))
                except KeyboardInterrupt:
                    raise
                except Exception as exc:
                    traceback.print_exc()
                    results.append(figures.not_available(step, step, "-", "s", f"bench error {type(exc).__name__}: {exc}"))
            log("cleaning up")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if isinstance(daemon, Dockyard) and daemon.process is not None:
            cleanup.append(f"dockyard daemon stopped by SIGTERM: exit code {daemon.exit_code}"
                           + ("" if daemon.exit_code == 0 else " (expected 0)"))
        cleanup.extend(host.restore())
    if interrupted:
        print("bench: interrupted; cleaned up" + "".join(f"\n  {c}" for c in cleanup), file=sys.stderr)
        return 130

    results.sort(key=lambda f: ORDER.index(f.key) if f.key in ORDER else len(ORDER))
    partial = partial_note(args.only, [f.key for f in results])
    for figure in results:  # commands name the workspace as $BENCH, not a temp dir name
        figure.commands = {n: c.replace(workspace_path, "$BENCH") for n, c in figure.commands.items()}
    payload = {
        "started": started.isoformat(),
        "duration_seconds": time.monotonic() - clock,
        "command": shlex.join(["scripts/bench.sh", *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick,
        "params": vars(params),
        "machine": report.machine(),
        "versions": tool_versions,
        "figures": [f.as_map() for f in results],
        "cleanup": cleanup,
        "partial": partial,
    }
    report.write_json(args.out / "results.json", payload)
    chart_path = None
    if not args.no_doc:
        drawn = chart.draw(results, args.chart, subtitle=f"{payload['machine']['nproc']} CPUs, {started.date()}")
        chart_path = os.path.relpath(args.chart, args.doc.parent) if drawn else None
        if not drawn:
            print("bench: matplotlib is missing: no chart (scripts/bench.sh installs it)", file=sys.stderr)
        report.write_markdown(args.doc, payload, results, chart_path)
    if partial:
        print(f"PARTIAL RUN: {partial}\n")
    print(report.table(results))
    print(f"\nresults: {args.out / 'results.json'}" + ("" if args.no_doc else f", {args.doc}, {args.chart}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
