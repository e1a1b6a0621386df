"""Commands on a container's files: commit, diff, export, cp."""

from __future__ import annotations

import argparse
import os
from typing import Any

from supervisor import operations as ops

from .common import UsageError, to_output, fail, warn_changed


#: The commands :func:`register` adds (parser.py registers only the group a command line names).
COMMANDS = ("commit", "diff", "export", "cp")


def register(sub: Any) -> None:
    """Add this module's commands to the subparsers ``sub``."""
    p = sub.add_parser("commit", help="create an image from a container's changes")
    p.add_argument("-m", "--message", default="", help="commit message")
    p.add_argument("-a", "--author", default="", help='author (e.g. "Jane <jane@example.com>")')
    p.add_argument("-c", "--change", action="append", default=[], metavar="INSTRUCTION",
                   help="apply a Dockerfile instruction to the image config: CMD, ENTRYPOINT, ENV, WORKDIR, USER")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("reference", nargs="?", default=None, metavar="REPO[:TAG]")
    p.set_defaults(handler=cmd_commit)

    p = sub.add_parser("diff", help="show the files a container added (A), changed (C) or deleted (D)")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(handler=cmd_diff)

    p = sub.add_parser("export", help="write a container's filesystem as a tar")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write to FILE (default: standard output)")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("cp", help="copy files between a container and the host",
                       description="dockyard cp CONTAINER:SRC DEST|-   or   dockyard cp SRC CONTAINER:DEST")
    p.add_argument("source", metavar="SRC")
    p.add_argument("dest", metavar="DEST")
    p.set_defaults(handler=cmd_cp)


def cmd_commit(args: argparse.Namespace, client: Any) -> int:
    result = warn_changed(client.request(ops.CONTAINER_COMMIT, {
        "container": args.container, "reference": args.reference, "comment": args.message,
        "author": args.author, "changes": args.change,
    }, timeout=None))
    print(f"sha256:{result['id']}")
    return 0


def cmd_diff(args: argparse.Namespace, client: Any) -> int:
    result = warn_changed(client.request(ops.CONTAINER_DIFF, {"container": args.container}, timeout=None))
    for kind, path in result["changes"]:
        print(f"{kind} {path}")
    return 0


def cmd_export(args: argparse.Namespace, client: Any) -> int:
    to_output(args.output, ops.CONTAINER_EXPORT, {"container": args.container}, client)
    return 0


def split_container_path(value: str) -> tuple[str, str] | None:
    """``CONTAINER:PATH`` to (container, path); None for a host path (absolute or ./...)."""
    if value.startswith(("/", ".")) or ":" not in value:
        return None
    container, _, path = value.partition(":")
    return container, path


def cmd_cp(args: argparse.Namespace, client: Any) -> int:
    source, dest = split_container_path(args.source), split_container_path(args.dest)
    if (source is None) == (dest is None):
        raise UsageError("cp: exactly one of SRC and DEST must be CONTAINER:PATH")
    if dest is not None:
        container, path = dest
        warn_changed(client.request(ops.CONTAINER_COPY_TO, {"container": container,
                                                          "source": os.path.abspath(args.source),
                                                          "dest": path or "/"}, timeout=None))
        return 0
    assert source is not None
    container, path = source
    import tempfile

    if args.dest == "-":
        to_output(None, ops.CONTAINER_COPY_FROM, {"container": container, "source": path or "/"}, client)
        return 0
    from supervisor.images.tarsafe import extract

    target = os.path.abspath(args.dest)
    with tempfile.TemporaryDirectory(prefix=".dockyard-cp-", dir=os.path.dirname(target)) as scratch:
        archive = os.path.join(scratch, "copy.tar")
        name = warn_changed(client.request(ops.CONTAINER_COPY_FROM, {"container": container, "source": path or "/",
                                                                   "path": archive}, timeout=None))["name"]
        try:
            with open(archive, "rb") as stream:
                if os.path.isdir(target):
                    extract(stream, target)
                else:
                    unpacked = os.path.join(scratch, "unpacked")
                    os.mkdir(unpacked)
                    extract(stream, unpacked)
                    os.replace(os.path.join(unpacked, name), target)
        except Exception as exc:  # ImageError or OSError: say which copy failed
            fail(f"cannot copy {args.source} to {args.dest}: {getattr(exc, 'message', None) or exc}")
    return 0
