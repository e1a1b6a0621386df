"""The start cost of ``--userns-remap`` (issue 18 item 4): ``run --rm --network none base
true`` on a daemon with the mapping (idmapped layers, and the chowned-copy fallback) and on
one without, interleaved, medians. Not in ``scripts/bench.sh``'s table: the figure goes in
docs/security.md ("User namespaces"), with the state of the machine it was taken on.

    .venv/bin/python -m tests.bench.userns [--reps 30]

Needs root. Each daemon has a private root under a directory of its own (0711: the mapped
root must pass through it), its own subordinate id files (nobody's, from 400000) and its own
bridge; all are removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import DOCKYARD, private_daemon
from tests.rootfs import build_rootfs_tar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.userns", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30, help="runs per daemon (default 30)")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="dockyard-bench-userns-", dir="/tmp"))
    try:
        base.chmod(0o711)
        for name in ("subuid", "subgid"):
            (base / name).write_text("65534:400000:65536\n")
        remap = ("--userns-remap", "65534:65534", "--subuid-file", str(base / "subuid"),
                 "--subgid-file", str(base / "subgid"))
        tar = build_rootfs_tar(base / "busybox.tar")
        with private_daemon(base / "plain", tar) as plain, \
                private_daemon(base / "idmapped", tar, *remap) as idmapped, \
                private_daemon(base / "copies", tar, *remap, "--userns-layers", "copy") as copies:
            daemons = {"no user namespace": plain, "--userns-remap (idmapped layers)": idmapped,
                       "--userns-remap (chowned copies)": copies}
            samples: dict[str, list[float]] = {name: [] for name in daemons}
            for daemon in daemons.values():  # warm-up: the first start compiles and copies
                daemon.out("run", "--rm", "--network", "none", "base", "true")
            for rep in range(args.reps):
                names = list(daemons)
                names = names[rep % len(names):] + names[:rep % len(names)]  # rotate the order
                for name in names:
                    started = time.perf_counter()
                    daemons[name].out("run", "--rm", "--network", "none", "base", "true")
                    samples[name].append(time.perf_counter() - started)
            stage = stage_cost(base, tar, args.reps * 5)
        print(f"`{Path(DOCKYARD).name} run --rm --network none base true`, {args.reps} runs each, interleaved:")
        reference = statistics.median(samples["no user namespace"])
        for name, values in samples.items():
            median = statistics.median(values)
            print(f"  {name:34} median {median * 1000:6.1f} ms  (+{(median - reference) * 1000:5.1f} ms)  "
                  f"min {min(values) * 1000:6.1f} ms")
        print(f"the stage's own part ({args.reps * 5} forks each, interleaved): overlay only median "
              f"{stage[0] * 1000:.2f} ms; user namespace + idmapped layer + overlay median {stage[1] * 1000:.2f} ms "
              f"(+{(stage[1] - stage[0]) * 1000:.2f} ms)")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def stage_cost(base: Path, tar: Path, reps: int) -> tuple[float, float]:
    """Median seconds of a forked child that mounts the overlay in a mount namespace of its own,
    without and with what ``--userns-remap`` adds before it (``runtime/userns.py``: the user
    namespace and its maps, the layer idmapped), as stage 0 does; the rest of a start is the same."""
    import os
    import tarfile

    from supervisor.runtime import libc, userns

    layer, upper, work, merged = (base / "stage" / name for name in ("layer", "upper", "work", "merged"))
    for directory in (layer, upper, work, merged):
        directory.mkdir(parents=True)
    with tarfile.open(tar) as archive:
        archive.extractall(layer, filter="fully_trusted")
    options = f"lowerdir={layer},upperdir={upper},workdir={work}"

    def once(mapped: bool) -> float:
        shutil.rmtree(work / "work" / "incompat", ignore_errors=True)  # a volatile mount's marker
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                if mapped:
                    fd = userns.make_user_namespace(["0 400000 65536"], ["0 400000 65536"])
                libc.unshare(libc.CLONE_NEWNS)
                libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
                if mapped:
                    userns.idmap_in_place(str(layer), fd)
                libc.mount("overlay", str(merged), "overlay", 0, options + ",volatile")
            except BaseException as exc:
                print(f"the stage's part failed: {exc}", file=sys.stderr)
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status:
            raise RuntimeError("the stage's part failed")
        return time.perf_counter() - started

    plain, mapped = [], []
    for rep in range(reps):
        for flag in ((False, True) if rep % 2 else (True, False)):
            (mapped if flag else plain).append(once(flag))
    return statistics.median(plain), statistics.median(mapped)


if __name__ == "__main__":
    sys.exit(main())
