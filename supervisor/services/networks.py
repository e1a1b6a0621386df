"""Networks as the user manages them: ``network create|ls|inspect|rm|prune|connect|disconnect``
(docs/network.md).

The daemon's network (:mod:`supervisor.network.manager` and :mod:`supervisor.network.user`)
makes bridges, addresses and veths; this service knows which containers are on a network,
keeps a container's networks in its spec (``endpoints``: a connect outlives a restart, as
docker's), and publishes ``network.<id>.create|connect|disconnect|destroy``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from supervisor.errors import Conflict, DockyardError, InvalidArgument, NotFound
from supervisor.lifecycle.core import Lifecycle
from supervisor.network.networks import BUILTIN, CreateRequest, builtin_id, builtin_inspect, matches, parse_filters


class Networks:
    def __init__(self, core: Lifecycle):
        self.core = core

    @property
    def manager(self) -> Any:
        if self.core.network is None:
            raise DockyardError("networks are not available before the supervisor has started")
        return self.core.network

    async def start(self, config: Any) -> None:
        """The bridge, and the clean-up of what a crashed daemon left (after the records are
        reconciled: no container runs yet, so every lease and veth of ours is stale)."""
        from supervisor.network.manager import Network  # pyroute2: the daemon only

        core = self.core
        core.network = Network(config.root, config.bridge_name, config.bridge_subnet, config.ip_masq, core.log,
                               userland_proxy=config.userland_proxy)
        running = {c.id for c in core.containers.values() if c.status.running}
        running |= set(core.left_alone)  # another dockyard's: their leases, veths and rules stay
        await core.network.start(running)

    def _event(self, action: str, network_id: str, name: str, **attributes: str) -> None:
        self.core.events.emit("network", action, network_id, {"name": name, "type": "bridge", **attributes})

    def _attached(self, network_id: str) -> list[tuple[Any, Any]]:
        """(container, endpoint) of the running containers on a user network."""
        found = []
        for container in self.core.containers.values():
            attachment = container.network
            if attachment is not None and container.status.running:
                found += [(container, e) for e in attachment.endpoints if e.network.id == network_id]
        return found

    async def create(self, request: CreateRequest) -> Any:
        network = await self.manager.user.create(request)
        self._event("create", network.id, network.name)
        return network

    def _document(self, ref: str) -> dict[str, Any] | None:
        manager = self.manager
        bridge, subnet, gateway = manager.builtin()
        if ref in BUILTIN or any(ref == builtin_id(name, bridge) for name in BUILTIN):
            name = ref if ref in BUILTIN else next(n for n in BUILTIN if builtin_id(n, bridge) == ref)
            containers = {}
            for container in self.core.containers.values():
                attachment = container.network
                if container.status.running and attachment is not None and attachment.mode == name:
                    containers[container.id] = {
                        "Name": container.name, "EndpointID": "", "MacAddress": attachment.mac,
                        "IPv4Address": f"{attachment.address}/{attachment.prefixlen}" if attachment.address else "",
                        "IPv6Address": ""}
            return builtin_inspect(name, bridge, subnet, gateway, containers)
        network = manager.user.find(ref)
        if network is None:
            return None
        return network.inspect({c.id: e.container_entry(c.name) for c, e in self._attached(network.id)})

    def inspect(self, ref: str) -> dict[str, Any]:
        document = self._document(ref)
        if document is None:
            raise NotFound(f"network {ref} not found")
        return document

    def list(self, filters: list[str] | None = None) -> list[dict[str, Any]]:
        wanted = parse_filters(filters or [])
        documents = [self.inspect(name) for name in BUILTIN]
        documents += [self.inspect(network.id) for network in self.manager.user.list()]
        return [document for document in documents if matches(document, wanted, bool(document["Containers"]))]

    async def remove(self, ref: str) -> str:
        """Remove a user network no running container is on; its name.

        Raises:
            NotFound: no such network. InvalidArgument: a pre-defined one.
            Conflict: running containers are on it (named).
        """
        if ref in BUILTIN:
            raise InvalidArgument(f"cannot remove network {ref}: {ref} is a pre-defined network")
        network = self.manager.user.get(ref)
        users = sorted(container.name for container, _ in self._attached(network.id))
        if users:
            raise Conflict(f"cannot remove network {network.name}: it has active endpoints ({', '.join(users)})")
        await self.manager.user.remove(network)
        self._event("destroy", network.id, network.name)
        return network.name

    async def prune(self) -> list[str]:
        removed = []
        for network in self.manager.user.list():
            if not self._attached(network.id):
                removed.append(await self.remove(network.id))
        return removed

    async def connect(self, ref: str, container_ref: str, aliases: list[str], ipv4: str, ipv6: str) -> None:
        """Put a container on a network: now if it runs (a new interface), and at its next
        starts (its spec's ``endpoints``).

        Raises:
            NotFound: no such network or container. Conflict: it is on that network already.
            InvalidArgument: its network mode has no networks (host, none, container:),
                the default bridge (only ``run --network bridge`` puts a container there),
                a bad alias or address.
        """
        from supervisor.network import check_endpoints

        if ref in BUILTIN:
            raise InvalidArgument(f"cannot connect a container to {ref}: only user-defined networks can be "
                                  "connected (the default bridge is chosen at run with --network bridge)")
        network = self.manager.user.get(ref)
        container = self.core.get(container_ref)
        async with container.lock:
            spec = container.spec
            if network.name in spec.endpoints:
                raise Conflict(f"container {container.name} is already connected to network {network.name}")
            config = {"aliases": aliases, "ipv4": ipv4, "ipv6": ipv6}
            endpoints = check_endpoints(spec.network, {**spec.endpoints, network.name: config})
            attachment = container.network
            if container.status.running and attachment is not None and attachment.pid:
                await self.manager.connect_live(attachment, network.name, endpoints[network.name])
            container.spec = dataclasses.replace(spec, endpoints=endpoints)
            self.core.save(container)
        self._event("connect", network.id, network.name, container=container.id)

    async def disconnect(self, ref: str, container_ref: str, force: bool = False) -> None:
        """Take a container off a network (now if it runs, and for its next starts).

        Raises:
            NotFound: no such network or container; it is not on that network (unless ``force``).
            InvalidArgument: the network is its ``--network`` (its first one).
        """
        network = self.manager.user.get(ref)
        container = self.core.get(container_ref)
        async with container.lock:
            spec = container.spec
            if network.name not in spec.endpoints:
                if force:
                    return
                raise NotFound(f"container {container.name} is not connected to network {network.name}")
            if network.name == spec.network:
                raise InvalidArgument(f"cannot disconnect container {container.name} from network {network.name}: "
                                      "it is the container's --network (its first interface)")
            attachment = container.network
            if attachment is not None:
                await self.manager.disconnect_live(attachment, network.id)
            endpoints = {name: config for name, config in spec.endpoints.items() if name != network.name}
            container.spec = dataclasses.replace(spec, endpoints=endpoints)
            self.core.save(container)
        self._event("disconnect", network.id, network.name, container=container.id)
