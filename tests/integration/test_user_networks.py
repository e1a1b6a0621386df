"""User-defined networks on the real kernel (docs/network.md): names, aliases, isolation,
connect/disconnect, --internal, IPv6, overlapping subnets, a daemon SIGKILL and restart.

Each test's daemon runs in a network namespace of its own (``ip netns add``; the daemon is
started through ``nsenter --net``), with forwarding on *in that namespace* so that the
isolation rules are what keeps two networks apart (without them a container would reach the
other network through the gateway). Its bridges, veths and iptables rules live and die with
that namespace: deleting it at the end removes whatever a failed test left. All traffic stays
on the test's own bridges; names are answered by the daemon, never forwarded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, Daemon, private_daemon

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    name = f"dyt-ns-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["nsenter", f"--net=/run/netns/{name}", "sysctl", "-qw", "net.ipv4.ip_forward=1",
                        "net.ipv6.conf.all.forwarding=1"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def netns_daemon(tmp_path: Path, busybox_tar: Path) -> Iterator[Daemon]:
    """A daemon in a network namespace of its own (``daemon.netns``)."""
    if not ROOT:
        pytest.skip("needs root")
    with namespace() as name:
        with private_daemon(tmp_path, busybox_tar, launcher=["nsenter", f"--net=/run/netns/{name}"]) as daemon:
            daemon.netns = name  # type: ignore[attr-defined]
            yield daemon


def in_netns(daemon: Daemon, *command: str) -> str:
    """A command in the daemon's network namespace (nsenter: `ip netns exec` remounts /sys)."""
    result = subprocess.run(["nsenter", f"--net=/run/netns/{daemon.netns}", *command], capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}: {result.stderr}"
    return result.stdout


def links(daemon: Daemon) -> list[str]:
    return sorted(line.split()[0].split("@")[0] for line in in_netns(daemon, "ip", "-br", "link").splitlines())


_SUBNETS = itertools.count(secrets.randbelow(256))


def subnet() -> str:
    """A /24 of 10.214.0.0/16, a different one at each call (a test's networks never overlap)."""
    return f"10.214.{next(_SUBNETS) % 256}.0/24"


def run(daemon: Daemon, *args: str) -> subprocess.CompletedProcess:
    return daemon.cli("run", "--rm", *args, timeout=30)


def test_containers_find_each_other_by_name_alias_and_short_id(netns_daemon):
    daemon = netns_daemon
    network_id = daemon.out("network", "create", "--subnet", subnet(), "--label", "tier=back", "app").strip()
    assert len(network_id) == 64
    db = daemon.out("run", "-d", "--name", "db", "--network", "app", "--network-alias", "database",
                    "base", "httpd", "-f", "-p", "80", "-h", "/etc").strip()
    hostname = daemon.out("exec", "db", "hostname").strip()
    for name in ("db", "database", db[:12], "db.app"):
        assert daemon.out("run", "--rm", "--network", "app", "base", "wget", "-qO-", f"http://{name}/hostname") \
            == hostname + "\n", name
    result = run(daemon, "--network", "app", "base", "ping", "-c1", "-W1", "database")
    assert result.returncode == 0, result.stderr
    resolv = daemon.out("run", "--rm", "--network", "app", "--dns-search", "example.test", "--dns-option", "ndots:2",
                        "base", "cat", "/etc/resolv.conf")
    assert resolv == "nameserver 127.0.0.11\nsearch example.test\noptions ndots:2\n"
    # docker's shapes: the container's NetworkSettings.Networks, the network's Containers.
    settings = json.loads(daemon.out("inspect", "db"))[0]["NetworkSettings"]
    endpoint = settings["Networks"]["app"]
    assert endpoint["NetworkID"] == network_id and endpoint["Aliases"] == ["database"]
    assert endpoint["IPAddress"] in daemon.out("exec", "db", "ip", "-o", "-4", "addr", "show", "eth0")
    assert endpoint["MacAddress"] == "02:42:" + ":".join(f"{int(b):02x}" for b in endpoint["IPAddress"].split("."))
    assert settings["IPAddress"] == ""  # the top-level fields are the default bridge's, as docker's
    document = json.loads(daemon.out("network", "inspect", "app"))[0]
    assert document["Labels"] == {"tier": "back"} and list(document["Containers"]) == [db]
    assert document["Containers"][db]["IPv4Address"].startswith(endpoint["IPAddress"] + "/")
    assert daemon.out("network", "ls", "-q", "--filter", "label=tier=back").split() == [network_id[:12]]
    refused = daemon.cli("network", "rm", "app")
    assert refused.returncode == 1 and b"active endpoints (db)" in refused.stderr
    daemon.out("rm", "-f", "db")
    assert daemon.out("network", "rm", "app") == "app\n"
    events = daemon.out("events", "--since", "0", "--until", str(time.time()), "--filter", "type=network")
    assert f"network create {network_id}" in events and f"network destroy {network_id}" in events
    assert [name for name in links(daemon) if name.startswith(("br-", "dv"))] == []


