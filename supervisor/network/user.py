"""The daemon's side of user-defined networks: their bridges, their addresses, the isolation
rules between them, each container's endpoints on them and the names its DNS server answers.

A container's endpoints are planned before its launch (an address from each network's pool),
attached once its pid 1 exists (a veth per network: ``eth0`` for the first, ``eth1``...;
the default route through the first network that is not ``--internal``), and released at its
exit (veths deleted, leases returned, names gone). ``network connect`` and ``disconnect`` on
a running container do the same for one endpoint, live. The records, the leases and what
the kernel holds are reconciled at daemon start: bridges made again, every lease and veth
that no running container owns released (a crash).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import trio

from supervisor.errors import Conflict, InvalidArgument, NotFound
from supervisor.network import links, mac_address
from supervisor.network.dns import Names, Server, Stats, upstreams
from supervisor.network.ipam import Pools
from supervisor.network.isolation import Bridge, Isolation
from supervisor.network.networks import CreateRequest, NetworkRecord, NetworkStore, plan


@dataclass(eq=False)
class Endpoint:
    """A container's place on one user network."""

    network: NetworkRecord
    container_id: str
    ifname: str
    address: str
    address6: str = ""
    aliases: list[str] = field(default_factory=list)
    attached: bool = False

    @property
    def host(self) -> str:
        return links.endpoint_name(self.container_id, self.network.id)

    @property
    def mac(self) -> str:
        return mac_address(self.address)

    @property
    def endpoint_id(self) -> str:
        """Stable for a container on a network (docker's is random per connect)."""
        return hashlib.sha256(f"{self.network.id}:{self.container_id}".encode()).hexdigest()

    def settings(self) -> dict[str, Any]:
        """docker's EndpointSettings (inspect's NetworkSettings.Networks.<name>)."""
        return {
            "IPAMConfig": None, "Links": None, "Aliases": list(self.aliases), "MacAddress": self.mac,
            "NetworkID": self.network.id, "EndpointID": self.endpoint_id, "Gateway": self.network.gateway,
            "IPAddress": self.address, "IPPrefixLen": self.network.prefixlen,
            "IPv6Gateway": self.network.gateway6 if self.address6 else "",
            "GlobalIPv6Address": self.address6, "GlobalIPv6PrefixLen": self.network.prefixlen6 if self.address6 else 0,
            "DNSNames": None,
        }

    def container_entry(self, name: str) -> dict[str, str]:
        """Its entry in the network's inspect ``Containers``."""
        return {"Name": name, "EndpointID": self.endpoint_id, "MacAddress": self.mac,
                "IPv4Address": f"{self.address}/{self.network.prefixlen}",
                "IPv6Address": f"{self.address6}/{self.network.prefixlen6}" if self.address6 else ""}


