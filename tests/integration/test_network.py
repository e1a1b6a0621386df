"""Container networking on the real kernel: each private daemon has its own bridge and
/24 of 10.213.0.0/16 (conftest). Traffic stays on loopback and that bridge."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import time

import pytest

from tests.conftest import Daemon, link_exists

pytestmark = pytest.mark.integration


def settings(daemon: Daemon, name: str) -> dict:
    return json.loads(daemon.out("inspect", name))[0]["NetworkSettings"]


def veths(daemon: Daemon) -> list[str]:
    """Links enslaved to the daemon's bridge."""
    directory = f"/sys/class/net/{daemon.bridge}/brif"
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def leases(daemon: Daemon) -> dict:
    path = daemon.root / "network" / f"leases-{daemon.bridge}.json"
    return json.loads(path.read_text())["leases"] if path.exists() else {}


def nat_rules(daemon: Daemon) -> str:
    """The daemon's DNAT chain (supervisor/network/nat.py)."""
    from supervisor.network.nat import daemon_id

    chain = f"DY-{daemon_id(daemon.root)}"
    result = subprocess.run(["iptables", "-w", "-t", "nat", "-S", chain], capture_output=True, text=True)
    return result.stdout


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch(url: str, tries: int = 100) -> str:
    """GET through a published port, polling until the server in the container is listening."""
    for _ in range(tries):
        result = subprocess.run(["busybox", "wget", "-qO-", url], capture_output=True, timeout=10)
        if result.returncode == 0:
            return result.stdout.decode()
        time.sleep(0.05)  # polls the readiness of the container's server
    raise AssertionError(f"{url}: {result.stderr.decode()}")


