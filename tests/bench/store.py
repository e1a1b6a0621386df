"""Issue 24's store row (``scripts/bench.sh --only store``): disk bytes per image byte.

A one-layer image of a few hundred MB made from this host's own files (``/usr/bin``,
``/usr/share/doc``, ``/usr/lib/python3.11``: binaries and many small files, as in a Debian
image; no network) is imported into a fresh dockyard image store and into a fresh podman
storage (overlay driver). Each store's disk use (allocated blocks, a hard-linked inode
counted once) is divided by the disk use of the image's files unpacked once on the same
filesystem (dockyard's layer directory): one copy is 1.00x; the target is <= 1.05x, podman's
level. Notes give the tar's size, and the time of a ``save`` (the layer's tar regenerated
from the unpacked files, its digest checked) against ``podman save``.

    python -m tests.bench.store [--paths usr/bin,usr/share/doc]   # standalone: prints the figure
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

from tests.bench.stats import NOT_AVAILABLE, Figure, Measure

TARGET = 1.05
PATHS = ("usr/bin", "usr/share/doc", "usr/lib/python3.11")
MB = 1_000_000


def disk_bytes(path: Path) -> int:
    """Allocated bytes under ``path``, each inode once (``du`` without apparent sizes)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, dirs, names in os.walk(path):
        for name in (*dirs, *names):
            info = os.lstat(os.path.join(directory, name))
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
    return total


def measure(paths: tuple[str, ...] = PATHS, log=lambda message: print(message, file=sys.stderr, flush=True),
            parent: Path | None = None) -> list[Figure]:
    from supervisor.images.archive import save
    from supervisor.images.store import ImageStore

    figure = Figure("store_disk", "disk bytes per image byte, a one-layer image of the host's "
                    f"{', '.join('/' + p for p in paths)}", f"<= {TARGET}x (podman's level)", "x")
    ours, podman = Measure("dockyard", "x"), Measure("podman", "x")
    figure.dockyard, figure.anchors = [ours], [podman]
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-store.", dir=parent))
    podman_args = ["podman", "--root", str(work / "podman" / "root"), "--runroot", str(work / "podman" / "run"),
                   "--tmpdir", str(work / "podman" / "tmp"), "--storage-driver", "overlay",
                   "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    try:
        tar = work / "image.tar"
        log(f"store: making the image tar from /{', /'.join(paths)}")
        subprocess.run(["tar", "-C", "/", "--warning=no-file-changed", "-cf", str(tar), *paths], check=False,
                       capture_output=True, timeout=900)
        tar_bytes = tar.stat().st_size
        log(f"store: dockyard import of {tar_bytes / MB:.0f} MB")
        store = ImageStore(work / "dockyard")
        start = time.perf_counter()
        with open(tar, "rb") as source:
            image = store.import_tar(source, "bench/store:1")
        imported = time.perf_counter() - start
        unpacked = disk_bytes(Path(image.layers[0]))
        ours_bytes = disk_bytes(store.dir)
        ours.add(round(ours_bytes / unpacked, 4))
        start = time.perf_counter()
        save(store, ["bench/store:1"], work / "dockyard-save.tar")
        saved = time.perf_counter() - start
        (work / "dockyard-save.tar").unlink()
        ours.note = (f"{ours_bytes / MB:.0f} MB on disk for {unpacked / MB:.0f} MB of files unpacked "
                     f"({tar_bytes / MB:.0f} MB of tar); import {imported:.1f} s, save {saved:.1f} s")
        if shutil.which("podman") is None:
            podman.status = f"{NOT_AVAILABLE}: podman is not installed"
        else:
            log("store: podman import")
            start = time.perf_counter()
            done = subprocess.run([*podman_args, "import", str(tar), "bench/store:1"], capture_output=True,
                                  text=True, timeout=900)
            podman_import = time.perf_counter() - start
            if done.returncode != 0:
                podman.status = f"{NOT_AVAILABLE}: podman import failed: {done.stderr.strip()[-300:]}"
            else:
                podman_bytes = disk_bytes(work / "podman" / "root")
                podman.add(round(podman_bytes / unpacked, 4))
                start = time.perf_counter()
                done = subprocess.run([*podman_args, "save", "-o", str(work / "podman-save.tar"), "bench/store:1"],
                                      capture_output=True, text=True, timeout=900)
                podman_save = time.perf_counter() - start
                podman.note = (f"{podman_bytes / MB:.0f} MB on disk; import {podman_import:.1f} s, "
                               + (f"save {podman_save:.1f} s" if done.returncode == 0 else "save failed"))
        figure.ratio = ours.median
        figure.ratio_basis = "the image's files unpacked once on the same filesystem"
        figure.met = figure.ratio is not None and figure.ratio <= TARGET
        figure.commands = {"dockyard": "ImageStore(ROOT).import_tar(TAR); du ROOT/images",
                           "podman": "podman --storage-driver overlay import TAR; du ROOT"}
    finally:
        if (work / "podman" / "root").exists():
            subprocess.run([*podman_args, "system", "reset", "-f"], capture_output=True, timeout=300)
        subprocess.run(["umount", "-R", str(work / "podman" / "root" / "overlay")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return [figure]


def store_disk(bench) -> list[Figure]:
    """The step for tests/bench/run.py."""
    return measure(PATHS, bench.log, bench.workspace.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.store", description=__doc__.splitlines()[0])
    parser.add_argument("--paths", default=",".join(PATHS), help="host paths (relative to /) in the image")
    args = parser.parse_args(argv)
    for figure in measure(tuple(p.strip("/") for p in args.paths.split(","))):
        for m in (*figure.dockyard, *figure.anchors):
            median = f"{m.median:.3f}x" if m.median is not None else m.status
            print(f"{m.tool:9} {median}" + (f"  ({m.note})" if m.note else ""))
        print(f"dockyard {figure.ratio:.3f}x (target <= {TARGET}x), met: {figure.met}" if figure.ratio else figure.status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
