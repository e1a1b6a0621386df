"""Commands on networks: ``network create|ls|inspect|rm|prune|connect|disconnect`` (docs/network.md)."""

from __future__ import annotations

import argparse
from typing import Any

from supervisor import operations as ops

from .common import UsageError, for_each, inspect_each, key_values
from .output import table


#: The commands :func:`register` adds (parser.py registers only the group a command line names).
COMMANDS = ("network",)


def register(sub: Any) -> None:
    """Add ``network`` and its subcommands to the subparsers ``sub``."""
    network = sub.add_parser("network", help="manage networks (create, ls, inspect, rm, prune, connect, disconnect)")
    commands = network.add_subparsers(dest="network_cmd", metavar="COMMAND", required=True)

    p = commands.add_parser("create", help="create a network: a bridge of its own where containers find each "
                                           "other by name")
    p.add_argument("-d", "--driver", default="bridge", choices=["bridge"], help="only bridge")
    p.add_argument("--subnet", action="append", default=[], metavar="CIDR",
                   help="its IPv4 subnet (default: a free /16 of 172.18-30, then a /20 of 192.168); with "
                        "--ipv6, an IPv6 one too (repeat the flag)")
    p.add_argument("--gateway", action="append", default=[], metavar="IP",
                   help="the bridge's address in the subnet (default: the first)")
    p.add_argument("--ip-range", default="", metavar="CIDR", help="lease container addresses from this part only")
    p.add_argument("--internal", action="store_true", help="no way out: no default route, no masquerade")
    p.add_argument("--ipv6", action="store_true", help="dual stack: an IPv6 subnet too (default: a random fd00::/8 /64)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="set a label (repeatable)")
    p.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a driver option: com.docker.network.bridge.name=NAME names its bridge (others are kept)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(handler=cmd_create)

    p = commands.add_parser("ls", aliases=["list"], help="list networks")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="name=PART, id=PREFIX, label=KEY[=VALUE], driver=bridge, type=custom|builtin, "
                        "dangling=true|false (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
    p.add_argument("--no-trunc", action="store_true", help="full ids")
    p.set_defaults(handler=cmd_ls)

    p = commands.add_parser("inspect", help="show networks as JSON, in docker's shape")
    p.add_argument("names", nargs="+", metavar="NETWORK")
    p.set_defaults(handler=cmd_inspect)

    p = commands.add_parser("rm", aliases=["remove"], help="remove networks no running container is on")
    p.add_argument("names", nargs="+", metavar="NETWORK")
    p.set_defaults(handler=cmd_rm)

    p = commands.add_parser("prune", help="remove the user-defined networks no running container is on")
    p.add_argument("-f", "--force", action="store_true", help="do not ask (dockyard never asks)")
    p.set_defaults(handler=cmd_prune)

    p = commands.add_parser("connect", help="put a container on a network (live if it runs, and at its next starts)")
    p.add_argument("--alias", action="append", default=[], metavar="ALIAS", help="another name on that network")
    p.add_argument("--ip", default="", metavar="IPv4", help="its address on that network")
    p.add_argument("--ip6", default="", metavar="IPv6", help="its IPv6 address on that network")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(handler=cmd_connect)

    p = commands.add_parser("disconnect", help="take a container off a network")
    p.add_argument("-f", "--force", action="store_true", help="not connected is no error")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(handler=cmd_disconnect)


def cmd_create(args: argparse.Namespace, client: Any) -> int:
    v4 = [subnet for subnet in args.subnet if ":" not in subnet]
    v6 = [subnet for subnet in args.subnet if ":" in subnet]
    gateways4 = [gateway for gateway in args.gateway if ":" not in gateway]
    gateways6 = [gateway for gateway in args.gateway if ":" in gateway]
    if len(v4) > 1 or len(v6) > 1 or len(gateways4) > 1 or len(gateways6) > 1:
        raise UsageError("network create: at most one --subnet and --gateway of each family")
    if v6 and not args.ipv6:
        raise UsageError(f"network create: the IPv6 --subnet {v6[0]} needs --ipv6")
    request = {"name": args.name, "subnet": v4[0] if v4 else "", "gateway": gateways4[0] if gateways4 else "",
               "ip_range": args.ip_range, "internal": args.internal, "ipv6": args.ipv6,
               "subnet6": v6[0] if v6 else "", "gateway6": gateways6[0] if gateways6 else "",
               "labels": key_values(args.label, "--label"), "options": key_values(args.opt, "--opt")}
    print(client.request(ops.NETWORK_CREATE, request)["id"])
    return 0


def cmd_ls(args: argparse.Namespace, client: Any) -> int:
    networks = client.request(ops.NETWORK_LIST, {"filters": args.filter})["networks"]
    width = 64 if args.no_trunc else 12
    if args.quiet:
        for network in networks:
            print(network["Id"][:width])
        return 0
    print(table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
                [[n["Id"][:width], n["Name"], n["Driver"], n["Scope"]] for n in networks]))
    return 0


def cmd_inspect(args: argparse.Namespace, client: Any) -> int:
    return inspect_each(client, ops.NETWORK_INSPECT, "network", args.names)


def cmd_rm(args: argparse.Namespace, client: Any) -> int:
    return for_each(args, client, ops.NETWORK_REMOVE, {}, names=args.names, key="network")


def cmd_prune(args: argparse.Namespace, client: Any) -> int:
    removed = client.request(ops.NETWORK_PRUNE, {}, timeout=None)["removed"]
    if removed:
        print("Deleted Networks:")
        for name in removed:
            print(name)
    return 0


def cmd_connect(args: argparse.Namespace, client: Any) -> int:
    client.request(ops.NETWORK_CONNECT, {"network": args.network, "container": args.container,
                                         "aliases": args.alias, "ipv4": args.ip, "ipv6": args.ip6}, timeout=None)
    return 0


def cmd_disconnect(args: argparse.Namespace, client: Any) -> int:
    client.request(ops.NETWORK_DISCONNECT, {"network": args.network, "container": args.container,
                                            "force": args.force}, timeout=None)
    return 0