class UserNetworks:
    """Args:
    state_dir: the daemon's root (``network/networks.json``, ``network/leases/``).
    default_bridge, default_subnet: the default network's (it is isolated from these).
    ip_masq: masquerade the networks that are not internal (``--ip-masq``).
    kernel, isolation: the links module and the iptables rules (fakes in unit tests).
    bridges_changed: awaited with every network's (bridge, subnet, IPv6 subnet or "") when
        they change (the published ports' masquerading and sysctls, ``nat.py``).
    """

    def __init__(self, state_dir: str, default_bridge: str, default_subnet: str, ip_masq: bool = False,
                 log: Any = None, kernel: Any = links, isolation: Any = None, bridges_changed: Any = None):
        self.directory = os.path.join(str(state_dir), "network")
        self.default_bridge = default_bridge
        self.default_subnet = default_subnet
        self.ip_masq = ip_masq
        self.log = log
        self.store = NetworkStore(self.directory)
        self.pools: dict[str, Pools] = {}
        self.names = Names()
        self.kernel = kernel
        self.isolation = isolation or Isolation(default_bridge, log)
        self.dns_stats = Stats()
        self.counters = {"endpoints_removed_at_start": 0, "network_leases_released_at_start": 0}
        self.lock = trio.Lock()  # one create or remove at a time (the overlap check sees the last one)
        self.bridges_changed = bridges_changed

    def _pools(self, network: NetworkRecord) -> Pools:
        if network.id not in self.pools:
            self.pools[network.id] = Pools(os.path.join(self.directory, "leases", network.id + ".json"), network)
        return self.pools[network.id]

    # --- the daemon --------------------------------------------------------------------

    async def start(self, running: set[str]) -> None:
        self.store.load()
        if self.store.skipped and self.log is not None:
            self.log.warning("network records that cannot be read are left out", count=self.store.skipped)
        await self.isolation.stop()  # a crashed daemon's rules
        for network in self.store.networks.values():
            await trio.to_thread.run_sync(self.kernel.ensure_user_bridge, network.bridge, network.gateway,
                                          network.prefixlen, network.gateway6, network.prefixlen6)
            self.counters["network_leases_released_at_start"] += len(self._pools(network).keep_only(running))
        keep = {links.endpoint_name(cid, nid) for cid in running for nid in self.store.networks}
        bridges = [network.bridge for network in self.store.networks.values()]
        stale = await trio.to_thread.run_sync(self.kernel.stale_endpoints, bridges, keep)
        for name in stale:
            await trio.to_thread.run_sync(self.kernel.delete_link, name)
        self.counters["endpoints_removed_at_start"] = len(stale)
        await self._apply_rules()

    async def stop(self) -> None:
        """The rules and the bridges go (made again at the next start, from the records)."""
        await self.isolation.stop()
        for network in self.store.networks.values():
            await trio.to_thread.run_sync(self.kernel.remove_bridge, network.bridge)

    async def _apply_rules(self) -> None:
        bridges = [Bridge(self.default_bridge, self.default_subnet)]
        bridges += [Bridge(n.bridge, n.subnet, n.internal, n.ipv6, self.ip_masq) for n in self.store.networks.values()]
        await self.isolation.apply(bridges)
        if self.bridges_changed is not None:
            await self.bridges_changed([(n.bridge, n.subnet, n.subnet6 if n.ipv6 else "")
                                        for n in self.store.networks.values()])

    def info(self) -> dict[str, Any]:
        return {"networks": len(self.store.networks), "isolation_failures": self.isolation.failures,
                "dns": dict(vars(self.dns_stats)), **self.counters}

    # --- networks ----------------------------------------------------------------------

    def find(self, ref: str) -> NetworkRecord | None:
        return self.store.find(ref)

    def get(self, ref: str) -> NetworkRecord:
        return self.store.get(ref)

    def list(self) -> list[NetworkRecord]:
        return sorted(self.store.networks.values(), key=lambda n: n.created)

    async def create(self, request: CreateRequest) -> NetworkRecord:
        """Check, persist and make a network (its bridge up, the rules rebuilt).

        Raises:
            InvalidArgument: a bad flag, an overlapping subnet. Conflict: the name is taken.
        """
        async with self.lock:
            if any(n.name == request.name for n in self.store.networks.values()):
                raise Conflict(f"cannot create network {request.name}: a network with that name exists already")
            taken = [(self.default_subnet, f"the default bridge {self.default_bridge}")]
            for network in self.store.networks.values():
                taken.append((network.subnet, f"network {network.name}"))
                if network.subnet6:
                    taken.append((network.subnet6, f"network {network.name}"))
            taken += [(cidr, f"a route of the host via {device}") for cidr, device in
                      await trio.to_thread.run_sync(self.kernel.routes)]
            existing = await trio.to_thread.run_sync(self.kernel.link_names)
            network = plan(request, taken, existing | {self.default_bridge})
            self.store.add(network)
            try:
                await trio.to_thread.run_sync(self.kernel.ensure_user_bridge, network.bridge, network.gateway,
                                              network.prefixlen, network.gateway6, network.prefixlen6)
            except BaseException:
                self.store.remove(network.id)
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self.kernel.remove_bridge, network.bridge)
                raise
            await self._apply_rules()
            return network

    async def remove(self, network: NetworkRecord) -> None:
        """Remove a network no running container is on (the caller checked): the bridge
        first, then the record, so a crash between the two leaves a record that the next
        start makes whole again rather than a bridge nobody owns."""
        async with self.lock:
            await trio.to_thread.run_sync(self.kernel.remove_bridge, network.bridge)
            self.store.remove(network.id)
            self._pools(network).remove_file()
            self.pools.pop(network.id, None)
            await self._apply_rules()

    # --- a container -------------------------------------------------------------------

    def plan(self, container_id: str, endpoints: dict[str, dict[str, Any]], first_index: int) -> list[Endpoint]:
        """The container's endpoints with their addresses leased (before its launch).

        Raises:
            NotFound: a network does not exist. Conflict, InvalidArgument: an address.
        """
        planned: list[Endpoint] = []
        try:
            for index, (name, config) in enumerate(endpoints.items(), start=first_index):
                planned.append(self.lease(container_id, name, config, f"eth{index}"))
        except BaseException:
            for endpoint in planned:
                self._pools(endpoint.network).release(container_id)
            raise
        return planned

    def lease(self, container_id: str, ref: str, config: dict[str, Any], ifname: str) -> Endpoint:
        network = self.find(ref)
        if network is None:
            raise NotFound(f"network {ref} not found")
        pools = self._pools(network)
        address = pools.allocate(container_id, "v4", config.get("ipv4") or "")
        address6 = ""
        if network.ipv6:
            try:
                address6 = pools.allocate(container_id, "v6", config.get("ipv6") or "")
            except BaseException:
                pools.release(container_id)
                raise
        elif config.get("ipv6"):
            pools.release(container_id)
            raise InvalidArgument(f"--ip6 {config['ipv6']}: network {network.name} has no IPv6", flag="--ip6")
        return Endpoint(network, container_id, ifname, address, address6, list(config.get("aliases") or []))

    async def attach(self, endpoint: Endpoint, pid: int, default_route: bool, names: list[str]) -> None:
        """The endpoint's veth into the namespace of ``pid``; its names answered from now on."""
        network = endpoint.network
        route = default_route and not network.internal
        await trio.to_thread.run_sync(
            self.kernel.attach_endpoint, pid, endpoint.host, network.bridge, endpoint.ifname, endpoint.mac,
            endpoint.address, network.prefixlen, network.gateway if route else "", endpoint.address6,
            network.prefixlen6, network.gateway6 if route and endpoint.address6 else "",
        )
        endpoint.attached = True
        self.names.add(network.id, network.name, endpoint.container_id, [*names, *endpoint.aliases],
                       endpoint.address, endpoint.address6)

    async def adopt(self, container_id: str, endpoints: dict[str, dict[str, Any]], first_index: int, pid: int,
                    names: list[str]) -> list[Endpoint]:
        """A running container's endpoints again (live restore): its leases (kept at
        :meth:`start` for a running container), its veths found in the namespace of ``pid``
        (the interface names as they are) and its names answered again. A container whose
        process is gone (``pid`` 0, or its namespace cannot be entered) gets its endpoints
        unattached, to be released at its exit; a veth that is gone is logged and left out.

        Raises:
            NotFound: a network does not exist any more. Conflict, InvalidArgument: an address.
        """
        planned = self.plan(container_id, endpoints, first_index)
        found: dict[str, str] = {}
        if pid:
            try:
                found = await trio.to_thread.run_sync(self.kernel.endpoint_ifnames, pid,
                                                      [endpoint.host for endpoint in planned])
            except OSError:
                pid = 0  # it exited meanwhile: its exit is reported by its supervision
            except Exception as exc:  # pyroute2's NetlinkError is not an OSError
                if self.log is not None:
                    self.log.warning("cannot find a running container's veths: adopted without its networks",
                                     container=container_id, error=str(exc))
        for endpoint in planned:
            if endpoint.host in found:
                endpoint.ifname = found[endpoint.host]
                endpoint.attached = True
                self.names.add(endpoint.network.id, endpoint.network.name, container_id,
                               [*names, *endpoint.aliases], endpoint.address, endpoint.address6)
            elif pid and self.log is not None:
                self.log.warning("a running container's veth on a network is gone: adopted without it",
                                 container=container_id, network=endpoint.network.name, link=endpoint.host)
        return planned

    async def detach(self, endpoint: Endpoint, delete: bool = True) -> None:
        """Names gone at once; the veth deleted (unless the caller deletes it: a container's
        exit does it beside the exit), the lease returned (shielded)."""
        self.names.remove(endpoint.network.id, endpoint.container_id)
        with trio.CancelScope(shield=True):
            if endpoint.attached and delete:
                try:
                    await trio.to_thread.run_sync(self.kernel.delete_link, endpoint.host)
                except Exception as exc:  # pyroute2's NetlinkError is not an OSError
                    if self.log is not None:
                        self.log.warning("cannot delete a veth", link=endpoint.host, error=str(exc))
            endpoint.attached = False
            pools = self.pools.get(endpoint.network.id)
            if pools is not None:
                pools.release(endpoint.container_id)

    async def open_dns(self, container_id: str, pid: int, dns: list[str]) -> Server:
        """The container's DNS server, its sockets open in its namespace (serve it after)."""
        server = Server(self.names, container_id, list(dns) or upstreams(host_file("/etc/resolv.conf")), self.dns_stats)
        await server.open(pid)
        return server

    def used(self, network_id: str) -> bool:
        return network_id in self.names.networks


