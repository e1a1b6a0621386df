"""Volumes as the user manages them: ``volume create|ls|inspect|rm|prune`` (docs/volumes.md).

The store (:mod:`supervisor.volumes`) keeps the folders and records; this service knows which
containers use a volume (a volume in use is never removed) and publishes ``volume.*`` events.
"""

from __future__ import annotations

from typing import Any

import trio

from supervisor.errors import InvalidArgument
from supervisor.lifecycle.core import Lifecycle
from supervisor.volumes import Volume, VolumeStore

#: ``volume ls --filter`` keys (docker's, without driver= which is always local).
FILTERS = ("dangling", "name", "label")


class Volumes:
    def __init__(self, core: Lifecycle, store: VolumeStore):
        self.core = core
        self.store = store

    def create(self, name: str, labels: dict[str, str] | None = None,
               options: dict[str, str] | None = None) -> Volume:
        volume, made = self.store.create(name, labels, options)
        if made:
            self.core.volume_event("create", name, {"driver": "local"})
        return volume

    def inspect(self, name: str) -> dict[str, Any]:
        return self.store.get(name).inspect()

    def list(self, filters: list[str] | None = None) -> list[Volume]:
        """The volumes, filtered as ``docker volume ls --filter KEY=VALUE`` (several of one key:
        any of them; different keys: all of them).

        Raises:
            InvalidArgument: an unknown filter key or a bad dangling value.
        """
        wanted: dict[str, list[str]] = {}
        for entry in filters or []:
            key, eq, value = entry.partition("=")
            if not eq or key not in FILTERS:
                raise InvalidArgument(f"invalid filter '{entry}': use {', '.join(k + '=...' for k in FILTERS)}")
            if key == "dangling" and value.lower() not in ("true", "false", "1", "0"):
                raise InvalidArgument(f"invalid filter 'dangling={value}': use true or false")
            wanted.setdefault(key, []).append(value)
        return [volume for volume in self.store.list() if self._matches(volume, wanted)]

    def _matches(self, volume: Volume, wanted: dict[str, list[str]]) -> bool:
        if "name" in wanted and not any(value in volume.name for value in wanted["name"]):
            return False
        if "dangling" in wanted:
            dangling = not self.core.volume_users(volume.name)
            if not any(dangling == (value.lower() in ("true", "1")) for value in wanted["dangling"]):
                return False
        if "label" in wanted:
            for value in wanted["label"]:
                key, eq, expected = value.partition("=")
                if key not in volume.labels or (eq and volume.labels[key] != expected):
                    return False
        return True

    async def remove(self, name: str, force: bool = False) -> None:
        """Remove a volume that no container uses (``force``: a missing one is no error, as docker).

        Raises:
            NotFound: no such volume (without ``force``).
            Conflict: containers use it (they are named).
        """
        if force and name not in self.store.volumes:
            return
        users = self.core.volume_users(name)
        self.store.get(name)
        await trio.to_thread.run_sync(self.store.remove, name, users)
        self.core.volume_event("destroy", name, {"driver": "local"})

    async def prune(self, all: bool = False) -> list[str]:
        """Remove the unused anonymous volumes (``all``: the unused named ones too, docker 23's
        ``prune -a``); their names."""
        removed = []
        for volume in self.store.list():
            if (volume.anonymous or all) and not self.core.volume_users(volume.name):
                await trio.to_thread.run_sync(self.store.remove, volume.name, [])
                self.core.volume_event("destroy", volume.name, {"driver": "local"})
                removed.append(volume.name)
        return removed
