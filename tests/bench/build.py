"""The build rows of issue 24 (``scripts/bench.sh --only build``):

- ``build_cached``: a rebuild of a 10-step Dockerfile where every step is in the cache,
  against ``podman build --layers`` of the same context (target <= 0.5x podman's time);
- ``build_uncached``: the same build with ``--no-cache`` against podman's (target <= 1.0x);
- ``build_push``: ``push`` of a large image (random content, so gzip cannot shrink it) to a
  local registry (docker-registry on 127.0.0.1, a fresh one for each push so that no blob is
  there yet) against ``skopeo copy`` of the same image, saved as an OCI layout, with gzip
  compression (target <= 1.2x skopeo's time);
- ``build_push_zstd``: the same with zstd layers (``push --compression-format zstd`` against
  ``skopeo copy --dest-compress-format zstd``; no target in the issue: the gzip one is shown).

Both builders run RUN without a network (``--network none``) on the busybox base.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from tests.bench import procs
from tests.bench.stats import NOT_AVAILABLE, Figure, Measure, interleaved, ratio

#: FROM and ten steps: three COPY, three RUN, four config steps.
DOCKERFILE = """\
FROM base
ENV APP=/app
WORKDIR /app
COPY a.txt ./
RUN echo one > one
COPY b.txt ./
RUN echo two > two
LABEL bench=build
COPY c.txt ./
RUN cat a.txt b.txt c.txt one two > all
CMD ["cat", "all"]
"""
CACHED_REPS = 5
UNCACHED_REPS = 3
PUSH_LAYERS = 5
PUSH_LAYER_BYTES = 100_000_000
PUSH_REPS = 3
CACHED_TARGET, UNCACHED_TARGET, PUSH_TARGET = 0.5, 1.0, 1.2


def write_context(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_text(DOCKERFILE)
    for name in ("a", "b", "c"):
        (directory / f"{name}.txt").write_text(f"{name}\n" * 1000)
    return directory


def build_commands(bench, context: Path, no_cache: bool) -> dict[str, list[str]]:
    commands = {}
    flags = ["--no-cache"] if no_cache else []
    if "dockyard" in bench.tools:
        commands["dockyard"] = [*bench.tools["dockyard"].cli(), "build", "-q", *flags, "--network", "none",
                                "-t", "benchbuild", str(context)]
    if "podman" in bench.tools:
        podman = bench.tools["podman"]
        commands["podman"] = [*podman.cli(), "build", "-q", "--layers", *flags, "--network", "none",
                              *podman.RUN_FLAGS, "-t", "benchbuild", str(context)]
    return commands


def series(bench, commands: dict[str, list[str]], measures: dict[str, Measure], reps: int) -> None:
    """Interleaved timings of ``commands`` (tool -> argv), after one untimed run each (it
    fills the cache for the cached row; a failure marks the tool not available)."""
    live = []
    for tool, argv in commands.items():
        result = procs.timed(argv, env=bench.tools[tool].env, timeout=600)
        if result.ok:
            live.append(tool)
        else:
            measures[tool].status = f"{NOT_AVAILABLE}: {result.failure(argv[:3])}"
    for repetition, tool in interleaved(live, reps):
        if bench.left() <= 0:
            measures[tool].note = f"cut short by the time budget at repetition {repetition}"
            break
        result = procs.timed(commands[tool], env=bench.tools[tool].env, timeout=600)
        measures[tool].add(result.seconds if result.ok else None)
        if not result.ok:
            measures[tool].note = measures[tool].note or result.failure(commands[tool][:3])


def build_figure(bench, context: Path, no_cache: bool) -> Figure:
    key, reps, target = ("build_uncached", UNCACHED_REPS, UNCACHED_TARGET) if no_cache else \
        ("build_cached", CACHED_REPS, CACHED_TARGET)
    title = ("`build --no-cache` of a 10-step Dockerfile (3 COPY, 3 RUN, 4 config)" if no_cache else
             "rebuild of the same Dockerfile, every step from the cache")
    measures = {tool: bench.measure_for(tool, "s") for tool in ("dockyard", "podman")}
    commands = build_commands(bench, context, no_cache)
    bench.log(f"build: {key} x{reps} ({', '.join(commands)})")
    series(bench, commands, measures, reps)
    figure = Figure(key, title, f"<= {target}x podman build --layers", "s", anchors=[measures["podman"]],
                    dockyard=[measures["dockyard"]],
                    commands={tool: shlex.join(argv) for tool, argv in commands.items()})
    figure.ratio = ratio(measures["dockyard"].median, measures["podman"].median)
    figure.ratio_basis = "podman build --layers"
    if figure.ratio is not None:
        figure.met = figure.ratio <= target
    return figure


def push_figure(bench, compression: str = "gzip") -> Figure:
    from tests.registry_server import Registry

    size = PUSH_LAYERS * PUSH_LAYER_BYTES // 1_000_000
    ours, skopeo = bench.measure_for("dockyard", "s"), Measure("skopeo", "s")
    figure = Figure("build_push" if compression == "gzip" else f"build_push_{compression}",
                    f"push of a {size} MB, {PUSH_LAYERS}-layer image to a local registry ({compression})",
                    f"<= {PUSH_TARGET}x skopeo copy ({compression})", "s", anchors=[skopeo], dockyard=[ours])
    tool = bench.tools.get("dockyard")
    if tool is None or not shutil.which("skopeo") or not os.path.exists("/usr/bin/docker-registry"):
        skopeo.status = ours.status = ours.status if tool is None else \
            "not available: skopeo or docker-registry is not installed"
        return figure
    work = bench.workspace.sub("build-push")
    cli = tool.cli()
    lines = "".join(f"RUN head -c {PUSH_LAYER_BYTES} /dev/urandom > /big{n}\n" for n in range(PUSH_LAYERS))
    context = work / "context"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text("FROM base\n" + lines)
    if not (work / "image.tar").exists():  # made once for both compressions
        bench.log(f"build: making the {size} MB image to push")
        made = tool.time([*cli, "build", "-q", "--network", "none", "-t", "benchpush", str(context)], timeout=600)
        saved = tool.time([*cli, "save", "-o", str(work / "image.tar"), "benchpush"], timeout=600) if made.ok else made
        if not saved.ok:
            ours.status = skopeo.status = f"{NOT_AVAILABLE}: {saved.failure(['build or save'])}"
            return figure
    flags = [] if compression == "gzip" else ["--compression-format", compression]
    commands = {
        "dockyard": lambda host: [*cli, "push", *flags, f"{host}/bench/push:1"],
        "skopeo": lambda host: ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-compress",
                                "--dest-compress-format", compression, f"oci-archive:{work / 'image.tar'}",
                                f"docker://{host}/bench/push:1"],
    }
    for repetition, name in interleaved(list(commands), PUSH_REPS + 1):  # the first round warms up
        if bench.left() <= 0:
            break
        registry = Registry(work / f"registry-{repetition}-{name}")
        registry.directory.mkdir()
        registry.start()
        try:
            if name == "dockyard":
                tool.time([*cli, "tag", "benchpush", f"{registry.host}/bench/push:1"], timeout=60)
            argv = commands[name](registry.host)
            result = procs.timed(argv, env=tool.env if name == "dockyard" else None, timeout=600)
            if name == "dockyard":
                tool.time([*cli, "rmi", f"{registry.host}/bench/push:1"], timeout=60)
        finally:
            registry.stop()
            shutil.rmtree(registry.directory, ignore_errors=True)
        measure = ours if name == "dockyard" else skopeo
        if repetition > 0:
            measure.add(result.seconds if result.ok else None)
        if not result.ok:
            measure.note = measure.note or result.failure(argv[:3])
    figure.commands = {name: shlex.join(make("REGISTRY")) for name, make in commands.items()}
    figure.ratio = ratio(ours.median, skopeo.median)
    figure.ratio_basis = f"skopeo copy oci-archive: docker:// ({compression})"
    if figure.ratio is not None:
        figure.met = figure.ratio <= PUSH_TARGET
    return figure


def build(bench) -> list[Figure]:
    """The step for tests/bench/run.py: the two build rows, then the push rows (gzip, zstd)."""
    context = write_context(bench.workspace.sub("build-context"))
    figures = [build_figure(bench, context, no_cache=False), build_figure(bench, context, no_cache=True)]
    figures.append(push_figure(bench))
    figures.append(push_figure(bench, "zstd"))
    for name in ("dockyard", "podman"):
        if name in bench.tools:
            bench.tools[name].time([*bench.tools[name].cli(), "rmi", "-f", "benchbuild"], timeout=120)
    return figures
