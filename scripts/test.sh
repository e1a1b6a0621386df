#!/usr/bin/env bash
# The whole test suite: unit tests, and (as root) integration tests on the real kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q "$@"
