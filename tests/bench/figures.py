"""One function per figure of issue 9. Each takes the :class:`Bench` (tools, parameters,
time budget) and returns :class:`~tests.bench.stats.Figure` rows; a tool that cannot be
measured leaves a measure whose status says "not available: <reason>" and the rest of the
figure still runs."""

from __future__ import annotations

import json
import os
import statistics
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tests.bench import memory as memory_rows
from tests.bench import procs
from tests.bench.stats import NOT_AVAILABLE, PENDING, Figure, Measure, describe, fastest, interleaved, ratio
from tests.bench.tools import BENCH_CGROUP_PREFIX, BenchError, CliTool, Dockyard, OciTimer, Workspace, free_subnet

SLEEP = ("sleep", "1000")


@dataclass
class Params:
    """Repetitions and sizes; :meth:`quick` is the 2-minute smoke run."""

    reps: int = 20                # run --rm true, per tool
    warmup: int = 2               # untimed runs per tool before the timed ones
    api_reps: int = 30            # API vs runc/crun
    concurrent: int = 50          # containers started at once (and idle, for memory)
    concurrent_reps: int = 3
    many: int = 500               # containers running at once for ps / one more start
    many_anchors: bool = True     # also fill podman and docker to `many`
    many_fill_seconds: float = 150.0  # per tool: stop filling after this and report the count
    many_samples: int = 10        # ps runs; one-more starts are half that
    bus_events: int = 200_000
    bus_reps: int = 3
    logs_mb: int = 200
    logs_reps: int = 3
    restore_reps: int = 6         # live restore: 200 MB with and without the keeper, alternating
    ports_mb: int = 300           # the bulk download through a published port
    ports_reps: int = 3
    ports_seconds: float = 2.0    # each run of short connections
    lines: int = 5000             # issue 26: lines of the CPU loop (one echo, usleep 1000)
    lines_reps: int = 2
    latency_lines: int = 2000     # lines of the logs -f latency loop ~1 ms apart (a quarter ~20 ms apart)
    budget: float = 900.0         # seconds for the whole suite; figures past it are skipped

    @classmethod
    def quick(cls) -> Params:
        return cls(reps=5, warmup=1, api_reps=8, concurrent=10, concurrent_reps=1, many=40,
                   many_anchors=False, many_fill_seconds=30, many_samples=4, bus_events=20_000,
                   bus_reps=1, logs_mb=20, logs_reps=1, restore_reps=1, ports_mb=50, ports_reps=1, ports_seconds=1.0, lines=1000,
                   lines_reps=1, latency_lines=400, budget=150)


@dataclass
class Bench:
    workspace: Workspace
    params: Params
    #: Available CLIs by name ("dockyard", "podman", "docker") ...
    tools: dict[str, CliTool] = field(default_factory=dict)
    #: ... and why the others are not: name -> "not available: <reason>".
    missing: dict[str, str] = field(default_factory=dict)
    deadline: float = 0.0
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def measure_for(self, name: str, unit: str) -> Measure:
        measure = Measure(tool=name, unit=unit)
        if name not in self.tools:
            measure.status = self.missing.get(name, f"{NOT_AVAILABLE}: not set up")
        return measure


def _commands(argvs: dict[str, Sequence[str]]) -> dict[str, str]:
    return {name: shlex.join(argv) for name, argv in argvs.items()}


def _latency_series(bench: Bench, commands: dict[str, list[str]], measures: dict[str, Measure],
                    reps: int, timeout: float = 60) -> None:
    """Interleaved timings of one command per tool. A tool whose warm-up fails is marked
    not available with the command's error; later failures are counted per sample."""
    live = []
    for name, argv in commands.items():
        ok = True
        for _ in range(bench.params.warmup):
            result = procs.timed(argv, env=bench.tools[name].env, timeout=timeout)
            if not result.ok:
                measures[name].status = f"{NOT_AVAILABLE}: {result.failure(argv[:1] + argv[-4:])}"
                ok = False
                break
        if ok:
            live.append(name)
    for repetition, name in interleaved(live, reps):
        if bench.left() <= 0:
            measures[name].note = f"cut short by the time budget at repetition {repetition}"
            break
        result = procs.timed(commands[name], env=bench.tools[name].env, timeout=timeout)
        measures[name].add(result.seconds if result.ok else None)
        if not result.ok and not measures[name].note:
            measures[name].note = result.failure(commands[name][-4:])


