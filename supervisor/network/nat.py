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

Bridges. The default bridge and every user network's bridge get the masquerading and
``route_localnet`` (:meth:`Nat.set_bridges`, on network create and rm); a container's rules
name the bridge of its first network. The FORWARD jump goes ahead of the isolation chains',
so a published port answers containers of every network through the host's addresses.

IPv6. The same chains in ip6tables: a DNAT rule per IPv6 port (``-p [ADDR6]:P:80``, and
``[::]`` beside ``0.0.0.0`` for a ``-p`` without an address on a network with IPv6) to the
container's IPv6 address. IPv6 has no ``route_localnet``: a connection from ``::1`` DNAT'd to
a bridge is dropped on its way back, so ``::1`` is the userland proxy's (``[::]``'s rule says
``! -d ::1/128`` and its socket listens), as is every IPv6 port of a container without
IPv6 or where ip6tables fails (:func:`kernel_serves`, :func:`proxy_serves`).
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
NEEDS_QUOTES = re.compile(r"[\s\"'\\]")

#: (table, chain, rule) of one iptables rule; ``rule`` as iptables' arguments after the chain.
Rule = tuple[str, str, tuple[str, ...]]


def daemon_id(state_dir: Path | str) -> str:
    """The 8-hex id of the daemon whose state root is ``state_dir`` (one daemon per root)."""
    return hashlib.sha256(str(Path(state_dir).absolute()).encode()).hexdigest()[:8]


#: ip6tables' tables as a :data:`Rule` names them (the same chains in the other family).
IPV6_TABLES = {"nat6": "nat", "filter6": "filter"}


def family(table: str) -> int:
    """6 for a rule of :data:`IPV6_TABLES` (ip6tables), else 4."""
    return 6 if table in IPV6_TABLES else 4


def kernel_serves(mapping: PortMapping, address6: str, ipv6: bool) -> bool:
    """Whether a DNAT rule can serve ``mapping`` (its other traffic goes through the proxy):
    any IPv4 mapping; an IPv6 one if the container has an IPv6 address, ip6tables works
    (``ipv6``) and the host address is not ``::1`` (the kernel cannot DNAT IPv6 loopback:
    it has no ``route_localnet``, so the answers of the container would be dropped)."""
    if not mapping.ipv6:
        return True
    return bool(address6) and ipv6 and mapping.host_ip != "::1"


