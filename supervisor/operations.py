"""Every bus operation's arguments, declared once, and the one place they are checked.

Each :class:`Operation` names its arguments: a type (below), required or not, a default, and
for some a range or a set of choices. :func:`check_arguments` runs before a handler: it
refuses a missing, unknown or ill-typed argument with an ``invalid_argument`` error that
names the operation, the argument and what was expected, and gives the handler a map in
which every declared argument is present (optional ones absent from the request hold their
default). Handlers then check only what depends on the daemon's state or on the inside of a
nested map (a spec's fields are checked by :class:`~supervisor.spec.ContainerSpec`).

An argument sent as ``null`` counts as absent, as the CLI sends unset options.

This is the first part of the single operation registry (issue 16): the CLI and the
operation table of docs/events.md are to be built from it. It imports nothing heavy.

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

from supervisor.errors import InvalidArgument

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
    """One argument of an operation."""

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


class Operation:
    """One bus operation: its name, its arguments and what it answers (for people)."""

    __slots__ = ("name", "arguments", "result")

    def __init__(self, name: str, arguments: tuple[Argument, ...] = (), result: str = ""):
        self.name = name
        self.arguments = {argument.name: argument for argument in arguments}
        self.result = result

    def check(self, args: Any) -> dict[str, Any]:
        """The arguments, checked; every declared one present (absent ones: their default).

        Raises:
            InvalidArgument: one is missing, unknown or not what it must be; the message
                names the operation, the argument and what was expected.
        """
        if type(args) is not dict:
            raise InvalidArgument(f"{self.name}: its arguments must be a map, not {_kind(args)}", op=self.name)
        unknown = sorted(repr(name) for name in args if name not in self.arguments)
        if unknown:
            takes = ", ".join(self.arguments) or "no arguments"
            raise InvalidArgument(
                f"{self.name}: unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                f"(it takes: {takes})", op=self.name, arguments=unknown,
            )
        checked: dict[str, Any] = {}
        for name, argument in self.arguments.items():
            value = args.get(name)
            if value is None:
                if argument.required:
                    raise InvalidArgument(f"{self.name}: argument {name!r} is required ({argument.expected})",
                                          op=self.name, argument=name, expected=argument.expected)
                default = argument.default
                checked[name] = list(default) if type(default) is list else default  # never shared
                continue
            if not argument.accepts(value):
                raise InvalidArgument(
                    f"{self.name}: argument {name!r} must be {argument.expected}, not {_shown(value)}",
                    op=self.name, argument=name, expected=argument.expected,
                )
            checked[name] = value
        return checked


def _kind(value: Any) -> str:
    return {dict: "a map", list: "a list", str: "a string", bytes: "bytes", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    """A value as an error message shows it: short, and its type when that is the problem."""
    if type(value) in (int, float, bool) or (type(value) is str and len(value) <= 60):
        return f"{_kind(value)} {value!r}"
    return _kind(value)


def _op(name: str, *arguments: Argument, result: str = "") -> Operation:
    return Operation(name, arguments, result)


def _container(doc: str = "a name, a full id or a unique id prefix") -> Argument:
    return Argument("container", "str", required=True, doc=doc)


def _window() -> Argument:
    return Argument("window", "int", minimum=1, maximum=256, doc="output credits: flow control of a session")


def _session(*arguments: Argument) -> tuple[Argument, ...]:
    return (*arguments, Argument("stdin", "bool", default=False, doc="send the client's input to the process"),
            _window())


_OPERATIONS = (
    _op("container.create", Argument("spec", "map", required=True, doc="a container spec"), result="{id, name}"),
    _op("container.run", Argument("spec", "map", required=True), *_session(Argument("attach", "bool", default=False)),
        result="{id, name}, or a session"),
    _op("container.start", *_session(_container(), Argument("attach", "bool", default=False)),
        result="{id}, or a session"),
    _op("container.attach", *_session(_container()), result="a session"),
    _op("container.exec", _container(), Argument("exec", "map", required=True, doc="{cmd, env?, workdir?, ...}"),
        _window(), result="{exec_id, pid}, or a session"),
    _op("container.stop", _container(), Argument("timeout", "int", minimum=0, doc="seconds"), result="{id}"),
    _op("container.kill", _container(), Argument("signal", "signal", default="KILL"), result="{id}"),
    _op("container.restart", _container(), Argument("timeout", "int", minimum=0, doc="seconds"), result="{id}"),
    _op("container.wait", _container(), result="{exit_code}"),
    _op("container.remove", _container(), Argument("force", "bool", default=False), result="{id}"),
    _op("container.list", Argument("all", "bool", default=False), result="{containers}"),
    _op("container.inspect", _container(), result="the inspect document"),
    _op("container.update", _container(), Argument("resources", "map", required=True), result="{id, resources}"),
    _op("container.stats", Argument("containers", "strings", default=[]), result="{stats}"),
    _op("container.schedule_restart", _container(),
        Argument("exit", "str", required=True, doc="the exit's finished_at"),
        Argument("attempt", "int", required=True, minimum=1), Argument("delay", "number", required=True),
        result="{id, restart_count}"),
    _op("container.health_report", _container(), Argument("start", "number", required=True),
        Argument("end", "number", required=True), Argument("exit_code", "int", required=True),
        Argument("output", "str", default=""), result="{id, status, failing_streak}"),
    _op("container.health_check", _container(), result="{id, status, failing_streak, exit_code}"),
    _op("container.commit", _container(), Argument("reference", "str"), Argument("comment", "str", default=""),
        Argument("author", "str", default=""), Argument("changes", "strings", default=[]), result="image summary"),
    _op("container.diff", _container(), result="{changes}"),
    _op("container.export", _container(), Argument("path", "path", required=True), result="{path}"),
    _op("container.copy_from", _container(), Argument("source", "str", required=True),
        Argument("path", "path", required=True), result="{name}"),
    _op("container.copy_to", _container(), Argument("source", "path", required=True),
        Argument("dest", "str", required=True), result="{path}"),
    _op("image.import", Argument("path", "path", required=True), Argument("reference", "str", required=True),
        Argument("changes", "strings", default=[]), Argument("message", "str", default=""), result="image summary"),
    _op("image.list", result="{images}"),
    _op("image.inspect", Argument("image", "str", required=True), result="the image inspect document"),
    _op("image.tag", Argument("image", "str", required=True), Argument("reference", "str", required=True),
        result="image summary"),
    _op("image.remove", Argument("image", "str", required=True), Argument("force", "bool", default=False),
        result="{report}"),
    _op("image.history", Argument("image", "str", required=True), result="{history}"),
    _op("image.save", Argument("images", "strings", required=True), Argument("path", "path", required=True),
        result="{saved}"),
    _op("image.load", Argument("path", "path", required=True), result="{images}"),
    _op("image.login", Argument("registry", "str"), Argument("username", "str", required=True),
        Argument("password", "str", required=True), result="{registry, status}"),
    _op("image.logout", Argument("registry", "str"), result="{registry, removed}"),
    _op("image.pull", Argument("reference", "str", required=True), Argument("platform", "str"),
        result="{reference, digest, image, fetched, skipped, bytes}"),
    _op("image.push", Argument("reference", "str", required=True),
        result="{reference, digest, size, uploaded, existed, mounted, bytes}"),
    _op("events.replay", Argument("since", "number"), Argument("until", "number"), result="{events, last_seq}"),
    _op("daemon.info", result="daemon facts and counters"),
    _op("logs.status", Argument("container", "str"), result="{containers}"),
    _op("logs.ack", Argument("acks", "map", required=True), result="{}"),
    _op("logs.replay", _container("a container id"), Argument("stream", "str", required=True, choices=("stdout", "stderr")),
        Argument("from", "int", required=True, minimum=1), Argument("max_bytes", "int", default=4 << 20, minimum=1,
                                                                    maximum=4 << 20),
        result="{records, lost, last}"),
    _op("logs.read", _container(), Argument("since", "number"), Argument("until", "number"),
        Argument("tail", "int", minimum=0), Argument("follow", "bool", default=False), Argument("cursor", "list"),
        Argument("wait", "number", minimum=0), result="{records, cursor, done}"),
)

#: The daemon's operations by name (``bus.ping`` and ``bus.sync`` are the bus's own: bus/server.py).
OPERATIONS: dict[str, Operation] = {operation.name: operation for operation in _OPERATIONS}


def check_arguments(op: str, args: Any) -> dict[str, Any]:
    """``OPERATIONS[op].check(args)``."""
    return OPERATIONS[op].check(args)
