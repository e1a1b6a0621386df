#!/usr/bin/env bash
# Install everything dockyard needs on Debian 12, as root: Debian packages and a virtualenv
# in .venv with dockyard and its test extras. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every package a test or the demo calls a program from (tests/tools.py lists them; a unit
# test checks the two agree). runc: podman runs with --runtime runc in the tests, and
# Debian's podman brings only crun, which refuses hybrid cgroup hosts. libseccomp2: the
# daemon compiles the seccomp profiles with it; gcc and libc6-dev build the static syscall
# probe of tests/integration/test_security.py. docker.io: its `docker` CLI drives dockyard's
# Engine API in tests/integration/test_api.py (its dockerd is not started); docker-compose (1.29)
# drives it in test_api_networks.py. tini: the static
# init of `run --init` (tini-static). openssl: the certificates of the API's TLS tests.
packages=(bsdutils busybox-static containerd docker.io docker-compose python3-venv python3-dev iproute2 iptables openssl podman runc skopeo umoci docker-registry systemd util-linux libseccomp2 gcc libc6-dev tini)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Debian's python3, the one python3-venv and python3-dev above belong to (a python3 earlier
# on PATH, say pyenv's, is often built with a shared libpython: ~1.3 ms of dynamic
# relocations on every start of the CLI, dockyard-runtime and the fork server). PYTHON=...
# chooses another.
python=${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($python --version)"
    "$python" -m venv .venv
fi
# compat mode: a plain path entry in a .pth file, not an import hook (20 ms per start).
.venv/bin/python -m pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e '.[test]'
# dockyard-runtime runs with `python -S` (site and the venv's .pth files are ~1.5 ms of each of
# its commands, which conmon and containerd call several times per container; the script
# finds its package itself). pip writes the interpreter alone on a script's first line.
sed -i '1s|^\(#!/[^ ]*/python[0-9.]*\)$|\1 -S|' .venv/bin/dockyard-runtime
# Byte-compile now: the CLI and the container init stage must not compile on every start
# (and cannot cache it where PYTHONDONTWRITEBYTECODE is set).
.venv/bin/python -m compileall -q supervisor bus logs workers .venv/lib >/dev/null || true
echo "setup: ready (.venv/bin/dockyard)"
