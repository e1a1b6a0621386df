"""Remote event subscribers: ``events --remote`` (one daemon or several, merged) and
``events-keys add|rm|ls|generate`` (docs/events.md, *Remote subscribers*)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from supervisor import EVENT_TYPES
from supervisor import operations as ops

from .common import UsageError
from .output import format_event, table


#: How long past --until `events --remote` waits for a daemon's replay (seconds).
SYNC_GRACE = 30.0


#: The commands :func:`register` adds (parser.py registers only the group a command line names).
COMMANDS = ("events-keys",)


def register(sub: Any) -> None:
    """Add ``events-keys`` and its subcommands to the subparsers ``sub``."""
    keys = sub.add_parser("events-keys", help="manage the keys of remote event subscribers (add, rm, ls, generate)")
    commands = keys.add_subparsers(dest="keys_cmd", metavar="COMMAND", required=True)

    p = commands.add_parser("add", help="allow a client's public key to subscribe over --events-listen")
    p.add_argument("name", metavar="NAME")
    p.add_argument("key", metavar="KEY|FILE|-", help="the 40-character public key, its .key file, or - for stdin")
    p.set_defaults(handler=cmd_keys_add)

    p = commands.add_parser("rm", aliases=["remove"], help="refuse a client from its next connection on")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(handler=cmd_keys_rm)

    p = commands.add_parser("ls", aliases=["list"], help="the daemon's public key, where it listens, the allowed clients")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the daemon's public key")
    p.set_defaults(handler=cmd_keys_ls)

    p = commands.add_parser("generate", help="make a client key pair (NAME.key, NAME.key_secret) here; no daemon needed")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--dir", default=".", metavar="DIR", help="where to write them (default: the current directory)")
    p.set_defaults(handler=cmd_keys_generate, client=False)


def cmd_keys_add(args: argparse.Namespace, client: Any) -> int:
    key = args.key
    if key == "-":
        key = sys.stdin.read()
    elif len(key) != 40 or os.path.exists(key):
        try:
            with open(key) as file:
                key = file.read()
        except OSError as exc:
            raise UsageError(f"cannot read the key file {args.key}: {exc.strerror}") from None
    added = client.request(ops.EVENTS_KEYS_ADD, {"name": args.name, "key": key})
    print(f"{added['name']} {added['key']}")
    return 0


def cmd_keys_rm(args: argparse.Namespace, client: Any) -> int:
    for name in args.names:
        print(client.request(ops.EVENTS_KEYS_REMOVE, {"name": name})["name"])
    return 0


def cmd_keys_ls(args: argparse.Namespace, client: Any) -> int:
    listed = client.request(ops.EVENTS_KEYS_LIST)
    if args.quiet:
        print(listed["server_key"])
        return 0
    print(f"listen: {listed['listen'] or '(unix socket only: the daemon has no --events-listen)'}")
    print(f"server key: {listed['server_key']}")
    rows = [[client_key["name"], client_key["key"]] for client_key in listed["clients"]]
    print(table(["CLIENT", "PUBLIC KEY"], rows))
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from bus.remote import RemoteError, check_key_name

    import zmq.auth

    try:
        check_key_name(args.name)
    except RemoteError as error:
        raise UsageError(str(error)) from None
    from pathlib import Path

    directory = Path(args.dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot make the key directory {directory}: {exc.strerror}") from None
    if (directory / f"{args.name}.key_secret").exists():
        raise UsageError(f"{directory / (args.name + '.key_secret')} exists already: not overwritten")
    old = os.umask(0o077)
    try:
        public, secret = zmq.auth.create_certificates(directory, args.name)
    finally:
        os.umask(old)
    os.chmod(public, 0o644)
    print(f"{public}\n{secret}")
    return 0


def follow_remote(args: argparse.Namespace, wanted: dict[str, list[str]], since: float | None,
                  until: float | None) -> int:
    """``events --remote``: follow one or several daemons over CURVE (bus/remote_client.py)."""
    from bus import filters
    from bus.remote import RemoteError, check_endpoint, load_key
    from bus.remote_client import RemoteStream

    import zmq

    if len(args.server_key) not in (1, len(args.remote)):
        raise UsageError(f"--server-key: give one for all --remote or one per --remote ({len(args.remote)})")
    if args.key is None:
        raise UsageError("--remote needs --key: this client's secret key file (`dockyard events-keys generate`)")
    try:
        for endpoint in args.remote:
            check_endpoint(endpoint)
        server_keys = [load_key(key) for key in args.server_key]
        public_key, secret_key = load_key(args.key), load_key(args.key, secret=True)
    except RemoteError as error:
        raise UsageError(str(error)) from None
    if len(server_keys) == 1:
        server_keys *= len(args.remote)
    prefixes = [filters.topic_of(wanted)] if wanted else [f"{kind}." for kind in EVENT_TYPES]
    after = args.since_seq if args.since_seq is not None else (0 if since is not None else None)
    context = zmq.Context()
    streams = []
    try:
        for endpoint, server_key in zip(args.remote, server_keys):
            streams.append(RemoteStream(context, endpoint, server_key=server_key, public_key=public_key,
                                        secret_key=secret_key, prefixes=prefixes, after_seq=after,
                                        accept=(lambda data: filters.matches(wanted, data)) if wanted else None,
                                        since=since))
        return _print_merged(args, streams, until)
    finally:
        for stream in streams:
            stream.close()
        context.term()


def _print_merged(args: argparse.Namespace, streams: list[Any], until: float | None) -> int:
    from bus.remote_client import merge

    from .eventformat import event_printer

    tagged = len(streams) > 1
    custom = None if args.format in ("text", "json") else event_printer(args.format)

    def going_on() -> bool:
        """--until ends it, but not before every daemon's replay is shown (or its key refused),
        or SYNC_GRACE seconds past --until for a daemon that does not answer."""
        if until is None or time.time() < until:
            return True
        waiting = [stream for stream in streams if not (stream.synced or stream.failed)]
        if waiting and time.time() >= until + SYNC_GRACE:
            print(f"dockyard events: no answer from {', '.join(s.endpoint for s in waiting)}", file=sys.stderr)
            return False
        return bool(waiting)

    while going_on():
        timeout = 1.0 if until is None else min(1.0, max(0.01, until - time.time()))
        for stream, batch in merge(streams, timeout=timeout):
            for warning in _take_warnings(streams):
                print(f"dockyard events: {warning}", file=sys.stderr, flush=True)
            daemon = {**stream.identity, "remote": stream.endpoint}
            for envelope in batch:
                if until is not None and envelope.ts > until:
                    continue
                if custom is not None:
                    custom(envelope.as_map())
                elif args.format == "json":
                    print(json.dumps({**envelope.as_map(), "daemon": daemon}, default=repr), flush=True)
                else:
                    line = format_event(envelope.as_map())
                    print(f"[{daemon.get('name', '?')} {stream.endpoint}] {line}" if tagged else line, flush=True)
            if not going_on():
                return 0
        for warning in _take_warnings(streams):
            print(f"dockyard events: {warning}", file=sys.stderr, flush=True)
    return 0


def _take_warnings(streams: list[Any]) -> list[str]:
    taken = []
    for stream in streams:
        taken.extend(stream.warnings)
        stream.warnings.clear()
    return taken
