"""The iptables rules of user-defined networks: isolation between the daemon's bridges (as
docker's DOCKER-ISOLATION-STAGE-1/2), no way out of an ``--internal`` network, and the
masquerading of the others when the daemon runs with ``--ip-masq``.

Every rule lives in chains this daemon owns, named after its default bridge::

    filter FORWARD ──▶ DY-ISO1-<bridge>:  -i B ! -o B -j DY-ISO2-<bridge>   (each bridge B)
                                          -i I ! -o I -j DROP                (each internal I)
                                          -o I ! -i I -j DROP
                       DY-ISO2-<bridge>:  -o B -j DROP                       (each bridge B)
    nat POSTROUTING ─▶ DY-MASQ-<bridge>:  -s SUBNET ! -o B -j MASQUERADE     (each outside network)

so a packet from one of its bridges to another is dropped, whatever the host's policy, and
traffic to and from elsewhere is left alone (the default bridge keeps its behaviour: it is
isolated from the user networks, nothing more). The chains are rebuilt whole on every
change (a few rules), emptied at daemon start (what a crashed daemon left) and removed at
stop. ip6tables gets the same filter rules for the bridges with IPv6.

Forwarding itself (``net.ipv4.ip_forward``) is the host's setting: the daemon never changes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio


@dataclass(frozen=True)
class Bridge:
    name: str
    subnet: str
    internal: bool = False
    ipv6: bool = False
    masquerade: bool = False


def filter_rules(chain1: str, chain2: str, bridges: list[Bridge], ipv6: bool) -> list[list[str]]:
    """The rules of both filter chains (``-A CHAIN ...``), for iptables or ip6tables."""
    rules = []
    chosen = [bridge for bridge in bridges if bridge.ipv6 or not ipv6]
    for bridge in chosen:
        if bridge.internal:
            rules.append(["-A", chain1, "-i", bridge.name, "!", "-o", bridge.name, "-j", "DROP"])
            rules.append(["-A", chain1, "-o", bridge.name, "!", "-i", bridge.name, "-j", "DROP"])
        else:
            rules.append(["-A", chain1, "-i", bridge.name, "!", "-o", bridge.name, "-j", chain2])
    for bridge in chosen:
        rules.append(["-A", chain2, "-o", bridge.name, "-j", "DROP"])
    return rules


def masquerade_rules(chain: str, bridges: list[Bridge]) -> list[list[str]]:
    return [["-A", chain, "-s", bridge.subnet, "!", "-o", bridge.name, "-j", "MASQUERADE"]
            for bridge in bridges if bridge.masquerade and not bridge.internal]


class Isolation:
    def __init__(self, default_bridge: str, log: Any = None):
        self.chain1 = f"DY-ISO1-{default_bridge}"
        self.chain2 = f"DY-ISO2-{default_bridge}"
        self.masquerade = f"DY-MASQ-{default_bridge}"
        self.log = log
        self.failures = 0  # iptables calls that failed (logged)
        self.programs = ["iptables", "ip6tables"]

    async def _run(self, program: str, *args: str) -> bool:
        try:
            result = await trio.run_process([program, "-w", *args], capture_stdout=True, capture_stderr=True,
                                            check=False)
        except OSError:
            return False
        return result.returncode == 0

    async def _must(self, program: str, *args: str) -> None:
        if not await self._run(program, *args):
            self.failures += 1
            if self.log is not None:
                self.log.warning("an isolation rule cannot be installed", program=program, rule=" ".join(args))

    async def _remove_chain(self, program: str, table: str, parent: str, chain: str) -> None:
        while await self._run(program, "-t", table, "-D", parent, "-j", chain):
            pass  # a crash may have left more than one jump
        await self._run(program, "-t", table, "-F", chain)
        await self._run(program, "-t", table, "-X", chain)

    async def stop(self) -> None:
        """Remove the chains and their jumps (daemon stop, and start: a crashed daemon's)."""
        for program in self.programs:
            await self._remove_chain(program, "filter", "FORWARD", self.chain1)
            await self._remove_chain(program, "filter", "FORWARD", self.chain2)
        await self._remove_chain("iptables", "nat", "POSTROUTING", self.masquerade)

    async def apply(self, bridges: list[Bridge]) -> None:
        """Make the chains hold exactly the rules for ``bridges`` (the default bridge and the
        user networks' bridges)."""
        for program in self.programs:
            ipv6 = program == "ip6tables"
            if not await self._run(program, "-S", self.chain1):
                await self._run(program, "-N", self.chain1)
                await self._run(program, "-N", self.chain2)
                await self._must(program, "-I", "FORWARD", "1", "-j", self.chain1)
            await self._run(program, "-F", self.chain1)
            await self._run(program, "-F", self.chain2)
            for rule in filter_rules(self.chain1, self.chain2, bridges, ipv6):
                await self._must(program, *rule)
        if not await self._run("iptables", "-t", "nat", "-S", self.masquerade):
            await self._run("iptables", "-t", "nat", "-N", self.masquerade)
            await self._must("iptables", "-t", "nat", "-A", "POSTROUTING", "-j", self.masquerade)
        await self._run("iptables", "-t", "nat", "-F", self.masquerade)
        for rule in masquerade_rules(self.masquerade, bridges):
            await self._must("iptables", "-t", "nat", *rule)
