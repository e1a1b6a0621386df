"""User-defined networks through the Engine API (workers/api/networks.py): the real `docker`
CLI, docker-py and docker-compose 1.29 (Debian's, which speaks the API through docker-py).

Each test's daemon runs in a network namespace of its own (the fixture of
test_user_networks.py): its bridges, veths, iptables rules and published ports live and die
with that namespace; the API is its unix socket, reached from the host's namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.integration.test_api import docker, docker_client, wait_for_socket
from tests.integration.test_user_networks import netns_daemon, subnet  # noqa: F401 - a fixture
from tests.polling import wait_until
from tests.tools import require

pytestmark = pytest.mark.integration

TIMEOUT = 60.0


@pytest.fixture
def api(netns_daemon):  # noqa: F811 - the imported fixture
    wait_for_socket(netns_daemon.run_dir / "docker.sock")
    yield netns_daemon
    assert netns_daemon.out("ps", "-aq") == "", "a test left a container behind"


def test_docker_network_create_ls_inspect_connect_disconnect_rm(api):
    cidr = subnet()
    prefix = cidr.rsplit(".", 1)[0]
    docker(api, "network", "create", "--subnet", cidr, "--label", "team=api", "front")
    assert docker(api, "network", "ls", "--filter", "label=team=api", "--format", "{{.Name}}").stdout == b"front\n"
    listed = docker(api, "network", "ls", "--format", "{{.Name}}").stdout.decode().split()
    assert sorted(listed) == ["bridge", "front", "host", "none"]
    document = json.loads(docker(api, "network", "inspect", "front").stdout)[0]
    assert (document["Driver"], document["IPAM"]["Config"][0]["Subnet"], document["Labels"]) == (
        "bridge", cidr, {"team": "api"})
    try:
        docker(api, "run", "-d", "--name", "db", "--network", "front", "--network-alias", "database", "base",
               "sleep", "600")
        assert docker(api, "run", "--rm", "--network", "front", "base", "ping", "-c1", "-W5", "database").returncode == 0
        docker(api, "run", "-d", "--name", "other", "base", "sleep", "600")  # on the default bridge
        docker(api, "network", "connect", "--alias", "cache", "--ip", f"{prefix}.77", "front", "other")
        endpoint = json.loads(docker(api, "inspect", "other").stdout)[0]["NetworkSettings"]["Networks"]["front"]
        assert endpoint["IPAddress"] == f"{prefix}.77" and "cache" in endpoint["Aliases"]
        assert endpoint["IPAMConfig"] == {"IPv4Address": f"{prefix}.77"}
        assert docker(api, "exec", "db", "ping", "-c1", "-W5", "cache").returncode == 0
        members = json.loads(docker(api, "network", "inspect", "front").stdout)[0]["Containers"]
        assert sorted(entry["Name"] for entry in members.values()) == ["db", "other"]
        again = docker(api, "network", "connect", "front", "other", check=False)
        assert again.returncode != 0 and b"already connected" in again.stderr
        busy = docker(api, "network", "rm", "front", check=False)
        assert busy.returncode != 0 and b"active endpoints" in busy.stderr and b"db" in busy.stderr
        docker(api, "network", "disconnect", "front", "other")
        assert "front" not in json.loads(docker(api, "inspect", "other").stdout)[0]["NetworkSettings"]["Networks"]
        not_on = docker(api, "network", "disconnect", "front", "other", check=False)
        assert not_on.returncode != 0 and b"not connected" in not_on.stderr
        builtin = docker(api, "network", "rm", "bridge", check=False)
        assert builtin.returncode != 0 and b"pre-defined" in builtin.stderr
    finally:
        docker(api, "rm", "-f", "db", "other", check=False)
    docker(api, "network", "rm", "front")
    missing = docker(api, "network", "inspect", "front", check=False)
    assert missing.returncode == 1 and b"front" in missing.stderr and b"not found" in missing.stderr


def test_docker_py_networks_with_ipam_endpoint_config_prune_and_errors(api):
    docker_py = pytest.importorskip("docker")
    client = docker_client(api)
    cidr = subnet()
    prefix = cidr.rsplit(".", 1)[0]
    ipam = docker_py.types.IPAMConfig(pool_configs=[docker_py.types.IPAMPool(
        subnet=cidr, iprange=f"{prefix}.128/25", gateway=f"{prefix}.254", aux_addresses={"printer": f"{prefix}.129"})])
    network = client.networks.create("app", ipam=ipam, labels={"tier": "back"}, internal=True)
    try:
        assert network.attrs["Internal"] is True and network.attrs["Labels"] == {"tier": "back"}
        assert network.attrs["IPAM"] == {"Driver": "default", "Options": None, "Config": [{
            "Subnet": cidr, "IPRange": f"{prefix}.128/25", "Gateway": f"{prefix}.254",
            "AuxiliaryAddresses": {"printer": f"{prefix}.129"}}]}
        assert network.attrs["Options"] == {}  # the bridge name dockyard picked is its own business
        assert [n.id for n in client.networks.list(names=["app"])] == [network.id]
        assert [n.id for n in client.networks.list(ids=[network.id[:8]])] == [network.id]
        with pytest.raises(docker_py.errors.APIError) as duplicate:
            client.networks.create("app")
        assert duplicate.value.status_code == 409
        endpoint = client.api.create_endpoint_config(aliases=["api"], ipv4_address=f"{prefix}.200")
        container = client.containers.create("base", "sleep 600", name="svc", network="app",
                                             networking_config={"app": endpoint})
        settings = container.attrs["NetworkSettings"]["Networks"]
        assert list(settings) == ["app"] and settings["app"]["IPAddress"] == ""  # created: not attached yet
        assert settings["app"]["IPAMConfig"] == {"IPv4Address": f"{prefix}.200"}
        container.start()
        container.reload()
        attached = container.attrs["NetworkSettings"]["Networks"]["app"]
        assert attached["IPAddress"] == f"{prefix}.200" and attached["NetworkID"] == network.id
        assert attached["Aliases"] == ["api", container.id[:12]]
        assert [c.id for c in client.networks.get("app").containers] == [container.id]
        leased = {client.containers.run("base", "true", network="app", remove=False, detach=True).id}
        assert all(f"{prefix}.129" != client.api.inspect_container(i)["NetworkSettings"]["Networks"]["app"]["IPAddress"]
                   for i in leased)  # an auxiliary address is never handed out
        for ident in leased:
            client.api.remove_container(ident, force=True)
        with pytest.raises(docker_py.errors.APIError) as busy:
            network.remove()
        assert busy.value.status_code == 403 and "svc" in busy.value.explanation
        with pytest.raises(docker_py.errors.NotFound, match="nothing"):
            client.networks.get("nothing")
        with pytest.raises(docker_py.errors.NotFound):
            client.networks.create("elsewhere").connect("no-such-container")
        with pytest.raises(docker_py.errors.APIError) as no_driver:
            client.networks.create("overlaid", driver="overlay")
        assert no_driver.value.status_code == 404 and "bridge network driver only" in no_driver.value.explanation
        container.remove(force=True)
        pruned = client.networks.prune()["NetworksDeleted"]
        assert sorted(pruned) == ["app", "elsewhere"]
        assert sorted(n.name for n in client.networks.list()) == ["bridge", "host", "none"]
    finally:
        for name in ("svc",):
            try:
                client.api.remove_container(name, force=True)
            except docker_py.errors.NotFound:
                pass
        for leftover in client.networks.list(names=["app", "elsewhere"]):
            leftover.remove()
        client.close()


COMPOSE_FILE = """\
version: "3.8"
services:
  web:
    image: base
    command: ["sh", "-c", "echo hello from web > /www/index.html && echo web ready && exec httpd -f -p 80 -h /www"]
    volumes: ["site:/www"]
    ports: ["127.0.0.1:{port}:80"]
    networks: [back]
  client:
    image: base
    command: ["sh", "-c", "echo client up && exec sleep 600"]
    networks: [back]
