"""The rules of the kernel path of published ports (supervisor/network/nat.py), pure; and
its fallback to the userland proxy where there is no iptables."""

from __future__ import annotations

import shlex

from supervisor.network import PortMapping
from supervisor.network.nat import (
    Chains,
    Nat,
    daemon_id,
    kernel_serves,
    proxy_serves,
    restore_script,
    stale_rules,
)

CONTAINER = "f" * 64
COMMENT = ("-m", "comment", "--comment", "dockyard:ffffffffffff")


def test_each_daemon_root_has_its_own_chains():
    assert daemon_id("/var/lib/dockyard") == daemon_id("/var/lib/dockyard/")
    assert daemon_id("/tmp/a/root") != daemon_id("/tmp/b/root")
    chains = Chains("0123abcd")
    assert [c for _, c in chains.owned()] == ["DY-0123abcd", "DY-0123abcd-POST", "DY-0123abcd-FWD"]
    assert all(len(c) <= 28 for _, c in chains.owned())  # iptables' longest chain name


def test_jumps_cover_loopback_and_forward_goes_first():
    jumps = {(table, chain): (rule, first) for table, chain, rule, first in Chains("0123abcd").jumps()}
    # OUTPUT jumps for 127.0.0.0/8 too (no "! -d 127.0.0.0/8"): loopback is DNAT'd, not proxied.
    assert jumps[("nat", "OUTPUT")] == (("-m", "addrtype", "--dst-type", "LOCAL", "-j", "DY-0123abcd"), False)
    assert jumps[("nat", "PREROUTING")][0][-1] == "DY-0123abcd"
    assert jumps[("filter", "FORWARD")] == (("-j", "DY-0123abcd-FWD"), True)


def test_container_rules_dnat_every_address_and_accept_only_dnat_traffic():
    chains = Chains("0123abcd")
    ports = [(PortMapping(80, "tcp", "127.0.0.1", 8080), 8080), (PortMapping(53, "udp"), 32768)]
    rules = chains.container_rules(CONTAINER, "10.213.1.2", "dyt-1", ports)
    assert rules[0] == ("nat", "DY-0123abcd", ("-p", "tcp", "-d", "127.0.0.1/32", "-m", "tcp", "--dport", "8080",
                                               *COMMENT, "-j", "DNAT", "--to-destination", "10.213.1.2:80"))
    assert rules[3] == ("nat", "DY-0123abcd", ("-p", "udp", "-m", "udp", "--dport", "32768", *COMMENT,
                                               "-j", "DNAT", "--to-destination", "10.213.1.2:53"))
    forward = [rule for table, _, rule in rules if table == "filter"]
    assert len(forward) == 4 and all(("--ctstate", "DNAT") == rule[rule.index("--ctstate"):][:2] for rule in forward)
    assert forward[0][:4] == ("-d", "10.213.1.2/32", "-o", "dyt-1") and forward[1][:4] == ("-s", "10.213.1.2/32",
                                                                                           "-i", "dyt-1")


def test_bridge_rules_masquerade_loopback_and_hairpin_sources():
    rules = Chains("0123abcd").bridge_rules("dyt-1", "10.213.1.0/24")
    assert [rule[:4] for _, _, rule in rules] == [("-s", "127.0.0.0/8", "-o", "dyt-1"),
                                                  ("-s", "10.213.1.0/24", "-o", "dyt-1")]
    assert all(rule[-1] == "MASQUERADE" and chain == "DY-0123abcd-POST" for _, chain, rule in rules)


def test_ipv6_ports_are_dnat_to_the_containers_ipv6_address_in_ip6tables_but_never_from_loopback():
    chains = Chains("0123abcd")
    anywhere6 = PortMapping(80, "tcp", "::", any_family=True)
    ports = [(PortMapping(80, "tcp", "0.0.0.0", any_family=True), 8080), (anywhere6, 8080),
             (PortMapping(53, "udp", "fd00::1"), 5353), (PortMapping(81, "tcp", "::1"), 8081)]
    rules = chains.container_rules(CONTAINER, "10.213.1.2", "br-1", ports, "fd00::2")
    assert [table for table, _, _ in rules] == ["nat", "filter", "filter", "nat6", "filter6", "filter6",
                                                "nat6", "filter6", "filter6"]  # nothing for [::1]
    assert rules[3] == ("nat6", "DY-0123abcd", ("-p", "tcp", "!", "-d", "::1/128", "-m", "tcp", "--dport", "8080",
                                                *COMMENT, "-j", "DNAT", "--to-destination", "[fd00::2]:80"))
    assert rules[4][2][:4] == ("-d", "fd00::2/128", "-o", "br-1") and rules[5][2][:4] == ("-s", "fd00::2/128",
                                                                                          "-i", "br-1")
    assert rules[6][2][:4] == ("-p", "udp", "-d", "fd00::1/128")
    # A container without IPv6, or no working ip6tables: IPv4 rules only (the proxy serves the rest).
    assert {t for t, _, _ in chains.container_rules(CONTAINER, "10.213.1.2", "br-1", ports, "")} == {"nat", "filter"}
    assert {t for t, _, _ in chains.container_rules(CONTAINER, "10.213.1.2", "br-1", ports, "fd00::2",
                                                    ipv6=False)} == {"nat", "filter"}
    script = restore_script("-A", [rule for rule in rules if rule[0].endswith("6")])
    assert script.startswith("*nat\n-A DY-0123abcd -p tcp ! -d ::1/128 ") and "*filter\n" in script
    assert " --to-destination [fd00::2]:80\n" in script  # no quotes: iptables-restore knows none but double


