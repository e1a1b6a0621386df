"""The addresses of a user-defined network: one pool per network and family, persisted.

``<root>/network/leases/<network id>.json`` holds ``{"v4": {address: container id},
"v6": {...}, "last4": ..., "last6": ...}``, written atomically (not durably: as the default
bridge's leases, a lease matters only while its container runs, and the daemon releases at
start whatever belongs to no running container). Allocation goes round the pool (the
``--ip-range`` if given, else the subnet) from the last address handed out, skipping the
network's, the broadcast's and the gateway's; ``--ip`` asks for one address of the subnet.
Pure: no kernel.
"""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Any

from logs.atomic import write_atomic
from supervisor.errors import Conflict, InvalidArgument

#: How far an allocation looks in a huge (IPv6) pool before giving up.
SEARCH_LIMIT = 1 << 16


class Pools:
    """The leases of one network (both families)."""

    def __init__(self, path: str, network: Any):
        self.path = path
        self.network = network  # supervisor.network.networks.NetworkRecord
        self.leases: dict[str, dict[str, str]] = {"v4": {}, "v6": {}}
        self.last: dict[str, str] = {"v4": "", "v6": ""}
        self._load()

    def _load(self) -> None:
        try:
            with open(self.path) as file:
                document = json.load(file)
        except (FileNotFoundError, ValueError):
            return
        for family in ("v4", "v6"):
            self.leases[family] = {str(k): str(v) for k, v in (document.get(family) or {}).items()}
            self.last[family] = str(document.get("last" + family[1]) or "")

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        document = {"v4": self.leases["v4"], "v6": self.leases["v6"], "last4": self.last["v4"],
                    "last6": self.last["v6"]}
        write_atomic(self.path, json.dumps(document, sort_keys=True).encode(), durable=False, mode=0o644)

    def remove_file(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _family(self, family: str) -> tuple[Any, Any, str]:
        """(subnet, pool, gateway) of a family."""
        if family == "v4":
            subnet = ipaddress.ip_network(self.network.subnet)
            pool = ipaddress.ip_network(self.network.ip_range) if self.network.ip_range else subnet
            return subnet, pool, self.network.gateway
        subnet = ipaddress.ip_network(self.network.subnet6)
        return subnet, subnet, self.network.gateway6

    def allocate(self, container_id: str, family: str = "v4", wanted: str = "") -> str:
        """The container's address in the family (its existing lease, ``wanted``, or the next free).

        Raises:
            InvalidArgument: ``wanted`` is not a host address of the subnet.
            Conflict: ``wanted`` is taken, or the pool is full.
        """
        leases = self.leases[family]
        for address, owner in leases.items():
            if owner == container_id and (not wanted or address == wanted):
                return address
        subnet, pool, gateway = self._family(family)
        reserved = {str(subnet.network_address), str(subnet.broadcast_address), gateway,
                    *getattr(self.network, "aux_addresses", {}).values()}
        if wanted:
            try:
                address = ipaddress.ip_address(wanted)
            except ValueError:
                raise InvalidArgument(f"invalid address {wanted!r}: not an IP address", flag="--ip") from None
            if address not in subnet or str(address) in reserved:
                raise InvalidArgument(f"address {wanted} is not a free host address of {self.network.name}'s "
                                      f"subnet {subnet}", flag="--ip")
            if str(address) in leases:
                raise Conflict(f"address {address} is already in use on network {self.network.name}")
            return self._take(family, str(address), container_id)
        size = pool.num_addresses
        base = int(pool.network_address)
        start = (int(ipaddress.ip_address(self.last[family])) - base) if self.last[family] else 0
        if not 0 <= start < size:
            start = 0
        for step in range(1, min(size, SEARCH_LIMIT) + 1):
            address = str(ipaddress.ip_address(base + (start + step) % size))
            if address not in reserved and address not in leases:
                return self._take(family, address, container_id)
        raise Conflict(f"no free address left on network {self.network.name} ({pool})")

    def _take(self, family: str, address: str, container_id: str) -> str:
        self.leases[family][address] = container_id
        self.last[family] = address
        self.save()
        return address

    def release(self, container_id: str) -> list[str]:
        released = []
        for family in ("v4", "v6"):
            for address in [a for a, owner in self.leases[family].items() if owner == container_id]:
                del self.leases[family][address]
                released.append(address)
        if released:
            self.save()
        return released

    def keep_only(self, container_ids: set[str]) -> list[str]:
        """Release every lease whose container is not in ``container_ids`` (daemon start)."""
        released = []
        for owner in sorted({o for family in self.leases.values() for o in family.values()} - container_ids):
            released += self.release(owner)
        return released

    def count(self) -> int:
        return len(self.leases["v4"]) + len(self.leases["v6"])
