"""User-defined networks: their records, the checks of ``network create``, and the store.

Pure (no pyroute2, no trio): the daemon's side is :mod:`supervisor.network.user`. A network
is a bridge of its own with an IPv4 subnet (and, with ``--ipv6``, an IPv6 one beside it);
containers on it get an address from its pool (:mod:`supervisor.network.ipam`) and resolve
each other's names through the embedded DNS server (:mod:`supervisor.network.dns`).

The records live in one file, ``<root>/network/networks.json``, written atomically and
durably (a network is configuration the user made, as a volume is): a daemon restart, or a
crash, finds them all and makes their bridges again.

The default network ``bridge`` (the daemon's ``--bridge-name``) and the modes ``host`` and
``none`` are listed beside them as docker lists them, and cannot be removed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from logs.atomic import write_atomic
from supervisor.errors import Conflict, InvalidArgument, NotFound

NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}\Z")
BRIDGE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}\Z")
#: The names docker reserves: the default bridge and the two modes.
BUILTIN = ("bridge", "host", "none")
BRIDGE_OPTION = "com.docker.network.bridge.name"
#: Where a network without ``--subnet`` gets one: docker's local pools (172.17/16 and up,
#: then 192.168/20s); the daemon's own default bridge (172.31.0.0/16) is skipped by the
#: overlap check like any other route.
AUTOMATIC_POOLS = [f"172.{n}.0.0/16" for n in range(18, 31)] + [f"192.168.{n}.0/20" for n in range(0, 256, 16)]
#: ``network ls --filter`` keys.
FILTERS = ("name", "id", "label", "driver", "type", "dangling")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class NetworkRecord:
    """One user-defined network, as persisted."""

    id: str
    name: str
    bridge: str
    subnet: str
    gateway: str
    ip_range: str = ""
    internal: bool = False
    ipv6: bool = False
    subnet6: str = ""
    gateway6: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    created: str = ""
    #: addresses of the subnets kept out of the pools (docker's IPAM AuxiliaryAddresses): name -> address
    aux_addresses: dict[str, str] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    @property
    def prefixlen6(self) -> int:
        return ipaddress.ip_network(self.subnet6).prefixlen if self.subnet6 else 0

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> NetworkRecord:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in record.items() if key in known})

    def inspect(self, containers: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
        """docker's ``network inspect`` document; ``containers``: id -> endpoint (Name,
        EndpointID, MacAddress, IPv4Address, IPv6Address) of the ones attached now."""
        config = [{"Subnet": self.subnet, "Gateway": self.gateway, **({"IPRange": self.ip_range} if self.ip_range else {})}]
        if self.ipv6:
            config.append({"Subnet": self.subnet6, "Gateway": self.gateway6})
        for entry in config:
            aux = {name: address for name, address in self.aux_addresses.items()
                   if ipaddress.ip_address(address) in ipaddress.ip_network(entry["Subnet"])}
            if aux:
                entry["AuxiliaryAddresses"] = aux
        return {
            "Name": self.name, "Id": self.id, "Created": self.created, "Scope": "local", "Driver": "bridge",
            "EnableIPv6": self.ipv6,
            "IPAM": {"Driver": "default", "Options": None, "Config": config},
            "Internal": self.internal, "Attachable": False, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
            "Containers": dict(containers or {}),
            "Options": {BRIDGE_OPTION: self.bridge, **self.options},
            "Labels": dict(self.labels),
        }


def builtin_inspect(name: str, bridge: str = "", subnet: str = "", gateway: str = "",
                    containers: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """The inspect document of ``bridge``, ``host`` or ``none`` (read-only entries)."""
    config = [{"Subnet": subnet, "Gateway": gateway}] if name == "bridge" else []
    return {
        "Name": name, "Id": builtin_id(name, bridge), "Created": "", "Scope": "local",
        "Driver": {"bridge": "bridge", "host": "host", "none": "null"}[name], "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": config},
        "Internal": False, "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
        "ConfigOnly": False, "Containers": dict(containers or {}),
        "Options": {BRIDGE_OPTION: bridge} if name == "bridge" else {}, "Labels": {},
    }


def builtin_id(name: str, bridge: str) -> str:
    """A stable id for a built-in network (the same across restarts of one daemon)."""
    return hashlib.sha256(f"dockyard-builtin:{name}:{bridge}".encode()).hexdigest()


@dataclass(frozen=True)
class CreateRequest:
    """``network create``'s flags, as given (checked by :func:`plan`)."""

    name: str
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    internal: bool = False
    ipv6: bool = False
    subnet6: str = ""
    gateway6: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    aux_addresses: dict[str, str] = field(default_factory=dict)