def run_rm(bench: Bench) -> list[Figure]:
    """Figure 1: ``run --rm base true``, CLI against CLI, no network then default network."""
    figures = []
    # -- no network
    names = ["dockyard", "podman", "docker"]
    measures = {name: bench.measure_for(name, "s") for name in names}
    commands = {name: bench.tools[name].run_rm(network_none=True) for name in names if name in bench.tools}
    bench.log(f"fig 1a: run --rm --network none base true x{bench.params.reps} ({', '.join(commands)})")
    _latency_series(bench, commands, measures, bench.params.reps)
    anchors = [measures["docker"], measures["podman"]]
    figure = Figure("run_rm_none", "`run --rm base true`, no network, CLI", "<= 0.5x the faster of docker and podman",
                    "s", anchors=anchors, dockyard=[measures["dockyard"]], commands=_commands(commands))
    best = fastest(anchors)
    figure.ratio = ratio(measures["dockyard"].median, best.median if best else None)
    figure.ratio_basis = f"dockyard / {best.tool}" if best else ""
    figure.met = None if figure.ratio is None else figure.ratio <= 0.5
    figures.append(figure)

    # -- default network (docker runs with --bridge=none here: no default network to measure)
    names = ["dockyard", "podman"]
    measures = {name: bench.measure_for(name, "s") for name in names}
    commands = {name: bench.tools[name].run_rm(network_none=False) for name in names if name in bench.tools}
    bench.log(f"fig 1b: run --rm base true (default network) x{bench.params.reps} ({', '.join(commands)})")
    _latency_series(bench, commands, measures, bench.params.reps)
    measures["podman"].note = measures["podman"].note or "netavark bridge podman0"
    if "dockyard" in bench.tools:
        measures["dockyard"].note = measures["dockyard"].note or (
            f"bridge mode, the default: {_default_network(bench.tools['dockyard'])}, a veth on the daemon's "
            "bridge, a lease and the generated /etc files")
    figure = Figure("run_rm_default", "`run --rm base true`, default network, CLI", "<= 0.5x podman", "s",
                    anchors=[measures["podman"]], dockyard=[measures["dockyard"]], commands=_commands(commands))
    figure.ratio = ratio(measures["dockyard"].median, measures["podman"].median)
    figure.ratio_basis = "dockyard / podman"
    figure.met = None if figure.ratio is None else figure.ratio <= 0.5
    figure.notes.append("docker is not measured here: the private dockerd runs with --bridge=none (no default network)")
    figures.append(figure)

    # -- the CLI's own start-up: `--version` does nothing but start the program
    names = ["dockyard", "podman", "docker"]
    measures = {name: bench.measure_for(name, "s") for name in names}
    commands = {name: [*bench.tools[name].cli(), "--version"] for name in names if name in bench.tools}
    bench.log(f"fig 1c: --version x{bench.params.reps} ({', '.join(commands)})")
    _latency_series(bench, commands, measures, bench.params.reps)
    anchors = [measures["docker"], measures["podman"]]
    figure = Figure("cli_version", "`--version`: the CLI's start-up", "issue 16: not slower than before the "
                    "restructuring (43-53 ms measured on 2026-12-06)", "s", anchors=anchors,
                    dockyard=[measures["dockyard"]], commands=_commands(commands))
    best = fastest(anchors)
    figure.ratio = ratio(measures["dockyard"].median, best.median if best else None)
    figure.ratio_basis = f"dockyard / {best.tool}" if best else ""
    figure.met = None if measures["dockyard"].median is None else measures["dockyard"].median <= 0.053
    figures.append(figure)
    return figures


