"""Published ports in the kernel (supervisor/network/nat.py) on the real kernel: DNAT from
the host's loopback and own addresses, from other containers and from the container itself
through the gateway, UDP, ranges, random host ports, the clean-up after an exit and after a
SIGKILL, the forced userland proxy, and a FORWARD DROP policy (in a network namespace of
the test's own). Traffic stays on loopback, the host's own addresses and the test's bridges."""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from supervisor.network.nat import daemon_id
from tests.conftest import ROOT, Daemon, private_daemon
from tests.integration.test_network import fetch, free_port, settings
from tests.tools import require

pytestmark = pytest.mark.integration

COUNTERS = re.compile(r" \[\d+:\d+\]$")
UDP_ECHO_SOURCE = Path(__file__).with_name("udpecho.c")
#: httpd with a CGI that answers the address the container sees the client connect from.
REMOTE_ADDR_SERVER = (
    "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\nprintf \"Content-Type: text/plain\\\\r\\\\n\\\\r\\\\n%%s\" "
    "\"$REMOTE_ADDR\"\\n' > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && echo here > /www/index.html && "
    "exec httpd -f -p 80 -h /www"
)


def seen(text: str) -> str:
    """The client address httpd's CGI gives (``[::ffff:10.0.0.1]``: it listens on IPv6)."""
    return text.removeprefix("[::ffff:").removesuffix("]")


def chains(daemon: Daemon) -> str:
    """Every rule of the daemon's own chains and the jumps to them, counters stripped
    (``iptables-save``), sorted: what the daemon owns in the kernel right now."""
    owned = f"DY-{daemon_id(daemon.root)}"
    lines = []
    for table in ("nat", "filter"):
        saved = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, check=True).stdout
        lines += [f"{table} {COUNTERS.sub('', line)}" for line in saved.splitlines() if owned in line]
    return "\n".join(sorted(lines))


def container_rules(daemon: Daemon) -> list[str]:
    return [line for line in chains(daemon).splitlines() if "dockyard:" in line]