def proxy_serves(mapping: PortMapping, address6: str, ipv6: bool) -> bool:
    """Whether the userland proxy listens on the mapping's host socket beside the kernel
    path: an IPv6 mapping the kernel cannot serve, and ``::`` (for ``[::1]``, which its
    DNAT rule leaves out). Every other connection to ``::`` is DNAT'd before the socket."""
    return mapping.ipv6 and (not kernel_serves(mapping, address6, ipv6) or mapping.host_ip == "::")


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

    def owned(self, ipv6: bool = False) -> list[tuple[str, str]]:
        """(table, chain) of every chain of this daemon (of ip6tables with ``ipv6``)."""
        nat, filter_ = ("nat6", "filter6") if ipv6 else ("nat", "filter")
        return [(nat, self.dnat), (nat, self.post), (filter_, self.forward)]

    def jumps(self, ipv6: bool = False) -> list[tuple[str, str, tuple[str, ...], bool]]:
        """(table, built-in chain, rule, first) of the jumps to our chains; ``first``: inserted
        at the top (FORWARD: ahead of whatever DROP rules the host has)."""
        nat, filter_ = ("nat6", "filter6") if ipv6 else ("nat", "filter")
        local = ("-m", "addrtype", "--dst-type", "LOCAL")
        return [
            (nat, "PREROUTING", (*local, "-j", self.dnat), False),
            (nat, "OUTPUT", (*local, "-j", self.dnat), False),
            (nat, "POSTROUTING", ("-j", self.post), False),
            (filter_, "FORWARD", ("-j", self.forward), True),
        ]

    def bridge_rules(self, bridge: str, subnet: str, subnet6: str = "") -> list[Rule]:
        """The masquerading a bridge's published ports need: connections from the host's
        loopback (the container could not answer 127.0.0.1) and hairpin connections from
        the bridge's own subnet (the answer would bypass the un-DNAT), both to the gateway;
        with ``subnet6``, the hairpin connections of IPv6 (its loopback is never DNAT'd)."""
        comment = ("-m", "comment", "--comment", f"dockyard-bridge:{bridge}")
        dnat_state = ("-m", "conntrack", "--ctstate", "DNAT")
        rules: list[Rule] = [
            ("nat", self.post, ("-s", LOOPBACK, "-o", bridge, *comment, "-j", "MASQUERADE")),
            ("nat", self.post, ("-s", subnet, "-o", bridge, *dnat_state, *comment, "-j", "MASQUERADE")),
        ]
        if subnet6:
            rules.append(("nat6", self.post, ("-s", subnet6, "-o", bridge, *dnat_state, *comment, "-j", "MASQUERADE")))
        return rules

    def container_rules(self, container_id: str, address: str, bridge: str,
                        ports: list[tuple[PortMapping, int]], address6: str = "",
                        ipv6: bool = True) -> list[Rule]:
        """One DNAT rule per published port, and the two FORWARD accepts of its traffic
        (there and back, DNAT'd connections only: nothing else reaches the container). An
        IPv6 port gets ip6tables rules to ``address6`` where :func:`kernel_serves` it
        (``ipv6``: ip6tables works); ``::`` leaves ``::1`` out, for the proxy."""
        comment = ("-m", "comment", "--comment", f"dockyard:{container_id[:12]}")
        dnat_state = ("-m", "conntrack", "--ctstate", "DNAT")
        rules: list[Rule] = []
        for mapping, host_port in ports:
            if not kernel_serves(mapping, address6, ipv6):
                continue
            protocol = ("-p", mapping.protocol)
            if mapping.ipv6:
                nat, filter_, target_address, host = "nat6", "filter6", address6, "128"
                destination = ("!", "-d", "::1/128") if mapping.host_ip == "::" else ("-d", f"{mapping.host_ip}/128")
                target = f"[{address6}]:{mapping.container_port}"
            else:
                nat, filter_, target_address, host = "nat", "filter", address, "32"
                destination = () if mapping.host_ip == "0.0.0.0" else ("-d", f"{mapping.host_ip}/32")
                target = f"{address}:{mapping.container_port}"
            rules.append((nat, self.dnat, (*protocol, *destination, "-m", mapping.protocol, "--dport",
                                           str(host_port), *comment, "-j", "DNAT", "--to-destination", target)))
            rules.append((filter_, self.forward, ("-d", f"{target_address}/{host}", "-o", bridge, *protocol, "-m",
                                                  mapping.protocol, "--dport", str(mapping.container_port),
                                                  *dnat_state, *comment, "-j", "ACCEPT")))
            rules.append((filter_, self.forward, ("-s", f"{target_address}/{host}", "-i", bridge, *protocol, "-m",
                                                  mapping.protocol, "--sport", str(mapping.container_port),
                                                  *dnat_state, *comment, "-j", "ACCEPT")))
        return rules


def restore_script(action: str, rules: list[Rule], create: list[tuple[str, str]] = ()) -> str:
    """``iptables-restore --noflush`` input: ``create`` chains declared (created, or
    flushed if they exist), then each rule with ``action`` (``-A`` or ``-D``), per table.
    Rules and chains of one family only (``ip6tables-restore`` for :data:`IPV6_TABLES`)."""
    text = []
    for table in ("nat", "filter"):
        names = (table, table + "6")
        lines = [f":{chain} - [0:0]" for t, chain in create if t in names]
        lines += [f"{action} {chain} {_join(rule)}" for t, chain, rule in rules if t in names]
        if lines:
            text += [f"*{table}", *lines, "COMMIT"]
    return "\n".join(text) + "\n"


