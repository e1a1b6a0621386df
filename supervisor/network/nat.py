"""Published ports in the kernel: iptables DNAT (docker's ``userland-proxy=false`` mode).

Theory of operation. Every published port is one DNAT rule, so no byte of its traffic
passes through the daemon; the userland proxy (``proxy.py``) serves only where this path is
unavailable: no iptables, a failing iptables, or ``dockyard daemon --userland-proxy``
(:attr:`Nat.mode` says which, ``dockyard info`` and the daemon's log show it). The paths::

    host -> 127.0.0.1:P ─ OUTPUT DNAT ─▶ bridge (route_localnet=1) ─ POSTROUTING MASQUERADE
                                                    (source 127.0.0.0/8 -> the gateway) ─▶ container
    host -> its own address:P ─ OUTPUT DNAT ─▶ bridge ─▶ container (source: that address)
    container -> gateway or host address:P ─ PREROUTING DNAT ─▶ back out the bridge
        (forwarding=1 on the bridge, hairpin mode on the veth port for the container's own
        port) ─ POSTROUTING MASQUERADE (DNAT'd from the subnet -> the gateway) ─▶ container
    another host -> host address:P ─ PREROUTING DNAT ─ FORWARD ACCEPT ─▶ container
        (needs net.ipv4.ip_forward=1, which the daemon does not change: a host-wide setting)

Ownership. The rules live in chains of this daemon only, named with its id (a hash of its
state root, so private daemons side by side never share one): ``DY-<id>`` (nat: the DNAT
rules, jumped to from PREROUTING and OUTPUT for local destinations), ``DY-<id>-POST`` (nat:
the masquerading, from POSTROUTING) and ``DY-<id>-FWD`` (filter: the ACCEPTs a FORWARD DROP
policy needs, jumped to first from FORWARD). A container's rules carry
``dockyard:<its 12-hex id>`` in a comment; they go at its exit (:meth:`Nat.remove`), the
chains at shutdown (:meth:`Nat.stop`), and at start every container rule whose container
does not run is deleted (:meth:`Nat.start`, after a crash). Nothing outside those chains
is changed except the four jumps to them and two sysctls of the daemon's own bridge.

A container's rules are installed in one ``iptables-restore --noflush`` (one transaction,
one process per start) and removed the same way.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from supervisor.network import PortMapping

OWNER = re.compile(r"--comment (?:\"?)dockyard:(?P<id>[0-9a-f]{12})\b")
LOOPBACK = "127.0.0.0/8"

#: (table, chain, rule) of one iptables rule; ``rule`` as iptables' arguments after the chain.
Rule = tuple[str, str, tuple[str, ...]]


def daemon_id(state_dir: Path | str) -> str:
    """The 8-hex id of the daemon whose state root is ``state_dir`` (one daemon per root)."""
    return hashlib.sha256(str(Path(state_dir).absolute()).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Chains:
    """The chain names and the rules of one daemon (pure: no iptables here)."""

    daemon: str  # daemon_id()

    @property
    def dnat(self) -> str:
        return f"DY-{self.daemon}"

    @property
    def post(self) -> str:
        return f"DY-{self.daemon}-POST"

    @property
    def forward(self) -> str:
        return f"DY-{self.daemon}-FWD"

    def owned(self) -> list[tuple[str, str]]:
        """(table, chain) of every chain of this daemon."""
        return [("nat", self.dnat), ("nat", self.post), ("filter", self.forward)]

    def jumps(self) -> list[tuple[str, str, tuple[str, ...], bool]]:
        """(table, built-in chain, rule, first) of the jumps to our chains; ``first``: inserted
        at the top (FORWARD: ahead of whatever DROP rules the host has)."""
        local = ("-m", "addrtype", "--dst-type", "LOCAL")
        return [
            ("nat", "PREROUTING", (*local, "-j", self.dnat), False),
            ("nat", "OUTPUT", (*local, "-j", self.dnat), False),
            ("nat", "POSTROUTING", ("-j", self.post), False),
            ("filter", "FORWARD", ("-j", self.forward), True),
        ]

    def bridge_rules(self, bridge: str, subnet: str) -> list[Rule]:
        """The masquerading a bridge's published ports need: connections from the host's
        loopback (the container could not answer 127.0.0.1) and hairpin connections from
        the bridge's own subnet (the answer would bypass the un-DNAT), both to the gateway."""
        comment = ("-m", "comment", "--comment", f"dockyard-bridge:{bridge}")
        return [
            ("nat", self.post, ("-s", LOOPBACK, "-o", bridge, *comment, "-j", "MASQUERADE")),
            ("nat", self.post, ("-s", subnet, "-o", bridge, "-m", "conntrack", "--ctstate", "DNAT", *comment,
                                "-j", "MASQUERADE")),
        ]

    def container_rules(self, container_id: str, address: str, bridge: str,
                        ports: list[tuple[PortMapping, int]], subnet: str = "") -> list[Rule]:
        """One DNAT rule per published port, and the two FORWARD accepts of its traffic
        (there and back, DNAT'd connections only: nothing else reaches the container).
        ``subnet``: the container is on a user-defined network's bridge, which has no
        :meth:`bridge_rules` of its own: the container gets their two masquerades, for
        its address only."""
        comment = ("-m", "comment", "--comment", f"dockyard:{container_id[:12]}")
        rules: list[Rule] = []
        if subnet and ports:
            rules += [("nat", self.post, (*source, "-d", f"{address}/32", "-o", bridge, *comment, "-j", "MASQUERADE"))
                      for source in (("-s", LOOPBACK), ("-s", subnet, "-m", "conntrack", "--ctstate", "DNAT"))]
        for mapping, host_port in ports:
            protocol = ("-p", mapping.protocol)
            destination = () if mapping.host_ip == "0.0.0.0" else ("-d", f"{mapping.host_ip}/32")
            target = f"{address}:{mapping.container_port}"
            rules.append(("nat", self.dnat, (*protocol, *destination, "-m", mapping.protocol, "--dport",
                                             str(host_port), *comment, "-j", "DNAT", "--to-destination", target)))
            dnat_state = ("-m", "conntrack", "--ctstate", "DNAT")
            rules.append(("filter", self.forward, ("-d", f"{address}/32", "-o", bridge, *protocol, "-m",
                                                   mapping.protocol, "--dport", str(mapping.container_port),
                                                   *dnat_state, *comment, "-j", "ACCEPT")))
            rules.append(("filter", self.forward, ("-s", f"{address}/32", "-i", bridge, *protocol, "-m",
                                                   mapping.protocol, "--sport", str(mapping.container_port),
                                                   *dnat_state, *comment, "-j", "ACCEPT")))
        return rules


