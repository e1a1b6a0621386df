"""Commands on images: import, images, tag, rmi, history, save, load."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from bus.errors import RemoteError
from supervisor import operations as ops

from .common import fail, to_output
from .listing import IMAGE_HEADERS, IMAGE_TABLE, image_rows, output
from .output import human_ago, human_size, table


#: The commands :func:`register` adds (parser.py registers only the group a command line names).
COMMANDS = ("import", "images", "tag", "rmi", "history", "save", "load")


def register(sub: Any) -> None:
    """Add this module's commands to the subparsers ``sub``."""
    p = sub.add_parser("import", help="create an image from a root filesystem tarball")
    p.add_argument("source", metavar="TARBALL", help="a tar (plain, gz, bz2 or xz), or - for standard input")
    p.add_argument("reference", metavar="NAME[:TAG]")
    p.add_argument("-c", "--change", action="append", default=[], metavar="INSTRUCTION",
                   help="apply a Dockerfile instruction to the image config: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, VOLUME, "
                        "WORKDIR, USER")
    p.add_argument("-m", "--message", default="", help="the history comment (default: Imported from -)")
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser("images", help="list images")
    p.add_argument("repository", nargs="?", default=None, metavar="REPOSITORY[:TAG]",
                   help="only this repository's images (as --filter reference=REPOSITORY[:TAG]; globs too)")
    p.add_argument("-a", "--all", action="store_true", help="a build's intermediate images too (hidden by default)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
    p.add_argument("--no-trunc", action="store_true", help="print whole ids (sha256:...)")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="only the images that match (repeatable): reference=PATTERN (name[:tag], * and ? globs), "
                        "label=KEY[=VALUE], dangling=true|false, before=|since=IMAGE")
    p.add_argument("--format", default="", metavar="FORMAT",
                   help="table (default), json (one object a line) or a template: {{.ID}} {{.Repository}} "
                        "{{.Tag}} {{.Digest}} {{.CreatedSince}} {{.CreatedAt}} {{.Size}} {{.Labels}} "
                        "{{.Label \"KEY\"}} {{json .}}; 'table TEMPLATE' adds headers")
    p.set_defaults(handler=cmd_images)

    p = sub.add_parser("tag", help="give an image another name")
    p.add_argument("source", metavar="IMAGE", help="name[:tag] or id")
    p.add_argument("target", metavar="NAME[:TAG]")
    p.set_defaults(handler=cmd_tag)

    p = sub.add_parser("rmi", help="remove images (untag; delete once no tag is left)")
    p.add_argument("-f", "--force", action="store_true",
                   help="remove every tag of an image named by id; untag an image that stopped containers use")
    p.add_argument("--no-prune", action="store_true", help="keep the untagged parents (deleted by default, as docker)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(handler=cmd_rmi)

    p = sub.add_parser("history", help="show the layers and history of an image")
    p.add_argument("--no-trunc", action="store_true", help="do not shorten ids and commands")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
    p.add_argument("image", metavar="IMAGE")
    p.set_defaults(handler=cmd_history)

    p = sub.add_parser("save", help="write images to an archive (OCI layout and docker's manifest.json)")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write to FILE (default: standard output)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(handler=cmd_save)

    p = sub.add_parser("load", help="load images from a docker-archive or oci-archive (gzip or not)")
    p.add_argument("-i", "--input", default=None, metavar="FILE", help="read FILE (default: standard input)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the loaded names")
    p.set_defaults(handler=cmd_load)


def cmd_import(args: argparse.Namespace, client: Any) -> int:
    changes = {"changes": args.change} if args.change else {}
    if args.message:
        changes["message"] = args.message
    if args.source == "-":
        import tempfile  # only here: it costs the other commands 10 ms of start-up

        # The daemon reads files, not our stdin: spool it where the daemon can read it.
        with tempfile.NamedTemporaryFile(prefix="dockyard-import-", suffix=".tar") as spool:
            while chunk := sys.stdin.buffer.read(1 << 20):
                spool.write(chunk)
            spool.flush()
            result = client.request(ops.IMAGE_IMPORT, {"path": spool.name, "reference": args.reference, **changes}, timeout=None)
    else:
        result = client.request(ops.IMAGE_IMPORT, {"path": os.path.abspath(args.source), "reference": args.reference, **changes}, timeout=None)
    print(f"sha256:{result['id']}")
    return 0


def cmd_images(args: argparse.Namespace, client: Any) -> int:
    try:
        filters = [*args.filter, f"reference={args.repository}"] if args.repository else args.filter
        images = client.request(ops.IMAGE_LIST, {"filters": filters, "all": args.all})["images"]
    except RemoteError as error:
        fail(error.message)
    if args.quiet:
        for image in images:
            print(f"sha256:{image['id']}" if args.no_trunc else image["id"][:12])
        return 0
    rows = [row for image in images for row in image_rows(image, args.no_trunc)]
    output(args.format, rows, IMAGE_HEADERS, IMAGE_TABLE)
    return 0


def cmd_tag(args: argparse.Namespace, client: Any) -> int:
    client.request(ops.IMAGE_TAG, {"image": args.source, "reference": args.target})
    return 0


def cmd_rmi(args: argparse.Namespace, client: Any) -> int:
    status = 0
    for ref in args.images:
        try:
            report = client.request(ops.IMAGE_REMOVE, {"image": ref, "force": args.force, "no_prune": args.no_prune},
                                    timeout=None)["report"]
        except RemoteError as error:
            print(f"dockyard: {error.message}", file=sys.stderr)
            status = 1
            continue
        for line in report:
            for action, subject in line.items():
                print(f"{action}: {subject}")
    return status


def cmd_history(args: argparse.Namespace, client: Any) -> int:
    rows = client.request(ops.IMAGE_HISTORY, {"image": args.image})["history"]
    if args.quiet:
        for row in rows:
            print(row["id"] if args.no_trunc or row["id"] == "<missing>" else row["id"][:12])
        return 0
    lines = []
    for row in rows:
        created_by = row["created_by"]
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        image_id = row["id"] if args.no_trunc or row["id"] == "<missing>" else row["id"][:12]
        lines.append([image_id, human_ago(row["created"]), created_by, human_size(row["size"]), row["comment"]])
    print(table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], lines))
    return 0


def cmd_save(args: argparse.Namespace, client: Any) -> int:
    to_output(args.output, ops.IMAGE_SAVE, {"images": args.images}, client)
    return 0


def cmd_load(args: argparse.Namespace, client: Any) -> int:
    if args.input is not None:
        images = client.request(ops.IMAGE_LOAD, {"path": os.path.abspath(args.input)}, timeout=None)["images"]
    else:
        import tempfile

        with tempfile.NamedTemporaryFile(prefix="dockyard-load-", suffix=".tar") as spool:
            while chunk := sys.stdin.buffer.read(1 << 20):
                spool.write(chunk)
            spool.flush()
            images = client.request(ops.IMAGE_LOAD, {"path": spool.name}, timeout=None)["images"]
    for image in images:
        for tag in image["loaded_tags"] or [None]:  # what the archive named, as docker
            print(f"Loaded image: {tag}" if tag else f"Loaded image ID: sha256:{image['id']}")
    return 0