def test_networks_are_isolated_and_connect_disconnect_change_it_live(netns_daemon):
    daemon = netns_daemon
    daemon.out("network", "create", "--subnet", subnet(), "front")
    daemon.out("network", "create", "--subnet", subnet(), "back")
    daemon.out("run", "-d", "--name", "db", "--network", "back", "base", "sleep", "1000")
    address = json.loads(daemon.out("inspect", "db"))[0]["NetworkSettings"]["Networks"]["back"]["IPAddress"]
    daemon.out("run", "-d", "--name", "web", "--network", "front", "base", "sleep", "1000")
    # Another network: its name is unknown there, and its address unreachable (forwarding is
    # on in the daemon's namespace: only the isolation rules stand between the two bridges).
    assert daemon.cli("exec", "web", "ping", "-c1", "-W1", "db").returncode != 0
    assert daemon.cli("exec", "web", "ping", "-c1", "-W1", address).returncode != 0
    # The default bridge is isolated from them too.
    assert run(daemon, "base", "ping", "-c1", "-W1", address).returncode != 0
    daemon.out("network", "connect", "--alias", "www", "back", "web")
    assert "eth1" in daemon.out("exec", "web", "ip", "-o", "link")
    assert daemon.cli("exec", "web", "ping", "-c1", "-W1", "db").returncode == 0
    assert daemon.cli("exec", "db", "ping", "-c1", "-W1", "www").returncode == 0
    assert sorted(json.loads(daemon.out("inspect", "web"))[0]["NetworkSettings"]["Networks"]) == ["back", "front"]
    daemon.out("network", "disconnect", "back", "web")
    assert "eth1" not in daemon.out("exec", "web", "ip", "-o", "link")
    assert daemon.cli("exec", "db", "ping", "-c1", "-W1", "www").returncode != 0  # the name went with it
    assert daemon.cli("exec", "web", "ping", "-c1", "-W1", address).returncode != 0
    refused = daemon.cli("network", "disconnect", "back", "web")
    assert refused.returncode == 1 and b"not connected to network back" in refused.stderr
    # A connect outlives a restart of the container (its spec keeps it, as docker's).
    daemon.out("network", "connect", "back", "web")
    daemon.out("restart", "-t", "0", "web")
    assert daemon.cli("exec", "web", "ping", "-c1", "-W1", "db").returncode == 0
    daemon.out("rm", "-f", "web", "db")


def test_an_internal_network_has_no_way_out(netns_daemon):
    daemon = netns_daemon
    daemon.out("network", "create", "--subnet", subnet(), "outside")
    daemon.out("run", "-d", "--name", "far", "--network", "outside", "base", "sleep", "1000")
    far = json.loads(daemon.out("inspect", "far"))[0]["NetworkSettings"]["Networks"]["outside"]["IPAddress"]
    daemon.out("network", "create", "--internal", "--subnet", subnet(), "vault")
    daemon.out("run", "-d", "--name", "safe", "--network", "vault", "base", "httpd", "-f", "-p", "80", "-h", "/etc")
    routes = daemon.out("run", "--rm", "--network", "vault", "base", "ip", "route")
    assert "default" not in routes and routes.strip()
    # Inside the network names still resolve and traffic flows; nothing leaves it.
    assert daemon.out("run", "--rm", "--network", "vault", "base", "wget", "-qO-", "http://safe/hostname").strip()
    blocked = run(daemon, "--network", "vault", "base", "ping", "-c1", "-W1", far)
    assert blocked.returncode != 0
    bridge = json.loads(daemon.out("network", "inspect", "vault"))[0]["Options"]["com.docker.network.bridge.name"]
    rules = in_netns(daemon, "iptables", "-S")
    assert f"-i {bridge} ! -o {bridge} -j DROP" in rules and f"! -i {bridge} -o {bridge} -j DROP" in rules
    daemon.out("rm", "-f", "far", "safe")


