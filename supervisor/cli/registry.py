"""Commands on registries: login, logout, pull, push."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from supervisor import operations as ops

from .common import UsageError


#: The commands :func:`register` adds (parser.py registers only the group a command line names).
COMMANDS = ("login", "logout", "pull", "push")


def register(sub: Any) -> None:
    """Add this module's commands to the subparsers ``sub``."""
    p = sub.add_parser("login", help="log in to a registry (the daemon checks and keeps the credentials)")
    p.add_argument("-u", "--username", default=None)
    p.add_argument("-p", "--password", default=None, help="the password (insecure: prefer --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("server", nargs="?", default="docker.io", metavar="REGISTRY", help="default docker.io")
    p.set_defaults(handler=cmd_login)

    p = sub.add_parser("logout", help="log out from a registry (forget its credentials)")
    p.add_argument("server", nargs="?", default="docker.io", metavar="REGISTRY", help="default docker.io")
    p.set_defaults(handler=cmd_logout)

    p = sub.add_parser("pull", help="download an image from a registry")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the reference, no progress")
    p.add_argument("--platform", default=None, metavar="OS/ARCH[/VARIANT]",
                   help="the image of this platform from a multi-platform index (default: this machine's)")
    p.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")
    p.set_defaults(handler=cmd_pull)

    p = sub.add_parser("push", help="upload an image to a registry")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the digest line, no progress")
    p.add_argument("--compression-format", choices=("gzip", "zstd"), default=None,
                   help="compress layers with gzip (the default: every registry and client takes it) or zstd "
                        "(smaller, faster to unpack; podman, skopeo, containerd and recent docker pull it); given, every "
                        "layer is sent in that format, also one the registry has in the other")
    p.add_argument("reference", metavar="NAME[:TAG]")
    p.set_defaults(handler=cmd_push)


def cmd_login(args: argparse.Namespace, client: Any) -> int:
    username, password = args.username, args.password
    if args.password_stdin:
        if password is not None:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        if username is None:
            raise UsageError("--password-stdin needs a username (-u USER)")
        password = sys.stdin.readline().rstrip("\r\n")
    elif password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    if username is None:
        if not sys.stdin.isatty():
            raise UsageError("a username is needed: -u USER (standard input is not a terminal to ask on)")
        username = input("Username: ").strip()
    if password is None:
        if not sys.stdin.isatty():
            raise UsageError("a password is needed: --password-stdin (standard input is not a terminal to ask on)")
        import getpass

        password = getpass.getpass("Password: ")
    if not username or not password:
        raise UsageError("the username and the password must not be empty")
    result = client.request(ops.IMAGE_LOGIN, {"registry": args.server, "username": username, "password": password},
                            timeout=120)
    print(result["status"])
    return 0


def transfer_with_progress(client: Any, op: str, request: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Send a pull or push and draw its streamed progress on stdout if it is a terminal."""
    from supervisor.registry.progress import Progress, TerminalProgress

    view = TerminalProgress(sys.stdout, force=False if quiet else None)
    stream = client.stream(op, request, timeout=None)
    while True:
        try:
            payload = next(stream)
        except StopIteration as done:
            return done.value
        if "progress" in payload:
            view(Progress.from_json(payload["progress"]))


def cmd_pull(args: argparse.Namespace, client: Any) -> int:
    request = {"reference": args.reference, **({"platform": args.platform} if args.platform else {})}
    result = transfer_with_progress(client, ops.IMAGE_PULL, request, args.quiet)
    if not args.quiet:
        print(f"Digest: {result['digest']}")
        status = "Downloaded newer image" if result["fetched"] else "Image is up to date"
        print(f"Status: {status} for {result['reference']}")
    print(result["reference"])
    return 0


def cmd_push(args: argparse.Namespace, client: Any) -> int:
    request = {"reference": args.reference,
               **({"compression": args.compression_format} if args.compression_format else {})}
    result = transfer_with_progress(client, ops.IMAGE_PUSH, request, args.quiet)
    tag = result["reference"].rpartition(":")[2] if "@" not in result["reference"] else "digest"
    print(f"{tag}: digest: {result['digest']} size: {result['size']}")
    return 0


def cmd_logout(args: argparse.Namespace, client: Any) -> int:
    result = client.request(ops.IMAGE_LOGOUT, {"registry": args.server})
    if result["removed"]:
        print(f"Removing login credentials for {result['registry']}")
    else:
        print(f"Not logged in to {result['registry']}")
    return 0
