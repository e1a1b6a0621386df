"""Container networking: modes, published ports, IP leases and the generated /etc files.

This module is pure (no pyroute2, no trio) so that the spec and the CLI can validate
``--network``, ``-p``, ``--add-host`` and ``--dns`` cheaply. The daemon's side:

- ``links.py``: the bridge, veth pairs and the container's eth0, through pyroute2;
- ``nat.py``: published ports in the kernel (iptables DNAT in the daemon's own chains);
- ``proxy.py``: the host ports reserved, and the userland proxy where DNAT is unavailable;
- ``manager.py``: :class:`~supervisor.network.manager.Network`, what the Supervisor calls
  at daemon start, container start, container exit and daemon stop.

User-defined networks (docs/network.md): their records and the checks of ``network create``
in ``networks.py`` and their address pools in ``ipam.py`` (pure), the daemon's side in
``user.py``, the iptables isolation between bridges in ``isolation.py``, the embedded DNS
server at 127.0.0.11 in ``dns.py``.

Theory of operation (bridge mode)::

    Supervisor._launch                      pid 1 (new netns)
    ------------------                      ----------------
    lease an address (leases.json)
    bind the published ports (a taken one
      fails here, before anything starts)
    write hosts, hostname, resolv.conf
    fork server launch  ------------------>  mounts, /etc binds, pivot_root, ...
    prepare(pid): veth pair, peer into        ...
      the netns as eth0, address, route       read fd 3: wait for the go byte
    send b"x" on fd 3  -------------------->  execve(payload)

On exit the host end of the veth is deleted, the ports' rules (or proxies) go and the lease
goes back.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from logs.atomic import write_atomic
from supervisor.errors import InvalidArgument

MODES = ("bridge", "none", "host")
DEFAULT_BRIDGE = "dockyard0"
DEFAULT_SUBNET = "172.31.0.0/16"
BRIDGE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}\Z")
NETWORK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}\Z")
HOST_ENTRY = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,252})\Z")
PUBLISH = re.compile(
    r"^(?:(?:\[(?P<ip6>[0-9a-fA-F.:]+)\]|(?P<ip>[0-9a-fA-F.:]+?)):)??(?:(?P<host>\d{0,5}):)?(?P<port>\d{1,5})"
    r"(?:/(?P<proto>tcp|udp))?\Z"
)


def parse_mode(value: str) -> str:
    """``bridge``, ``none``, ``host`` or ``container:NAME``; InvalidArgument otherwise."""
    if not isinstance(value, str):
        raise InvalidArgument("spec.network: must be a string")
    if value in MODES:
        return value
    if value.startswith("container:") and len(value) > len("container:"):
        return value
    if NETWORK_NAME.match(value):  # a user-defined network (supervisor/network/networks.py)
        return value
    raise InvalidArgument(
        f"invalid network mode {value!r}: use bridge, none, host, container:NAME or a network's name",
        flag="--network"
    )


@dataclass(frozen=True)
class PortMapping:
    """One ``-p``: ``host_ip:host_port -> container_port/protocol``; host_port 0 is any, and
    with ``host_port_end`` the first free one of host_port..host_port_end (``ports.py``).
    ``host_ip`` is IPv4 or IPv6 (``[::1]:8080:80``); ``any_family``: no address was given,
    so on a network with IPv6 the port is published on ``::`` too (docker's default)."""

    container_port: int
    protocol: str = "tcp"
    host_ip: str = "0.0.0.0"
    host_port: int = 0
    host_port_end: int = 0
    any_family: bool = field(default=False, compare=False)

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.protocol}"

    @property
    def ipv6(self) -> bool:
        return ":" in self.host_ip

    def host(self, port: int | str) -> str:
        """``127.0.0.1:8080`` or ``[::1]:8080``, as docker prints a host binding."""
        return f"[{self.host_ip}]:{port}" if self.ipv6 else f"{self.host_ip}:{port}"

    @classmethod
    def parse(cls, text: str) -> PortMapping:
        """``[HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp]`` as docker's ``-p`` (an IPv6
        HOSTIP in brackets: ``[::1]:8080:80``)."""
        match = PUBLISH.match(text) if isinstance(text, str) else None
        if match is None:
            raise InvalidArgument(
                f"invalid publish spec {text!r}: use [HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp]", flag="-p"
            )
        host_ip = match["ip6"] or match["ip"] or "0.0.0.0"
        try:
            address = ipaddress.ip_address(host_ip)
        except ValueError:
            raise InvalidArgument(f"invalid publish spec {text!r}: {host_ip!r} is not an IP address", flag="-p") from None
        if match["ip6"] and address.version != 6:
            raise InvalidArgument(f"invalid publish spec {text!r}: only an IPv6 address goes in brackets", flag="-p")
        if match["ip"] and address.version == 6:
            raise InvalidArgument(
                f"invalid publish spec {text!r}: an IPv6 host address goes in brackets ([{host_ip}]:...)", flag="-p")
        container_port = int(match["port"])
        host_port = int(match["host"]) if match["host"] else 0
        for port in (container_port, host_port):
            if port > 65535:
                raise InvalidArgument(f"invalid publish spec {text!r}: port {port} is out of range", flag="-p")
        if container_port == 0:
            raise InvalidArgument(f"invalid publish spec {text!r}: the container port cannot be 0", flag="-p")
        return cls(container_port, match["proto"] or "tcp", str(address), host_port,
                   any_family=not (match["ip"] or match["ip6"]))


