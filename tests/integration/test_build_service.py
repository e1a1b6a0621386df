"""Issue 24's "done when", tried as a new user would: a Dockerfile for a small web service
(busybox httpd with a CGI script: the test images have no Python) builds with
`dockyard build -t web .`, runs with `dockyard run -p` and answers, rebuilds from the cache
after a change to its last COPY only, pushes to a local registry, and podman pulls and runs it."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import DOCKYARD
from tests.integration.test_build import steps
from tests.integration.test_network import fetch, free_port
from tests.registry_server import Registry

pytestmark = pytest.mark.integration

DOCKERFILE = """\
FROM base
WORKDIR /srv
COPY hello.cgi www/cgi-bin/hello
RUN echo "built for $(uname -m)" > /srv/version && chmod 755 www/cgi-bin/hello
ENV MESSAGE=/srv/message.txt
EXPOSE 8000
CMD ["httpd", "-f", "-p", "8000", "-h", "/srv/www"]
COPY message.txt ./
"""

CGI = """\
#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
cat "$MESSAGE" /srv/version
"""


def build_here(daemon, directory) -> subprocess.CompletedProcess:
    """`dockyard build -t web .` typed in ``directory``."""
    return subprocess.run([DOCKYARD, "build", "-t", "web", "."], cwd=directory, capture_output=True, timeout=180,
                          env=daemon.env)


@pytest.fixture
def open_registry(tmp_path):
    registry = Registry(tmp_path / "open-registry")
    registry.directory.mkdir()
    registry.start()
    yield registry
    registry.stop()


def test_a_web_service_builds_runs_rebuilds_from_cache_pushes_and_runs_in_podman(daemon, open_registry, tmp_path,
                                                                                podman_dir):
    from tests.integration.test_images import podman

    app = tmp_path / "app"
    app.mkdir()
    (app / "Dockerfile").write_text(DOCKERFILE)
    (app / "hello.cgi").write_text(CGI)
    (app / "message.txt").write_text("hello, first version\n")
    # `dockyard build -t web .` from the service's directory, as a user types it
    built = build_here(daemon, app)
    assert built.returncode == 0, built.stderr.decode()
    assert "Step 8/8 : COPY message.txt ./" in built.stdout.decode() and "Successfully tagged web:latest" in built.stdout.decode()
    port = free_port()
    daemon.out("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:8000", "web")
    assert fetch(f"http://127.0.0.1:{port}/cgi-bin/hello") == "hello, first version\nbuilt for x86_64\n"
    daemon.out("rm", "-f", "web")

    (app / "message.txt").write_text("hello, second version\n")
    rebuilt = build_here(daemon, app)
    assert rebuilt.returncode == 0, rebuilt.stderr.decode()
    hits = [cached for instruction, cached in steps(rebuilt.stdout.decode()) if not instruction.startswith("FROM")]
    assert hits == [True] * 6 + [False], rebuilt.stdout.decode()
    daemon.out("run", "-d", "--name", "web2", "-p", f"127.0.0.1:{port}:8000", "web")
    assert fetch(f"http://127.0.0.1:{port}/cgi-bin/hello") == "hello, second version\nbuilt for x86_64\n"
    daemon.out("rm", "-f", "web2")

    ref = f"{open_registry.host}/team/web:2"
    daemon.out("tag", "web", ref)
    assert daemon.out("push", ref).startswith("2: digest: sha256:")
    podman(podman_dir, "pull", "--tls-verify=false", ref)
    podman(podman_dir, "run", "-d", "--name", "served", "--cgroup-parent", f"/{podman_dir.name}", "--runtime", "runc",
           "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", ref)
    try:
        deadline = time.monotonic() + 60
        while True:  # polls the readiness of podman's container's server
            answer = podman(podman_dir, "exec", "served", "wget", "-qO-", "http://127.0.0.1:8000/cgi-bin/hello",
                            check=False)
            if answer.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert answer.stdout.decode() == "hello, second version\nbuilt for x86_64\n", answer.stderr.decode()
    finally:
        podman(podman_dir, "rm", "-f", "served", check=False)