def _default_network(tool: CliTool) -> str:
    """What network a container gets by default: the host's namespace, or its own with
    which interfaces (read inside the container)."""
    probe = tool.time(tool.run_rm(network_none=False, cmd=("sh", "-c", "readlink /proc/self/ns/net; cat /proc/net/dev")))
    if not probe.ok:
        return "could not be probed"
    lines = probe.stdout.splitlines()
    if lines and lines[0].strip() == os.readlink("/proc/self/ns/net"):
        return "the host's network namespace"
    interfaces = [line.split(":")[0].strip() for line in lines[3:] if ":" in line]
    return f"its own network namespace with {', '.join(interfaces) or 'no interfaces'}"


# --- figure 2: the Python API against runc run / crun run -----------------------------------


def api_vs_runc(bench: Bench) -> list[Figure]:
    """Figure 2: start-to-exit through dockyard's Python API (run + wait + remove, the
    same work as ``runc run``, which deletes the container on exit) against ``runc run`` and
    ``crun run`` of the same rootfs, interleaved.

    Two dockyard rows (issue 26): ``--network none`` is the like-for-like one (the
    container gets its own network namespace with ``lo`` only, as runc's bundle does), and
    bridge mode (the default: a veth on the bridge, a lease, the generated /etc files) is
    a row of its own against the same anchors."""
    params = bench.params
    names = ("dockyard API", "dockyard API, bridge", "runc run", "crun run")
    measures = {name: Measure(tool=name, unit="s") for name in names}
    timers: dict[str, OciTimer] = {}
    figure = Figure("api", "start-to-exit through the API, `--network none`", "<= 1.0x runc", "s",
                    anchors=[measures["runc run"], measures["crun run"]], dockyard=[measures["dockyard API"]])
    bridge = Figure("api_bridge", "start-to-exit through the API, bridge network", "none set (issue 26: a row of "
                    "its own)", "s", anchors=[measures["runc run"], measures["crun run"]],
                    dockyard=[measures["dockyard API, bridge"]])
    try:
        for runtime in ("runc", "crun"):
            timer = OciTimer(runtime, bench.workspace)
            try:
                timers[f"{runtime} run"] = timer.__enter__()
                figure.commands[f"{runtime} run"] = shlex.join(timer.argv("ID"))
                if timer.note:
                    measures[f"{runtime} run"].note = timer.note
            except BenchError as exc:
                measures[f"{runtime} run"].status = f"{NOT_AVAILABLE}: {exc}"
        bench.log(f"fig 2: API run+wait+remove (--network none, bridge) vs {', '.join(timers)} x{params.api_reps}")
        try:
            import trio

            trio.run(_api_series, bench, timers, measures)
        except ImportError as exc:
            for name in ("dockyard API", "dockyard API, bridge"):
                measures[name].status = f"{NOT_AVAILABLE}: {exc}"
            for name, timer in timers.items():  # the anchors alone
                for _ in range(params.api_reps):
                    measures[name].add(timer.run_once())
    finally:
        for timer in timers.values():
            timer.__exit__(None, None, None)
    run = ("async with Supervisor(Config(root, run_dir)) as sup: c = await sup.run(ContainerSpec(image='base', "
           "cmd=('true',){network})); await sup.wait(c.id); await sup.remove(c.id)")
    figure.commands["dockyard API"] = run.format(network=", network='none'")
    bridge.commands = {**figure.commands, "dockyard API, bridge": run.format(network=", network='bridge'")}
    del bridge.commands["dockyard API"]
    for row, name in ((figure, "dockyard API"), (bridge, "dockyard API, bridge")):
        row.ratio = ratio(measures[name].median, measures["runc run"].median)
        row.ratio_basis = "dockyard / runc"
    figure.met = None if figure.ratio is None else figure.ratio <= 1.0
    figure.notes.append("like for like: runc's bundle has its own network namespace with lo only, as "
                        "`--network none` gives; bridge mode is the next row")
    bridge.notes.append("the daemon's default network: a veth on a private bridge, an address lease and the "
                        "generated /etc/hosts and resolv.conf; timed interleaved with the row above")
    return [figure, bridge]