def _join(rule: tuple[str, ...]) -> str:
    """A rule's words for iptables-restore: bare, or in double quotes where a word has a
    space or a quote (its parser knows no single quotes: ``'!'`` or ``'[fd00::2]:80'``
    would be taken as they are)."""
    return " ".join('"' + word.replace('"', '\\"') + '"' if NEEDS_QUOTES.search(word) or not word else word
                    for word in rule)


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
        self.ipv6 = False  # ip6tables serves IPv6 ports (set by start)
        self.reason6 = ""  # why not, when the IPv4 path works
        self.failures = 0  # iptables calls that failed (their ports went to the proxy, or a rule was left)
        self.removed_at_start = 0  # container rules a crashed daemon left
        self.started = False
        # Every bridge whose containers may publish ports: name -> (subnet, IPv6 subnet or "").
        self.bridges: dict[str, tuple[str, str]] = {bridge: (subnet, "")}

    @property
    def kernel(self) -> bool:
        return self.mode == "kernel"

    def info(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "reason": self.reason or None,
            "chains": [chain for _, chain in self.chains.owned()] if self.kernel else [],
            "ipv6": self.ipv6,
            "ipv6_reason": (self.reason6 or None) if self.kernel else None,
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

    async def _restore(self, script: str, ipv6: bool = False) -> tuple[bool, str]:
        program = "ip6tables-restore" if ipv6 else "iptables-restore"
        return await self._run([program, "-w", "--noflush"], script.encode())

    async def _restore_rules(self, action: str, rules: list[Rule]) -> tuple[bool, str]:
        """Both families' rules, one transaction each (IPv4's first)."""
        for ipv6 in (False, True):
            chosen = [rule for rule in rules if (family(rule[0]) == 6) == ipv6]
            if chosen:
                ok, error = await self._restore(restore_script(action, chosen), ipv6)
                if not ok:
                    return False, error
        return True, ""

    async def _iptables(self, table: str, *args: str) -> tuple[bool, str]:
        program = "ip6tables" if table in IPV6_TABLES else "iptables"
        return await self._run([program, "-w", "-t", IPV6_TABLES.get(table, table), *args])

    # --- the daemon ----------------------------------------------------------------------

    async def start(self, running: set[str]) -> None:
        """Set the kernel path up, or fall back to the proxy (logged, and in :meth:`info`):
        our chains created (or kept), the rules of containers not ``running`` deleted, the
        bridges' masquerading, the jumps, and the bridges' sysctls; the same in ip6tables
        for IPv6 ports (where that fails, only they go through the proxy)."""
        self.started = True
        if not self.kernel:
            if shutil.which("iptables"):
                await self._remove_chains()  # a kernel-mode daemon of this root may have crashed
            self._announce()
            return
        if not (shutil.which("iptables") and shutil.which("iptables-restore")):
            return self._fall_back("no iptables or iptables-restore on PATH")
        await self._remove_legacy_chain()
        error = await self._start_family(running, ipv6=False)
        if error:
            await self._remove_chains()
            return self._fall_back(error)
        if not (shutil.which("ip6tables") and shutil.which("ip6tables-restore")):
            self.reason6 = "no ip6tables or ip6tables-restore on PATH"
        else:
            self.reason6 = await self._start_family(running, ipv6=True)
            if self.reason6:
                await self._remove_chains(ipv6_only=True)
        self.ipv6 = not self.reason6
        if self.reason6 and self.log is not None:
            self.log.warning("published IPv6 ports: userland proxy, ip6tables is unavailable", reason=self.reason6)
        for bridge in self.bridges:
            error = self._sysctls(bridge)
            if error:
                await self._remove_chains()
                return self._fall_back(error)
        if self.removed_at_start and self.log is not None:
            self.log.info("published-port rules reconciled", rules_removed=self.removed_at_start)
        self._announce()

    async def _start_family(self, running: set[str], ipv6: bool) -> str:
        """One family's chains, stale rules and jumps; the error ("" if none)."""
        post = ("nat6" if ipv6 else "nat", self.chains.post)
        create: list[tuple[str, str]] = [post]  # flushed: only bridge rules live there
        stale: list[Rule] = []
        for table, chain in self.chains.owned(ipv6):
            exists, listing = await self._iptables(table, "-S", chain)
            if not exists:
                create.append((table, chain))
            elif chain != self.chains.post:
                stale += stale_rules(table, chain, listing, running)
        program = "ip6tables-restore" if ipv6 else "iptables-restore"
        script = restore_script("-D", stale, create) + restore_script("-A", self._bridge_rules(ipv6))
        ok, error = await self._restore(script, ipv6)
        if not ok:
            return f"{program}: {error}"
        self.removed_at_start += sum(1 for _, chain, _ in stale if chain == self.chains.dnat)
        for table, chain, rule, first in self.chains.jumps(ipv6):
            while (await self._iptables(table, "-D", chain, *rule))[0]:  # a crash may have left copies
                pass
            ok, error = await self._iptables(table, "-I" if first else "-A", chain, *rule)
            if not ok:
                return f"cannot add the jump from {chain} to our chain: {error}"
        return ""

    def _bridge_rules(self, ipv6: bool) -> list[Rule]:
        rules = [rule for bridge, (subnet, subnet6) in self.bridges.items()
                 for rule in self.chains.bridge_rules(bridge, subnet, subnet6)]
        return [rule for rule in rules if (family(rule[0]) == 6) == ipv6]

    def _sysctls(self, bridge: str) -> str:
        """``route_localnet`` on a bridge (127.0.0.1 DNAT'd to it), and ``forwarding`` on
        the default one (hairpin connections; a user network's follows the host's setting)."""
        names = ("route_localnet", "forwarding") if bridge == self.bridge else ("route_localnet",)
        for name in names:
            try:
                Path(f"/proc/sys/net/ipv4/conf/{bridge}/{name}").write_text("1")
            except OSError as exc:
                return f"cannot set net.ipv4.conf.{bridge}.{name}: {exc.strerror}"
        return ""

    async def set_bridges(self, bridges: list[tuple[str, str, str]]) -> None:
        """The user networks' bridges as (name, subnet, IPv6 subnet or ""): their
        masquerading rebuilt whole (one transaction a family) and ``route_localnet`` set,
        once the daemon runs; before :meth:`start`, only recorded."""
        self.bridges = {self.bridge: (self.subnet, "")}
        self.bridges.update({name: (subnet, subnet6) for name, subnet, subnet6 in bridges})
        if not (self.started and self.kernel):
            return
        for ipv6 in (False, True) if self.ipv6 else (False,):
            create = [("nat6" if ipv6 else "nat", self.chains.post)]
            ok, error = await self._restore(restore_script("-A", self._bridge_rules(ipv6), create), ipv6)
            if not ok:
                self._failed("cannot rebuild the masquerading of the bridges", error)
        for bridge in self.bridges:
            error = self._sysctls(bridge)
            if error:
                self._failed("cannot set a sysctl of a bridge", error)

    def _failed(self, event: str, error: str, **fields: Any) -> None:
        self.failures += 1
        if self.log is not None:
            self.log.warning(event, error=error, **fields)

    def _fall_back(self, reason: str) -> None:
        self.mode, self.reason = "userland", reason
        self._announce()

    def _announce(self) -> None:
        if self.log is None:
            return
        if self.kernel:
            self.log.info("published ports: kernel (iptables DNAT)", chains=",".join(c for _, c in self.chains.owned()),
                          ipv6=self.ipv6)
        elif self.reason == "dockyard daemon --userland-proxy":
            self.log.info("published ports: userland proxy", reason=self.reason)
        else:
            self.log.warning("published ports: userland proxy, the kernel path is unavailable", reason=self.reason)

    async def stop(self) -> None:
        """Remove the jumps and our chains (after every container's rules went)."""
        if self.kernel:
            await self._remove_chains()

    async def _remove_chains(self, ipv6_only: bool = False) -> None:
        families = (True,) if ipv6_only else (False, True)
        for ipv6 in families:
            if ipv6 and not shutil.which("ip6tables"):
                continue
            for table, chain, rule, _ in self.chains.jumps(ipv6):
                while (await self._iptables(table, "-D", chain, *rule))[0]:
                    pass
            for table, chain in self.chains.owned(ipv6):
                if (await self._iptables(table, "-F", chain))[0]:
                    await self._iptables(table, "-X", chain)
        if ipv6_only:
            self.ipv6 = False

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
                  bridge: str = "", address6: str = "") -> list[Rule] | None:
        """Install the container's rules (its address on ``bridge``, the default one unless
        given; ``address6`` for IPv6 ports); the ones installed (to :meth:`remove` later),
        or None if the kernel path cannot serve them (the caller proxies the ports)."""
        if not self.kernel:
            return None
        rules = self.chains.container_rules(container_id, address, bridge or self.bridge, ports, address6, self.ipv6)
        if not rules:
            return []
        ok, error = await self._restore_rules("-A", rules)
        if ok:
            return rules
        self.failures += 1
        await self._delete_each(rules)  # a table that did commit
        if self.log is not None:
            self.log.warning("cannot install the DNAT rules of a container: the userland proxy serves its ports",
                             container=container_id, error=error)
        return None

    async def hairpin(self, link: str) -> None:
        """Let the bridge send a container's frames back out of its own port (a container
        reaching its own published port through the host's address)."""
        from supervisor.network import links

        try:
            await trio.to_thread.run_sync(links.set_hairpin, link)
        except Exception as exc:  # links.NetworkError, or pyroute2's own
            self._failed("cannot set hairpin mode on a veth", str(exc), link=link)

    async def remove(self, rules: list[Rule]) -> None:
        if rules and not (await self._restore_rules("-D", rules))[0]:
            await self._delete_each(rules)  # one missing rule fails the whole transaction

    async def _delete_each(self, rules: list[Rule]) -> None:
        for table, chain, rule in rules:
            ok, error = await self._iptables(table, "-D", chain, *rule)
            if not ok and "does a matching rule exist" not in error and "Bad rule" not in error:
                self.failures += 1
                if self.log is not None:
                    self.log.warning("cannot delete a published-port rule", chain=chain, rule=shlex.join(rule),
                                     error=error)
