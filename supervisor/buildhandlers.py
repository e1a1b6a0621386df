"""The bus operation ``image.build`` (supervisor/build/builder.py does the work; docs/build.md).

The client sends the path of a tar of the build context and the Dockerfile's text; the
daemon unpacks the context with the safe extractor into a private directory under the image
store's tmp/ (removed afterwards) and streams docker's lines as ``{stream: text}``.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from supervisor import operations as ops
from supervisor.api import Supervisor
from supervisor.errors import InvalidArgument


class BuildHandlers:
    def __init__(self, supervisor: Supervisor):
        self.sup = supervisor

    def table(self) -> dict[str, Callable[[Any, dict[str, Any]], Awaitable[Any]]]:
        return {ops.IMAGE_BUILD: self.image_build}

    async def image_build(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{context, dockerfile, dockerfile_path?, tags?, build_args?, target?, labels?, no_cache?, network?, pull?, platform?} ->
        {id, tags, steps, cached}; streams {stream: text} as it goes."""
        from supervisor.build.base import parse_platform
        from supervisor.build.builder import Builder, Options
        from supervisor.build.context import drop_excluded_build_files
        from supervisor.images.tarsafe import extract
        from supervisor.images.references import parse_reference

        if args["network"] not in ("none", "host", "bridge"):
            raise InvalidArgument(f"cannot build: --network `{args['network']}`: use none, host or bridge")
        for tag in args["tags"]:
            parse_reference(tag)    # a bad tag fails before any step runs
        options = Options(tags=list(args["tags"]), build_args=dict(args["build_args"]), target=args.get("target"),
                          labels=dict(args["labels"]), no_cache=args["no_cache"], network=args["network"],
                          pull=args["pull"],
                          platform=parse_platform(args["platform"]) if args.get("platform") else None)
        tar_path = Path(args["context"])
        context = Path(tempfile.mkdtemp(prefix="context-", dir=self.sup.images.tmp_dir))

        def unpack() -> None:
            try:
                with open(tar_path, "rb") as archive:
                    extract(archive, context)
            except OSError as exc:
                raise InvalidArgument(f"cannot build: the context {tar_path}: {exc.strerror}") from None
            drop_excluded_build_files(context, args.get("dockerfile_path"))

        async def say(text: str) -> None:
            await req.stream({"stream": text})

        try:
            await trio.to_thread.run_sync(unpack)
            builder = Builder(self.sup, context, args["dockerfile"], options, say)
            return await builder.build()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(functools.partial(shutil.rmtree, context, ignore_errors=True))