def restore_script(action: str, rules: list[Rule], create: list[tuple[str, str]] = ()) -> str:
    """``iptables-restore --noflush`` input: ``create`` chains declared (created, or
    flushed if they exist), then each rule with ``action`` (``-A`` or ``-D``), per table."""
    text = []
    for table in ("nat", "filter"):
        lines = [f":{chain} - [0:0]" for t, chain in create if t == table]
        lines += [f"{action} {chain} {shlex.join(rule)}" for t, chain, rule in rules if t == table]
        if lines:
            text += [f"*{table}", *lines, "COMMIT"]
    return "\n".join(text) + "\n"


def stale_rules(table: str, chain: str, listing: str, running: set[str]) -> list[Rule]:
    """The rules of ``iptables -S chain`` output owned by a container not in ``running``
    (prefixes of 12 hex); rules owned by no container (the bridges') are kept."""
    stale: list[Rule] = []
    prefixes = {container_id[:12] for container_id in running}
    for line in listing.splitlines():
        words = shlex.split(line)
        if words[:2] != ["-A", chain]:
            continue
        owner = OWNER.search(line)
        if owner is not None and owner["id"] not in prefixes:
            stale.append((table, chain, tuple(words[2:])))
    return stale


def _ip_forward() -> bool | None:
    """net.ipv4.ip_forward: whether other machines can reach published ports (None: unknown)."""
    try:
        return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    except OSError:
        return None


