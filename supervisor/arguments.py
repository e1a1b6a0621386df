"""An operation's argument: its type, its bounds, and the check of a value against it.

supervisor/operations.py declares each operation's arguments with these and checks a
request's arguments before its handler runs. This module imports nothing heavy: the CLI
imports it.

Types:

    str      a string               bool     true or false
    int      an integer             number   an integer or a finite float
    map      a map                  list     a list (its items checked by the handler)
    strings  a list of strings      path     an absolute path (a string without NUL)
    signal   a signal name or number
"""

from __future__ import annotations

import math
from typing import Any

#: What each type accepts, as an error message says it.
EXPECTED = {
    "str": "a string",
    "int": "an integer",
    "number": "a number",
    "bool": "true or false",
    "map": "a map",
    "list": "a list",
    "strings": "a list of strings",
    "path": "an absolute path",
    "signal": "a signal name or number",
}


class Argument:
    """One argument of an operation. ``doc`` is what docs/events.md's operation table shows
    after its name, in parentheses (markdown; empty: nothing)."""

    __slots__ = ("name", "type", "required", "default", "minimum", "maximum", "choices", "doc")

    def __init__(self, name: str, type: str, *, required: bool = False, default: Any = None,
                 minimum: float | None = None, maximum: float | None = None,
                 choices: tuple[str, ...] | None = None, doc: str = ""):
        if type not in EXPECTED:
            raise ValueError(f"argument {name!r}: unknown type {type!r}")
        self.name = name
        self.type = type
        self.required = required
        self.default = default
        self.minimum = minimum
        self.maximum = maximum
        self.choices = choices
        self.doc = doc

    @property
    def expected(self) -> str:
        """What a value must be, in words: ``an integer from 1 to 256``."""
        words = EXPECTED[self.type]
        if self.choices is not None:
            return " or ".join(repr(choice) for choice in self.choices)
        if self.minimum is not None and self.maximum is not None:
            return f"{words} from {self.minimum:g} to {self.maximum:g}"
        if self.minimum is not None:
            return f"{words} >= {self.minimum:g}"
        if self.maximum is not None:
            return f"{words} <= {self.maximum:g}"
        return words

    def accepts(self, value: Any) -> bool:
        kind = self.type
        if kind == "str":
            ok = type(value) is str
        elif kind == "int":
            ok = type(value) is int
        elif kind == "number":
            ok = type(value) in (int, float) and math.isfinite(value)
        elif kind == "bool":
            ok = type(value) is bool
        elif kind == "map":
            ok = type(value) is dict
        elif kind == "list":
            ok = type(value) is list
        elif kind == "strings":
            ok = type(value) is list and all(type(item) is str for item in value)
        elif kind == "path":
            ok = type(value) is str and value.startswith("/") and "\x00" not in value
        else:  # signal
            ok = type(value) in (str, int)
        if not ok:
            return False
        if self.choices is not None and value not in self.choices:
            return False
        if self.minimum is not None and value < self.minimum:
            return False
        return self.maximum is None or value <= self.maximum


def kind_of(value: Any) -> str:
    return {dict: "a map", list: "a list", str: "a string", bytes: "bytes", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def shown(value: Any) -> str:
    """A value as an error message shows it: short, and its type when that is the problem."""
    if type(value) in (int, float, bool) or (type(value) is str and len(value) <= 60):
        return f"{kind_of(value)} {value!r}"
    return kind_of(value)
