"""Errors of the log store.

    LogError                 a log cannot be read or written
     ├── CorruptLog          a segment's bytes are not what the format says (path, offset, reason)
     └── InvalidLogOption    a bad ``--log-opt`` (key, value, reason)
"""

from __future__ import annotations


class LogError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class CorruptLog(LogError):
    def __init__(self, path: str, offset: int, reason: str):
        super().__init__(f"log segment {path} is corrupt at byte {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class InvalidLogOption(LogError):
    def __init__(self, key: str, value: object, reason: str):
        super().__init__(f"invalid value {value!r} for --log-opt {key}: {reason}")
        self.key = key
        self.value = value
        self.reason = reason