class Nat:
    """The kernel path of one daemon's published ports (see the module docstring).

    Args:
        state_dir: the daemon's root (its id is a hash of it).
        bridge, subnet: the daemon's bridge.
        userland_proxy: serve every published port with the proxy instead (no rules).
    """

    def __init__(self, state_dir: Path | str, bridge: str, subnet: str, userland_proxy: bool = False, log: Any = None):
        self.chains = Chains(daemon_id(state_dir))
        self.bridge = bridge
        self.subnet = subnet
        self.log = log
        self.mode = "userland" if userland_proxy else "kernel"
        self.reason = "dockyard daemon --userland-proxy" if userland_proxy else ""
        self.failures = 0  # iptables calls that failed (their ports went to the proxy, or a rule was left)
        self.removed_at_start = 0  # container rules a crashed daemon left

    @property
    def kernel(self) -> bool:
        return self.mode == "kernel"

    def info(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "reason": self.reason or None,
            "chains": [chain for _, chain in self.chains.owned()] if self.kernel else [],
            "rule_failures": self.failures,
            "rules_removed_at_start": self.removed_at_start,
            "ip_forward": _ip_forward(),
        }

    # --- iptables ------------------------------------------------------------------------

    async def _run(self, argv: list[str], stdin: bytes = b"") -> tuple[bool, str]:
        """(succeeded, stdout or the error) of one iptables command; never raises."""
        try:
            result = await trio.run_process(argv, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False)
        except OSError as exc:
            return False, f"{argv[0]}: {exc.strerror or exc}"
        if result.returncode != 0:
            return False, result.stderr.decode(errors="replace").strip() or f"{argv[0]} exited {result.returncode}"
        return True, result.stdout.decode(errors="replace")

    async def _restore(self, script: str) -> tuple[bool, str]:
        return await self._run(["iptables-restore", "-w", "--noflush"], script.encode())

    async def _iptables(self, table: str, *args: str) -> tuple[bool, str]:
        return await self._run(["iptables", "-w", "-t", table, *args])

    # --- the daemon ----------------------------------------------------------------------

    async def start(self, running: set[str]) -> None:
        """Set the kernel path up, or fall back to the proxy (logged, and in :meth:`info`):
        our chains created (or kept), the rules of containers not ``running`` deleted, the
        bridge's masquerading, the jumps, and the bridge's sysctls."""
        if not self.kernel:
            if shutil.which("iptables"):
                await self._remove_chains()  # a kernel-mode daemon of this root may have crashed
            self._announce()
            return
        if not (shutil.which("iptables") and shutil.which("iptables-restore")):
            return self._fall_back("no iptables or iptables-restore on PATH")
        await self._remove_legacy_chain()
        create: list[tuple[str, str]] = [("nat", self.chains.post)]  # flushed: only bridge rules live there
        stale: list[Rule] = []
        for table, chain in self.chains.owned():
            exists, listing = await self._iptables(table, "-S", chain)
            if not exists:
                create.append((table, chain))
            elif chain != self.chains.post:
                stale += stale_rules(table, chain, listing, running)
        bridge_rules = self.chains.bridge_rules(self.bridge, self.subnet)
        ok, error = await self._restore(restore_script("-D", stale, create) + restore_script("-A", bridge_rules))
        if not ok:
            await self._remove_chains()
            return self._fall_back(f"iptables-restore: {error}")
        self.removed_at_start = sum(1 for _, chain, _ in stale if chain == self.chains.dnat)
        for table, chain, rule, first in self.chains.jumps():
            while (await self._iptables(table, "-D", chain, *rule))[0]:  # a crash may have left copies
                pass
            ok, error = await self._iptables(table, "-I" if first else "-A", chain, *rule)
            if not ok:
                await self._remove_chains()
                return self._fall_back(f"cannot add the jump from {chain} to our chain: {error}")
        for name in ("route_localnet", "forwarding"):
            try:
                Path(f"/proc/sys/net/ipv4/conf/{self.bridge}/{name}").write_text("1")
            except OSError as exc:
                await self._remove_chains()
                return self._fall_back(f"cannot set net.ipv4.conf.{self.bridge}.{name}: {exc.strerror}")
        if self.removed_at_start and self.log is not None:
            self.log.info("published-port rules reconciled", rules_removed=self.removed_at_start)
        self._announce()

    def _fall_back(self, reason: str) -> None:
        self.mode, self.reason = "userland", reason
        self._announce()

    def _announce(self) -> None:
        if self.log is None:
            return
        if self.kernel:
            self.log.info("published ports: kernel (iptables DNAT)", chains=",".join(c for _, c in self.chains.owned()))
        elif self.reason == "dockyard daemon --userland-proxy":
            self.log.info("published ports: userland proxy", reason=self.reason)
        else:
            self.log.warning("published ports: userland proxy, the kernel path is unavailable", reason=self.reason)

    async def stop(self) -> None:
        """Remove the jumps and our chains (after every container's rules went)."""
        if self.kernel:
            await self._remove_chains()

    async def _remove_chains(self) -> None:
        for table, chain, rule, _ in self.chains.jumps():
            while (await self._iptables(table, "-D", chain, *rule))[0]:
                pass
        for table, chain in self.chains.owned():
            if (await self._iptables(table, "-F", chain))[0]:
                await self._iptables(table, "-X", chain)

    async def _remove_legacy_chain(self) -> None:
        """The chain ``DY-<bridge>`` of the daemons before the kernel path (same bridge:
        this daemon's), with its jumps."""
        legacy = f"DY-{self.bridge}"
        local = ("-m", "addrtype", "--dst-type", "LOCAL", "-j", legacy)
        for chain, rule in (("PREROUTING", local), ("OUTPUT", ("!", "-d", LOOPBACK, *local))):
            while (await self._iptables("nat", "-D", chain, *rule))[0]:
                pass
        if (await self._iptables("nat", "-F", legacy))[0]:
            await self._iptables("nat", "-X", legacy)

    # --- a container ---------------------------------------------------------------------

    async def add(self, container_id: str, address: str, ports: list[tuple[PortMapping, int]],
                  bridge: str = "", subnet: str = "") -> list[Rule] | None:
        """Install the container's rules; the ones installed (to :meth:`remove` later), or
        None if the kernel path cannot serve them (the caller proxies the ports).
        ``bridge``, ``subnet``: a user-defined network's, for a container on one (the
        default bridge's otherwise)."""
        if not self.kernel:
            return None
        user_bridge = bool(bridge) and bridge != self.bridge
        rules = self.chains.container_rules(container_id, address, bridge or self.bridge, ports,
                                            subnet if user_bridge else "")
        if not rules:
            return []
        if user_bridge:  # loopback sources may leave through it, DNAT'd traffic may come back out of it
            for name in ("route_localnet", "forwarding"):
                try:
                    Path(f"/proc/sys/net/ipv4/conf/{bridge}/{name}").write_text("1")
                except OSError as exc:
                    self.failures += 1
                    if self.log is not None:
                        self.log.warning("cannot set a bridge sysctl: 127.0.0.1 ports of its containers fail",
                                         setting=f"net.ipv4.conf.{bridge}.{name}", error=exc.strerror)
        ok, error = await self._restore(restore_script("-A", rules))
        if ok:
            return rules
        self.failures += 1
        await self._delete_each(rules)  # a table that did commit
        if self.log is not None:
            self.log.warning("cannot install the DNAT rules of a container: the userland proxy serves its ports",
                             container=container_id, error=error)
        return None

    def hairpin(self, link: str) -> None:
        """Let the bridge send a container's frames back out of its own port (a container
        reaching its own published port through the host's address)."""
        try:
            Path(f"/sys/class/net/{link}/brport/hairpin_mode").write_text("1")
        except OSError as exc:
            self.failures += 1
            if self.log is not None:
                self.log.warning("cannot set hairpin mode on a veth", link=link, error=exc.strerror)

    async def remove(self, rules: list[Rule]) -> None:
        if rules and not (await self._restore(restore_script("-D", rules)))[0]:
            await self._delete_each(rules)  # one missing rule fails the whole transaction

    async def _delete_each(self, rules: list[Rule]) -> None:
        for table, chain, rule in rules:
            ok, error = await self._iptables(table, "-D", chain, *rule)
            if not ok and "does a matching rule exist" not in error and "Bad rule" not in error:
                self.failures += 1
                if self.log is not None:
                    self.log.warning("cannot delete a published-port rule", chain=chain, rule=shlex.join(rule),
                                     error=error)
