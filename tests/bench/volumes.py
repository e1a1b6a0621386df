"""The volume rows of issue 17 (``scripts/bench.sh --only volumes``):

- ``run --rm -v NAME:/data base true`` against the same run without the volume and against
  podman's same command; target: the volume adds at most 5 ms to dockyard's run;
- ``commit`` of a container with 1 GB in a volume against one without: a commit never reads a
  volume, so both must take as long (target: within 10 %, at most 50 ms apart).
"""

from __future__ import annotations

import shlex

from tests.bench import procs
from tests.bench.stats import NOT_AVAILABLE, Figure, Measure, interleaved

VOLUME = "benchvol"
BIG_VOLUME = "benchbig"
COMMIT_REPS = 5
RUN_MARGIN_SECONDS = 0.005


def _series(bench, commands: dict[str, tuple[str, list[str]]], measures: dict[str, Measure], reps: int) -> None:
    """Interleaved timings of ``commands`` (label -> (tool, argv)) after one untimed run each."""
    live = []
    for label, (tool, argv) in commands.items():
        result = procs.timed(argv, env=bench.tools[tool].env, timeout=120)
        if result.ok:
            live.append(label)
        else:
            measures[label].status = f"{NOT_AVAILABLE}: {result.failure(argv[-6:])}"
    for repetition, label in interleaved(live, reps):
        if bench.left() <= 0:
            measures[label].note = f"cut short by the time budget at repetition {repetition}"
            break
        tool, argv = commands[label]
        result = procs.timed(argv, env=bench.tools[tool].env, timeout=120)
        measures[label].add(result.seconds if result.ok else None)


def _with_volume(argv: list[str], volume: str) -> list[str]:
    """``argv`` (a ``run --rm ... base true``) with ``-v volume:/data`` before the image."""
    index = argv.index("base")
    return [*argv[:index], "-v", f"{volume}:/data", *argv[index:]]


def run_with_volume(bench) -> Figure:
    labels = {"dockyard -v": "dockyard", "dockyard": "dockyard", "podman -v": "podman"}
    measures = {label: bench.measure_for(tool, "s") for label, tool in labels.items()}
    for label, measure in measures.items():
        measure.tool = label
    commands = {}
    if "dockyard" in bench.tools:
        plain = bench.tools["dockyard"].run_rm(network_none=True)
        commands["dockyard -v"] = ("dockyard", _with_volume(plain, VOLUME))
        commands["dockyard"] = ("dockyard", plain)
    if "podman" in bench.tools:
        commands["podman -v"] = ("podman", _with_volume(bench.tools["podman"].run_rm(network_none=True), VOLUME))
    bench.log(f"volumes: run --rm -v {VOLUME}:/data base true x{bench.params.reps} ({', '.join(commands)})")
    _series(bench, commands, measures, bench.params.reps)
    with_volume, without = measures["dockyard -v"].median, measures["dockyard"].median
    figure = Figure("volume_run_rm", f"`run --rm -v {VOLUME}:/data base true`, no network, CLI",
                    "<= the run without the volume + 5 ms", "s", anchors=[measures["podman -v"]],
                    dockyard=[measures["dockyard -v"], measures["dockyard"]],
                    commands={label: shlex.join(argv) for label, (_, argv) in commands.items()})
    if with_volume is not None and without is not None:
        figure.ratio = with_volume / without
        figure.ratio_basis = "dockyard -v / dockyard"
        figure.met = with_volume - without <= RUN_MARGIN_SECONDS
        figure.notes.append(f"the volume adds {1000 * (with_volume - without):+.1f} ms (median against median)")
    return figure


def commit_with_volume(bench) -> Figure:
    measures = {label: bench.measure_for("dockyard", "s") for label in ("commit, 1 GB volume", "commit, no volume")}
    for label, measure in measures.items():
        measure.tool = label
    figure = Figure("volume_commit", "`commit` of a container with 1 GB in a volume, against one without",
                    "as long as without the volume (within 10 %)", "s", dockyard=list(measures.values()))
    tool = bench.tools.get("dockyard")
    if tool is None:
        return figure
    cli = tool.cli()
    fill = "dd if=/dev/zero of=/data/big bs=1M count=1024 2>/dev/null; echo layer > /etc/marker"
    made = [tool.time([*cli, "run", "--name", "bench-big", "--network", "none", "-v", f"{BIG_VOLUME}:/data",
                       "base", "sh", "-c", fill], timeout=600),
            tool.time([*cli, "run", "--name", "bench-small", "--network", "none", "base", "sh", "-c",
                       "echo layer > /etc/marker"], timeout=120)]
    try:
        if not all(result.ok for result in made):
            for measure in measures.values():
                measure.status = f"{NOT_AVAILABLE}: {next(r for r in made if not r.ok).failure(['run'])}"
            return figure
        containers = {"commit, 1 GB volume": "bench-big", "commit, no volume": "bench-small"}
        bench.log(f"volumes: commit with and without a 1 GB volume x{COMMIT_REPS}")
        for repetition, label in interleaved(list(containers), COMMIT_REPS):
            image = f"bench-commit-{repetition}-{containers[label]}"
            result = tool.time([*cli, "commit", containers[label], image], timeout=600)
            measures[label].add(result.seconds if result.ok else None)
            tool.time([*cli, "rmi", image], timeout=120)
        figure.commands = {label: shlex.join([*cli, "commit", name, "IMAGE"]) for label, name in containers.items()}
    finally:
        tool.time([*cli, "rm", "-f", "bench-big", "bench-small"], timeout=120)
        tool.time([*cli, "volume", "rm", "-f", BIG_VOLUME], timeout=120)
    big, small = (measures[label].median for label in measures)
    if big is not None and small is not None:
        figure.ratio = big / small
        figure.ratio_basis = "with / without the volume"
        figure.met = big <= small * 1.1 or big - small <= 0.05
    return figure


def volumes(bench) -> list[Figure]:
    """Both rows; the benchmark's volumes are removed at the end."""
    try:
        return [run_with_volume(bench), commit_with_volume(bench)]
    finally:
        for name, tool in bench.tools.items():
            if name in ("dockyard", "podman"):
                tool.time([*tool.cli(), "volume", "rm", "-f", VOLUME], timeout=120)
