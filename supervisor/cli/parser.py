"""The argument parser: the global options, then each command group's own commands."""

from __future__ import annotations

import argparse

from . import build, containers, daemon, files, images, logs, network, registry, remote, system, volume

#: The command groups, in the order `dockyard --help` lists their commands.
GROUPS = (daemon, containers, files, logs, images, build, volume, network, registry, system, remote)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dockyard",
        description="Run Standard Containers under a trio supervisor with a ZeroMQ bus.",
        epilog="The CLI finds the daemon through --run, $DOCKYARD_RUN, or /run/dockyard.",
    )
    parser.add_argument("--run", dest="run_dir", default=None, metavar="DIR",
                        help="the daemon's run directory, where its sockets are (default $DOCKYARD_RUN or /run/dockyard)")
    parser.add_argument("--version", action="version", version="dockyard 0.1.0")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser
