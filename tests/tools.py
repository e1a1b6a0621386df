"""The programs outside Python that the tests and the demo call, and the Debian package that
brings each one. ``scripts/setup.sh`` installs every package named here (a unit test checks
it), so on a fresh machine a missing tool is a set-up defect, and a test that needs one fails
at once with a message naming the tool and its package, not with an unrelated assertion."""

from __future__ import annotations

import shutil

import pytest

#: program -> Debian package (util-linux and mount are Essential in Debian, installed everywhere)
TOOLS = {
    "busybox": "busybox-static",
    "containerd": "containerd",  # ctr run --runc-binary dockyard-runtime (test_ociruntime.py)
    "ctr": "containerd",
    "docker": "docker.io",  # the docker CLI alone, against dockyard's Engine API (test_api.py)
    "docker-compose": "docker-compose",  # 1.29, through docker-py, against the Engine API (test_api_networks.py)
    "docker-registry": "docker-registry",
    "gcc": "gcc",  # with libc6-dev: the static syscall probe of test_security.py
    "ip": "iproute2",
    "iptables": "iptables",
    "nsenter": "util-linux",
    "openssl": "openssl",  # the CA and certificates of the API's TLS tests (test_api_tls.py)
    "podman": "podman",
    "script": "bsdutils",  # a terminal for podman run -t (tests/integration/test_ociruntime.py)
    "runc": "runc",  # podman --runtime runc: Debian's podman brings crun, which refuses hybrid cgroups
    "skopeo": "skopeo",
    "systemd-socket-activate": "systemd",
    "tini-static": "tini",  # --init's default init binary (docker's docker-init is tini)
    "umoci": "umoci",
}


def require(*programs: str) -> None:
    """Fail the calling test, naming each missing program and its package."""
    missing = [program for program in programs if shutil.which(program) is None]
    if missing:
        named = ", ".join(f"{program} (Debian package {TOOLS[program]})" for program in missing)
        pytest.fail(f"not installed: {named}; ./scripts/setup.sh installs it", pytrace=False)
