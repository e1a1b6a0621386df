"""runc's flags for the hot commands (create, run, start, state, kill, delete), parsed by
hand: argparse and the ``re`` it imports cost a few ms of every ``run``, more than
everything else of the command line (docs/runtime.md, "Where the time goes").

:func:`parse` returns None for anything it does not know (another command, ``--help``, an
unknown flag, a missing value): the caller then parses with argparse, so that a mistake gets
argparse's usage message, exactly as before. What is accepted is Go's flag syntax, as
runc's callers send it: ``--flag``, ``-flag``, ``--flag=value``, ``-flag value``, a boolean
as ``--flag=true|false``, ``--`` ending the flags; global flags before the command.
"""

from __future__ import annotations

#: Global flags: name -> (attribute, takes a value, default).
GLOBAL = {
    "root": ("root", True, None), "log": ("log", True, ""), "log-format": ("log_format", True, "text"),
    "debug": ("debug", False, False), "systemd-cgroup": ("systemd_cgroup", False, False),
    "rootless": ("rootless", True, "auto"), "criu": ("criu", True, ""),
}
_CREATE = {
    "bundle": ("bundle", True, "."), "b": ("bundle", True, "."), "pid-file": ("pid_file", True, ""),
    "console-socket": ("console_socket", True, ""), "no-pivot": ("no_pivot", False, False),
    "no-new-keyring": ("no_new_keyring", False, False), "preserve-fds": ("preserve_fds", True, 0),
}
#: Each hot command's flags and its positional arguments (after the flags; the last one
#: optional when it has a default in ``OPTIONAL``).
COMMANDS = {
    "create": (_CREATE, ("id",)),
    "run": ({**_CREATE, "detach": ("detach", False, False), "d": ("detach", False, False),
             "keep": ("keep", False, False)}, ("id",)),
    "start": ({}, ("id",)),
    "state": ({}, ("id",)),
    "kill": ({"all": ("all", False, False), "a": ("all", False, False)}, ("id", "signal")),
    "delete": ({"force": ("force", False, False), "f": ("force", False, False)}, ("id",)),
}
OPTIONAL = {"signal": "TERM"}
LOG_FORMATS = ("text", "json")


class Arguments:
    """What argparse's Namespace gives the commands: one attribute per flag."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Arguments({self.__dict__})"


def _flag(arg: str) -> tuple[str, str | None] | None:
    """``--name=value`` / ``-name`` as (name, value or None); None for a positional."""
    if len(arg) < 2 or arg[0] != "-" or arg == "--":
        return None
    name = arg[2:] if arg.startswith("--") else arg[1:]
    name, equals, value = name.partition("=")
    return name, (value if equals else None)


def _take(argv: list[str], index: int, table: dict, values: dict) -> int | None:
    """The flag at ``argv[index]`` stored in ``values``; the index after it, or None when it
    is not one of ``table`` or is malformed."""
    name, value = _flag(argv[index])
    spec = table.get(name)
    if spec is None:
        return None
    attribute, takes_value, default = spec
    if not takes_value:
        if value is None:
            values[attribute] = True
        elif value in ("true", "false"):
            values[attribute] = value == "true"
        else:
            return None
        return index + 1
    if value is None:
        if index + 1 >= len(argv):
            return None
        value, index = argv[index + 1], index + 1
    if isinstance(default, int) and not isinstance(default, bool):
        if not value.isdigit():
            return None
        value = int(value)
    values[attribute] = value
    return index + 1


def parse(argv: list[str], default_root: str) -> Arguments | None:
    """The arguments of a hot command, or None (see the module docstring)."""
    values = {"version": False, "command": None}
    values.update((spec[0], spec[2]) for spec in GLOBAL.values())
    index = 0
    while index < len(argv) and _flag(argv[index]) is not None:
        index = _take(argv, index, GLOBAL, values)
        if index is None:
            return None
    if index >= len(argv) or argv[index] not in COMMANDS or values["log_format"] not in LOG_FORMATS:
        return None
    command = values["command"] = argv[index]
    table, positionals = COMMANDS[command]
    values.update((spec[0], spec[2]) for spec in table.values())
    rest: list[str] = []
    index += 1
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            rest.extend(argv[index + 1:])
            break
        if _flag(arg) is None:  # Go's flag package stops at the first positional; runc's
            rest.append(arg)    # urfave/cli reorders, so flags after the id are taken too
            index += 1
            continue
        index = _take(argv, index, table, values)
        if index is None:
            return None
    required = [name for name in positionals if name not in OPTIONAL]
    if not len(required) <= len(rest) <= len(positionals):
        return None
    for name in positionals:
        values[name] = rest.pop(0) if rest else OPTIONAL[name]
    if values["root"] is None:
        values["root"] = default_root
    return Arguments(**values)