def parse_add_host(text: str) -> tuple[str, str]:
    """``HOST:IP`` (docker's ``--add-host``) to (host, ip)."""
    host, sep, address = text.partition(":") if isinstance(text, str) else ("", "", "")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        address = ""
    if not sep or not HOST_ENTRY.match(host) or not address:
        raise InvalidArgument(f"invalid --add-host {text!r}: use HOST:IP", flag="--add-host")
    return host, address


def parse_dns(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidArgument(f"invalid --dns {text!r}: not an IP address", flag="--dns") from None


def check_endpoints(mode: str, endpoints: Any) -> dict[str, dict[str, Any]]:
    """A spec's user-defined networks ({name: {aliases, ipv4, ipv6}}), checked and complete:
    the network ``mode`` names comes first.

    Raises:
        InvalidArgument: not such a map, a bad alias or address, or networks beside a mode
            that has none of its own (host, none, container:NAME).
    """
    if not isinstance(endpoints, dict):
        raise InvalidArgument("spec.endpoints: must be a map of network names to {aliases, ipv4, ipv6}")
    checked: dict[str, dict[str, Any]] = {}
    user = mode not in MODES and not mode.startswith("container:")
    names = ([mode] if user else []) + [name for name in endpoints if name != mode]
    if names and (mode in ("host", "none") or mode.startswith("container:")):
        raise InvalidArgument(f"--network {mode} cannot be combined with other networks", flag="--network")
    for name in names:
        config = endpoints.get(name) or {}
        if not isinstance(name, str) or not NETWORK_NAME.match(name) or name in MODES or not isinstance(config, dict):
            raise InvalidArgument(f"spec.endpoints: {name!r} is not a user-defined network's name", flag="--network")
        unknown = sorted(set(config) - {"aliases", "ipv4", "ipv6"})
        if unknown:
            raise InvalidArgument(f"spec.endpoints.{name}: unknown field(s) {', '.join(unknown)}")
        aliases = config.get("aliases") or []
        if not isinstance(aliases, (list, tuple)) or not all(isinstance(a, str) and HOST_ENTRY.match(a) for a in aliases):
            raise InvalidArgument(f"invalid --network-alias {aliases!r} on {name}: use host names", flag="--network-alias")
        entry: dict[str, Any] = {"aliases": list(aliases), "ipv4": "", "ipv6": ""}
        for key, version in (("ipv4", 4), ("ipv6", 6)):
            value = config.get(key) or ""
            if value:
                try:
                    address = ipaddress.ip_address(value)
                except (TypeError, ValueError):
                    address = None
                if address is None or address.version != version:
                    flag = "--ip" if version == 4 else "--ip6"
                    raise InvalidArgument(f"invalid {flag} {value!r}: not an IPv{version} address", flag=flag)
                entry[key] = str(address)
        checked[name] = entry
    return checked


def exposed_ports(image_config: dict) -> list[PortMapping]:
    """The image's EXPOSE ports (``ExposedPorts``: {"80/tcp": {}}) for ``-P``."""
    mappings = []
    for key in sorted((image_config or {}).get("ExposedPorts") or {}):
        port, _, protocol = str(key).partition("/")
        if port.isdigit() and 0 < int(port) < 65536 and protocol in ("", "tcp", "udp"):
            mappings.append(PortMapping(int(port), protocol or "tcp", any_family=True))
    return mappings


def render_hosts(hostname: str, address: str, extra: list[tuple[str, str]]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{ip}\t{host}" for host, ip in extra]
    if address:
        lines.append(f"{address}\t{hostname}")
    return "\n".join(lines) + "\n"


def render_resolv_conf(host_text: str, dns: list[str]) -> str:
    """``--dns`` servers, or the host's resolv.conf without loopback name servers (they
    cannot be reached from another namespace), as docker filters them."""
    if dns:
        return "".join(f"nameserver {server}\n" for server in dns)
    kept = []
    for line in host_text.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1:
            try:
                if ipaddress.ip_address(words[1].split("%")[0]).is_loopback:
                    continue
            except ValueError:
                continue
        kept.append(line)
    return "\n".join(kept) + ("\n" if kept else "")


def mac_address(address: str) -> str:
    """docker's MAC for an IPv4 address: 02:42 and the four bytes of the address."""
    packed = ipaddress.IPv4Address(address).packed
    return "02:42:" + ":".join(f"{byte:02x}" for byte in packed)


class LeaseError(InvalidArgument):
    pass


class Leases:
    """The persisted address leases of one bridge subnet: ``{address: container id}`` in a
    JSON file written atomically (temporary file, rename). No fsync: a lease matters only
    while its container runs, and after a power loss none runs (the next daemon releases
    whatever the file says), while a daemon crash leaves the page cache intact. The gateway (the first
    host address) is never leased; allocation goes round the subnet from the last address
    handed out, so a released address is not reused at once."""

    def __init__(self, path: str, subnet: str):
        self.path = path
        self.network = ipaddress.IPv4Network(subnet, strict=False)
        self.gateway = str(self.network.network_address + 1)
        self.leases: dict[str, str] = {}
        self.last = self.gateway
        self._load()

    def _load(self) -> None:
        try:
            with open(self.path) as file:
                document = json.load(file)
        except FileNotFoundError:
            return
        except ValueError:
            document = {}
        if document.get("subnet") == str(self.network):
            self.leases = {str(k): str(v) for k, v in (document.get("leases") or {}).items()}
            self.last = str(document.get("last") or self.gateway)

    def save(self) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        data = json.dumps({"subnet": str(self.network), "last": self.last, "leases": self.leases}, sort_keys=True)
        write_atomic(self.path, data.encode(), durable=False, mode=0o644)

    def allocate(self, container_id: str) -> str:
        for address, owner in self.leases.items():
            if owner == container_id:
                return address
        size = self.network.num_addresses
        base = int(self.network.network_address)
        start = int(ipaddress.IPv4Address(self.last)) - base
        for step in range(1, size):
            offset = (start + step) % size
            if offset in (0, 1, size - 1):  # network, gateway, broadcast
                continue
            address = str(ipaddress.IPv4Address(base + offset))
            if address not in self.leases:
                self.leases[address] = container_id
                self.last = address
                self.save()
                return address
        raise LeaseError(f"no free address left in the bridge subnet {self.network}")

    def release(self, container_id: str) -> list[str]:
        released = [address for address, owner in self.leases.items() if owner == container_id]
        for address in released:
            del self.leases[address]
        if released:
            self.save()
        return released

    def keep_only(self, container_ids: set[str]) -> list[str]:
        """Release every lease whose container is not in ``container_ids`` (reconcile)."""
        stale = sorted({owner for owner in self.leases.values() if owner not in container_ids})
        released = []
        for owner in stale:
            released += self.release(owner)
        return released
