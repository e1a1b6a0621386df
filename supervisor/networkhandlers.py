"""The bus operations on networks: ``network.create``, ``network.list``, ``network.inspect``,
``network.remove``, ``network.prune``, ``network.connect``, ``network.disconnect``
(supervisor/services/networks.py does the work; docs/network.md).

Each handler takes the arguments :mod:`supervisor.operations` checked, as those of
:mod:`supervisor.handlers` do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from supervisor import operations as ops
from supervisor.api import Supervisor
from supervisor.errors import InvalidArgument
from supervisor.network.networks import CreateRequest


def _string_map(op: str, key: str, value: dict[str, Any]) -> dict[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidArgument(f"{op}: {key} must map strings to strings")
    return dict(value)


class NetworkHandlers:
    def __init__(self, supervisor: Supervisor):
        self.sup = supervisor

    def table(self) -> dict[str, Callable[[Any, dict[str, Any]], Awaitable[Any]]]:
        return {
            ops.NETWORK_CREATE: self.network_create,
            ops.NETWORK_LIST: self.network_list,
            ops.NETWORK_INSPECT: self.network_inspect,
            ops.NETWORK_REMOVE: self.network_remove,
            ops.NETWORK_PRUNE: self.network_prune,
            ops.NETWORK_CONNECT: self.network_connect,
            ops.NETWORK_DISCONNECT: self.network_disconnect,
        }

    async def network_create(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{name, subnet?, gateway?, ip_range?, internal?, ipv6?, subnet6?, gateway6?, labels?, options?,
        aux_addresses?} -> {id, name}"""
        request = CreateRequest(
            args["name"], args["subnet"], args["gateway"], args["ip_range"], args["internal"], args["ipv6"],
            args["subnet6"], args["gateway6"], _string_map(ops.NETWORK_CREATE, "labels", args["labels"]),
            _string_map(ops.NETWORK_CREATE, "options", args["options"]),
            _string_map(ops.NETWORK_CREATE, "aux_addresses", args["aux_addresses"]),
        )
        network = await self.sup.networks.create(request)
        return {"id": network.id, "name": network.name}

    async def network_list(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{filters?: [KEY=VALUE]} -> {networks: [inspect documents]}"""
        return {"networks": self.sup.networks.list(args["filters"])}

    async def network_inspect(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{network} -> docker's network inspect document"""
        return self.sup.networks.inspect(args["network"])

    async def network_remove(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{network} -> {name}"""
        return {"name": await self.sup.networks.remove(args["network"])}

    async def network_prune(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{} -> {removed: [name]}"""
        return {"removed": await self.sup.networks.prune()}

    async def network_connect(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{network, container, aliases?, ipv4?, ipv6?} -> {}"""
        await self.sup.networks.connect(args["network"], args["container"], args["aliases"], args["ipv4"],
                                        args["ipv6"])
        return {}

    async def network_disconnect(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{network, container, force?} -> {}"""
        await self.sup.networks.disconnect(args["network"], args["container"], args["force"])
        return {}
