"""Pause and unpause on the real kernel (cgroup v1's freezer here): `dockyard pause`, the
`docker` CLI and docker-py through the Engine API, on the API tests' private daemon."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration.test_api import api_daemon, daemon, docker, docker_client  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

FREEZER = Path("/sys/fs/cgroup/freezer")


def freezer_state(instance, container_id: str) -> str:
    return (FREEZER / instance.cgroup_parent / container_id / "freezer.state").read_text().strip()


def test_dockyard_pause_freezes_every_process_and_unpause_thaws_them(daemon):  # noqa: F811 - the fixture
    if not FREEZER.is_dir():
        pytest.skip("no cgroup v1 freezer hierarchy on this host")
    since = time.time()
    container = daemon.out("run", "-d", "--name", "cold", "base", "sh", "-c", "sleep 600 & sleep 600").strip()
    try:
        assert daemon.out("pause", "cold").strip() == "cold"
        assert freezer_state(daemon, container) == "FROZEN"
        state = json.loads(daemon.out("inspect", "cold"))[0]["State"]
        assert (state["Status"], state["Running"], state["Paused"]) == ("paused", True, True) and state["Pid"] > 0
        assert "(Paused)" in daemon.out("ps", "--filter", "name=cold")
        assert daemon.out("ps", "-q", "--filter", "status=paused").strip() == container[:12]
        again = daemon.cli("pause", "cold")
        assert again.returncode == 1 and b"cannot pause container cold: it is already paused" in again.stderr
        refused = daemon.cli("exec", "cold", "true")
        assert refused.returncode != 0 and b"it is paused: unpause it first" in refused.stderr
        assert daemon.out("unpause", "cold").strip() == "cold"
        assert freezer_state(daemon, container) == "THAWED"
        assert json.loads(daemon.out("inspect", "cold"))[0]["State"]["Status"] == "running"
        assert daemon.cli("exec", "cold", "true").returncode == 0
        not_paused = daemon.cli("unpause", "cold")
        assert not_paused.returncode == 1 and b"cannot unpause container cold: it is not paused" in not_paused.stderr
        daemon.out("pause", "cold")
        refused = daemon.cli("rm", "cold")
        assert refused.returncode == 1 and b"it is paused: stop it first, or use --force" in refused.stderr
        daemon.out("stop", "-t", "1", "cold")  # sleep as pid 1 ignores SIGTERM: KILL after the thaw and 1 s
        state = json.loads(daemon.out("inspect", "cold"))[0]["State"]
        assert (state["Status"], state["Paused"], state["ExitCode"]) == ("exited", False, 137)
        actions = docker(daemon, "events", "--since", str(since), "--until", str(time.time() + 1), "--filter",
                         f"container={container}", "--format", "{{.Action}}").stdout.decode().split()
        assert [a for a in actions if a in ("pause", "unpause", "die")] == ["pause", "unpause", "pause", "unpause", "die"]
    finally:
        daemon.cli("rm", "-f", "cold")


def test_docker_pause_unpause_kill_and_rm_force_of_a_paused_container(daemon):  # noqa: F811 - the fixture
    container = docker(daemon, "run", "-d", "--name", "iced", "base", "sleep", "600").stdout.decode().strip()
    try:
        docker(daemon, "pause", "iced")
        status = docker(daemon, "ps", "--filter", "name=iced", "--format", "{{.Status}}").stdout.decode()
        assert status.startswith("Up") and status.strip().endswith("(Paused)")
        assert docker(daemon, "inspect", "-f", "{{.State.Status}} {{.State.Paused}}", "iced").stdout == b"paused true\n"
        refused = docker(daemon, "exec", "iced", "true", check=False)
        assert refused.returncode != 0 and b"is paused, unpause the container before exec" in refused.stderr
        again = docker(daemon, "pause", "iced", check=False)
        assert again.returncode != 0 and b"is already paused" in again.stderr
        docker(daemon, "unpause", "iced")
        not_paused = docker(daemon, "unpause", "iced", check=False)
        assert not_paused.returncode != 0 and b"is not paused" in not_paused.stderr
        docker(daemon, "pause", "iced")
        docker(daemon, "kill", "iced")  # answered once it is down, as docker's
        assert docker(daemon, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "iced").stdout == b"exited 137\n"
        docker(daemon, "start", "iced")
        docker(daemon, "pause", "iced")
        docker(daemon, "rm", "-f", "iced")
        assert docker(daemon, "ps", "-aq", "--filter", f"id={container}").stdout == b""
    finally:
        docker(daemon, "rm", "-f", "iced", check=False)


def test_docker_py_pause_unpause(daemon):  # noqa: F811 - the fixture
    client = docker_client(daemon)
    container = client.containers.run("base", ["sleep", "600"], detach=True)
    try:
        container.pause()
        container.reload()
        assert (container.status, container.attrs["State"]["Running"], container.attrs["State"]["Paused"]) == \
               ("paused", True, True)
        assert client.info()["ContainersPaused"] == 1
        container.unpause()
        container.reload()
        assert (container.status, container.attrs["State"]["Paused"]) == ("running", False)
    finally:
        container.remove(force=True)
        client.close()