def test_the_proxy_serves_what_ipv6_dnat_cannot():
    loopback6, anywhere6 = PortMapping(80, "tcp", "::1"), PortMapping(80, "tcp", "::")
    assert kernel_serves(PortMapping(80), "", False) and not proxy_serves(PortMapping(80), "", False)
    assert not kernel_serves(loopback6, "fd00::2", True) and proxy_serves(loopback6, "fd00::2", True)
    # "::": DNAT for every address but ::1, which reaches the (listening) socket.
    assert kernel_serves(anywhere6, "fd00::2", True) and proxy_serves(anywhere6, "fd00::2", True)
    assert not kernel_serves(PortMapping(80, "tcp", "fd00::1"), "", True)  # no IPv6 in the container
    assert not kernel_serves(anywhere6, "fd00::2", False)  # no ip6tables
    assert not proxy_serves(PortMapping(80, "tcp", "fd00::1"), "fd00::2", True)


def test_ipv6_jumps_and_bridge_rules_are_ip6tables_ones():
    chains = Chains("0123abcd")
    assert {table for table, *_ in chains.jumps(ipv6=True)} == {"nat6", "filter6"}
    assert chains.owned(ipv6=True) == [("nat6", "DY-0123abcd"), ("nat6", "DY-0123abcd-POST"),
                                       ("filter6", "DY-0123abcd-FWD")]
    rules = chains.bridge_rules("br-1", "10.213.2.0/24", "fd00:1::/64")
    assert [(table, rule[:2]) for table, _, rule in rules] == [
        ("nat", ("-s", "127.0.0.0/8")), ("nat", ("-s", "10.213.2.0/24")), ("nat6", ("-s", "fd00:1::/64"))]


def test_restore_script_groups_tables_and_quotes():
    rules = [("filter", "F", ("-j", "ACCEPT")), ("nat", "N", ("-m", "comment", "--comment", "a b", "-j", "RETURN"))]
    assert restore_script("-A", rules, [("nat", "N")]) == (
        '*nat\n:N - [0:0]\n-A N -m comment --comment "a b" -j RETURN\nCOMMIT\n*filter\n-A F -j ACCEPT\nCOMMIT\n')


def test_stale_rules_are_those_of_containers_not_running():
    listing = "\n".join([
        "-N DY-0123abcd",
        '-A DY-0123abcd -p tcp -m tcp --dport 80 -m comment --comment "dockyard:aaaaaaaaaaaa" -j DNAT '
        "--to-destination 10.0.0.2:80",
        '-A DY-0123abcd -p tcp -m tcp --dport 81 -m comment --comment "dockyard:bbbbbbbbbbbb" -j DNAT '
        "--to-destination 10.0.0.3:80",
        "-A DY-0123abcd -p tcp -m tcp --dport 82 -j DNAT --to-destination 10.0.0.4:80",  # nobody's: kept
    ])
    stale = stale_rules("nat", "DY-0123abcd", listing, {"a" * 64})
    assert stale == [("nat", "DY-0123abcd", tuple(shlex.split(listing.splitlines()[2])[2:]))]


async def test_without_iptables_the_proxy_serves_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no iptables here
    logged = []

    class Log:
        def warning(self, event, **fields):
            logged.append((event, fields))

    nat = Nat(tmp_path, "dyt-1", "10.213.1.0/24", log=Log())
    await nat.start(set())
    info = nat.info()
    del info["ip_forward"]  # the host's
    assert info == {"mode": "userland", "reason": "no iptables or iptables-restore on PATH", "chains": [],
                    "ipv6": False, "ipv6_reason": None, "rule_failures": 0, "rules_removed_at_start": 0}
    assert await nat.add(CONTAINER, "10.213.1.2", [(PortMapping(80), 8080)]) is None  # the caller proxies
    assert logged == [("published ports: userland proxy, the kernel path is unavailable",
                       {"reason": "no iptables or iptables-restore on PATH"})]
