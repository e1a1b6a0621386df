"""The bus operations on remote event subscribers' keys: ``events.keys_add``,
``events.keys_remove``, ``events.keys_list`` (bus/remote.py keeps the files; docs/events.md,
*Remote subscribers*). The daemon re-reads the allowed keys at each handshake, so a change
takes effect for the next connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bus import remote
from supervisor import operations as ops
from supervisor.api import Supervisor
from supervisor.errors import InvalidArgument, NotFound


class EventKeyHandlers:
    def __init__(self, supervisor: Supervisor):
        self.sup = supervisor

    @property
    def keys_dir(self) -> Path:
        return self.sup.config.events_keys_dir

    @property
    def allowed_dir(self) -> Path:
        return self.keys_dir / "allowed"

    @property
    def listen(self) -> str | None:
        return self.sup.config.events_listen

    def table(self) -> dict[str, Callable[[Any, dict[str, Any]], Awaitable[Any]]]:
        return {
            ops.EVENTS_KEYS_ADD: self.keys_add,
            ops.EVENTS_KEYS_REMOVE: self.keys_remove,
            ops.EVENTS_KEYS_LIST: self.keys_list,
        }

    async def keys_add(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{name, key: Z85 public key or a ZeroMQ certificate's text} -> {name, key}"""
        try:
            path = remote.add_key(self.allowed_dir, args["name"], args["key"])
            key = remote.load_key(path)
        except remote.RemoteError as error:
            raise InvalidArgument(f"{ops.EVENTS_KEYS_ADD}: {error}") from None
        return {"name": args["name"], "key": key.decode()}

    async def keys_remove(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{name} -> {name}"""
        try:
            removed = remote.remove_key(self.allowed_dir, args["name"])
        except remote.RemoteError as error:
            raise InvalidArgument(f"{ops.EVENTS_KEYS_REMOVE}: {error}") from None
        if not removed:
            raise NotFound(f"no allowed events client named {args['name']!r}")
        return {"name": args["name"]}

    async def keys_list(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{} -> {listen, server_key, clients: [{name, key}]}; the daemon's key pair is made
        if it is not there yet, so a client can be set up before the first listen."""
        public, _ = remote.server_keys(self.keys_dir)
        clients = [{"name": name, "key": key.decode()} for name, key in remote.list_keys(self.allowed_dir)]
        return {"listen": self.listen, "server_key": public.decode(), "clients": clients}
