"""The bus operations on registries: ``image.login``, ``image.logout``, ``image.pull``,
``image.push`` (supervisor/registry/service.py does the work; docs/registry.md).

Each handler takes the arguments :mod:`supervisor.operations` checked, as those of
:mod:`supervisor.handlers` do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from supervisor import operations as ops
from supervisor.api import Supervisor


def _given(args: dict[str, Any]) -> dict[str, Any]:
    """The arguments the client gave (the registry service applies its own defaults)."""
    return {name: value for name, value in args.items() if value is not None}


class RegistryHandlers:
    def __init__(self, supervisor: Supervisor):
        self.sup = supervisor

    def table(self) -> dict[str, Callable[[Any, dict[str, Any]], Awaitable[Any]]]:
        return {
            ops.IMAGE_LOGIN: self.image_login,
            ops.IMAGE_LOGOUT: self.image_logout,
            ops.IMAGE_PULL: self.image_pull,
            ops.IMAGE_PUSH: self.image_push,
        }

    async def image_login(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{registry, username, password} -> {registry, status}: checked, then saved (0600)."""
        from supervisor.registry import service

        return await service.login(_given(args), root=self.sup.config.root,
                                   options=service.options_for(self.sup.config.insecure_registries))

    async def image_logout(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{registry} -> {registry, removed}"""
        from supervisor.registry import service

        return await service.logout(_given(args), root=self.sup.config.root)

    async def image_pull(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{reference, platform?: OS/ARCH[/VARIANT]} -> {reference, digest, image, fetched,
        skipped, bytes}; streams {progress} while the blobs come in (docs/registry.md)."""
        from supervisor.registry import service
        from supervisor.registry.store_adapter import ImageStoreAdapter

        return await service.pull(_given(args), store=ImageStoreAdapter(self.sup.images), root=self.sup.config.root,
                                  options=service.options_for(self.sup.config.insecure_registries),
                                  stream=req.stream, emit=self.sup.emit)

    async def image_push(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{reference} -> {reference, digest, size, uploaded, existed, mounted, bytes};
        streams {progress} while the blobs go out."""
        from supervisor.registry import service
        from supervisor.registry.store_adapter import ImageStoreAdapter

        return await service.push(_given(args), store=ImageStoreAdapter(self.sup.images), root=self.sup.config.root,
                                  options=service.options_for(self.sup.config.insecure_registries),
                                  stream=req.stream, emit=self.sup.emit)