def _network(text: str, what: str, name: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidArgument(f"cannot create network {name}: invalid {what} {text!r}: not a CIDR") from None


def _gateway(text: str, subnet: Any, name: str, flag: str) -> str:
    if not text:
        return str(subnet.network_address + 1)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"cannot create network {name}: invalid {flag} {text!r}: not an IP address") from None
    if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
        raise InvalidArgument(f"cannot create network {name}: {flag} {text} is not a host address of {subnet}")
    return str(address)


def overlapping(subnet: Any, taken: list[tuple[str, str]]) -> str:
    """What ``subnet`` overlaps among ``taken`` ((CIDR, whose) pairs), or ''."""
    for cidr, whose in taken:
        try:
            other = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue
        if other.version == subnet.version and other.prefixlen > 0 and subnet.overlaps(other):
            return f"{cidr} ({whose})"
    return ""


def plan(request: CreateRequest, taken: list[tuple[str, str]], bridges: set[str]) -> NetworkRecord:
    """The record ``network create`` makes, or the reason it cannot.

    Args:
        taken: the subnets in use as (CIDR, whose): other networks and the host's routes.
        bridges: link names that exist or are reserved (a bridge name must be new).

    Raises:
        InvalidArgument: a bad flag, an overlapping subnet (named with its owner).
    """
    name = request.name
    if not NAME.match(name or ""):
        raise InvalidArgument(f"cannot create network {name!r}: invalid name: use [a-zA-Z0-9][a-zA-Z0-9_.-]")
    if name in BUILTIN:
        raise InvalidArgument(f"cannot create network {name}: {name} is a pre-defined network")
    for key, value in {**request.labels, **request.options}.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise InvalidArgument(f"cannot create network {name}: labels and options map strings to strings")
    if request.subnet and ":" in request.subnet and request.ipv6 and not request.subnet6:
        # `--ipv6 --subnet fd00::/64` alone, through the API: that is the IPv6 subnet, an IPv4 one is picked
        gateway6 = request.gateway6 or (request.gateway if ":" in request.gateway else "")
        gateway = "" if ":" in request.gateway else request.gateway
        return plan(replace(request, subnet="", gateway=gateway, subnet6=request.subnet, gateway6=gateway6),
                    taken, bridges)
    if request.subnet:
        subnet = _network(request.subnet, "--subnet", name)
        if subnet.version != 4:
            raise InvalidArgument(f"cannot create network {name}: an IPv6 --subnet needs --ipv6")
        if subnet.prefixlen > 30:
            raise InvalidArgument(f"cannot create network {name}: subnet {subnet} is too small (at most /30)")
        clash = overlapping(subnet, taken)
        if clash:
            raise InvalidArgument(f"cannot create network {name}: subnet {subnet} overlaps {clash}")
    else:
        for candidate in AUTOMATIC_POOLS:
            subnet = ipaddress.ip_network(candidate)
            if not overlapping(subnet, taken):
                break
        else:
            raise InvalidArgument(f"cannot create network {name}: no free subnet left in the local pools; "
                                  "give one with --subnet")
    gateway = _gateway(request.gateway, subnet, name, "--gateway")
    ip_range = ""
    if request.ip_range:
        pool = _network(request.ip_range, "--ip-range", name)
        if pool.version != 4 or not pool.subnet_of(subnet):  # type: ignore[arg-type]
            raise InvalidArgument(f"cannot create network {name}: --ip-range {pool} is not inside {subnet}")
        ip_range = str(pool)
    subnet6 = gateway6 = ""
    if request.ipv6:
        if request.subnet6:
            network6 = _network(request.subnet6, "--subnet", name)
            if network6.version != 6:
                raise InvalidArgument(f"cannot create network {name}: {network6} is not an IPv6 subnet")
        else:  # a unique local /64 of its own (RFC 4193: fd + 40 random bits)
            network6 = ipaddress.IPv6Network((int.from_bytes(b"\xfd" + secrets.token_bytes(5), "big") << 80, 64))
        if network6.prefixlen > 120:
            raise InvalidArgument(f"cannot create network {name}: subnet {network6} is too small (at most /120)")
        clash = overlapping(network6, taken)
        if clash:
            raise InvalidArgument(f"cannot create network {name}: subnet {network6} overlaps {clash}")
        subnet6, gateway6 = str(network6), _gateway(request.gateway6, network6, name, "--gateway")
    elif request.subnet6:
        raise InvalidArgument(f"cannot create network {name}: an IPv6 --subnet needs --ipv6")
    identifier = secrets.token_hex(32)
    bridge = request.options.get(BRIDGE_OPTION) or f"br-{identifier[:12]}"
    if not BRIDGE_NAME.match(bridge):
        raise InvalidArgument(f"cannot create network {name}: invalid bridge name {bridge!r} (at most 15 of "
                              "[a-zA-Z0-9_.-])")
    if bridge in bridges:
        raise InvalidArgument(f"cannot create network {name}: a link named {bridge} exists already")
    options = {key: value for key, value in request.options.items() if key != BRIDGE_OPTION}
    subnets = [subnet] + ([ipaddress.ip_network(subnet6)] if subnet6 else [])
    aux_addresses = {}
    for aux_name, text in request.aux_addresses.items():
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise InvalidArgument(f"cannot create network {name}: invalid auxiliary address {aux_name}={text!r}: "
                                  "not an IP address") from None
        if not any(address in candidate for candidate in subnets):
            raise InvalidArgument(f"cannot create network {name}: auxiliary address {aux_name}={address} is not "
                                  f"in {' or '.join(str(candidate) for candidate in subnets)}")
        aux_addresses[aux_name] = str(address)
    return NetworkRecord(identifier, name, bridge, str(subnet), gateway, ip_range, request.internal, request.ipv6,
                         subnet6, gateway6, dict(request.labels), options, _now(), aux_addresses)


