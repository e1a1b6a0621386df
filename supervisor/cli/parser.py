"""The argument parser: the global options, then each command group's own commands."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from types import ModuleType

from . import build, containers, daemon, files, images, logs, network, registry, remote, system, volume

#: The command groups, in the order `dockyard --help` lists their commands.
GROUPS = (daemon, containers, files, logs, images, build, volume, network, registry, system, remote)


class VersionAction(argparse.Action):
    """``--version``: print ``dockyard <version>`` and exit (argparse's own "version" action
    formats it with the help formatter, for nothing)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
                         help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: object, values: object,
                 option_string: str | None = None) -> None:
        from supervisor import __version__

        print(f"dockyard {__version__}")
        parser.exit()


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of the whole command line; given the command line ``argv``, with only the
    commands :func:`groups_for` it needs (argparse builds each command's parser eagerly:
    ~5 ms of start-up for the ~60 of them, for every command)."""
    parser = argparse.ArgumentParser(
        prog="dockyard",
        description="Run Standard Containers under a trio supervisor with a ZeroMQ bus.",
        epilog="The CLI finds the daemon through --run, $DOCKYARD_RUN, or /run/dockyard.",
    )
    parser.add_argument("--run", dest="run_dir", default=None, metavar="DIR",
                        help="the daemon's run directory, where its sockets are (default $DOCKYARD_RUN or /run/dockyard)")
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    for group in GROUPS if argv is None else groups_for(argv):
        group.register(sub)
    return parser


def groups_for(argv: Sequence[str]) -> tuple[ModuleType, ...]:
    """The command groups a command line needs: the one with the command it names; every
    group when it names one no group has (argparse's "invalid choice" lists them all) or
    asks for help before any; none when it names no command (``--version``, or the usage
    error of a missing command, whose usage line shows ``COMMAND``)."""
    words = iter(argv)
    for word in words:
        if word == "--run":
            next(words, None)
        elif word in ("-h", "--help"):
            return GROUPS
        elif not word.startswith("-"):
            return tuple(group for group in GROUPS if word in group.COMMANDS) or GROUPS
    return ()
