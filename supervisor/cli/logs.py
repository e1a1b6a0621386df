"""`dockyard logs`: a container's stored output, paged (and followed) over `logs.read`."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Any

from supervisor import operations as ops

from .common import UsageError, fail, parse_time
from .output import timestamped


#: The commands :func:`register` adds (parser.py registers only the group a command line names).
COMMANDS = ("logs",)


def register(sub: Any) -> None:
    """Add this module's commands to the subparsers ``sub``."""
    p = sub.add_parser("logs", help="show a container's output (stdout to stdout, stderr to stderr)",
                       description="Show a container's stored output. Output that no log collector has "
                                   "stored is not shown: it is reported on stderr and the exit code is 1.")
    p.add_argument("-f", "--follow", action="store_true", help="keep following new output until the container ends")
    p.add_argument("--since", default=None, help="only output since this time (unix seconds, a duration before now such as 10m or 1m30s, or RFC 3339)")
    p.add_argument("--until", default=None, help="only output before this time (same forms)")
    p.add_argument("-n", "--tail", default="all", metavar="N", help="only the last N lines (default all)")
    p.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with the time it was read")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(handler=cmd_logs)


#: How long a following `logs.read` may wait at the daemon (it answers sooner when output comes).
LOGS_WAIT = 10.0


def unstored_message(container: str, unstored: dict[str, Any]) -> str:
    """What `dockyard logs` says, on stderr, about output no log collector has stored."""
    since = ""
    if unstored.get("since") is not None:
        moment = datetime.fromtimestamp(unstored["since"], timezone.utc)
        since = f", since {moment.strftime('%Y-%m-%dT%H:%M:%S')}Z"
    why = ("the log collector has not stored it" if unstored.get("collector")
           else "no log collector is running (`dockyard info` says more; start one with the daemon's "
                "logcollector worker or `dockyard worker logcollector`)")
    held = "; the container is blocked writing until it is stored" if unstored.get("blocked") else ""
    return (f"{unstored['bytes']} bytes ({unstored['records']} records) of container {container}'s output "
            f"are waiting for a log collector{since}, not stored and not shown: {why}{held}")


def cmd_logs(args: argparse.Namespace, client: Any) -> int:
    if args.tail in ("all", "-1"):
        tail = None
    elif args.tail.isdigit():
        tail = int(args.tail)
    else:
        raise UsageError(f"invalid --tail {args.tail!r}: use a number of lines or all")
    request = {"container": args.container, "since": parse_time(args.since, "--since"),
               "until": parse_time(args.until, "--until"), "tail": tail, "follow": args.follow, "wait": LOGS_WAIT}
    targets = {1: sys.stdout.buffer, 2: sys.stderr.buffer}
    at_line_start = {1: True, 2: True}
    previous = None
    pending = client.send_request(ops.LOGS_READ, request, timeout=LOGS_WAIT + 30)
    unstored = None  # what the container wrote before this command and no collector stored
    first = True
    while True:
        result = pending.result()
        if first:
            first = False
            unstored = result.get("unstored")
            if unstored and args.follow:  # said now; following shows it if a collector comes
                print(f"dockyard: warning: {unstored_message(args.container, unstored)}", file=sys.stderr,
                      flush=True)
        if not result["done"]:
            # The next page is asked for before this one is written: the daemon reads it
            # while the CLI writes (the cursor is all the next request needs).
            request["cursor"] = result["cursor"]
            request["tail"] = None
            pending = client.send_request(ops.LOGS_READ, request, timeout=LOGS_WAIT + 30)
        for stream, ts, data, flags in result["records"]:
            stream = 2 if flags & 2 else stream  # a marker of lost output goes to stderr
            target = targets[stream]
            if previous is not None and previous is not target:
                previous.flush()  # keeps stdout and stderr in their original order
            previous = target
            if args.timestamps:
                data, at_line_start[stream] = timestamped(data, ts, at_line_start[stream])
            target.write(data)
        if previous is not None:
            previous.flush()
        if result["done"]:
            if args.follow:
                unstored = result.get("unstored") or None
            if unstored:
                fail(unstored_message(args.container, unstored))
            return 0
