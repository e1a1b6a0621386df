#!/usr/bin/env bash
# The benchmark suite of issue 9, as root on Debian 12: installs the anchors (runc, crun,
# podman, docker.io, skopeo, umoci, busybox-static) and the bench-only Python package
# matplotlib into .venv, then measures dockyard against them and prints the table.
# Writes bench-results/results.json, docs/benchmarks.md and docs/benchmarks.png.
#
#   scripts/bench.sh            # full run, about 15 minutes
#   scripts/bench.sh --quick    # 2-minute smoke run
#   scripts/bench.sh --help     # every option (--many N, --reps N, --only run_rm,api ...)
#   scripts/bench.sh --only live_restore --no-doc   # issue 21: keeper memory, adoption time, throughput
#   scripts/bench.sh --only lines --no-doc  # issue 26: CPU per 1000 lines, logs -f latency
#   (every --only run also measures the memory rows, unless --no-memory: then it says "partial")
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bench: run as root (containers, cgroups and a private dockerd need it)" >&2
    exit 2
fi

packages=(runc crun podman docker.io skopeo umoci busybox-static docker-registry)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "bench: installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    scripts/setup.sh
fi
if ! .venv/bin/python -c "import matplotlib" 2>/dev/null; then
    echo "bench: installing matplotlib into .venv (bench only)" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check matplotlib
fi

exec .venv/bin/python -m tests.bench.run "$@"