async def _api_series(bench: Bench, timers: dict[str, OciTimer], measures: dict[str, Measure]) -> None:
    import trio

    api = measures["dockyard API"]
    api_bridge = measures["dockyard API, bridge"]
    networks = {api.tool: "none", api_bridge.tool: "bridge"}
    live = list(timers)
    try:
        from supervisor.api import Config, Supervisor
        from supervisor.spec import ContainerSpec
    except Exception as exc:  # the API is being built: any import failure means "not yet"
        api.status = api_bridge.status = f"{NOT_AVAILABLE}: cannot import supervisor.api ({describe(exc)})"
        Supervisor = None
    root = bench.workspace.sub("dockyard-api/root")
    run_dir = bench.workspace.sub("dockyard-api/run")

    async def one(sup, network: str) -> float | None:
        start = time.perf_counter()
        container = await sup.run(ContainerSpec(image="base", cmd=("true",), network=network))
        code = await sup.wait(container.id)
        await sup.remove(container.id)
        seconds = time.perf_counter() - start
        return seconds if code == 0 else None

    async def series(sup) -> None:
        names = (list(networks) if sup is not None else []) + live
        for _ in range(bench.params.warmup if sup is not None else 0):
            for network in networks.values():
                await one(sup, network)
        for repetition, name in interleaved(names, bench.params.api_reps):
            if bench.left() <= 0:
                break
            if name in networks:
                measures[name].add(await one(sup, networks[name]))
            else:
                measures[name].add(await trio.to_thread.run_sync(timers[name].run_once))

    if Supervisor is None:
        await series(None)
        return
    try:
        # A private bridge and subnet, as the bench's daemon has: never the host's default one.
        options = {"cgroup_parent": f"{BENCH_CGROUP_PREFIX}api-{os.getpid()}",
                   "bridge_name": f"dya-{os.getpid() % 0xFFFFFF:06x}", "bridge_subnet": free_subnet()}
        try:
            config = Config(root=root, run_dir=run_dir, **options)
        except TypeError:
            config = Config(root=root, run_dir=run_dir)
        async with Supervisor(config) as sup:
            with open(bench.workspace.tar, "rb") as tar:
                await sup.import_image(tar, "base")
            await series(sup)
    except Exception as exc:
        for measure in (api, api_bridge):
            if not measure.samples:
                measure.status = f"{NOT_AVAILABLE}: {describe(exc)}"
            else:
                measure.note = f"stopped early: {describe(exc)}"
        if not api.samples:
            measures_left = [m for m in measures.values() if m.tool in live and not m.samples]
            if measures_left:
                await series(None)


# --- figures 3 and 5: many containers at once, and their memory ------------------------------


def _start_all(tool: CliTool, count: int, workers: int | None = None, timeout: float = 300,
               deadline: float | None = None) -> tuple[float, list[str], str]:
    """Start ``count`` idle containers (``run -d ... sleep 1000``), all at once or
    ``workers`` at a time; returns (wall seconds, ids started, first error)."""
    argv = tool.run_detached(SLEEP)
    if deadline is None:
        seconds, results = procs.concurrently([argv] * count, env=tool.env, timeout=timeout, workers=workers)
    else:  # fill in batches until the count or the deadline
        start = time.perf_counter()
        results = []
        batch = max(1, (workers or 4) * 4)
        while len(results) < count and time.monotonic() < deadline:
            _, done = procs.concurrently([argv] * min(batch, count - len(results)), env=tool.env,
                                         timeout=timeout, workers=workers)
            results.extend(done)
            if not any(r.ok for r in done):
                break
        seconds = time.perf_counter() - start
    ids = [r.stdout.split()[-1] for r in results if r.ok and r.stdout.split()]
    errors = [r.failure(argv[-3:]) for r in results if not r.ok]
    return seconds, ids, errors[0] if errors else ""


def _all_running(tool: CliTool, ids: Sequence[str]) -> bool:
    running = tool.running_ids()
    return all(any(r.startswith(i) or i.startswith(r) for r in running) for i in ids)


