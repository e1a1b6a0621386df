"""Published ports of containers on user-defined networks, IPv6 ones included
(supervisor/network/nat.py, docs/network.md), on the real kernel.

Each test's daemon runs in a network namespace of its own (``netns_daemon`` of
test_user_networks.py, with forwarding on in it): "the host" here is that namespace, its
loopback (127.0.0.1 and ::1) and its bridges are the only addresses any traffic goes to, and
every rule, link and socket the daemon makes goes with the namespace, also when a test fails.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import Daemon
from tests.integration.test_ports import REMOTE_ADDR_SERVER
from tests.integration.test_user_networks import in_netns, links, netns_daemon, subnet  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration

#: GET a URL from the daemon's namespace, printing the body (busybox wget cannot do IPv6 here).
GET = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode(), end='')"


def fetch_in(daemon: Daemon, url: str, tries: int = 100) -> str:
    """GET from the daemon's namespace ("the host"), polling until the container's server listens."""
    for _ in range(tries):
        result = subprocess.run(["nsenter", f"--net=/run/netns/{daemon.netns}", sys.executable, "-c", GET, url],
                                capture_output=True, text=True, timeout=30)
        if result.returncode == 0:
            return result.stdout
        time.sleep(0.05)  # polls the readiness of the container's server
    raise AssertionError(f"{url}: {result.stderr}")


def seen(text: str) -> str:
    """The client address httpd's CGI gives, without its brackets and IPv4-mapped prefix."""
    return text.strip().removeprefix("[").removesuffix("]").removeprefix("::ffff:")


def owned(daemon: Daemon, program: str = "iptables") -> list[str]:
    """The rules of the daemon's namespace that a container owns (``dockyard:<id>``)."""
    rules = []
    for table in ("nat", "filter"):
        rules += [line for line in in_netns(daemon, program, "-w", "-t", table, "-S").splitlines()
                  if "dockyard:" in line]
    return rules


def post_chain(daemon: Daemon, program: str = "iptables") -> str:
    """The daemon's masquerading chain: the rules of the bridges with published ports."""
    return "\n".join(line for line in in_netns(daemon, program, "-w", "-t", "nat", "-S").splitlines()
                     if "-POST" in line)


#: Exits 1 if a TCP port cannot be bound on 0.0.0.0 or [::] (IPv6 only): someone holds it.
BIND = (
    "import socket, sys\n"
    "for family, address in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET6, '::')):\n"
    "    with socket.socket(family) as probe:\n"
    "        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "        if family == socket.AF_INET6: probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n"
    "        try: probe.bind((address, int(sys.argv[1])))\n"
    "        except OSError: sys.exit(1)\n"
)


