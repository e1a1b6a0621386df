"""Container records on disk: one JSON file per container, written atomically.

A record is written with write + fsync + rename (+ fsync of the directory), so after a crash
a reader finds either the old or the new record, never a torn one. ``ps -a`` and
``inspect`` read nothing else, which is why they survive a daemon restart.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from logs.atomic import write_atomic

RECORD = "container.json"


class ContainerStore:
    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, container_id: str) -> Path:
        return self.directory / container_id

    def save(self, container_id: str, record: dict[str, Any]) -> None:
        folder = self.path(container_id)
        folder.mkdir(exist_ok=True, mode=0o700)
        write_atomic(folder / RECORD, json.dumps(record, sort_keys=True).encode(), durable=True, mode=0o600)

    def load_all(self) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
        """Every readable record, and (path, reason) for each folder whose record is not."""
        records, broken = [], []
        for folder in sorted(self.directory.iterdir()):
            if not folder.is_dir():
                continue
            try:
                records.append(json.loads((folder / RECORD).read_bytes()))
            except (OSError, ValueError) as exc:
                broken.append((folder, f"{type(exc).__name__}: {exc}"))
        return records, broken

    def delete(self, container_id: str) -> None:
        shutil.rmtree(self.path(container_id))