def concurrent_and_memory(bench: Bench) -> list[Figure]:
    """Figures 3 and 5: ``concurrent`` containers started at once running ``sleep``, the
    time until all run and the time to remove them all; while they idle, the memory each
    costs (PSS of the tool's per-container helpers + its daemons' growth, per container)."""
    params = bench.params
    count = params.concurrent
    names = ["dockyard", "podman", "docker"]
    start = {n: bench.measure_for(n, "s") for n in names}
    remove = {n: bench.measure_for(n, "s") for n in names}
    memory = {n: bench.measure_for(n, "MB") for n in names}
    daemon = {n: bench.measure_for(n, "MB") for n in names}
    breakdown: dict[str, list[str]] = {n: [] for n in names}
    fixed_notes: dict[str, str] = {}
    live = [n for n in names if n in bench.tools]
    bench.log(f"fig 3+5: {count} x run -d sleep 1000 at once, memory, rm -f all; x{params.concurrent_reps} ({', '.join(live)})")
    for repetition, name in interleaved(live, params.concurrent_reps):
        if bench.left() <= 0:
            start[name].note = start[name].note or f"cut short by the time budget at repetition {repetition}"
            break
        if start[name].status != "ok":
            continue
        tool = bench.tools[name]
        before = memory_rows.baseline(tool)
        seconds, ids, error = _start_all(tool, count)
        try:
            if len(ids) < count or not _all_running(tool, ids):
                start[name].add(None)
                start[name].note = error or f"only {len(ids)} of {count} started and running"
                if not ids and repetition == 0:
                    for table in (start, remove, memory):
                        table[name].status = f"{NOT_AVAILABLE}: {start[name].note}"
                continue
            start[name].add(seconds)
            time.sleep(1.0)  # let helpers finish their start-up allocations before reading PSS
            try:
                found = memory_rows.reading(tool, ids, before)
            except BenchError as exc:
                memory[name].add(None)
                memory[name].note = str(exc)
            else:
                memory[name].add(found.per_container())
                if found.daemon_growth:  # podman has no daemon: no sample, the row says so
                    daemon[name].add(found.daemon_per_container())
                breakdown[name].append(found.breakdown())
                if found.fixed_note():
                    fixed_notes[name] = f"{name}: {found.fixed_note()}"
        finally:
            if ids:
                result = tool.time(tool.remove(ids), timeout=300)
                remove[name].add(result.seconds if result.ok else None)
                if not result.ok:
                    remove[name].note = result.failure(tool.remove(ids)[:3])
                    tool.remove_all()
    for name in names:
        if breakdown[name]:
            memory[name].note = breakdown[name][-1]
    commands = {n: bench.tools[n].run_detached(SLEEP) for n in live}
    figures = []
    for key, title, table in (("concurrent_start", f"{count} containers started at once (`sleep`), until all run", start),
                              ("concurrent_remove", f"{count} running containers removed (`rm -f`)", remove)):
        anchors = [table["podman"], table["docker"]]
        best = fastest(anchors)
        figure = Figure(key, title, "none set in issue 9", "s", anchors=anchors, dockyard=[table["dockyard"]],
                        commands=_commands(commands) if key == "concurrent_start" else
                        {n: shlex.join(bench.tools[n].remove(["ID..."])) for n in live})
        figure.ratio = ratio(table["dockyard"].median, best.median if best else None)
        figure.ratio_basis = f"dockyard / {best.tool}" if best else ""
        figures.append(figure)
    figures += memory_rows.all_in_figures("memory", f"memory per idle container ({count} `sleep`), PSS", memory,
                                          daemon, count, list(fixed_notes.values()),
                                          commands=_commands(commands))
    return figures


# --- figure 6: many running containers ---------------------------------------------------------