def matches(document: dict[str, Any], wanted: dict[str, list[str]], used: bool) -> bool:
    """Whether a network's inspect document passes ``network ls --filter`` (several values
    of one key: any of them; different keys: all of them)."""
    checks = {
        "name": lambda value: value in document["Name"],
        "id": lambda value: document["Id"].startswith(value),
        "driver": lambda value: document["Driver"] == value,
        "type": lambda value: value == ("builtin" if document["Name"] in BUILTIN else "custom"),
        "dangling": lambda value: (not used) == (value.lower() in ("true", "1")),
        "label": lambda value: value.partition("=")[0] in document["Labels"] and (
            "=" not in value or document["Labels"][value.partition("=")[0]] == value.partition("=")[2]),
    }
    return all(any(checks[key](value) for value in values) for key, values in wanted.items())


def parse_filters(entries: list[str]) -> dict[str, list[str]]:
    wanted: dict[str, list[str]] = {}
    for entry in entries:
        key, eq, value = entry.partition("=")
        if not eq or key not in FILTERS:
            raise InvalidArgument(f"invalid filter '{entry}': use {', '.join(k + '=...' for k in FILTERS)}")
        wanted.setdefault(key, []).append(value)
    return wanted


class NetworkStore:
    """The user-defined networks, in ``<directory>/networks.json`` (atomic, durable)."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, "networks.json")
        self.networks: dict[str, NetworkRecord] = {}  # id -> record
        self.skipped = 0  # records that could not be read (logged by the daemon)

    def load(self) -> None:
        try:
            with open(self.path) as file:
                document = json.load(file)
        except FileNotFoundError:
            return
        for record in document.get("networks") or []:
            try:
                network = NetworkRecord.from_record(record)
            except (TypeError, ValueError):
                self.skipped += 1
                continue
            self.networks[network.id] = network

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        records = [network.to_record() for network in sorted(self.networks.values(), key=lambda n: n.created)]
        write_atomic(self.path, json.dumps({"networks": records}, indent=1, sort_keys=True).encode(), durable=True,
                     mode=0o644)

    def add(self, network: NetworkRecord) -> None:
        if any(other.name == network.name for other in self.networks.values()):
            raise Conflict(f"cannot create network {network.name}: a network with that name exists already")
        self.networks[network.id] = network
        self.save()

    def remove(self, network_id: str) -> None:
        if self.networks.pop(network_id, None) is not None:
            self.save()

    def find(self, ref: str) -> NetworkRecord | None:
        """By name, full id or unique id prefix; None if none."""
        for network in self.networks.values():
            if network.name == ref or network.id == ref:
                return network
        found = [n for n in self.networks.values() if len(ref) >= 1 and n.id.startswith(ref)]
        return found[0] if len(found) == 1 else None

    def get(self, ref: str) -> NetworkRecord:
        network = self.find(ref)
        if network is None:
            raise NotFound(f"network {ref} not found")
        return network
