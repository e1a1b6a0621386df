"""The bus operations on volumes: ``volume.create``, ``volume.list``, ``volume.inspect``,
``volume.remove``, ``volume.prune`` (supervisor/services/volumes.py does the work;
docs/volumes.md).

Each handler takes the arguments :mod:`supervisor.operations` checked, as those of
:mod:`supervisor.handlers` do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from supervisor import operations as ops
from supervisor.api import Supervisor
from supervisor.errors import InvalidArgument


class VolumeHandlers:
    def __init__(self, supervisor: Supervisor):
        self.sup = supervisor

    def table(self) -> dict[str, Callable[[Any, dict[str, Any]], Awaitable[Any]]]:
        return {
            ops.VOLUME_CREATE: self.volume_create,
            ops.VOLUME_LIST: self.volume_list,
            ops.VOLUME_INSPECT: self.volume_inspect,
            ops.VOLUME_REMOVE: self.volume_remove,
            ops.VOLUME_PRUNE: self.volume_prune,
        }

    async def volume_create(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{name, labels?, options?} -> {name}"""
        for key in ("labels", "options"):
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in args[key].items()):
                raise InvalidArgument(f"volume.create: {key} must map strings to strings")
        volume = self.sup.create_volume(args["name"], args["labels"], args["options"])
        return {"name": volume.name}

    async def volume_list(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{filters?: [KEY=VALUE]} -> {volumes: [inspect documents]}"""
        return {"volumes": [volume.inspect() for volume in self.sup.list_volumes(args["filters"])]}

    async def volume_inspect(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{name} -> docker's volume inspect document"""
        return self.sup.inspect_volume(args["name"])

    async def volume_remove(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{name, force?} -> {name}"""
        await self.sup.remove_volume(args["name"], args["force"])
        return {"name": args["name"]}

    async def volume_prune(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{all?} -> {removed: [name]}"""
        return {"removed": await self.sup.prune_volumes(args["all"])}
