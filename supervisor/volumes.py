"""Volumes: directories under the daemon's root that outlive containers (docker's local driver).

Layout, as docker's ``/var/lib/docker/volumes``::

    <root>/volumes/<name>/_data          what containers see (mode 0755, root's, as docker)
    <root>/volumes/<name>/volume.json    its record: name, created, labels, options, anonymous

A record is written with :func:`logs.atomic.write_atomic` (durable) *after* ``_data`` exists,
so a volume listed is always usable; a folder without a record (a crash between the two) is
finished on the next create of that name, and ignored otherwise. Which containers use a volume
is the lifecycle's knowledge (their specs), not this store's: the caller passes it in.

A volume created with driver options (``--opt type=... device=... o=...``:
:mod:`supervisor.volumedriver`) has its filesystem mounted on ``_data`` on the host while
containers that use it run: :meth:`VolumeStore.acquire` mounts it for the first,
:meth:`VolumeStore.release` unmounts it after the last, as docker's local driver counts them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from logs.atomic import write_atomic
from supervisor import volumedriver
from supervisor.errors import Conflict, InvalidArgument, NotFound
from supervisor.mounts import VOLUME_NAME

RECORD = "volume.json"
DATA = "_data"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Volume:
    name: str
    directory: Path
    created: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False

    @property
    def mountpoint(self) -> Path:
        return self.directory / DATA

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "created": self.created, "labels": self.labels, "options": self.options,
                "anonymous": self.anonymous}

    def inspect(self) -> dict[str, Any]:
        """docker's ``volume inspect`` document."""
        return {"CreatedAt": self.created, "Driver": "local", "Labels": dict(self.labels) or None,
                "Mountpoint": str(self.mountpoint), "Name": self.name, "Options": dict(self.options) or None,
                "Scope": "local"}


class VolumeStore:
    """The volumes under ``<root>/volumes``, loaded from their records (a daemon restart keeps them)."""

    def __init__(self, root: Path):
        self.directory = Path(root) / "volumes"
        self.volumes: dict[str, Volume] = {}
        self.skipped: list[str] = []  # folders whose record could not be read (logged by the caller)
        self.users: dict[str, set[str]] = {}  # a volume with options: the running containers using it

    def load(self) -> None:
        self.directory.mkdir(mode=0o701, parents=True, exist_ok=True)
        self.volumes.clear()
        for folder in sorted(self.directory.iterdir()):
            try:
                record = json.loads((folder / RECORD).read_bytes())
                volume = Volume(record["name"], folder, record.get("created", ""), dict(record.get("labels") or {}),
                                dict(record.get("options") or {}), bool(record.get("anonymous", False)))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.skipped.append(f"{folder.name}: {exc}")
                continue
            if volume.name == folder.name and (folder / DATA).is_dir():
                self.volumes[volume.name] = volume

    def get(self, name: str) -> Volume:
        try:
            return self.volumes[name]
        except KeyError:
            raise NotFound(f"get {name}: no such volume", volume=name) from None

    def list(self) -> list[Volume]:
        return [self.volumes[name] for name in sorted(self.volumes)]

    def create(self, name: str, labels: dict[str, str] | None = None, options: dict[str, str] | None = None,
               anonymous: bool = False) -> tuple[Volume, bool]:
        """The volume ``name``, made unless it exists: (volume, made now). As docker, creating
        an existing volume again returns it (with other labels or options: a conflict).

        Raises:
            InvalidArgument: a bad name, or options the local driver does not take.
            Conflict: it exists with other labels or options.
        """
        if not VOLUME_NAME.match(name):
            raise InvalidArgument(f'create {name}: "{name}" includes invalid characters for a local volume name, '
                                  'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed', volume=name)
        volumedriver.check_options(name, dict(options or {}))
        existing = self.volumes.get(name)
        if existing is not None:
            if labels and labels != existing.labels:
                raise Conflict(f"create {name}: a volume of that name exists with other labels", volume=name)
            if options and options != existing.options:
                raise Conflict(f"create {name}: a volume of that name exists with other options", volume=name)
            return existing, False
        folder = self.directory / name
        data = folder / DATA
        folder.mkdir(mode=0o701, exist_ok=True)
        data.mkdir(mode=0o755, exist_ok=True)
        volume = Volume(name, folder, _now(), dict(labels or {}), dict(options or {}), anonymous)
        write_atomic(folder / RECORD, json.dumps(volume.to_record()).encode(), durable=True, mode=0o600)
        self.volumes[name] = volume
        return volume, True

    def remove(self, name: str, users: list[str]) -> Volume:
        """Delete the volume and its content. ``users``: the containers that use it (any state).

        Raises:
            NotFound: no such volume.
            Conflict: it is in use (docker's message, naming the containers).
        """
        volume = self.get(name)
        if users:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]", volume=name, containers=users)
        if volumedriver.is_mounted(str(volume.mountpoint)):  # left by a daemon that died
            volumedriver.unmount(str(volume.mountpoint))
            if volumedriver.is_mounted(str(volume.mountpoint)):  # never delete through a mount
                raise Conflict(f"remove {name}: its filesystem is still mounted on {volume.mountpoint}", volume=name)
        (volume.directory / RECORD).unlink(missing_ok=True)  # first: a half-removed volume is not listed
        del self.volumes[name]
        shutil.rmtree(volume.directory, ignore_errors=True)
        return volume


    def acquire(self, names: list[str], user: str) -> None:
        """Container ``user`` starts with the volumes ``names``: mount each one with options that
        no running container holds yet (one a dead daemon left mounted is taken as it is).

        Raises:
            OSError: a mount failed (the ones made here are undone).
        """
        done: list[str] = []
        try:
            for name in dict.fromkeys(names):
                volume = self.volumes.get(name)
                if volume is None or not volume.options:
                    continue
                holders = self.users.setdefault(name, set())
                if not holders and not volumedriver.is_mounted(str(volume.mountpoint)):
                    volumedriver.mount(volume.options, str(volume.mountpoint))
                holders.add(user)
                done.append(name)
        except BaseException:
            self.release(done, user)
            raise

    def release(self, names: list[str], user: str) -> None:
        """Container ``user`` has exited: unmount each volume it was the last to hold. A failed
        unmount is left for the next start or the rm of the volume (never raises)."""
        for name in dict.fromkeys(names):
            holders = self.users.get(name)
            if holders is None or user not in holders:
                continue
            holders.discard(user)
            volume = self.volumes.get(name)
            if not holders:
                del self.users[name]
                if volume is not None and volumedriver.is_mounted(str(volume.mountpoint)):
                    try:
                        volumedriver.unmount(str(volume.mountpoint))
                    except OSError:
                        pass
