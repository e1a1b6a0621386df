#!/usr/bin/env bash
# A tour of dockyard's main job, on a private daemon that is stopped again at the end:
# build a `base` image from busybox, run containers that show isolation, output and events.
# Arguments are more flags for the daemon: `scripts/demo.sh --userns-remap default` runs the
# same tour with container root mapped to an unprivileged host uid (docs/security.md).
set -euo pipefail
cd "$(dirname "$0")/.."
dockyard=$PWD/.venv/bin/dockyard
work=$(mktemp -d /tmp/dockyard-demo.XXXXXX)
chmod 711 "$work"  # a remapped container's root must pass through it (--userns-remap)
export DOCKYARD_ROOT=$work/root DOCKYARD_RUN=$work/run
daemon_pid=""; events_pid=""

cleanup() {
    [ -n "$events_pid" ] && kill "$events_pid" 2>/dev/null || true
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid"; wait "$daemon_pid" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "start the daemon (state in $work)"
"$dockyard" daemon --cgroup-parent dockyard-demo --bridge-name dydemo0 --bridge-subnet 10.213.254.0/24 "$@" \
    2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do
    [ -S "$DOCKYARD_RUN/control.sock" ] && "$dockyard" info >/dev/null 2>&1 && break
    sleep 0.1
done
show "$dockyard" info | head -5

step "stream lifecycle events in the background"
"$dockyard" events --since 0 | sed -u 's/^/  [event] /' &
events_pid=$!

step "create the 'base' image from a busybox-static root filesystem"
.venv/bin/python -c "from tests.rootfs import build_rootfs_tar; from pathlib import Path; build_rootfs_tar(Path('$work/busybox.tar'))"
show "$dockyard" import "$work/busybox.tar" base
show "$dockyard" images

step "isolation: pid 1, its own hostname, only the image's files"
show "$dockyard" run --rm base sh -c 'echo "pid $$ on $(hostname)"; ls /'

step "isolation: no host processes, docker's capabilities; its own network namespace"
show "$dockyard" run --rm base sh -c 'ps; grep -E "CapEff|NoNewPrivs" /proc/self/status; ip -o -4 addr'
show "$dockyard" run --rm --network none base ls /sys/class/net

step "network: a published port on the host's loopback, and container to container by address"
show "$dockyard" run -d --name web -p 127.0.0.1:18080:80 base httpd -f -p 80 -h /etc
for _ in $(seq 50); do  # bounded: until httpd listens
    "$dockyard" exec web sh -c 'netstat -ltn | grep -q ":80 "' 2>/dev/null && break
    sleep 0.1
done
show "$dockyard" port web
show .venv/bin/python -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:18080/hostname", timeout=5).read().decode().strip())'
web_ip=$("$dockyard" inspect web | grep -m1 '"IPAddress"' | grep -oE '[0-9]+(\.[0-9]+){3}')
show "$dockyard" run --rm base wget -qO- "http://$web_ip/hostname"
show "$dockyard" rm -f web

step "copy-on-write: a container's writes never reach the image"
show "$dockyard" run --name scribble base sh -c 'echo scribbled > /etc/motd; cat /etc/motd'
show "$dockyard" run --rm base sh -c 'cat /etc/motd 2>&1 || true'
show "$dockyard" diff scribble
show "$dockyard" commit -m "scribbled on" scribble scribbled:1
show "$dockyard" run --rm scribbled:1 cat /etc/motd
show "$dockyard" history scribbled:1

step "exit codes, stdout and stderr kept apart"
show "$dockyard" run --rm base sh -c 'echo to-stdout; echo to-stderr >&2; exit 3' || echo "exit code: $?"

step "logs: stored by the collector worker, kept after exit"
show "$dockyard" run -d --name chatty base sh -c 'for i in 1 2 3 4 5; do echo line $i; done; echo oops >&2'
show "$dockyard" wait chatty
show "$dockyard" logs --tail 3 chatty
show "$dockyard" rm chatty

step "restart policy: a failing container is restarted by the monitor worker, with backoff"
show "$dockyard" run -d --name flaky --restart on-failure:2 base sh -c 'exit 1'
for _ in $(seq 50); do  # bounded: 2 restarts take about 0.3 s of backoff
    "$dockyard" inspect flaky | grep -q '"RestartCount": 2' && break
    sleep 0.1
done
"$dockyard" inspect flaky | grep -E '"RestartCount"'
show "$dockyard" rm -f flaky

step "a long-running container: ps, inspect, stop (SIGTERM, then SIGKILL after -t)"
show "$dockyard" run -d --name sleeper base sleep 1000
show "$dockyard" ps
"$dockyard" inspect sleeper | grep -E '"(Status|Pid|StartedAt)"'
show "$dockyard" stop -t 1 sleeper
show "$dockyard" wait sleeper
show "$dockyard" ps -a
show "$dockyard" rm sleeper scribble

sleep 0.5  # let the background event stream print the last events before we stop it
step "stop the daemon (SIGTERM: running containers are stopped, exit 0)"
kill -TERM "$events_pid"; events_pid=""
kill -TERM "$daemon_pid"; wait "$daemon_pid"; echo "daemon exited with $?"; daemon_pid=""