def resolv_conf(host_text: str, dns: list[str], search: list[str], options: list[str], embedded: bool) -> str:
    """A container's resolv.conf: the embedded server's (127.0.0.11, ``ndots:0`` as docker)
    on a user network, else ``--dns`` or the host's non-loopback servers; the host's search
    and options lines unless ``--dns-search`` / ``--dns-option`` replace them (``.``: none)."""
    from supervisor.network import render_resolv_conf

    lines = ["nameserver 127.0.0.11"] if embedded else [
        line for line in render_resolv_conf(host_text, dns).splitlines() if line.split()[:1] == ["nameserver"]]
    host_search = [line for line in host_text.splitlines() if line.split()[:1] in (["search"], ["domain"])]
    host_options = [line for line in host_text.splitlines() if line.split()[:1] == ["options"]]
    if search:
        domains = [domain for domain in search if domain != "."]
        lines += [f"search {' '.join(domains)}"] if domains else []
    else:
        lines += host_search
    if options:
        lines.append(f"options {' '.join(options)}")
    elif embedded:
        lines += host_options or ["options ndots:0"]
    else:
        lines += host_options
    return "\n".join(lines) + "\n"


def host_file(path: str) -> str:
    """A file of the host's (/etc/resolv.conf, /etc/hosts), empty if it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except OSError:
        return ""

