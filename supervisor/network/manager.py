"""The daemon's side of container networking (see ``__init__.py`` for the theory of
operation): the bridge and its leases, each container's attachment, the proxies of its
published ports, masquerading, and the clean-up after an exit or a crash."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from logs.atomic import write_atomic
from supervisor.errors import DockyardError
from supervisor.network.nat import Nat, proxy_serves
from supervisor.network.networks import builtin_id
from supervisor.network.ports import parse_publish
from supervisor.network.user import Endpoint, UserNetworks, host_file, resolv_conf
from supervisor.network import (
    MODES,
    Leases,
    PortMapping,
    exposed_ports,
    links,
    mac_address,
    parse_add_host,
    parse_dns,
    proxy,
    render_hosts,
    render_resolv_conf,
)

MASQUERADE_COMMENT = "dockyard:{bridge}"


@dataclass(eq=False)
class Attachment:
    """One container's network while it runs (``inspect``'s NetworkSettings)."""

    container_id: str
    mode: str
    etc_dir: str
    namespace: str = ""  # LaunchConfig.network_namespace
    nat_rules: list[Any] = field(default_factory=list)  # its published ports' rules (nat.py)
    proxied: bool = False  # its published ports go through the userland proxy (not DNAT)
    init_layer: str = ""  # the top lower dir with the mount points of the /etc files
    address: str = ""
    address6: str = ""  # its first network's IPv6 address (published IPv6 ports go there)
    gateway: str = ""
    prefixlen: int = 0
    mac: str = ""
    bridge: str = ""
    ports: list[tuple[PortMapping, int]] = field(default_factory=list)  # with the host port bound
    sockets: list[Any] = field(default_factory=list)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    # User-defined networks (supervisor/network/user.py): its endpoints, in interface order,
    # the names its DNS server answers for it, and that server (mode "user" only).
    endpoints: list[Endpoint] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    dns_servers: list[str] = field(default_factory=list)  # --dns: where its DNS server forwards
    dns: Any = None
    pid: int = 0

    @property
    def sync(self) -> bool:
        return self.mode in ("bridge", "user")

    def networks(self) -> dict[str, Any]:
        """docker's NetworkSettings.Networks: the default bridge's endpoint, then the others."""
        networks: dict[str, Any] = {}
        if self.mode == "bridge":
            networks["bridge"] = {
                "IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": self.mac,
                "NetworkID": builtin_id("bridge", self.bridge), "EndpointID": "", "Gateway": self.gateway,
                "IPAddress": self.address, "IPPrefixLen": self.prefixlen, "IPv6Gateway": "",
                "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DNSNames": None,
            }
        for endpoint in self.endpoints:
            networks[endpoint.network.name] = endpoint.settings()
        return networks

    def settings(self) -> dict[str, Any]:
        ports: dict[str, list[dict[str, str]]] = {}  # "::" beside 0.0.0.0 on an IPv6 network, as docker
        for mapping, port in self.ports:
            ports.setdefault(mapping.key, []).append({"HostIp": mapping.host_ip, "HostPort": str(port)})
        bridge = self.mode == "bridge"  # docker's top-level fields are the default bridge's
        return {
            "Bridge": self.bridge,
            "IPAddress": self.address if bridge else "",
            "IPPrefixLen": self.prefixlen if bridge else 0,
            "Gateway": self.gateway if bridge else "",
            "MacAddress": self.mac if bridge else "",
            "Ports": ports,
            "HostsPath": f"{self.etc_dir}/hosts",
            "HostnamePath": f"{self.etc_dir}/hostname",
            "ResolvConfPath": f"{self.etc_dir}/resolv.conf",
            "Networks": self.networks(),
        }


class Network:
    """Args:
    state_dir: where the lease file lives (the daemon's root).
    bridge, subnet: the daemon's bridge (``--bridge-name``, ``--bridge-subnet``).
    ip_masq: install a MASQUERADE rule for the subnet (``--ip-masq``) while the daemon runs.
    """

    def __init__(self, state_dir: Path, bridge: str, subnet: str, ip_masq: bool = False, log: Any = None,
                 userland_proxy: bool = False):
        self.bridge = bridge
        self.subnet = ipaddress.IPv4Network(subnet, strict=False)
        self.ip_masq = ip_masq
        self.log = log
        self.leases = Leases(str(Path(state_dir) / "network" / f"leases-{bridge}.json"), str(self.subnet))
        self.counters = {"veths_removed_at_start": 0, "leases_released_at_start": 0}
        self.nat = Nat(state_dir, bridge, str(self.subnet), userland_proxy, log)
        self.user = UserNetworks(str(state_dir), bridge, str(self.subnet), ip_masq, log,
                                 bridges_changed=self.nat.set_bridges)
        self.nursery: trio.Nursery | None = None  # the Supervisor's: veth deletions run there
        self._deleting: dict[str, trio.Event] = {}  # container id -> set once its veth is gone

    # --- the daemon --------------------------------------------------------------------

    async def start(self, running: set[str]) -> None:
        """Create the bridge, release the leases of containers not running, delete veths of
        ours left on the bridge (a crash), make the user networks, install the published
        ports' chains (after the isolation chains: their jump goes first in FORWARD, so a
        published port answers a container of any network), the masquerading rule if asked."""
        await trio.to_thread.run_sync(links.ensure_bridge, self.bridge, str(self.subnet))
        released = self.leases.keep_only(running)
        keep = {links.host_name(container_id) for container_id in running}
        stale = await trio.to_thread.run_sync(links.stale_veths, self.bridge, keep)
        for name in stale:
            await trio.to_thread.run_sync(links.delete_link, name)
        self.counters["veths_removed_at_start"] = len(stale)
        self.counters["leases_released_at_start"] = len(released)
        if (released or stale) and self.log is not None:
            self.log.info("network reconciled", leases_released=len(released), veths_removed=len(stale))
        await self.user.start(running)
        await self.nat.start(running)
        if self.ip_masq:
            await self._iptables("-D", check=False)  # a crashed daemon's copy
            await self._iptables("-A")

    async def stop(self) -> None:
        """Remove the masquerading rule and the bridge (after every container has stopped)."""
        for event in list(self._deleting.values()):
            await event.wait()
        await self.nat.stop()
        await self.user.stop()
        if self.ip_masq:
            await self._iptables("-D", check=False)
        await trio.to_thread.run_sync(links.remove_bridge, self.bridge)

    def info(self) -> dict[str, Any]:
        """For ``dockyard info``: the bridge, the leases held, and what was cleaned or failed."""
        return {
            "bridge": self.bridge,
            "subnet": str(self.subnet),
            "gateway": self.leases.gateway,
            "leases": len(self.leases.leases),
            "ip_masq": self.ip_masq,
            "published_ports": self.nat.info(),
            **self.counters,
            "user_networks": self.user.info(),
        }

    def check(self, spec: Any) -> None:
        """The user-defined networks of a spec exist (at create, as docker).

        Raises:
            NotFound: ``network NAME not found``.
        """
        for name in spec.endpoints:
            self.user.get(name)

    def builtin(self) -> tuple[str, str, str]:
        """The default network's bridge, subnet and gateway (``network inspect bridge``)."""
        return self.bridge, str(self.subnet), self.leases.gateway

    def masquerade_rule(self) -> list[str]:
        return [
            "POSTROUTING", "-s", str(self.subnet), "!", "-o", self.bridge,
            "-m", "comment", "--comment", MASQUERADE_COMMENT.format(bridge=self.bridge), "-j", "MASQUERADE",
        ]

    async def _iptables(self, action: str, check: bool = True) -> None:
        result = await trio.run_process(
            ["iptables", "-w", "-t", "nat", action, *self.masquerade_rule()], capture_stdout=True, capture_stderr=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise DockyardError(f"cannot install the masquerading rule for {self.subnet}: {result.stderr.decode().strip()}")

    # --- a container -------------------------------------------------------------------

    async def prepare(self, container: Any, peer: Any = None, image_config: dict | None = None) -> Attachment:
        """Everything before the launch: the lease, the published ports bound, the /etc
        files written. ``peer`` is the running container of ``container:NAME``.

        Raises:
            Conflict: a published port is taken. DockyardError: no address left, a bad entry.
        """
        await self.settle(container.id)  # a restart: the last run's veth has the same name
        spec = container.spec
        mode = spec.network
        etc_dir = Path(container.directory) / "network"
        etc_dir.mkdir(mode=0o755, exist_ok=True)
        kind = "container" if mode.startswith("container:") else mode if mode in MODES else "user"
        attachment = Attachment(container.id, kind, str(etc_dir))
        attachment.init_layer = _init_layer(Path(container.directory) / "init")
        try:
            hostname = container.resolved.hostname or container.id[:12]
            extra = [parse_add_host(entry) for entry in spec.add_host]
            dns = [parse_dns(entry) for entry in spec.dns]
            if mode == "bridge" or attachment.mode == "user":
                if mode == "bridge":
                    attachment.address = self.leases.allocate(container.id)
                    attachment.gateway = self.leases.gateway
                    attachment.prefixlen = self.subnet.prefixlen
                    attachment.mac = mac_address(attachment.address)
                    attachment.bridge = self.bridge
                attachment.names = [container.name, container.id[:12]]
                attachment.dns_servers = dns
                attachment.endpoints = self.user.plan(container.id, spec.endpoints, 1 if mode == "bridge" else 0)
                bridge = self.bridge
                if attachment.mode == "user":  # its first network's address: hosts, published ports
                    attachment.address = attachment.endpoints[0].address
                    attachment.address6 = attachment.endpoints[0].address6
                    bridge = attachment.endpoints[0].network.bridge
                mappings = [mapping for entry in spec.publish for mapping in parse_publish(entry)]
                if spec.publish_all:
                    taken = {m.key for m in mappings}
                    mappings += [m for m in exposed_ports(image_config or {}) if m.key not in taken]
                for mapping in mappings:
                    await self._bind(attachment, mapping, container.name)
                    if mapping.any_family and attachment.address6:  # docker's default: [::] too, same port
                        twin = PortMapping(mapping.container_port, mapping.protocol, "::", attachment.ports[-1][1],
                                           any_family=True)
                        await self._bind(attachment, twin, container.name)
                rules = await self.nat.add(container.id, attachment.address, attachment.ports, bridge,
                                           attachment.address6)
                if rules is None:
                    attachment.proxied = True
                    for sock in attachment.sockets:
                        proxy.listen(sock)
                else:
                    attachment.nat_rules = rules
            elif mode == "host":
                attachment.namespace = "host"
            elif attachment.mode == "container":
                attachment.namespace = f"/proc/{peer.pid}/ns/net"
                attachment.etc_dir = str(Path(peer.directory) / "network")  # its files, as docker
                return attachment
            host_resolv = host_file("/etc/resolv.conf")
            if mode == "host":
                hosts = host_file("/etc/hosts") + render_hosts(hostname, "", extra).split("\n", 2)[2]
            else:  # --network none: its loopback name as podman (127.0.0.1 <hostname>), for sudo, Java, ...
                hosts = render_hosts(hostname, attachment.address or "127.0.0.1", extra)
            write_atomic(etc_dir / "hosts", hosts.encode(), durable=False, mode=0o644)
            write_atomic(etc_dir / "hostname", (hostname + "\n").encode(), durable=False, mode=0o644)
            if attachment.mode == "user" or spec.dns_search or spec.dns_option:
                resolv = resolv_conf(host_resolv, dns, list(spec.dns_search), list(spec.dns_option),
                                     embedded=attachment.mode == "user")
            else:
                resolv = render_resolv_conf(host_resolv, dns)
            write_atomic(etc_dir / "resolv.conf", resolv.encode(), durable=False, mode=0o644)
        except BaseException:
            await self.release(attachment)
            raise
        return attachment

    async def _bind(self, attachment: Attachment, mapping: PortMapping, name: str) -> None:
        """The host port of a mapping bound: only reserved where the kernel's DNAT serves it,
        listening where the proxy serves it too (:func:`~supervisor.network.nat.proxy_serves`)."""
        listen = not self.nat.kernel or proxy_serves(mapping, attachment.address6, self.nat.ipv6)
        sock, port = await proxy.bind(mapping, name, listen=listen)
        attachment.sockets.append(sock)
        attachment.ports.append((mapping, port))

    async def adopt(self, container: Any, held: Any, pid: int = 0) -> Attachment:
        """A running container's attachment again (live restore, lifecycle/restore.py): its
        leases, its published ports' sockets as the keeper held them (bound all along; a
        port whose socket is missing is bound again), its DNAT rules (kept by ``start``
        for a running container); on user-defined networks its endpoints (the veths found
        in its namespace), its names in the networks' DNS and, when its first network is
        one, its embedded DNS server (opened again in its namespace). Its veths and /etc
        files are where they were. ``pid``: its pid 1 while it runs (0: it exited while no
        daemon ran, so nothing is attached any more).

        Raises:
            DockyardError: a network that is gone, a port.
        """
        import socket as stdlib_socket

        spec = container.spec
        mode = spec.network
        etc_dir = Path(container.directory) / "network"
        kind = "container" if mode.startswith("container:") else mode if mode in MODES else "user"
        attachment = Attachment(container.id, kind, str(etc_dir))
        attachment.init_layer = _init_layer(Path(container.directory) / "init")
        if kind not in ("bridge", "user"):
            return attachment
        attachment.pid = pid
        if kind == "bridge":
            attachment.address = next((address for address, owner in self.leases.leases.items()
                                       if owner == container.id), "")
            attachment.gateway = self.leases.gateway
            attachment.prefixlen = self.subnet.prefixlen
            attachment.mac = mac_address(attachment.address) if attachment.address else ""
            attachment.bridge = self.bridge
        attachment.names = [container.name, container.id[:12]]
        try:
            attachment.dns_servers = [parse_dns(entry) for entry in spec.dns]
            attachment.endpoints = await self.user.adopt(container.id, spec.endpoints, 1 if kind == "bridge" else 0,
                                                         pid, attachment.names)
            bridge = self.bridge
            if kind == "user":  # its first network's address: published ports
                attachment.address = attachment.endpoints[0].address
                attachment.address6 = attachment.endpoints[0].address6
                bridge = attachment.endpoints[0].network.bridge
                if pid and attachment.endpoints[0].attached:
                    try:
                        attachment.dns = await self.user.open_dns(container.id, pid, attachment.dns_servers)
                    except OSError as exc:  # it exited meanwhile (its exit is reported), or 53 is taken
                        if self.log is not None:
                            self.log.warning("cannot open a restored container's embedded DNS server",
                                             container=container.id, error=exc.strerror or str(exc))
            for index, (host_ip, host_port, container_port, protocol, port) in enumerate(held.extra.get("ports", [])):
                mapping = PortMapping(int(container_port), str(protocol), str(host_ip), int(host_port))
                fd = held.take(f"port.{index}")
                if fd >= 0:
                    sock = trio.socket.from_stdlib_socket(stdlib_socket.socket(fileno=fd))
                else:
                    listen = not self.nat.kernel or proxy_serves(mapping, attachment.address6, self.nat.ipv6)
                    sock, port = await proxy.bind(PortMapping(mapping.container_port, mapping.protocol,
                                                              mapping.host_ip, int(port)), container.name,
                                                  listen=listen)
                attachment.sockets.append(sock)
                attachment.ports.append((mapping, int(port)))
            if self.nat.kernel and attachment.ports:  # its rules stayed (Nat.start keeps a running one's)
                attachment.nat_rules = self.nat.chains.container_rules(container.id, attachment.address, bridge,
                                                                       attachment.ports, attachment.address6,
                                                                       self.nat.ipv6)
            elif attachment.ports:
                attachment.proxied = True
                for sock in attachment.sockets:
                    proxy.listen(sock)
        except BaseException:
            await self.release(attachment)
            raise
        return attachment

    async def connect(self, attachment: Attachment, pid: int) -> None:
        """The veth pair and eth0 for pid 1's namespace (launch's ``prepare`` hook); a veth
        on each user network (eth1... after the default bridge's eth0), and the embedded DNS
        server's sockets when its first network is a user network."""
        if attachment.mode not in ("bridge", "user"):
            return
        attachment.pid = pid
        if attachment.mode == "bridge":
            await trio.to_thread.run_sync(
                links.attach, attachment.container_id, pid, self.bridge, attachment.address,
                attachment.prefixlen, attachment.gateway, attachment.mac,
            )
            if attachment.nat_rules:
                await self.nat.hairpin(links.host_name(attachment.container_id))
        routed = attachment.mode == "bridge"
        for endpoint in attachment.endpoints:
            await self.user.attach(endpoint, pid, not routed, attachment.names)
            routed = routed or not endpoint.network.internal
        if attachment.mode == "user" and attachment.nat_rules:
            await self.nat.hairpin(attachment.endpoints[0].host)
        if attachment.mode == "user":
            attachment.dns = await self.user.open_dns(attachment.container_id, pid, attachment.dns_servers)

    async def connect_live(self, attachment: Attachment, network: str, config: dict[str, Any]) -> Endpoint:
        """``network connect`` on a running container: a new interface (the next free ethN).

        Raises:
            DockyardError: the address or the veth (nothing of it is left).
        """
        taken = {endpoint.ifname for endpoint in attachment.endpoints} | ({"eth0"} if attachment.mode == "bridge" else set())
        index = next(i for i in range(len(taken) + 1) if f"eth{i}" not in taken)
        endpoint = self.user.lease(attachment.container_id, network, config, f"eth{index}")
        try:
            await self.user.attach(endpoint, attachment.pid, False, attachment.names)
        except BaseException:
            await self.user.detach(endpoint)
            raise
        attachment.endpoints.append(endpoint)
        return endpoint

    async def disconnect_live(self, attachment: Attachment, network_id: str) -> None:
        for endpoint in [e for e in attachment.endpoints if e.network.id == network_id]:
            attachment.endpoints.remove(endpoint)
            await self.user.detach(endpoint)

    def serve(self, attachment: Attachment, nursery: trio.Nursery) -> None:
        """Run the proxies of the published ports that need one (until :meth:`release`):
        all of them where the kernel path cannot serve the container, else its IPv6 ports
        that DNAT cannot serve (``[::1]``, ``::``'s loopback, a container without IPv6)."""
        served = [(sock, mapping) for sock, (mapping, _) in zip(attachment.sockets, attachment.ports)
                  if attachment.proxied or proxy_serves(mapping, attachment.address6, self.nat.ipv6)]

        async def run() -> None:
            with attachment.scope:
                async with trio.open_nursery() as proxies:
                    for sock, mapping in served:
                        proxy.listen(sock)  # a socket the keeper held was only reserved
                        target = attachment.address6 if mapping.ipv6 and attachment.address6 else attachment.address
                        proxies.start_soon(proxy.serve, sock, mapping, target)
        if served:
            nursery.start_soon(run)
        if attachment.dns is not None:
            nursery.start_soon(attachment.dns.serve)

    async def release(self, attachment: Attachment | None) -> None:
        """Stop the proxies, delete the host end of the veth, give the address back."""
        if attachment is None:
            return
        attachment.scope.cancel()
        for sock in attachment.sockets:
            sock.close()
        if attachment.dns is not None:
            attachment.dns.close()
        with trio.CancelScope(shield=True):
            endpoints, attachment.endpoints = attachment.endpoints, []
            links_to_delete = [links.host_name(attachment.container_id)] if attachment.mode == "bridge" else []
            for endpoint in endpoints:
                if endpoint.attached:
                    links_to_delete.append(endpoint.host)
                await self.user.detach(endpoint, delete=False)
            rules, attachment.nat_rules = attachment.nat_rules, []
            await self.nat.remove(rules)
            self.leases.release(attachment.container_id)
            if links_to_delete:
                # Deleting a veth waits for the kernel's RCU grace periods (20-40 ms here), so
                # it runs beside the exit, not in its way; rm waits for it (:meth:`settle`).
                done = self._deleting[attachment.container_id] = trio.Event()
                if self.nursery is not None:
                    self.nursery.start_soon(self._delete_veth, attachment.container_id, done, links_to_delete)
                else:
                    await self._delete_veth(attachment.container_id, done, links_to_delete)

    async def settle(self, container_id: str) -> None:
        """Wait until the container's veth deletion (if one runs) is done."""
        event = self._deleting.get(container_id)
        if event is not None:
            await event.wait()

    async def _delete_veth(self, container_id: str, done: trio.Event, names: list[str]) -> None:
        try:
            for name in names:
                try:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(links.delete_link, name)
                except Exception as exc:  # pyroute2's NetlinkError is not an OSError
                    if self.log is not None:
                        self.log.warning("cannot delete a veth", container=container_id, link=name, error=str(exc))
        finally:
            if self._deleting.get(container_id) is done:
                del self._deleting[container_id]
            done.set()


def _init_layer(directory: Path) -> str:
    """docker's init layer: a lower dir above the image's with empty /etc/hosts, hostname
    and resolv.conf, so the bind mounts have mount points without anything being created
    in the upper dir (which a diff, a commit or an export would show)."""
    etc = directory / "etc"
    if not etc.is_dir():
        etc.mkdir(mode=0o755, parents=True, exist_ok=True)
        for name in ("hosts", "hostname", "resolv.conf"):
            (etc / name).touch(mode=0o644)
    return str(directory)
