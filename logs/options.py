"""``--log-opt KEY=VALUE``: how a container's output is buffered and kept.

| key | values | default |
| --- | --- | --- |
| ``mode`` | ``blocking``, ``non-blocking`` | blocking |
| ``max-buffer-size`` | size (``4m``) | 4m |
| ``max-size`` | size of one segment before rotation | 64m |
| ``max-file`` | segments kept | 5 |

Sizes take docker's units (b, k, m, g; binary). The defaults keep at most 320 MiB of log per
container (docs/logs.md says why).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from logs.errors import InvalidLogOption

BLOCKING = "blocking"
NON_BLOCKING = "non-blocking"
MODES = (BLOCKING, NON_BLOCKING)
KEYS = ("mode", "max-buffer-size", "max-size", "max-file")

#: Smallest sizes accepted: a segment must hold its header and a few records; a buffer must
#: hold a few reads.
MIN_SEGMENT = 4096
MIN_BUFFER = 4096

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)[ \t]*([bkmg])?(?:i?b)?\Z", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidLogOption(key, value, "not a size")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise InvalidLogOption(key, value, "not a size")
    match = _SIZE.match(value.strip())
    if not match:
        raise InvalidLogOption(key, value, "use a number with an optional unit b, k, m or g (e.g. 10m)")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


@dataclass(frozen=True)
class LogOptions:
    mode: str = BLOCKING
    max_buffer_size: int = 4 << 20
    max_size: int = 64 << 20
    max_file: int = 5

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidLogOption("mode", self.mode, f"use {' or '.join(MODES)}")
        if type(self.max_buffer_size) is not int or self.max_buffer_size < MIN_BUFFER:
            raise InvalidLogOption("max-buffer-size", self.max_buffer_size, f"must be at least {MIN_BUFFER} bytes")
        if type(self.max_size) is not int or self.max_size < MIN_SEGMENT:
            raise InvalidLogOption("max-size", self.max_size, f"must be at least {MIN_SEGMENT} bytes")
        if type(self.max_file) is not int or not 1 <= self.max_file <= 1000:
            raise InvalidLogOption("max-file", self.max_file, "must be a whole number from 1 to 1000")

    @classmethod
    def from_map(cls, data: Any) -> LogOptions:
        """From ``{"mode": "non-blocking", "max-size": "10m", ...}`` (text, as the CLI sends
        it, or numbers); unknown keys are refused by name."""
        if isinstance(data, LogOptions):
            return data
        if not isinstance(data, dict):
            raise InvalidLogOption("", data, "log options must be a map of KEY=VALUE")
        values = {key.replace("_", "-") if isinstance(key, str) else key: value for key, value in data.items()}
        unknown = sorted(str(key) for key in values if key not in KEYS)
        if unknown:
            raise InvalidLogOption(unknown[0], values[unknown[0]] if unknown[0] in values else "",
                                   f"unknown option (known: {', '.join(KEYS)})")
        kwargs: dict[str, Any] = {}
        if "mode" in values:
            kwargs["mode"] = values["mode"]
        for key in ("max-buffer-size", "max-size"):
            if key in values:
                kwargs[key.replace("-", "_")] = parse_size(key, values[key])
        if "max-file" in values:
            value = values["max-file"]
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if type(value) is not int:
                raise InvalidLogOption("max-file", value, "not a whole number")
            kwargs["max_file"] = value
        return cls(**kwargs)

    def to_map(self) -> dict[str, Any]:
        return {"mode": self.mode, "max-buffer-size": self.max_buffer_size, "max-size": self.max_size,
                "max-file": self.max_file}


def parse_cli(entries: list[str]) -> dict[str, str]:
    """``["mode=non-blocking", "max-size=10m"]`` to a map (values are checked by the daemon)."""
    options: dict[str, str] = {}
    for entry in entries:
        key, eq, value = entry.partition("=")
        if not eq or not key:
            raise InvalidLogOption(entry, entry, "use KEY=VALUE")
        options[key] = value
    return options
