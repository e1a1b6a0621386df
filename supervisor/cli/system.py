"""Commands on the daemon as a whole: events (replayed and live) and info."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from supervisor import EVENT_TYPES
from supervisor import operations as ops

from .common import UsageError, parse_time
from .output import format_event


def register(sub: Any) -> None:
    """Add this module's commands to the subparsers ``sub``."""
    p = sub.add_parser("events", help="stream lifecycle events (live, or from --since)")
    p.add_argument("--filter", "-f", action="append", default=[], metavar="KEY=VALUE",
                   help="container=NAME|ID, event=ACTION, image=NAME, type=container|image|network|volume|daemon|worker "
                        "(repeatable: values of one key are alternatives)")
    p.add_argument("--since", default=None, help="replay from this time (unix seconds, a duration before now such as 10m or 1m30s, or RFC 3339)")
    p.add_argument("--until", default=None, help="stop at this time")
    p.add_argument("--format", choices=["text", "json"], default="text", help="one line of text, or one JSON envelope, per event")
    p.set_defaults(handler=cmd_events)

    p = sub.add_parser("info", help="show the daemon's facts and counters (JSON; warnings on stderr)")
    p.set_defaults(handler=cmd_info)


#: The events channel, whole: a subscriber to fewer prefixes would see gaps in its seq.
EVENT_PREFIXES = tuple(f"{kind}." for kind in EVENT_TYPES)


def event_filter(filters: list[str]):
    wanted: dict[str, set[str]] = {}
    for item in filters:
        key, eq, value = item.partition("=")
        if not eq or key not in {"container", "event", "type", "image"}:
            raise UsageError(f"invalid filter {item!r}: use container=, event=, type= or image=")
        wanted.setdefault(key, set()).add(value)

    def accept(envelope: dict[str, Any]) -> bool:
        data = envelope.get("data") or {}
        attributes = data.get("attributes") or {}
        if "type" in wanted and data.get("type") not in wanted["type"]:
            return False
        if "event" in wanted and data.get("action") not in wanted["event"]:
            return False
        if "image" in wanted and attributes.get("image") not in wanted["image"]:
            return False
        if "container" in wanted:
            if data.get("type") != "container":
                return False
            actor = data.get("id", "")
            if not any(v == attributes.get("name") or (v and actor.startswith(v)) for v in wanted["container"]):
                return False
        return True

    return accept


def cmd_events(args: argparse.Namespace, client: Any) -> int:
    accept = event_filter(args.filter)
    since, until = parse_time(args.since, "--since"), parse_time(args.until, "--until")
    if until is not None and since is None:
        since = 0.0

    def emit(envelope: dict[str, Any]) -> None:
        if accept(envelope):
            print(json.dumps(envelope, default=repr) if args.format == "json" else format_event(envelope), flush=True)

    # Subscribed (and confirmed by the daemon) before the replay is asked for: nothing falls
    # between the two, and the seq of the replay's end tells which live events are new.
    with client.subscribe(list(EVENT_PREFIXES)) as live:
        last_seq = 0
        if since is not None:
            replay = client.request(ops.EVENTS_REPLAY, {"since": since, "until": until})
            for envelope in replay["events"]:
                emit(envelope)
            last_seq = replay["last_seq"]
        while until is None or time.time() < until:
            live.timeout = None if until is None else max(0.0, until - time.time())
            envelope = next(live, None)
            if envelope is None or (until is not None and envelope.ts > until):
                break
            if envelope.seq > last_seq:  # older ones were in the replay
                emit(envelope.as_map())
    return 0


def cmd_info(args: argparse.Namespace, client: Any) -> int:
    info = client.request(ops.DAEMON_INFO)
    print(json.dumps(info, indent=2, sort_keys=True))
    for warning in info.get("warnings") or ():  # as docker info: after the facts, on stderr
        print(f"WARNING: {warning}", file=sys.stderr)
    return 0