def test_ipv6_between_containers_by_name(netns_daemon):
    daemon = netns_daemon
    # The canonical spelling (no leading zeros, "::" for zero groups), as the daemon reports it.
    prefix = str(ipaddress.ip_network(f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}:{secrets.token_hex(2)}::/64").network_address)
    daemon.out("network", "create", "--ipv6", "--subnet", prefix + "/64", "--subnet", subnet(), "six")
    daemon.out("run", "-d", "--name", "web6", "--network", "six", "--ip6", prefix + "42",
               "base", "httpd", "-f", "-p", "80", "-h", "/etc")
    endpoint = json.loads(daemon.out("inspect", "web6"))[0]["NetworkSettings"]["Networks"]["six"]
    assert endpoint["GlobalIPv6Address"] == prefix + "42" and endpoint["IPv6Gateway"] == prefix + "1"
    assert endpoint["GlobalIPv6PrefixLen"] == 64 and endpoint["IPAddress"]
    lookup = daemon.out("run", "--rm", "--network", "six", "base", "nslookup", "-type=AAAA", "web6")
    assert prefix + "42" in lookup
    hostname = daemon.out("exec", "web6", "hostname").strip()
    page = daemon.out("run", "--rm", "--network", "six", "base", "wget", "-qO-", f"http://[{prefix}42]/hostname")
    assert page == hostname + "\n"
    assert run(daemon, "--network", "six", "base", "ping6", "-c1", "-W1", "web6").returncode == 0
    daemon.out("rm", "-f", "web6")


def test_overlapping_subnets_and_bad_flags_are_refused_and_change_nothing(netns_daemon):
    daemon = netns_daemon
    taken = subnet()
    daemon.out("network", "create", "--subnet", taken, "first")
    before = daemon.out("network", "ls"), links(daemon)
    inner = taken.replace(".0/24", ".128/25")
    for args, message in (
        (["--subnet", inner, "second"], f"subnet {inner} overlaps {taken} (network first)"),
        (["--subnet", daemon.subnet, "second"], f"overlaps {daemon.subnet}"),  # the default bridge: a route too
        (["--subnet", "10.215.0.0/24", "--gateway", "10.216.0.1", "second"], "is not a host address"),
        (["--subnet", "10.215.0.0/24", "--ip-range", "10.215.1.0/28", "second"], "is not inside"),
        (["--subnet", "10.215.0.0/24", "first"], "exists already"),
        (["--subnet", "10.215.0.0/24", "host"], "pre-defined network"),
        (["--subnet", "fd00:1::/64", "second"], "needs --ipv6"),
    ):
        result = daemon.cli("network", "create", *args)
        assert result.returncode in (1, 2) and message in result.stderr.decode(), (args, result.stderr)
    assert (daemon.out("network", "ls"), links(daemon)) == before
    refused = daemon.cli("run", "--rm", "--network", "missing", "base", "true")
    assert refused.returncode != 0 and b"network missing not found" in refused.stderr
    assert daemon.out("ps", "-aq") == ""  # refused at create: no container is made


def test_after_a_sigkill_and_a_restart_networks_persist_and_nothing_is_left_unowned(netns_daemon):
    daemon = netns_daemon
    network_id = daemon.out("network", "create", "--subnet", subnet(), "--ipv6", "keep").strip()
    bridge = f"br-{network_id[:12]}"
    daemon.out("run", "-d", "--name", "db", "--network", "keep", "base", "sleep", "1000")
    leases_file = daemon.root / "network" / "leases" / f"{network_id}.json"
    assert len(json.loads(leases_file.read_text())["v4"]) == 1
    daemon.stop(signal.SIGKILL)
    # A veth of ours on the network's bridge that no container owns (as a crash mid-start leaves).
    subprocess.run(["ip", "-n", daemon.netns, "link", "add", "dvdeadbeef0000", "type", "veth", "peer", "name",
                    "dwdeadbeef0000"], check=True)
    subprocess.run(["ip", "-n", daemon.netns, "link", "set", "dvdeadbeef0000", "master", bridge], check=True)
    daemon.start(timeout=90)  # a restart reconciles the killed daemon's container first (slow on a loaded machine)
    assert "keep" in daemon.out("network", "ls")
    assert json.loads(leases_file.read_text())["v4"] == {}
    assert "dvdeadbeef0000" not in links(daemon) and bridge in links(daemon)
    assert not [name for name in links(daemon) if name.startswith("dv")]
    rules = in_netns(daemon, "iptables", "-S", "FORWARD")
    assert rules.count("DY-ISO1-") == 1  # the crashed daemon's jump replaced, not doubled
    info = json.loads(daemon.out("info"))["network"]["user_networks"]
    assert info["endpoints_removed_at_start"] == 1 and info["network_leases_released_at_start"] >= 1
    daemon.out("start", "db")
    assert run(daemon, "--network", "keep", "base", "ping", "-c1", "-W1", "db").returncode == 0
    daemon.out("rm", "-f", "db")
    daemon.stop()
    assert [name for name in links(daemon) if name.startswith(("br-", "dv"))] == []
    assert "DY-" not in in_netns(daemon, "iptables", "-S") + in_netns(daemon, "iptables", "-t", "nat", "-S")
    daemon.start(timeout=90)  # private_daemon stops it again at the end


def test_a_port_published_on_loopback_reaches_a_container_on_a_user_network(netns_daemon):
    """127.0.0.1:P needs route_localnet and a masquerade on the network's own bridge (the
    default bridge has them from the start; a user network's container brings its own)."""
    daemon = netns_daemon
    daemon.out("network", "create", "--subnet", subnet(), "pub")
    daemon.out("run", "-d", "--name", "site", "--network", "pub", "-p", "127.0.0.1:18080:80", "base",
               "httpd", "-f", "-p", "80", "-h", "/etc")
    fetched = subprocess.run(["nsenter", f"--net=/run/netns/{daemon.netns}", "busybox", "wget", "-qO-",
                              "http://127.0.0.1:18080/hostname"], capture_output=True, text=True, timeout=30)
    assert fetched.returncode == 0 and fetched.stdout.strip(), fetched.stderr
    daemon.out("rm", "-f", "site")
    assert "dockyard:" not in in_netns(daemon, "iptables", "-t", "nat", "-S")  # its masquerades went with it
    daemon.out("network", "rm", "pub")
