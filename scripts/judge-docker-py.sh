#!/usr/bin/env bash
# docker-py's own integration tests against dockyard's Engine API, and (with --dockerd)
# against a private Debian dockerd on the same machine in the same run: the external judge of
# issue 20 (/work/shared/JUDGES.md). CI never runs this; docs/api.md has the last figures.
#
#   scripts/judge-docker-py.sh --source DIR [--ref 7.1.0] [--dockerd] [--keep] [FILE...]
#
# --source: a git directory of docker/docker-py (a mirror or a clone); the tests are taken from
#   the tag --ref with `git archive` into a temporary directory (never copied into this repo).
# FILE: test files under tests/integration (default: the list of JUDGES.md).
# Needs root (a private daemon each), python3-venv, and for --dockerd Debian's docker.io.
# dockyard runs with --live-restore=false: its SIGTERM at the end stops what the suite left
# running (with live restore a keeper process would hold those containers after the run).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

source_dir="" ref="7.1.0" with_dockerd=0 keep=0 files=()
while (($#)); do
    case "$1" in
        --source) source_dir=$2; shift 2 ;;
        --ref) ref=$2; shift 2 ;;
        --dockerd) with_dockerd=1; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) files+=("$1"); shift ;;
    esac
done
[ -n "$source_dir" ] || { echo "judge: --source DIR (a git directory of docker/docker-py) is required" >&2; exit 2; }
((${#files[@]})) || files=(api_client api_container api_exec api_image api_volume api_network api_healthcheck
                            errors client models_containers models_images models_volumes models_networks
                            models_resources regression)

work=$(mktemp -d /tmp/judge-docker-py.XXXXXX)
daemon_pid="" dockerd_pid=""
# dockerd's own bridge: with its default docker0, another dockerd on the machine that stops
# (another session's) deletes the bridge under this one and every later start fails.
dockerd_bridge="dyjudged0"
cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
    [ -n "$dockerd_pid" ] && kill "$dockerd_pid" 2>/dev/null && wait "$dockerd_pid" 2>/dev/null || true
    ip link del "$dockerd_bridge" 2>/dev/null || true
    if ((keep)); then echo "judge: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "judge: docker-py $ref from $source_dir into $work/docker-py"
mkdir -p "$work/docker-py"
git --git-dir="$(cd "$source_dir" && git rev-parse --absolute-git-dir)" archive "$ref" | tar -x -C "$work/docker-py"

echo "judge: a virtualenv with docker==$ref pytest pytest-timeout paramiko"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check "docker==$ref" pytest pytest-timeout paramiko 2>&1 \
    | grep -v '^WARNING: Location' || true

echo "judge: a busybox rootfs for alpine:3.10, alpine:latest, busybox:latest"
"$repo/.venv/bin/python" -c "import sys; sys.path.insert(0, '$repo'); from pathlib import Path; \
from tests.rootfs import build_rootfs_tar; build_rootfs_tar(Path('$work/busybox.tar'))"

tests=()
for name in "${files[@]}"; do tests+=("tests/integration/${name%_test.py}_test.py"); done

run_suite() {  # run_suite LABEL SOCKET: the suite against one engine; the summary line in $work/LABEL.summary
    local label=$1 socket=$2
    echo "judge: running ${#tests[@]} files against $label"
    (cd "$work/docker-py" && DOCKER_HOST="unix://$socket" timeout 3600 "$work/venv/bin/python" -m pytest -q \
        -p no:cacheprovider --timeout 60 -o addopts= -rf "${tests[@]}" >"$work/$label.log" 2>&1) || true
    tail -1 "$work/$label.log" | tee "$work/$label.summary"
    grep -E '^FAILED' "$work/$label.log" | sed 's/ - .*//' | sort >"$work/$label.failed" || true
}

# --- dockyard ----------------------------------------------------------------------------------
mkdir -p "$work/dockyard"
"$repo/.venv/bin/dockyard" daemon --root "$work/dockyard/root" --run "$work/dockyard/run" \
    --cgroup-parent "dockyard-judge-$$" --bridge-name "dyjudge0" --bridge-subnet 10.213.252.0/24 --live-restore=false \
    >"$work/dockyard/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 200); do
    curl -sf --unix-socket "$work/dockyard/run/docker.sock" http://d/_ping >/dev/null 2>&1 && break
    sleep 0.1
done
export DOCKYARD_RUN="$work/dockyard/run"
"$repo/.venv/bin/dockyard" import "$work/busybox.tar" alpine:3.10 >/dev/null
"$repo/.venv/bin/dockyard" tag alpine:3.10 alpine:latest >/dev/null
"$repo/.venv/bin/dockyard" tag alpine:3.10 busybox:latest >/dev/null
run_suite dockyard "$work/dockyard/run/docker.sock"
kill "$daemon_pid"; wait "$daemon_pid" || true; daemon_pid=""

# --- Debian's dockerd, for reference -------------------------------------------------------------
if ((with_dockerd)); then
    mkdir -p "$work/dockerd/data" "$work/dockerd/exec"
    ip link del "$dockerd_bridge" 2>/dev/null || true
    ip link add "$dockerd_bridge" type bridge
    ip addr add 10.213.253.1/24 dev "$dockerd_bridge"
    ip link set "$dockerd_bridge" up
    dockerd --data-root "$work/dockerd/data" --exec-root "$work/dockerd/exec" -H "unix://$work/dockerd/docker.sock" \
        --pidfile "$work/dockerd/docker.pid" --iptables=false --bridge "$dockerd_bridge" \
        >"$work/dockerd/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 300); do
        curl -sf --unix-socket "$work/dockerd/docker.sock" http://d/_ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    DOCKER_HOST="unix://$work/dockerd/docker.sock" /usr/bin/docker import "$work/busybox.tar" alpine:3.10 >/dev/null
    DOCKER_HOST="unix://$work/dockerd/docker.sock" /usr/bin/docker tag alpine:3.10 alpine:latest
    DOCKER_HOST="unix://$work/dockerd/docker.sock" /usr/bin/docker tag alpine:3.10 busybox:latest
    run_suite dockerd "$work/dockerd/docker.sock"
    kill "$dockerd_pid"; wait "$dockerd_pid" || true; dockerd_pid=""
fi

echo
echo "judge: docker-py $ref, ${#tests[@]} files"
echo "  dockyard: $(cat "$work/dockyard.summary")"
if ((with_dockerd)); then
    echo "  dockerd:  $(cat "$work/dockerd.summary")"
    echo "  failing against dockyard only:"
    comm -23 "$work/dockyard.failed" "$work/dockerd.failed" | sed 's/^/    /'
fi
