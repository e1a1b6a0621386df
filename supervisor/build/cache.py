"""The build cache: which image a step made from a parent, an instruction and a checksum.

One JSON file under the daemon's root (``build-cache.json``), ``{"entries": {key: image id}}``,
replaced atomically at each new entry; a key whose image is gone is a miss (the builder
checks), so ``rmi`` needs not touch it. The key is sha256 of the parent image id, the
instruction as run (variables substituted) and, for COPY/ADD, the checksum of the files
(supervisor/build/context.py ``tree_checksum``), as docker's classic builder compares them.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from supervisor.images.layout import write_json_atomic

_LOCK = threading.Lock()


def cache_key(parent: str, instruction: str, checksum: str = "") -> str:
    return hashlib.sha256(json.dumps([parent, instruction, checksum]).encode()).hexdigest()


class BuildCache:
    def __init__(self, path: Path):
        self.path = path

    def _read(self) -> dict[str, str]:
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}   # a damaged cache is an empty one: the build still works, only slower
        entries = document.get("entries") if isinstance(document, dict) else None
        return entries if isinstance(entries, dict) else {}

    def lookup(self, parent: str, instruction: str, checksum: str = "") -> str | None:
        return self._read().get(cache_key(parent, instruction, checksum))

    def record(self, parent: str, instruction: str, checksum: str, image_id: str) -> None:
        with _LOCK:
            entries = self._read()
            entries[cache_key(parent, instruction, checksum)] = image_id
            write_json_atomic(self.path, {"entries": entries})
