"""The rules of the kernel path of published ports (supervisor/network/nat.py), pure; and
its fallback to the userland proxy where there is no iptables."""

from __future__ import annotations

import shlex

from supervisor.network import PortMapping
from supervisor.network.nat import Chains, Nat, daemon_id, restore_script, stale_rules

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


def test_restore_script_groups_tables_and_quotes():
    rules = [("filter", "F", ("-j", "ACCEPT")), ("nat", "N", ("-m", "comment", "--comment", "a b", "-j", "RETURN"))]
    assert restore_script("-A", rules, [("nat", "N")]) == (
        "*nat\n:N - [0:0]\n-A N -m comment --comment 'a b' -j RETURN\nCOMMIT\n*filter\n-A F -j ACCEPT\nCOMMIT\n")


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
                    "rule_failures": 0, "rules_removed_at_start": 0}
    assert await nat.add(CONTAINER, "10.213.1.2", [(PortMapping(80), 8080)]) is None  # the caller proxies
    assert logged == [("published ports: userland proxy, the kernel path is unavailable",
                       {"reason": "no iptables or iptables-restore on PATH"})]
