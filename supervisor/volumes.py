"""Volumes: directories under the daemon's root that outlive containers (docker's local driver).

Layout, as docker's ``/var/lib/docker/volumes``::

    <root>/volumes/<name>/_data          what containers see (mode 0755, root's, as docker)
    <root>/volumes/<name>/volume.json    its record: name, created, labels, options, anonymous

A record is written with :func:`logs.atomic.write_atomic` (durable) *after* ``_data`` exists,
so a volume listed is always usable; a folder without a record (a crash between the two) is
finished on the next create of that name, and ignored otherwise. Which containers use a volume
is the lifecycle's knowledge (their specs), not this store's: the caller passes it in.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from logs.atomic import write_atomic
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
        if options:
            raise InvalidArgument(f"create {name}: driver options ({', '.join(sorted(options))}) are not supported "
                                  "by dockyard's local driver yet (docs/volumes.md)", volume=name)
        existing = self.volumes.get(name)
        if existing is not None:
            if labels and labels != existing.labels:
                raise Conflict(f"create {name}: a volume of that name exists with other labels", volume=name)
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
        (volume.directory / RECORD).unlink(missing_ok=True)  # first: a half-removed volume is not listed
        del self.volumes[name]
        shutil.rmtree(volume.directory, ignore_errors=True)
        return volume

