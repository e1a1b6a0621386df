#!/usr/bin/env bash
# Issue 21's "done when" as a new user would try it, on a private daemon removed at the end:
# 100 containers (--count N) print a numbered line every millisecond, the daemon is killed
# with kill -9 and started again; then `dockyard ps` must show the same containers Up since
# their original start, `dockyard logs` of each no gap, `dockyard events --since 1m` the
# restore. Exit 0 when all hold. (tests/livecheck.py; the integration suite checks 20.)
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m tests.livecheck "$@"
