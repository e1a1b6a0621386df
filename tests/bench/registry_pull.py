"""Issue 10's figure: pulling a 100 MB, 5-layer image from a local registry, against
``skopeo copy`` of it to a local directory, interleaved in the same run; and a second pull
that must transfer no layer.

Both sides do the same work: download every blob over HTTP from docker-registry on
127.0.0.1, verify it against its digest, and write it to a directory. dockyard's side runs
``python -m tests.bench.registry_pull --pull REF DEST`` (a fresh interpreter each time, as
skopeo is a fresh process), which is :func:`supervisor.registry.transfer.pull`; unpacking
into the image store is not part of either.

    python -m tests.bench.registry_pull [--reps 5]        # standalone: prints the figure
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.stats import Figure, Measure, interleaved, ratio

LAYERS = 5
LAYER_BYTES = 20_000_000  # random, so gzip keeps them at ~20 MB: 100 MB on the wire
TARGET = 1.2


def build_and_push(directory: Path) -> tuple[object, str]:
    """Start a registry and push the test image to it; returns (registry, reference)."""
    from tests.registry_server import Layer, OCIImage, Registry, tar_of

    registry = Registry(directory / "registry")
    registry.directory.mkdir(parents=True)
    registry.start()
    try:
        image = OCIImage(directory / "image")
        layers = [Layer(tar_of({f"layer{n}/data": os.urandom(LAYER_BYTES)})) for n in range(LAYERS)]
        image.write(image.manifest(layers), "1")
        reference = f"{registry.host}/bench/big:1"
        push = subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{image.root}:1",
                               f"docker://{reference}"], capture_output=True, text=True, timeout=600)
        if push.returncode != 0:
            raise RuntimeError(f"skopeo copy into the registry failed: {push.stderr.strip()}")
        shutil.rmtree(image.root)
    except BaseException:
        registry.stop()
        raise
    return registry, reference


def pull_once(reference: str, dest: Path, have: Path | None = None) -> int:
    """One pull in this process; prints the layers fetched. ``have``: a layout whose
    layers count as already in the store."""
    import trio

    from supervisor.registry.transfer import pull

    held: set[str] = set()
    if have is not None:
        held = {"sha256:" + p.name for p in (have / "blobs" / "sha256").iterdir()}
    result = trio.run(lambda: pull(reference, dest, has_blob=held.__contains__))
    layers = [d for d in result.fetched if d != result.config.digest]
    print(f"{len(layers)} layers, {sum(l.size for l in result.layers if l.digest in layers)} bytes")
    return 0


def measure(reps: int, log=lambda message: print(message, file=sys.stderr, flush=True),
            left=lambda: float("inf"), parent: Path | None = None) -> list[Figure]:
    figure = Figure("registry_pull", f"pull of a {LAYERS * LAYER_BYTES // 1_000_000} MB, {LAYERS}-layer image "
                    "from a local registry", f"<= {TARGET}x skopeo copy to a directory", "s")
    ours, skopeo = Measure("dockyard", "s"), Measure("skopeo", "s")
    figure.dockyard, figure.anchors = [ours], [skopeo]
    if not shutil.which("skopeo") or not os.path.exists("/usr/bin/docker-registry"):
        skopeo.status = ours.status = "not available: skopeo or docker-registry is not installed"
        return [figure]
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-registry.", dir=parent))
    registry = None
    try:
        log("registry pull: building and pushing the 100 MB image")
        registry, reference = build_and_push(work)
        commands = {
            "dockyard": [sys.executable, "-m", "tests.bench.registry_pull", "--pull", reference],
            "skopeo": ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{reference}"],
        }
        log(f"registry pull: {reps} interleaved pulls each")
        for repetition, name in interleaved(list(commands), reps + 1):  # the first round warms up
            if left() <= 0:
                break
            dest = work / f"{name}-{repetition}"
            argv = [*commands[name], str(dest) if name == "dockyard" else f"dir:{dest}"]
            start = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                                  cwd=Path(__file__).resolve().parents[2])
            seconds = time.perf_counter() - start
            if repetition > 0:
                (ours if name == "dockyard" else skopeo).add(seconds if done.returncode == 0 else None)
            if done.returncode != 0:
                target = ours if name == "dockyard" else skopeo
                target.note = target.note or done.stderr.strip()[-300:]
            if name == "dockyard" and repetition == 0 and done.returncode == 0:
                first = dest
                again = subprocess.run([*commands["dockyard"], str(work / "again"), "--have", str(first)],
                                       capture_output=True, text=True, timeout=600,
                                       cwd=Path(__file__).resolve().parents[2])
                ours.note = f"second pull: {again.stdout.strip() or again.stderr.strip()[-200:]} transferred"
            elif dest.exists():
                shutil.rmtree(dest)
        figure.commands = {name: " ".join(argv) + " DEST" for name, argv in commands.items()}
        figure.ratio = ratio(ours.median, skopeo.median)
        figure.ratio_basis = "skopeo copy docker:// dir:"
        if figure.ratio is not None:
            figure.met = figure.ratio <= TARGET
            if not ours.note.startswith("second pull: 0 layers"):
                figure.met = False
    finally:
        if registry is not None:
            registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    return [figure]


def registry_pull(bench) -> list[Figure]:
    """The step for tests/bench/run.py."""
    return measure(5, bench.log, bench.left, bench.workspace.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.registry_pull", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--pull", nargs=2, metavar=("REF", "DEST"), help=argparse.SUPPRESS)
    parser.add_argument("--have", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pull:
        return pull_once(args.pull[0], Path(args.pull[1]), args.have)
    for figure in measure(args.reps):
        for m in (*figure.dockyard, *figure.anchors):
            median = f"{m.median:.3f} s" if m.median is not None else m.status
            print(f"{m.tool:9} median {median}  samples {[round(s, 3) for s in m.samples]} failures {m.failures}"
                  + (f"  ({m.note})" if m.note else ""))
        print(f"ratio {figure.ratio:.2f}x (target <= {TARGET}x), met: {figure.met}" if figure.ratio else figure.status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