networks:
  back: {{}}
volumes:
  site: {{}}
"""


def compose(api, directory, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    require("docker-compose")
    env = {**os.environ, "DOCKER_HOST": f"unix://{api.run_dir}/docker.sock", "COMPOSE_INTERACTIVE_NO_CLI": "1"}
    result = subprocess.run([shutil.which("docker-compose"), "-p", "dyt", *args], cwd=directory, env=env,
                            capture_output=True, text=True, timeout=180)
    if check:
        assert result.returncode == 0, f"docker-compose {' '.join(args)} -> {result.returncode}: {result.stderr}"
    return result


def test_docker_compose_up_logs_ps_down_with_a_user_network_a_volume_and_a_published_port(api, tmp_path):
    require("busybox")
    port = 18000 + int.from_bytes(os.urandom(2), "big") % 2000  # the daemon's own network namespace: free
    (tmp_path / "docker-compose.yml").write_text(COMPOSE_FILE.format(port=port))
    try:
        compose(api, tmp_path, "up", "-d")
        assert {n.split()[0] for n in docker(api, "network", "ls", "--format", "{{.Name}}").stdout.decode().split("\n")
                if n} >= {"dyt_back"}
        assert "dyt_site" in docker(api, "volume", "ls", "-q").stdout.decode().split()

        def web_answers_by_name():
            fetched = compose(api, tmp_path, "exec", "-T", "client", "wget", "-qO-", "http://web/", check=False)
            return fetched.returncode == 0 and fetched.stdout

        assert wait_until(web_answers_by_name, "web to answer client by name", TIMEOUT) == "hello from web\n"
        published = subprocess.run(["nsenter", f"--net=/run/netns/{api.netns}", shutil.which("busybox"), "wget",
                                    "-qO-", f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=30)
        assert published.stdout == "hello from web\n", published.stderr
        logs = compose(api, tmp_path, "logs", "--no-color")
        assert "client up" in logs.stdout and "web ready" in logs.stdout
        listing = compose(api, tmp_path, "ps").stdout
        rows = [line for line in listing.splitlines() if line.startswith("dyt_")]
        assert sorted(row.split()[0] for row in rows) == ["dyt_client_1", "dyt_web_1"]
        assert all(" Up " in f" {row} " for row in rows) and f"127.0.0.1:{port}->80/tcp" in listing
        compose(api, tmp_path, "down", "-v")
        assert docker(api, "ps", "-aq").stdout == b""
        assert "dyt_back" not in docker(api, "network", "ls", "--format", "{{.Name}}").stdout.decode().split()
        assert "dyt_site" not in docker(api, "volume", "ls", "-q").stdout.decode().split()
    finally:
        compose(api, tmp_path, "down", "-v", "--timeout", "1", check=False)