def listening(port: int) -> bool:
    """Whether any TCP socket of the host's namespace listens on ``port``."""
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(path).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def host_address() -> str | None:
    """A global IPv4 address of the host that is not on a bridge (its own: traffic to it
    stays on the host)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name, address = line.split()[1], line.split()[3].split("/")[0]
        if not Path(f"/sys/class/net/{name}/bridge").exists():
            return address
    return None


def test_a_published_port_is_dnat_from_loopback_host_addresses_other_containers_and_itself(daemon):
    before = chains(daemon)
    assert "MASQUERADE" in before and "-j DY-" in before and "dockyard:" not in before
    port = free_port()
    daemon.out("run", "-d", "--name", "web", "-p", f"{port}:80", "base", "sh", "-c", REMOTE_ADDR_SERVER)
    web = settings(daemon, "web")
    gateway, address = web["Gateway"], web["IPAddress"]
    info = json.loads(daemon.out("info"))["network"]["published_ports"]
    assert info["mode"] == "kernel" and info["reason"] is None and info["rule_failures"] == 0
    assert not listening(port), "the port is served in the kernel: the daemon only reserves it"
    # The source address the container sees (docs/network.md): the gateway for loopback,
    # for other containers and for itself; the host's own address for that address.
    assert seen(fetch(f"http://127.0.0.1:{port}/cgi-bin/ip")) == gateway
    assert seen(fetch(f"http://{gateway}:{port}/cgi-bin/ip")) == gateway
    own = host_address()
    if own is not None:
        assert seen(fetch(f"http://{own}:{port}/cgi-bin/ip")) == own
    assert seen(daemon.out("run", "--rm", "base", "wget", "-qO-", f"http://{gateway}:{port}/cgi-bin/ip")) == gateway
    assert seen(daemon.out("exec", "web", "wget", "-qO-", f"http://{gateway}:{port}/cgi-bin/ip")) == gateway
    container_id = json.loads(daemon.out("inspect", "web"))[0]["Id"]
    assert Path(f"/sys/class/net/dy{container_id[:11]}/brport/hairpin_mode").read_text().strip() == "1"
    rules = container_rules(daemon)
    assert any(f"--dport {port}" in r and f"--to-destination {address}:80" in r for r in rules)
    assert sum("ACCEPT" in r for r in rules) == 2  # FORWARD: there and back
    daemon.out("rm", "-f", "web")
    assert chains(daemon) == before
    with socket.socket() as probe:  # the reservation went with the container
        probe.bind(("0.0.0.0", port))


@pytest.fixture(scope="module")
def udp_echo(tmp_path_factory) -> Path:
    """A directory with a static ``udpecho`` (udpecho.c) to bind-mount into a container."""
    require("gcc")
    directory = tmp_path_factory.mktemp("udpecho")
    subprocess.run(["gcc", "-static", "-O2", "-o", str(directory / "udpecho"), str(UDP_ECHO_SOURCE)], check=True)
    return directory


def udp_exchange(host: str, port: int, text: bytes, tries: int = 100) -> bytes:
    """One datagram there and its answer back, a new client socket per try (until the
    server in the container is bound; an unanswered try is retried, bounded)."""
    for _ in range(tries):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(0.2)
            client.connect((host, port))
            try:
                client.send(text)
                return client.recv(1100)
            except (ConnectionRefusedError, TimeoutError):
                continue  # nothing bound yet in the container
    raise AssertionError(f"no answer from udp {host}:{port}")


def test_udp_through_a_published_port_with_a_random_host_port(daemon, udp_echo):
    daemon.out("run", "-d", "--name", "echo", "-p", "127.0.0.1::5353/udp", "-v", f"{udp_echo}:/opt:ro",
               "base", "/opt/udpecho", "5353")
    host_port = int(daemon.out("port", "echo", "5353/udp").strip().rsplit(":", 1)[1])
    assert settings(daemon, "echo")["Ports"] == {"5353/udp": [{"HostIp": "127.0.0.1", "HostPort": str(host_port)}]}
    gateway = settings(daemon, "echo")["Gateway"]
    assert udp_exchange("127.0.0.1", host_port, b"one") == f"{gateway}:one".encode()
    assert udp_exchange("127.0.0.1", host_port, b"two") == f"{gateway}:two".encode()
    assert any("-p udp" in r and f"--dport {host_port}" in r for r in container_rules(daemon))
    daemon.out("rm", "-f", "echo")
    assert container_rules(daemon) == []


def test_a_port_range_maps_each_port(daemon):
    first = free_port()
    while any(listening(p) for p in range(first, first + 3)) or first + 2 > 65535:
        first = free_port()
    server = "httpd -p 80 -h /etc && httpd -p 81 -h /etc && exec httpd -f -p 82 -h /etc"
    daemon.out("run", "-d", "--name", "range", "-p", f"127.0.0.1:{first}-{first + 2}:80-82", "base", "sh", "-c", server)
    ports = settings(daemon, "range")["Ports"]
    assert ports == {f"{80 + i}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(first + i)}] for i in range(3)}
    assert daemon.out("port", "range").splitlines() == [f"{80 + i}/tcp -> 127.0.0.1:{first + i}" for i in range(3)]
    hostname = daemon.out("exec", "range", "hostname")
    for i in range(3):
        assert fetch(f"http://127.0.0.1:{first + i}/hostname") == hostname
    inspect = json.loads(daemon.out("inspect", "range"))[0]
    assert inspect["HostConfig"]["PortBindings"]["81/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(first + 1)}]
    daemon.out("rm", "-f", "range")
    bad = daemon.cli("run", "-p", "8000-8002:80-81", "base", "true")
    assert bad.returncode != 0 and b"the host range has 3 ports and the container range 2" in bad.stderr


def test_after_a_sigkill_and_restart_no_rule_is_left_that_no_container_owns(daemon):
    empty = chains(daemon)
    daemon.out("run", "-d", "--name", "orphan", "-p", "127.0.0.1::80", "-p", "80-81", "-p", "53/udp", "base",
               "sleep", "1000")
    assert len(container_rules(daemon)) == 4 * 3  # a DNAT rule and two FORWARD accepts per port
    daemon.stop(signal.SIGKILL)
    assert len(container_rules(daemon)) == 12  # the crash left them
    ready = daemon.log().count("daemon ready")
    daemon.start()
    deadline = time.monotonic() + 20
    while daemon.log().count("daemon ready") == ready and time.monotonic() < deadline:
        time.sleep(0.02)  # polls the readiness of the restarted Supervisor, bounded
    assert chains(daemon) == empty
    info = json.loads(daemon.out("info"))["network"]["published_ports"]
    assert info["rules_removed_at_start"] == 4 and info["mode"] == "kernel"
    daemon.out("rm", "orphan")


def test_the_userland_proxy_serves_when_forced(tmp_path, busybox_tar):
    if not ROOT:
        pytest.skip("needs root")
    with private_daemon(tmp_path, busybox_tar, "--userland-proxy") as daemon:
        info = json.loads(daemon.out("info"))["network"]["published_ports"]
        assert info.pop("ip_forward") in (True, False)
        assert info == {"mode": "userland", "reason": "dockyard daemon --userland-proxy", "chains": [],
                        "ipv6": False, "ipv6_reason": None, "rule_failures": 0, "rules_removed_at_start": 0}
        assert 'event="published ports: userland proxy"' in daemon.log()
        daemon.out("run", "-d", "--name", "web", "-p", "127.0.0.1::80", "base", "sh", "-c", REMOTE_ADDR_SERVER)
        port = int(daemon.out("port", "web", "80").strip().rsplit(":", 1)[1])
        assert listening(port), "the proxy listens on the host port"
        gateway = settings(daemon, "web")["Gateway"]
        assert seen(fetch(f"http://127.0.0.1:{port}/cgi-bin/ip")) == gateway  # the proxy connects from the gateway
        assert chains(daemon) == "", "no rule of this daemon in the kernel"
        daemon.out("rm", "-f", "web")


NETNS_LAUNCHER = [
    "unshare", "--net", "--", "sh", "-c",
    "ip link set lo up && iptables -w -P FORWARD DROP && exec \"$@\"", "netns-launcher",
]


def test_a_forward_drop_policy_does_not_stop_published_ports(tmp_path, busybox_tar):
    """In a network namespace of the test's own whose FORWARD policy is DROP (the host's
    is left alone): the container's port answers another container through the gateway,
    which is forwarded traffic, and the host's loopback."""
    if not ROOT:
        pytest.skip("needs root")
    with private_daemon(tmp_path, busybox_tar, launcher=NETNS_LAUNCHER) as daemon:
        netns = ["nsenter", f"--net=/proc/{daemon.process.pid}/ns/net"]
        policy = subprocess.run([*netns, "iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True).stdout
        assert "-P FORWARD DROP" in policy and f"-A FORWARD -j DY-{daemon_id(daemon.root)}-FWD" in policy
        daemon.out("run", "-d", "--name", "web", "-p", "8080:80", "base", "sh", "-c", REMOTE_ADDR_SERVER)
        gateway = settings(daemon, "web")["Gateway"]
        for _ in range(100):
            answer = subprocess.run([*netns, "busybox", "wget", "-qO-", "http://127.0.0.1:8080/cgi-bin/ip"],
                                    capture_output=True, timeout=10)
            if answer.returncode == 0:
                break
            time.sleep(0.05)  # polls the readiness of the container's server
        assert seen(answer.stdout.decode()) == gateway
        assert seen(daemon.out("run", "--rm", "base", "wget", "-qO-", f"http://{gateway}:8080/cgi-bin/ip")) == gateway
        # Without our FORWARD accepts the policy drops that same connection: the test can fail.
        owned = f"DY-{daemon_id(daemon.root)}-FWD"
        saved = subprocess.run([*netns, "iptables", "-w", "-S", owned], capture_output=True, text=True).stdout
        accepts = [shlex.split(line)[2:] for line in saved.splitlines() if line.startswith(f"-A {owned} ")]
        for rule in accepts:
            subprocess.run([*netns, "iptables", "-w", "-D", owned, *rule], check=True)
        dropped = daemon.cli("run", "--rm", "base", "sh", "-c", f"timeout 3 wget -qO- http://{gateway}:8080/ || exit 7")
        assert dropped.returncode == 7, dropped.stderr
        for rule in accepts:
            subprocess.run([*netns, "iptables", "-w", "-A", owned, *rule], check=True)
        daemon.out("rm", "-f", "web")