def many_running(bench: Bench) -> list[Figure]:
    """Figure 6: ``many`` containers running at once; latency of ``ps`` and of starting one
    more, against the idle start latency of the same command (measured first)."""
    params = bench.params
    names = ["dockyard"] + (["podman", "docker"] if params.many_anchors else [])
    live = [n for n in names if n in bench.tools]
    idle = {n: bench.measure_for(n, "s") for n in names}
    ps = {n: bench.measure_for(n, "s") for n in names}
    more = {n: bench.measure_for(n, "s") for n in names}
    memory = {n: bench.measure_for(n, "MB") for n in names}
    daemon = {n: bench.measure_for(n, "MB") for n in names}
    fixed_notes: list[str] = []
    reached: dict[str, int] = {}
    one_more = max(3, params.many_samples // 2)
    bench.log(f"fig 6: idle run -d x{one_more}, then {params.many} running: ps x{params.many_samples}, "
              f"one more x{one_more} ({', '.join(live)})")
    for _, name in interleaved(live, one_more):
        tool = bench.tools[name]
        result = tool.time(tool.run_detached(SLEEP))
        idle[name].add(result.seconds if result.ok else None)
        if result.ok:
            tool.time(tool.remove(result.stdout.split()[-1:]))
        elif not idle[name].note:
            idle[name].note = result.failure(tool.run_detached(SLEEP)[-3:])
    for name in live:
        tool = bench.tools[name]
        if not idle[name].samples:
            for table in (ps, more):
                table[name].status = f"{NOT_AVAILABLE}: {idle[name].note}"
            continue
        if bench.left() <= 0:
            ps[name].status = more[name].status = "skipped: time budget"
            continue
        deadline = time.monotonic() + min(params.many_fill_seconds, max(10.0, bench.left()))
        before = memory_rows.baseline(tool)
        seconds, ids, error = _start_all(tool, params.many, workers=4, deadline=deadline)
        reached[name] = len(ids)
        bench.log(f"  {name}: {len(ids)} running after {seconds:.0f} s{(' (' + error + ')') if error else ''}")
        try:
            note = f"at {len(ids)} running (filled in {seconds:.0f} s, 4 at a time)"
            if len(ids) < params.many:
                note += f"; the fill stopped short of {params.many}: {error or 'time limit'}"
            ps[name].note = more[name].note = note
            if ids:  # at this count a daemon's growth rises far above its noise
                time.sleep(1.0)  # as in figure 5: helpers finish their start-up allocations
                try:
                    found = memory_rows.reading(tool, ids, before)
                    memory[name].add(found.per_container())
                    if found.daemon_growth:  # podman has no daemon: no sample, the row says so
                        daemon[name].add(found.daemon_per_container())
                    memory[name].note = daemon[name].note = f"{note}: {found.breakdown()}"
                    if found.fixed_note():
                        fixed_notes.append(f"{name}: {found.fixed_note()}")
                except BenchError as exc:
                    memory[name].add(None)
                    memory[name].note = str(exc)
            for _ in range(params.many_samples):
                result = tool.time(tool.ps())
                ps[name].add(result.seconds if result.ok else None)
            for _ in range(one_more):
                result = tool.time(tool.run_detached(SLEEP))
                more[name].add(result.seconds if result.ok else None)
                if result.ok:
                    tool.time(tool.remove(result.stdout.split()[-1:]))
        finally:
            for begin in range(0, len(ids), 100):
                tool.time(tool.remove(ids[begin : begin + 100]), timeout=600)
    count = params.many
    ps_anchors = [ps[n] for n in names if n != "dockyard"]
    best = fastest(ps_anchors)
    ps_figure = Figure("many_ps", f"{count} running containers: `ps`", "< 0.2 s", "s",
                       anchors=ps_anchors, dockyard=[ps["dockyard"]],
                       commands=_commands({n: bench.tools[n].ps() for n in live}))
    ps_figure.ratio = ratio(ps["dockyard"].median, best.median if best else None)
    ps_figure.ratio_basis = f"dockyard / {best.tool}" if best else ""
    ps_figure.met = None if ps["dockyard"].median is None else ps["dockyard"].median < 0.2
    for n in names:
        idle[n].tool = f"{n} idle"
        if n in reached and reached[n] < count:  # the bar says at how many it was measured
            ps[n].tool = more[n].tool = memory[n].tool = daemon[n].tool = f"{n} at {reached[n]}"
    more_figure = Figure("many_start", f"{count} running containers: start one more (`run -d`)",
                         "< 2x the idle start", "s", anchors=[more[n] for n in names if n != "dockyard"],
                         dockyard=[more["dockyard"], idle["dockyard"]],
                         commands=_commands({n: bench.tools[n].run_detached(SLEEP) for n in live}))
    more_figure.ratio = ratio(more["dockyard"].median, idle["dockyard"].median)
    more_figure.ratio_basis = "dockyard at N / dockyard idle"
    more_figure.met = None if more_figure.ratio is None else more_figure.ratio < 2.0
    for n in names:
        if n != "dockyard" and idle[n].median is not None:
            more_figure.notes.append(f"{n} idle start {idle[n].median:.3f} s")
    if reached:
        more_figure.notes.append("reached: " + ", ".join(f"{n} {c}" for n, c in reached.items()))
    for n in ("podman", "docker"):  # not filled (--no-many-anchors): said in the row
        if n not in names:
            memory[n] = daemon[n] = Measure(n, "MB", status="skipped: --no-many-anchors")
    memory_figures = memory_rows.all_in_figures("memory_many", f"memory per idle container at {count} running, PSS",
                                                memory, daemon, count, fixed_notes)
    memory_figures[0].notes.append("one reading per tool, with every container idle: the growth of a daemon divided "
                                   f"by {count} resolves far smaller amounts than at {params.concurrent}")
    return [ps_figure, more_figure, *memory_figures]


# --- figure 7: logs --------------------------------------------------------------------------


def logs(bench: Bench) -> list[Figure]:
    """Figure 7 (issue 3): ``logs_mb`` MB of stdout stored and read back. The producer makes
    a 1 MB file of 41-byte lines in the container's /tmp and cats it ``logs_mb`` times (fast
    enough not to be the limit). Per tool: the time from ``run -d`` to the container's end
    (the log driver stores as it goes), the time of ``logs`` (read back, counted), and the
    bytes on disk per byte of output. dockyard's yardsticks, in the same run: the producer
    writing to a file in the container (``> /tmp/out``) and to /dev/null."""
    params = bench.params
    size = params.logs_mb * 1_000_000
    line = "0123456789abcdefghijklmnopqrstuvwxyz0123"  # + newline: 41 bytes
    make = f"i=0; while [ $i -lt 24390 ]; do echo {line}; i=$((i+1)); done > /tmp/mb"
    cats = f"i=0; while [ $i -lt {params.logs_mb} ]; do cat /tmp/mb; i=$((i+1)); done"
    output = 24390 * 41 * params.logs_mb
    figure = Figure("logs", f"{params.logs_mb} MB of stdout stored and read back", "store >= 0.5x a plain file, "
                    "read >= 200 MB/s, <= 1.3 bytes per byte", "s")
    dockyard = bench.tools.get("dockyard")
    if not isinstance(dockyard, Dockyard) or not dockyard.has_command("logs"):
        figure.status = f"{PENDING} (issue 3)"
        figure.dockyard = [Measure("dockyard", "s", status=f"{PENDING}: `dockyard logs` does not exist yet (issue 3)")]
        return [figure]
    names = ["dockyard", "podman", "docker"]
    measures = {n: bench.measure_for(n, "s") for n in names}
    rates: dict[str, dict[str, list[float]]] = {n: {"store": [], "read": [], "disk": []} for n in names}
    yardstick: dict[str, list[float]] = {"file": [], "null": []}
    live = [n for n in names if n in bench.tools]
    bench.log(f"fig 7: {params.logs_mb} MB through the log store x{params.logs_reps} ({', '.join(live)})")
    for repetition, name in interleaved(live, params.logs_reps):
        if bench.left() <= 0:
            break
        tool = bench.tools[name]
        container = f"dockyard-bench-logs-{repetition}"
        if name == "dockyard":  # the yardsticks, in the same run
            for key, target in (("file", "/tmp/out"), ("null", "/dev/null")):
                started = time.perf_counter()
                plain = tool.time([*tool.run_rm(True, ("sh", "-c", f"{make}; {cats} > {target}"))], timeout=600)
                if plain.ok:
                    yardstick[key].append(output / (time.perf_counter() - started) / 1e6)
        run = tool.run_detached(("sh", "-c", f"{make}; {cats}"))
        run[run.index("base"):run.index("base")] = ["--name", container]
        if name == "dockyard":  # keep all 200 MB (the default keeps 5 x 64 MiB)
            run[run.index("base"):run.index("base")] = ["--log-opt", "max-size=256m"]
        start = time.perf_counter()
        started = tool.time(run, timeout=600)
        waited = tool.time([*tool.cli(), "wait", container], timeout=600)
        stored_seconds = time.perf_counter() - start
        read = procs.counted([*tool.cli(), "logs", container], env=tool.env, timeout=600)
        ok = started.ok and waited.ok and read.ok and read.stdout_bytes == output
        measures[name].add(stored_seconds + read.seconds if ok else None)
        if ok:
            rates[name]["store"].append(output / stored_seconds / 1e6)
            rates[name]["read"].append(output / read.seconds / 1e6)
            disk = _log_bytes(tool, container)
            if disk:
                rates[name]["disk"].append(disk / output)
        elif not measures[name].note:
            measures[name].note = (f"run exited {started.returncode}, logs exited {read.returncode} "
                                   f"after {read.stdout_bytes} of {output} bytes: {read.stderr.strip()[-200:]}")
        tool.time(tool.remove([container]))
    figure.anchors = [measures["podman"], measures["docker"]]
    figure.dockyard = [measures["dockyard"]]
    figure.commands = {n: f"{shlex.join(bench.tools[n].run_detached(('sh', '-c', make + '; ' + cats)))} "
                          f"(with --name N), wait N, then {shlex.join([*bench.tools[n].cli(), 'logs', 'N'])}"
                       for n in live}
    med = lambda values: statistics.median(values) if values else None
    for name in live:
        store, read, disk = (med(rates[name][k]) for k in ("store", "read", "disk"))
        if store is not None:
            figure.notes.append(f"{name}: stored at {store:.1f} MB/s, read back at {read:.1f} MB/s"
                                + (f", {disk:.2f} bytes on disk per byte" if disk else ""))
    file_rate, null_rate = med(yardstick["file"]), med(yardstick["null"])
    store, read, disk = (med(rates["dockyard"][k]) for k in ("store", "read", "disk"))
    if file_rate and null_rate:
        figure.notes.append(f"yardsticks (dockyard run, same producer): to a file in the container {file_rate:.1f} MB/s, "
                            f"to /dev/null {null_rate:.1f} MB/s")
    if store and read and disk and file_rate and null_rate:
        figure.notes.append(f"dockyard: store {store / file_rate:.2f}x the plain file (target >= 0.5x), "
                            f"read {read:.0f} MB/s (target >= 200), {disk:.2f} bytes per byte (target <= 1.3), "
                            f"slowed {null_rate / store:.2f}x against /dev/null (target <= 2x)")
        figure.met = store >= 0.5 * file_rate and read >= 200 and disk <= 1.3 and null_rate / store <= 2
    best = fastest(figure.anchors)
    figure.ratio = ratio(measures["dockyard"].median, best.median if best else None)
    figure.ratio_basis = f"dockyard / {best.tool}" if best else ""
    return [figure]


def _log_bytes(tool, container: str) -> int:
    """Bytes the tool's log of ``container`` takes on disk (0 when it cannot tell)."""
    if isinstance(tool, Dockyard):
        found = tool.time([*tool.cli(), "inspect", container])
        try:
            directory = tool.root / "logs" / json.loads(found.stdout)[0]["Id"]
            return sum(path.stat().st_blocks * 512 for path in directory.iterdir())
        except (ValueError, KeyError, IndexError, OSError):
            return 0
    found = tool.time([*tool.cli(), "inspect", "--format", "{{.LogPath}}", container])
    path = found.stdout.strip() if found.ok else ""
    try:
        return os.stat(path).st_blocks * 512 if path else 0
    except OSError:
        return 0


def not_available(key: str, title: str, target: str, unit: str, reason: str) -> Figure:
    figure = Figure(key, title, target, unit, status=f"{NOT_AVAILABLE}: {reason}")
    figure.dockyard = [Measure("dockyard", unit, status=f"{NOT_AVAILABLE}: {reason}")]
    return figure