def held(daemon: Daemon, port: int) -> bool:
    """Whether a TCP socket of the daemon's namespace holds ``port`` (a reserved one is bound
    but not listening: /proc/net/tcp does not list it, a bind finds it; SO_REUSEADDR so that
    a finished connection's TIME_WAIT does not count)."""
    probe = subprocess.run(["nsenter", f"--net=/run/netns/{daemon.netns}", sys.executable, "-c", BIND, str(port)],
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode in (0, 1), probe.stderr
    return probe.returncode == 1


def free_ports(count: int) -> list[int]:
    """Ports free in the daemon's namespace (its own: nothing else binds there)."""
    first = 20000 + secrets.randbelow(20000)
    return [first + index for index in range(count)]


def unique_local_prefix() -> str:
    """A random fd00::/8 /64's prefix as ip6tables prints it (``fd12:345:6789::``)."""
    network = ipaddress.ip_network(f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}:{secrets.token_hex(2)}::/64")
    return str(network.network_address)


def endpoint(daemon: Daemon, name: str, network: str) -> dict:
    return json.loads(daemon.out("inspect", name))[0]["NetworkSettings"]["Networks"][network]


def test_a_published_port_of_a_container_on_a_user_network(netns_daemon):
    """``-p 127.0.0.1:P:80`` from the host's loopback, ``-p Q:80`` from containers through the
    host's addresses: of its own network (hairpin), of the default bridge and of another
    network (published ports answer every network; direct traffic stays isolated); every
    rule removed at rm, the bridge's masquerading at network rm."""
    daemon = netns_daemon
    loopback, anywhere = free_ports(2)
    network_id = daemon.out("network", "create", "--subnet", subnet(), "app").strip()
    bridge = f"br-{network_id[:12]}"
    daemon.out("network", "create", "--subnet", subnet(), "other")
    daemon.out("run", "-d", "--name", "web", "--network", "app", "-p", f"127.0.0.1:{loopback}:80",
               "-p", f"{anywhere}:80", "base", "sh", "-c", REMOTE_ADDR_SERVER)
    web = endpoint(daemon, "web", "app")
    gateway, address = web["Gateway"], web["IPAddress"]
    assert daemon.out("port", "web").splitlines() == [f"80/tcp -> 127.0.0.1:{loopback}",
                                                      f"80/tcp -> 0.0.0.0:{anywhere}"]
    rules = owned(daemon)
    assert any(f"--dport {loopback}" in r and f"--to-destination {address}:80" in r for r in rules)
    assert sum(f"-o {bridge}" in r and "ACCEPT" in r for r in rules) == 2  # FORWARD to the network's bridge
    assert f"-s 127.0.0.0/8 -o {bridge}" in post_chain(daemon)
    # From the host's loopback: 127.0.0.1 leaves through the network's bridge (route_localnet).
    assert seen(fetch_in(daemon, f"http://127.0.0.1:{loopback}/cgi-bin/ip")) == gateway
    assert seen(fetch_in(daemon, f"http://127.0.0.1:{anywhere}/cgi-bin/ip")) == gateway
    # From a container of its network through the host's address (the gateway): hairpin.
    hairpin = daemon.out("run", "--rm", "--network", "app", "base", "wget", "-qO-",
                         f"http://{gateway}:{anywhere}/cgi-bin/ip")
    assert seen(hairpin) == gateway
    assert seen(daemon.out("exec", "web", "wget", "-qO-", f"http://{gateway}:{anywhere}/cgi-bin/ip")) == gateway
    # From the default bridge and from another network, through their own gateways (host
    # addresses): the published port answers, seeing the client; the container's address does not.
    default_gateway = str(daemon.subnet).rsplit(".", 1)[0] + ".1"
    script = (f"wget -qO- http://{default_gateway}:{anywhere}/cgi-bin/ip && echo && "
              f"hostname -i && ! timeout 3 wget -qO- http://{address}/")
    for network in ("bridge", "other"):
        lines = daemon.out("run", "--rm", "--network", network, "base", "sh", "-c", script).split()
        assert seen(lines[0]) == lines[1], network
    # The 127.0.0.1 binding is loopback's only: a container cannot reach it through the gateway.
    assert daemon.cli("run", "--rm", "--network", "app", "base", "timeout", "3", "wget", "-qO-",
                      f"http://{gateway}:{loopback}/").returncode != 0
    assert held(daemon, loopback) and held(daemon, anywhere)
    daemon.out("rm", "-f", "web")
    assert owned(daemon) == []
    assert not held(daemon, loopback) and not held(daemon, anywhere)  # the reservations went with it
    assert bridge in post_chain(daemon)  # the network's, while it exists
    daemon.out("network", "rm", "app")
    assert bridge not in post_chain(daemon)


def test_ipv6_through_published_ports(netns_daemon):
    """``-p [::1]:P:80`` (the userland proxy: the kernel cannot DNAT IPv6 loopback) and the
    default ``-p Q:80`` on a network with IPv6: both families, ip6tables DNAT for every IPv6
    address but ::1; everything removed at rm."""
    daemon = netns_daemon
    loopback6, anywhere = free_ports(2)
    prefix = unique_local_prefix()
    network_id = daemon.out("network", "create", "--ipv6", "--subnet", prefix + "/64", "--subnet", subnet(),
                            "six").strip()
    bridge = f"br-{network_id[:12]}"
    daemon.out("run", "-d", "--name", "web6", "--network", "six", "--ip6", prefix + "42",
               "-p", f"[::1]:{loopback6}:80", "-p", f"{anywhere}:80", "base", "sh", "-c", REMOTE_ADDR_SERVER)
    web = endpoint(daemon, "web6", "six")
    gateway, gateway6 = web["Gateway"], web["IPv6Gateway"]
    assert daemon.out("port", "web6").splitlines() == [
        f"80/tcp -> [::1]:{loopback6}", f"80/tcp -> 0.0.0.0:{anywhere}", f"80/tcp -> [::]:{anywhere}"]
    assert f"[::]:{anywhere}->80/tcp" in daemon.out("ps")
    rules6 = owned(daemon, "ip6tables")
    dnat6 = [r for r in rules6 if "-j DNAT" in r]
    assert len(dnat6) == 1 and f"! -d ::1/128 -p tcp -m tcp --dport {anywhere}" in dnat6[0]
    assert f"--to-destination [{prefix}42]:80" in dnat6[0]
    assert sum(f"-o {bridge}" in r or f"-i {bridge}" in r for r in rules6) == 2
    assert f"-s {prefix}/64 -o {bridge}" in post_chain(daemon, "ip6tables")
    info = json.loads(daemon.out("info"))["network"]["published_ports"]
    assert info["ipv6"] is True and info["ipv6_reason"] is None
    # ::1 through the proxy (from the bridge's address), the bridge's IPv6 address by DNAT
    # (from that address), IPv4 as before.
    assert seen(fetch_in(daemon, f"http://[::1]:{loopback6}/cgi-bin/ip")) == gateway6
    assert seen(fetch_in(daemon, f"http://[::1]:{anywhere}/cgi-bin/ip")) == gateway6
    assert seen(fetch_in(daemon, f"http://[{gateway6}]:{anywhere}/cgi-bin/ip")) == gateway6
    assert seen(fetch_in(daemon, f"http://127.0.0.1:{anywhere}/cgi-bin/ip")) == gateway
    # Another container of the network through the host's IPv6 address (hairpin, masqueraded).
    other = daemon.out("run", "--rm", "--network", "six", "base", "wget", "-qO-",
                       f"http://[{gateway6}]:{anywhere}/cgi-bin/ip")
    assert seen(other) == gateway6
    assert held(daemon, loopback6) and held(daemon, anywhere)
    daemon.out("rm", "-f", "web6")
    assert owned(daemon, "ip6tables") == [] and owned(daemon) == []
    assert not held(daemon, loopback6) and not held(daemon, anywhere)
    # Bad specs change nothing: an IPv6 address without brackets.
    refused = daemon.cli("run", "--rm", "--network", "six", "-p", "::1:8080:80", "base", "true")
    assert refused.returncode != 0 and b"goes in brackets" in refused.stderr


def test_after_a_sigkill_and_restart_no_port_rule_of_either_family_is_left(netns_daemon):
    daemon = netns_daemon
    prefix = unique_local_prefix()
    network_id = daemon.out("network", "create", "--ipv6", "--subnet", prefix + "/64", "--subnet", subnet(),
                            "keep").strip()
    leases_file = daemon.root / "network" / "leases" / f"{network_id}.json"
    daemon.out("run", "-d", "--name", "db", "--network", "keep", "-p", "127.0.0.1::80", "-p", "81", "-p", "[::1]::82",
               "base", "sleep", "1000")
    assert len(owned(daemon)) == 2 * 3 and len(owned(daemon, "ip6tables")) == 3  # DNAT and two FORWARD accepts
    posts = post_chain(daemon), post_chain(daemon, "ip6tables")
    daemon.stop(signal.SIGKILL)
    assert len(owned(daemon)) == 6 and len(owned(daemon, "ip6tables")) == 3  # the crash left them
    assert len(json.loads(leases_file.read_text())["v6"]) == 1
    daemon.start(timeout=90)
    assert owned(daemon) == [] and owned(daemon, "ip6tables") == []
    leases = json.loads(leases_file.read_text())
    assert (leases["v4"], leases["v6"]) == ({}, {})
    assert (post_chain(daemon), post_chain(daemon, "ip6tables")) == posts  # the network's, made again
    assert not [name for name in links(daemon) if name.startswith("dv")]
    info = json.loads(daemon.out("info"))["network"]["published_ports"]
    assert info["rules_removed_at_start"] == 3 and info["ipv6"] is True
    # Started again, its ports work: the IPv6 loopback's proxy too.
    daemon.out("start", "db")
    daemon.out("exec", "-d", "db", "httpd", "-p", "82", "-h", "/etc")
    port = int(daemon.out("port", "db", "82").strip().rsplit(":", 1)[1])
    assert fetch_in(daemon, f"http://[::1]:{port}/hostname").strip() == daemon.out("exec", "db", "hostname").strip()
    daemon.out("rm", "-f", "db")
    daemon.out("network", "rm", "keep")
    daemon.stop()
    for program in ("iptables", "ip6tables"):
        assert "DY-" not in in_netns(daemon, program, "-S") + in_netns(daemon, program, "-t", "nat", "-S")
    daemon.start(timeout=90)  # private_daemon stops it again at the end

