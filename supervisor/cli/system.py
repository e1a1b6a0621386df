"""Commands on the daemon as a whole: events (replayed and live) and info."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from supervisor import EVENT_TYPES
from supervisor import operations as ops

from .common import UsageError, client_for, parse_time
from .eventformat import event_printer


#: The commands :func:`register` adds (parser.py registers only the group a command line names).
COMMANDS = ("events", "info")


def register(sub: Any) -> None:
    """Add this module's commands to the subparsers ``sub``."""
    p = sub.add_parser("events", help="stream lifecycle events (live, or from --since / --since-seq)")
    p.add_argument("--filter", "-f", action="append", default=[], metavar="KEY=VALUE",
                   help="type=, event=, container=NAME|ID, image=, label=KEY[=VALUE], network=, volume=, daemon= "
                        "(repeatable: values of one key are alternatives, different keys must all match; "
                        "evaluated by the daemon)")
    p.add_argument("--since", default=None, help="replay from this time (unix seconds, a duration before now such as 10m or 1m30s, or RFC 3339)")
    p.add_argument("--since-seq", type=int, default=None, metavar="SEQ",
                   help="replay every event after this seq (a cursor: no duplicate, no gap into the live stream)")
    p.add_argument("--until", default=None, help="stop at this time")
    p.add_argument("--format", default="text", metavar="text|json|TEMPLATE",
                   help="one line of text, one JSON envelope, or a Go template over docker's event fields per event: "
                        "{{json .}}, {{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}} {{.Time}} ...")
    p.add_argument("--remote", action="append", default=[], metavar="tcp://HOST:PORT",
                   help="follow the daemon listening there (its --events-listen) instead of the local one; "
                        "repeat to merge several, each event tagged with its daemon")
    p.add_argument("--server-key", action="append", default=[], metavar="KEY|FILE",
                   help="the remote daemon's public key (`dockyard events-keys ls` there): once for all "
                        "--remote, or once per --remote in the same order; write --server-key=KEY, as a key may "
                        "begin with '-'")
    p.add_argument("--key", default=None, metavar="FILE",
                   help="this client's secret key file (`dockyard events-keys generate`)")
    p.set_defaults(handler=cmd_events, client=False)

    p = sub.add_parser("info", help="show the daemon's facts and counters (JSON; warnings on stderr)")
    p.set_defaults(handler=cmd_info)


#: The events channel, whole: a subscriber to fewer prefixes would see gaps in its seq.
EVENT_PREFIXES = tuple(f"{kind}." for kind in EVENT_TYPES)


def cmd_events(args: argparse.Namespace) -> int:
    from bus import filters

    try:
        wanted = filters.parse(args.filter)
    except filters.FilterError as error:
        raise UsageError(str(error)) from None
    if args.since_seq is not None and args.since_seq < 0:
        raise UsageError(f"--since-seq must be 0 or more, not {args.since_seq}")
    since, until = parse_time(args.since, "--since"), parse_time(args.until, "--until")
    event_printer(args.format)  # a bad template is refused before anything is asked
    if args.remote:
        from .remote import follow_remote

        return follow_remote(args, wanted, since, until)
    if args.server_key or args.key:
        raise UsageError("--server-key and --key go with --remote")
    if until is not None and since is None and args.since_seq is None:
        since = 0.0
    with client_for(args) as client:
        return local_events(args, client, wanted, since, until)


def local_events(args: argparse.Namespace, client: Any, wanted: dict[str, list[str]], since: float | None,
                 until: float | None) -> int:
    from bus import filters

    emit = event_printer(args.format)

    # The daemon filters (a filtered subscription, bus/filters.py): only the events wanted
    # cross the socket. Subscribed (and confirmed by the daemon) before the replay is asked
    # for: nothing falls between the two, and the seq of the replay's end tells which live
    # events are new.
    prefixes = [filters.topic_of(wanted)] if wanted else list(EVENT_PREFIXES)
    with client.subscribe(prefixes) as live:
        last_seq = 0
        if since is not None or args.since_seq is not None:
            replay = client.request(ops.EVENTS_REPLAY, {"since": since, "until": until,
                                                        "after_seq": args.since_seq, "filters": wanted or None})
            if replay["lost"]:
                print(f"dockyard events: {replay['lost']} events after seq {args.since_seq} are older than the "
                      f"daemon's journal (--events-journal) and were not replayed", file=sys.stderr, flush=True)
            for envelope in replay["events"]:
                emit(envelope)
            last_seq = replay["last_seq"]
        missed = 0
        while until is None or time.time() < until:
            live.timeout = None if until is None else max(0.0, until - time.time())
            envelope = next(live, None)
            if envelope is None or (until is not None and envelope.ts > until):
                break
            if live.filter_gaps.missed > missed:
                print(f"dockyard events: {live.filter_gaps.missed - missed} matching events were dropped before "
                      f"they reached this subscriber", file=sys.stderr, flush=True)
                missed = live.filter_gaps.missed
            if envelope.seq > last_seq:  # older ones were in the replay
                emit(envelope.as_map())
    return 0


def cmd_info(args: argparse.Namespace, client: Any) -> int:
    info = client.request(ops.DAEMON_INFO)
    print(json.dumps(info, indent=2, sort_keys=True))
    for warning in info.get("warnings") or ():  # as docker info: after the facts, on stderr
        print(f"WARNING: {warning}", file=sys.stderr)
    return 0
