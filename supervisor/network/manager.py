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
from supervisor.network.nat import Nat
from supervisor.network import (
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
    nat_rules: list[list[str]] = field(default_factory=list)  # DNAT rules installed for it
    init_layer: str = ""  # the top lower dir with the mount points of the /etc files
    address: str = ""
    gateway: str = ""
    prefixlen: int = 0
    mac: str = ""
    bridge: str = ""
    ports: list[tuple[PortMapping, int]] = field(default_factory=list)  # with the host port bound
    sockets: list[Any] = field(default_factory=list)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def sync(self) -> bool:
        return self.mode == "bridge"

    def settings(self) -> dict[str, Any]:
        ports: dict[str, list[dict[str, str]]] = {}
        for mapping, port in self.ports:
            ports.setdefault(mapping.key, []).append({"HostIp": mapping.host_ip, "HostPort": str(port)})
        return {
            "Bridge": self.bridge,
            "IPAddress": self.address,
            "IPPrefixLen": self.prefixlen,
            "Gateway": self.gateway,
            "MacAddress": self.mac,
            "Ports": ports,
            "HostsPath": f"{self.etc_dir}/hosts",
            "HostnamePath": f"{self.etc_dir}/hostname",
            "ResolvConfPath": f"{self.etc_dir}/resolv.conf",
        }


class Network:
    """Args:
    state_dir: where the lease file lives (the daemon's root).
    bridge, subnet: the daemon's bridge (``--bridge-name``, ``--bridge-subnet``).
    ip_masq: install a MASQUERADE rule for the subnet (``--ip-masq``) while the daemon runs.
    """

    def __init__(self, state_dir: Path, bridge: str, subnet: str, ip_masq: bool = False, log: Any = None):
        self.bridge = bridge
        self.subnet = ipaddress.IPv4Network(subnet, strict=False)
        self.ip_masq = ip_masq
        self.log = log
        self.leases = Leases(str(Path(state_dir) / "network" / f"leases-{bridge}.json"), str(self.subnet))
        self.counters = {"veths_removed_at_start": 0, "leases_released_at_start": 0}
        self.nat = Nat(bridge, log)
        self.nursery: trio.Nursery | None = None  # the Supervisor's: veth deletions run there
        self._deleting: dict[str, trio.Event] = {}  # container id -> set once its veth is gone

    # --- the daemon --------------------------------------------------------------------

    async def start(self, running: set[str]) -> None:
        """Create the bridge, release the leases of containers not running, delete veths of
        ours left on the bridge (a crash), install the masquerading rule if asked."""
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
        await self.nat.start()
        if self.ip_masq:
            await self._iptables("-D", check=False)  # a crashed daemon's copy
            await self._iptables("-A")

    async def stop(self) -> None:
        """Remove the masquerading rule and the bridge (after every container has stopped)."""
        for event in list(self._deleting.values()):
            await event.wait()
        await self.nat.stop()
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
            "dnat": self.nat.available,
            "dnat_failures": self.nat.failures,
            **self.counters,
        }

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
        attachment = Attachment(container.id, "container" if mode.startswith("container:") else mode, str(etc_dir))
        attachment.init_layer = _init_layer(Path(container.directory) / "init")
        try:
            hostname = container.resolved.hostname or container.id[:12]
            extra = [parse_add_host(entry) for entry in spec.add_host]
            dns = [parse_dns(entry) for entry in spec.dns]
            if mode == "bridge":
                attachment.address = self.leases.allocate(container.id)
                attachment.gateway = self.leases.gateway
                attachment.prefixlen = self.subnet.prefixlen
                attachment.mac = mac_address(attachment.address)
                attachment.bridge = self.bridge
                mappings = [PortMapping.parse(entry) for entry in spec.publish]
                if spec.publish_all:
                    taken = {m.key for m in mappings}
                    mappings += [m for m in exposed_ports(image_config or {}) if m.key not in taken]
                for mapping in mappings:
                    sock, port = await proxy.bind(mapping, container.name)
                    attachment.sockets.append(sock)
                    attachment.ports.append((mapping, port))
                attachment.nat_rules = await self.nat.add(container.id, attachment.address, attachment.ports)
            elif mode == "host":
                attachment.namespace = "host"
            elif attachment.mode == "container":
                attachment.namespace = f"/proc/{peer.pid}/ns/net"
                attachment.etc_dir = str(Path(peer.directory) / "network")  # its files, as docker
                return attachment
            host_resolv = _read("/etc/resolv.conf")
            if mode == "host":
                hosts = _read("/etc/hosts") + render_hosts(hostname, "", extra).split("\n", 2)[2]
            else:  # --network none: its loopback name as podman (127.0.0.1 <hostname>), for sudo, Java, ...
                hosts = render_hosts(hostname, attachment.address or "127.0.0.1", extra)
            write_atomic(etc_dir / "hosts", hosts.encode(), durable=False, mode=0o644)
            write_atomic(etc_dir / "hostname", (hostname + "\n").encode(), durable=False, mode=0o644)
            write_atomic(etc_dir / "resolv.conf", render_resolv_conf(host_resolv, dns).encode(), durable=False, mode=0o644)
        except BaseException:
            await self.release(attachment)
            raise
        return attachment

    async def adopt(self, container: Any, held: Any) -> Attachment:
        """A running container's attachment again (live restore, lifecycle/restore.py): its
        lease, its published ports' sockets as the keeper held them (bound all along; a
        port whose socket is missing is bound again), its DNAT rules. Its veth and /etc
        files are where they were."""
        mode = container.spec.network
        etc_dir = Path(container.directory) / "network"
        attachment = Attachment(container.id, "container" if mode.startswith("container:") else mode, str(etc_dir))
        attachment.init_layer = _init_layer(Path(container.directory) / "init")
        if mode != "bridge":
            return attachment
        import socket as stdlib_socket

        attachment.address = next((address for address, owner in self.leases.leases.items()
                                   if owner == container.id), "")
        attachment.gateway = self.leases.gateway
        attachment.prefixlen = self.subnet.prefixlen
        attachment.mac = mac_address(attachment.address) if attachment.address else ""
        attachment.bridge = self.bridge
        try:
            for index, (host_ip, host_port, container_port, protocol, port) in enumerate(held.extra.get("ports", [])):
                mapping = PortMapping(int(container_port), str(protocol), str(host_ip), int(host_port))
                fd = held.take(f"port.{index}")
                if fd >= 0:
                    sock = trio.socket.from_stdlib_socket(stdlib_socket.socket(fileno=fd))
                else:
                    sock, port = await proxy.bind(PortMapping(mapping.container_port, mapping.protocol,
                                                              mapping.host_ip, int(port)), container.name)
                attachment.sockets.append(sock)
                attachment.ports.append((mapping, int(port)))
            attachment.nat_rules = await self.nat.add(container.id, attachment.address, attachment.ports)
        except BaseException:
            await self.release(attachment)
            raise
        return attachment

    async def connect(self, attachment: Attachment, pid: int) -> None:
        """The veth pair and eth0 for pid 1's namespace (launch's ``prepare`` hook)."""
        if attachment.mode != "bridge":
            return
        await trio.to_thread.run_sync(
            links.attach, attachment.container_id, pid, self.bridge, attachment.address,
            attachment.prefixlen, attachment.gateway, attachment.mac,
        )

    def serve(self, attachment: Attachment, nursery: trio.Nursery) -> None:
        """Run the proxies of the published ports (until :meth:`release`)."""
        async def run() -> None:
            with attachment.scope:
                async with trio.open_nursery() as proxies:
                    for sock, (mapping, _) in zip(attachment.sockets, attachment.ports):
                        proxies.start_soon(proxy.serve, sock, mapping, attachment.address)
        if attachment.sockets:
            nursery.start_soon(run)

    async def release(self, attachment: Attachment | None) -> None:
        """Stop the proxies, delete the host end of the veth, give the address back."""
        if attachment is None:
            return
        attachment.scope.cancel()
        for sock in attachment.sockets:
            sock.close()
        with trio.CancelScope(shield=True):
            rules, attachment.nat_rules = attachment.nat_rules, []
            await self.nat.remove(rules)
            self.leases.release(attachment.container_id)
            if attachment.mode == "bridge":
                # Deleting a veth waits for the kernel's RCU grace periods (20-40 ms here), so
                # it runs beside the exit, not in its way; rm waits for it (:meth:`settle`).
                done = self._deleting[attachment.container_id] = trio.Event()
                if self.nursery is not None:
                    self.nursery.start_soon(self._delete_veth, attachment.container_id, done)
                else:
                    await self._delete_veth(attachment.container_id, done)

    async def settle(self, container_id: str) -> None:
        """Wait until the container's veth deletion (if one runs) is done."""
        event = self._deleting.get(container_id)
        if event is not None:
            await event.wait()

    async def _delete_veth(self, container_id: str, done: trio.Event) -> None:
        try:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(links.delete_link, links.host_name(container_id))
        except Exception as exc:  # pyroute2's NetlinkError is not an OSError
            if self.log is not None:
                self.log.warning("cannot delete a veth", container=container_id, error=str(exc))
        finally:
            if self._deleting.get(container_id) is done:
                del self._deleting[container_id]
            done.set()


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except OSError:
        return ""


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
