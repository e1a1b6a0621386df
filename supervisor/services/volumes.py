"""Volumes as the user manages them: ``volume create|ls|inspect|rm|prune`` (docs/volumes.md).

The store (:mod:`supervisor.volumes`) keeps the folders and records; this service knows which
containers use a volume (a volume in use is never removed) and publishes ``volume.*`` events.
"""

from __future__ import annotations

from typing import Any

import trio

from supervisor import filters as volume_filters
from supervisor.lifecycle.core import Lifecycle
from supervisor.volumes import Volume, VolumeStore

#: ``volume ls --filter`` keys (docker's, without driver= which is always local).
FILTERS = volume_filters.VOLUME_KEYS


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
        """The volumes, filtered as ``docker volume ls --filter KEY=VALUE`` (supervisor/filters.py:
        several of one key: any of them; different keys, and every label: all of them).

        Raises:
            InvalidArgument: an unknown filter key or a bad dangling value.
        """
        wanted = volume_filters.Filters.parse("volume ls", filters or [], volume_filters.VOLUME_KEYS)
        wanted.boolean("dangling")  # a bad value is refused even without volumes
        return [volume for volume in self.store.list()
                if volume_filters.volume_matches(wanted, volume.name, volume.labels,
                                                 lambda volume=volume: bool(self.core.volume_users(volume.name)))]

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
