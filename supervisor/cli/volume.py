"""Commands on volumes: ``volume create|ls|inspect|rm|prune`` (docs/volumes.md)."""

from __future__ import annotations

import argparse
from typing import Any

from bus.errors import RemoteError
from supervisor import operations as ops

from .common import fail, for_each, inspect_each, key_values
from .listing import VOLUME_HEADERS, VOLUME_TABLE, output, volume_row


#: The commands :func:`register` adds (parser.py registers only the group a command line names).
COMMANDS = ("volume",)


def register(sub: Any) -> None:
    """Add ``volume`` and its subcommands to the subparsers ``sub``."""
    volume = sub.add_parser("volume", help="manage volumes (create, ls, inspect, rm, prune)")
    commands = volume.add_subparsers(dest="volume_cmd", metavar="COMMAND", required=True)

    p = commands.add_parser("create", help="create a volume (a directory under the daemon's root)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="set a label (repeatable)")
    p.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a local driver option, as docker's: type=TYPE, device=DEVICE, o=MOUNT,OPTIONS "
                        "(type=tmpfs device=tmpfs o=size=100m; type=none o=bind device=/host/dir); "
                        "mounted while a container uses it (docs/volumes.md)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(handler=cmd_create)

    p = commands.add_parser("ls", aliases=["list"], help="list volumes")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="dangling=true|false, name=PATTERN, label=KEY[=VALUE] (repeatable: one key's values "
                        "ORed, different keys and every label= ANDed)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the names")
    p.add_argument("--format", default="", metavar="FORMAT",
                   help="table (default), json (one object a line) or a template: {{.Name}} {{.Driver}} {{.Scope}} "
                        "{{.Mountpoint}} {{.Labels}} {{.Label \"KEY\"}} {{json .}}; 'table TEMPLATE' adds headers")
    p.set_defaults(handler=cmd_ls)

    p = commands.add_parser("inspect", help="show volumes as JSON, in docker's shape")
    p.add_argument("names", nargs="+", metavar="VOLUME")
    p.set_defaults(handler=cmd_inspect)

    p = commands.add_parser("rm", aliases=["remove"], help="remove volumes no container uses")
    p.add_argument("-f", "--force", action="store_true", help="a missing volume is no error")
    p.add_argument("names", nargs="+", metavar="VOLUME")
    p.set_defaults(handler=cmd_rm)

    p = commands.add_parser("prune", help="remove unused anonymous volumes")
    p.add_argument("-a", "--all", action="store_true", help="unused named volumes too")
    p.add_argument("-f", "--force", action="store_true", help="do not ask (dockyard never asks)")
    p.set_defaults(handler=cmd_prune)


def cmd_create(args: argparse.Namespace, client: Any) -> int:
    request = {"name": args.name, "labels": key_values(args.label, "--label", bare=True),
               "options": key_values(args.opt, "--opt", bare=True)}
    print(client.request(ops.VOLUME_CREATE, request)["name"])
    return 0


def cmd_ls(args: argparse.Namespace, client: Any) -> int:
    try:
        volumes = client.request(ops.VOLUME_LIST, {"filters": args.filter})["volumes"]
    except RemoteError as error:
        fail(error.message)
    if args.quiet:
        for volume in volumes:
            print(volume["Name"])
        return 0
    output(args.format, [volume_row(volume) for volume in volumes], VOLUME_HEADERS, VOLUME_TABLE)
    return 0


def cmd_inspect(args: argparse.Namespace, client: Any) -> int:
    return inspect_each(client, ops.VOLUME_INSPECT, "name", args.names)


def cmd_rm(args: argparse.Namespace, client: Any) -> int:
    return for_each(args, client, ops.VOLUME_REMOVE, {"force": args.force}, names=args.names, key="name")


def cmd_prune(args: argparse.Namespace, client: Any) -> int:
    removed = client.request(ops.VOLUME_PRUNE, {"all": args.all}, timeout=None)["removed"]
    if removed:
        print("Deleted Volumes:")
        for name in removed:
            print(name)
        print()
    print(f"Total reclaimed volumes: {len(removed)}")
    return 0
