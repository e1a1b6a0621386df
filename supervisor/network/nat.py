"""iptables DNAT of published ports, beside the userland proxy (as docker with its
userland-proxy on): traffic to a host address other than loopback is rewritten to the
container in the kernel; loopback traffic (``127.0.0.1``, which DNAT cannot route to a
bridge without route_localnet) goes through the proxy. Where iptables is missing or fails,
the proxy alone serves every address, and the failure is logged and counted.

Rules live in one chain of the nat table per daemon, ``DY-<bridge>``, jumped to from
PREROUTING and OUTPUT for local destinations (OUTPUT: not 127.0.0.0/8). A container's rules
carry its id in a comment; the chain is flushed at daemon start (a crashed daemon's rules)
and removed at shutdown.
"""

from __future__ import annotations

from typing import Any

import trio

from supervisor.network import PortMapping


class Nat:
    def __init__(self, bridge: str, log: Any = None):
        self.chain = f"DY-{bridge}"
        self.bridge = bridge
        self.log = log
        self.available = True
        self.failures = 0  # iptables calls that failed (the proxy served instead)

    def _jumps(self) -> list[list[str]]:
        return [
            ["PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", self.chain],
            ["OUTPUT", "!", "-d", "127.0.0.0/8", "-m", "addrtype", "--dst-type", "LOCAL", "-j", self.chain],
        ]

    async def _run(self, *args: str) -> bool:
        try:
            result = await trio.run_process(
                ["iptables", "-w", "-t", "nat", *args], capture_stdout=True, capture_stderr=True, check=False
            )
        except OSError as exc:  # no iptables here
            self.available = False
            if self.log is not None:
                self.log.warning("no iptables: published ports go through the userland proxy only", error=str(exc))
            return False
        return result.returncode == 0

    async def start(self) -> None:
        """Remove what a crashed daemon left, then create the chain and its jumps."""
        await self.stop()
        if not self.available:
            return
        if not await self._run("-N", self.chain):
            self.failures += 1
            self.available = False
            return
        for jump in self._jumps():
            if not await self._run("-A", *jump):
                self.failures += 1

    async def stop(self) -> None:
        for jump in self._jumps():
            while await self._run("-D", *jump):  # a crash may have left more than one
                pass
        if self.available:
            await self._run("-F", self.chain)
            await self._run("-X", self.chain)

    def rules(self, container_id: str, address: str, ports: list[tuple[PortMapping, int]]) -> list[list[str]]:
        rules = []
        for mapping, host_port in ports:
            if mapping.host_ip.startswith("127."):
                continue  # loopback: the proxy's
            rule = ["-p", mapping.protocol]
            if mapping.host_ip != "0.0.0.0":
                rule += ["-d", mapping.host_ip]
            rule += ["--dport", str(host_port), "-m", "comment", "--comment", f"dockyard:{container_id[:12]}",
                     "-j", "DNAT", "--to-destination", f"{address}:{mapping.container_port}"]
            rules.append(rule)
        return rules

    async def add(self, container_id: str, address: str, ports: list[tuple[PortMapping, int]]) -> list[list[str]]:
        """Install the container's rules; the ones installed (to :meth:`remove` later)."""
        installed = []
        if not self.available:
            return installed
        for rule in self.rules(container_id, address, ports):
            if await self._run("-A", self.chain, *rule):
                installed.append(rule)
            else:
                self.failures += 1
                if self.log is not None:
                    self.log.warning("cannot install a DNAT rule: the proxy serves the port", container=container_id,
                                     rule=" ".join(rule))
        return installed

    async def remove(self, rules: list[list[str]]) -> None:
        for rule in rules:
            if not await self._run("-D", self.chain, *rule):
                self.failures += 1
                if self.log is not None:
                    self.log.warning("cannot delete a DNAT rule", rule=" ".join(rule))