def test_bridge_address_hosts_files_and_reach_by_address_and_published_port(daemon):
    port = free_port()
    daemon.out("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:80", "--add-host", "db.test:10.1.2.3",
               "base", "httpd", "-f", "-p", "80", "-h", "/etc")
    web = settings(daemon, "web")
    address = web["IPAddress"]
    subnet = daemon.subnet.rsplit(".", 1)[0]
    assert address.startswith(subnet + ".") and web["Gateway"] == subnet + ".1"
    assert web["MacAddress"] == "02:42:" + ":".join(f"{int(b):02x}" for b in address.split("."))
    assert web["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert daemon.out("port", "web") == f"80/tcp -> 127.0.0.1:{port}\n"
    assert daemon.out("port", "web", "80") == f"127.0.0.1:{port}\n"
    assert f"127.0.0.1:{port}->80/tcp" in daemon.out("ps")
    hostname = daemon.out("exec", "web", "hostname").strip()
    assert fetch(f"http://127.0.0.1:{port}/hostname") == hostname + "\n"
    hosts = daemon.out("exec", "web", "cat", "/etc/hosts")
    assert f"{address}\t{hostname}" in hosts and "10.1.2.3\tdb.test" in hosts
    # Another container fetches the same page by web's address, through the bridge.
    assert daemon.out("run", "--rm", "base", "wget", "-qO-", f"http://{address}/hostname") == hostname + "\n"
    eth0 = daemon.out("exec", "web", "ip", "-o", "-4", "addr", "show", "eth0")
    assert f"{address}/24" in eth0
    assert "default via " + web["Gateway"] in daemon.out("exec", "web", "ip", "route")
    assert len(veths(daemon)) == 1
    daemon.out("restart", "-t", "0", "web")  # a new namespace: a new veth (same name), a new lease
    again = settings(daemon, "web")["IPAddress"]
    assert again != address and list(leases(daemon)) == [again] and len(veths(daemon)) == 1
    assert fetch(f"http://127.0.0.1:{port}/hostname") == hostname + "\n"
    daemon.out("rm", "-f", "web")
    assert veths(daemon) == [] and leases(daemon) == {}
    # The generated files never reach an image.
    assert "hosts" not in daemon.out("run", "--name", "probe", "base", "true") + daemon.out("diff", "probe")


async def test_udp_proxy_relays_datagrams_both_ways():
    """The UDP side of the userland proxy on real loopback sockets (busybox has no UDP
    server to run in a container): datagrams in, replies back to each client."""
    import trio

    from supervisor.network import PortMapping, proxy

    server = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await server.bind(("127.0.0.1", 0))
    mapping = PortMapping(server.getsockname()[1], "udp", "127.0.0.1", 0)

    async def echo() -> None:
        while True:
            data, peer = await server.recvfrom(100)
            await server.sendto(data.upper(), peer)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        sock, port = await proxy.bind(mapping, "udp-test")
        nursery.start_soon(proxy.serve, sock, mapping, "127.0.0.1")
        for text in (b"one", b"two"):
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                await client.sendto(text, ("127.0.0.1", port))
                assert await client.recv(100) == text.upper()
        with pytest.raises(Exception, match="port is already allocated"):
            await proxy.bind(PortMapping(80, "udp", "127.0.0.1", port), "second")
        nursery.cancel_scope.cancel()
    server.close()


def test_a_missing_command_is_reported_not_the_network(daemon):
    result = daemon.cli("run", "--rm", "base", "no-such-command")
    assert result.returncode == 127 and b"executable file not found" in result.stderr
    assert veths(daemon) == [] and leases(daemon) == {}


def test_publish_all_uses_the_images_exposed_ports(daemon, busybox_tar):
    daemon.out("import", "-c", "EXPOSE 80 53/udp", str(busybox_tar), "exposed")
    daemon.out("run", "-d", "--name", "all", "-P", "exposed", "httpd", "-f", "-p", "80", "-h", "/etc")
    ports = settings(daemon, "all")["Ports"]
    assert sorted(ports) == ["53/udp", "80/tcp"]
    assert all(b["HostIp"] == "0.0.0.0" and int(b["HostPort"]) > 0 for v in ports.values() for b in v)
    host_port = ports["80/tcp"][0]["HostPort"]
    address = settings(daemon, "all")["IPAddress"]
    rules = nat_rules(daemon)  # DNAT for every local address, loopback included
    assert f"-p tcp -m tcp --dport {host_port}" in rules and f"--to-destination {address}:80" in rules
    assert f"--to-destination {address}:53" in rules
    hostname = daemon.out("exec", "all", "hostname").strip()
    assert fetch(f"http://127.0.0.1:{host_port}/hostname") == hostname + "\n"
    daemon.out("rm", "-f", "all")
    assert "DNAT" not in nat_rules(daemon)


def test_none_host_and_container_modes(daemon):
    assert daemon.out("run", "--rm", "--network", "none", "base", "ls", "/sys/class/net").split() == ["lo"]
    host_links = sorted(os.listdir("/sys/class/net"))
    assert daemon.out("run", "--rm", "--network", "host", "base", "ls", "/sys/class/net").split() == host_links
    daemon.out("run", "-d", "--name", "first", "base", "sleep", "1000")
    address = settings(daemon, "first")["IPAddress"]
    shared = daemon.out("run", "--rm", "--network", "container:first", "base", "ip", "-o", "-4", "addr", "show", "eth0")
    assert f"{address}/24" in shared
    daemon.out("rm", "-f", "first")
    failed = daemon.cli("run", "--rm", "--network", "container:first", "base", "true")
    assert failed.returncode != 0 and b"no such container: first" in failed.stderr
    before = daemon.out("ps", "-aq")
    bad = daemon.cli("run", "--network", "bogus", "base", "true")
    assert bad.returncode != 0 and b"network bogus not found" in bad.stderr  # a name: no such user network
    assert daemon.out("ps", "-aq") == before  # refused at create, as docker


def test_network_none_still_names_its_hostname_in_etc_hosts(daemon):
    hosts = daemon.out("run", "--rm", "--network", "none", "--hostname", "lonely", "base", "cat", "/etc/hosts")
    assert "127.0.0.1\tlonely" in hosts.splitlines()  # podman's: sudo and Java resolve their own name
    assert daemon.out("run", "--rm", "--network", "none", "-h", "lonely", "base", "ping", "-c", "1", "-W", "1",
                      "lonely").count("1 packets received") == 1


def test_port_conflict_is_a_clear_error_before_the_start(daemon):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = daemon.cli("run", "--name", "clash", "-p", f"127.0.0.1:{port}:80", "base", "true")
    assert result.returncode == 125
    assert f"bind 127.0.0.1:{port}/tcp for port 80/tcp of container clash: port is already allocated" in result.stderr.decode()
    assert json.loads(daemon.out("inspect", "clash"))[0]["State"]["Status"] == "exited"
    assert veths(daemon) == [] and leases(daemon) == {}
    daemon.out("rm", "clash")


def test_daemon_sigkill_and_restart_leaves_no_veth_or_lease(daemon):
    daemon.out("run", "-d", "--name", "orphan", "-p", "127.0.0.1::80", "-p", "80", "base", "sleep", "1000")
    assert len(veths(daemon)) == 1 and len(leases(daemon)) == 1 and "DNAT" in nat_rules(daemon)
    daemon.stop(signal.SIGKILL)
    ready = daemon.log().count("daemon ready")
    daemon.start()  # ready when the bus answers; the Supervisor (and its reconcile) may still run
    deadline = time.monotonic() + 20
    while daemon.log().count("daemon ready") == ready and time.monotonic() < deadline:
        time.sleep(0.02)
    assert veths(daemon) == [] and leases(daemon) == {} and "DNAT" not in nat_rules(daemon)
    assert link_exists(daemon.bridge)
    info = json.loads(daemon.out("info"))["network"]
    assert info["bridge"] == daemon.bridge and info["subnet"] == daemon.subnet and info["leases"] == 0
    assert info["leases_released_at_start"] == 1
    assert info["published_ports"]["mode"] == "kernel" and info["published_ports"]["rule_failures"] == 0
    assert info["published_ports"]["rules_removed_at_start"] == 2  # one DNAT rule per port
    daemon.out("rm", "orphan")


def test_ip_masq_rule_exists_while_the_daemon_runs(tmp_path, busybox_tar):
    from tests.conftest import ROOT

    if not ROOT:
        pytest.skip("needs root")
    instance = Daemon(tmp_path)
    rule = ["POSTROUTING", "-s", instance.subnet, "!", "-o", instance.bridge, "-m", "comment",
            "--comment", f"dockyard:{instance.bridge}", "-j", "MASQUERADE"]
    check = ["iptables", "-w", "-t", "nat", "-C", *rule]
    try:
        with open(instance.log_path, "ab") as log:
            instance.process = subprocess.Popen(
                [*_daemon_argv(instance), "--ip-masq"], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=instance.env,
            )
        _wait_ready(instance)
        assert subprocess.run(check, capture_output=True).returncode == 0, "the MASQUERADE rule is missing"
        assert instance.stop() == 0
        assert subprocess.run(check, capture_output=True).returncode != 0, "the MASQUERADE rule is left behind"
        assert not link_exists(instance.bridge)
        from supervisor.network.nat import daemon_id

        assert subprocess.run(["iptables", "-w", "-t", "nat", "-S", f"DY-{daemon_id(instance.root)}"],
                              capture_output=True).returncode != 0, "the DNAT chain is left behind"
    finally:
        subprocess.run(["iptables", "-w", "-t", "nat", "-D", *rule], capture_output=True)
        instance.cleanup()


def _daemon_argv(instance: Daemon) -> list[str]:
    from tests.conftest import DOCKYARD

    return [DOCKYARD, "daemon", "--root", str(instance.root), "--run", str(instance.run_dir), "--cgroup-parent",
            instance.cgroup_parent, "--bridge-name", instance.bridge, "--bridge-subnet", instance.subnet]


def _wait_ready(instance: Daemon) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert instance.process.poll() is None, instance.log()
        if "daemon ready" in instance.log():  # the Supervisor (and its network) is up
            return
        time.sleep(0.05)  # polls the readiness condition, bounded by the deadline
    raise AssertionError(f"daemon not ready:\n{instance.log()}")


def test_run_rm_cycles_leave_no_link_lease_or_listener(daemon):
    port = free_port()
    for _ in range(30):
        daemon.out("run", "--rm", "-p", f"127.0.0.1:{port}:80", "-p", "80", "base", "true")
    assert leases(daemon) == {} and "DNAT" not in nat_rules(daemon)  # given back before the exit is reported
    # The last veth's deletion may still run beside the auto-remove (rm waits for it; a
    # run --rm client does not wait for the remove): poll, bounded.
    deadline = time.monotonic() + 10
    while veths(daemon) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert veths(daemon) == []
    with socket.socket() as probe:  # the host port is no longer reserved: it binds again
        probe.bind(("127.0.0.1", port))
