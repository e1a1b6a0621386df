"""``dockyard build``: send a build context and a Dockerfile to the daemon, print its lines."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from supervisor import operations as ops

from .common import UsageError


#: The commands :func:`register` adds (parser.py registers only the group a command line names).
COMMANDS = ("build",)


def register(sub: Any) -> None:
    """Add this module's commands to the subparsers ``sub``."""
    p = sub.add_parser("build", help="build an image from a Dockerfile (docs/build.md)")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]", help="tag the image (repeatable)")
    p.add_argument("-f", "--file", default=None, metavar="PATH",
                   help="the Dockerfile (default CONTEXT/Dockerfile; `-` reads it from standard input)")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE", help="set a build argument")
    p.add_argument("--target", default=None, metavar="STAGE", help="build up to this stage")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="add a label to the image")
    p.add_argument("--no-cache", action="store_true", help="run every step, do not reuse the cache")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    p.add_argument("--iidfile", default=None, metavar="FILE", help="write the image id to FILE")
    p.add_argument("--network", default="bridge", choices=("none", "host", "bridge"), help="RUN's network")
    p.add_argument("--pull", action="store_true", help="always pull the base images from their registries")
    p.add_argument("--platform", default=None, metavar="linux/ARCH[/VARIANT]",
                   help="the platform of the image (default: the base image's; RUN needs this machine's)")
    p.add_argument("context", metavar="CONTEXT|-", help="a directory, or `-`: a tar of the context on standard input")
    p.set_defaults(handler=cmd_build)


def pairs(values: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, equals, rest = value.partition("=")
        if not key:
            raise UsageError(f"{flag} `{value}`: needs KEY=VALUE")
        if not equals:
            if key not in os.environ:
                continue    # docker: `--build-arg NAME` takes NAME from the environment, if set
            rest = os.environ[key]
        out[key] = rest
    return out


def context_tar(directory: str, output: Any, dockerfile_name: str) -> None:
    """Write ``directory`` as a tar, leaving out what ``.dockerignore`` excludes."""
    from supervisor.build.ignore import ignored, parse_dockerignore

    patterns: list[tuple[bool, str]] = []
    ignore_file = os.path.join(directory, ".dockerignore")
    if os.path.isfile(ignore_file):
        with open(ignore_file, encoding="utf-8") as text:
            patterns = parse_dockerignore(text.read())
    keep = {dockerfile_name, ".dockerignore"}
    reincludes = any(not exclude for exclude, _ in patterns)
    import tarfile  # only build needs it: kept off every other command's start-up

    with tarfile.open(fileobj=output, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for root, dirnames, filenames in os.walk(directory):
            relative_root = os.path.relpath(root, directory)
            dirnames.sort()
            for name in [*dirnames, *sorted(filenames)]:
                relative = name if relative_root == "." else f"{relative_root}/{name}"
                if relative not in keep and ignored(relative, patterns):
                    if name in dirnames and not reincludes:
                        dirnames.remove(name)
                    continue
                tar.add(os.path.join(root, name), arcname=relative, recursive=False)


def read_dockerfile(args: argparse.Namespace, tar_path: str) -> str:
    if args.file == "-":
        return sys.stdin.read()
    if args.context == "-":
        name = args.file or "Dockerfile"
        import tarfile

        with tarfile.open(tar_path) as tar:
            try:
                member = tar.extractfile(name.lstrip("./"))
            except KeyError:
                member = None
            if member is None:
                raise UsageError(f"cannot build: the context on standard input has no {name}")
            return member.read().decode("utf-8")
    path = args.file or os.path.join(args.context, "Dockerfile")
    try:
        with open(path, encoding="utf-8") as text:
            return text.read()
    except OSError as exc:
        raise UsageError(f"cannot build: the Dockerfile {path}: {exc.strerror}") from None


def cmd_build(args: argparse.Namespace, client: Any) -> int:
    if args.context == "-" and args.file == "-":
        raise UsageError("the context and the Dockerfile cannot both come from standard input")
    if args.context != "-" and not os.path.isdir(args.context):
        raise UsageError(f"cannot build: the context {args.context} is not a directory")
    import tempfile  # only build needs it: kept off every other command's start-up

    handle, tar_path = tempfile.mkstemp(prefix="dockyard-context-", suffix=".tar")
    try:
        with os.fdopen(handle, "wb") as output:
            if args.context == "-":
                while chunk := sys.stdin.buffer.read(1 << 20):
                    output.write(chunk)
            else:
                name = os.path.relpath(args.file, args.context) if args.file and args.file != "-" else "Dockerfile"
                context_tar(args.context, output, name)
        in_context = (args.file or "Dockerfile") if args.context == "-" else name
        request = {"context": tar_path, "dockerfile": read_dockerfile(args, tar_path), "tags": args.tag,
                   **({"dockerfile_path": in_context} if args.file != "-" else {}),
                   "build_args": pairs(args.build_arg, "--build-arg"), "labels": pairs(args.label, "--label"),
                   "no_cache": args.no_cache, "network": args.network, "pull": args.pull,
                   **({"target": args.target} if args.target else {}),
                   **({"platform": args.platform} if args.platform else {})}
        stream = client.stream(ops.IMAGE_BUILD, request, timeout=None)
        while True:
            try:
                payload = next(stream)
            except StopIteration as done:
                result = done.value
                break
            if not args.quiet and "stream" in payload:
                sys.stdout.write(payload["stream"])
                sys.stdout.flush()
    finally:
        os.unlink(tar_path)
    if args.quiet:
        print(f"sha256:{result['id']}")
    if args.iidfile:
        with open(args.iidfile, "w", encoding="utf-8") as output:
            output.write(f"sha256:{result['id']}")
    return 0
