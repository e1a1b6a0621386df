"""The `dockyard` command line: a bus client like any other.

It imports only the synchronous bus client (pyzmq + msgpack), never trio or structlog, so a
`dockyard run` spends its time running the container, not importing Python. The daemon's
own code is imported by `dockyard daemon` alone.

Where things are: `parser.py` builds the parser from the command groups (only the group of
the command given: argparse builds every parser eagerly), each of which declares its
commands (`COMMANDS`, `register`) beside the functions that run them (`cmd_*`):
`containers.py`, `files.py` (commit, diff, export, cp), `images.py`, `logs.py`,
`registry.py`, `system.py` (events, info) and `daemon.py` (daemon, worker). `specs.py` turns
run/create flags into a container spec, `output.py` prints tables and times, `common.py`
holds what the commands share.

Exit codes follow docker: a command's own failure is 1; for run, create and start a daemon
side error is 125, a command that cannot be invoked 126, one that is not found 127, and
otherwise the container's own exit code.
"""

from __future__ import annotations

import argparse
import sys

from bus.errors import BusError, DaemonUnavailable, RemoteError

from .common import UsageError, client_for, fail
from .parser import build_parser

__all__ = ["main"]


def dispatch(args: argparse.Namespace) -> int:
    """Run the command the arguments name, with a client to the daemon unless it is one of
    the commands that are the daemon (daemon, worker)."""
    if not getattr(args, "client", True):
        return args.handler(args)
    with client_for(args) as client:
        return args.handler(args, client)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    launch_error_code = 125 if args.cmd in ("run", "create", "start") else 1
    try:
        return dispatch(args)
    except UsageError as error:
        parser.error(str(error))
    except DaemonUnavailable as error:
        fail(str(error), launch_error_code)
    except RemoteError as error:
        fail(error.message, launch_error_code)
    except BusError as error:
        fail(str(error), launch_error_code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0

