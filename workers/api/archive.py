"""``/containers/{id}/archive``: GET (a tar of a path), HEAD (its stat only) and PUT (a tar
extracted into a directory), over ``container.copy_from`` and ``container.copy_to``.

The stat (``X-Docker-Container-Path-Stat``: base64 of ``{name, size, mode, mtime,
linkTarget}``, ``mode`` in Go's os.FileMode bits) is read from the tar's first member. A PUT's
tar is extracted in the worker's scratch directory by the image store's safe extractor
(``supervisor/images/tarsafe.py``: no absolute paths, nothing through a link, no devices,
the owners the worker's), then each top member is copied in.
"""

from __future__ import annotations

import base64
import json
import os
import stat as stat_module
import tarfile
from datetime import datetime, timezone
from typing import Any

import trio

from supervisor import operations as ops
from supervisor.errors import ImageError
from supervisor.images import tarsafe
from workers.api.containers import file_chunks
from workers.api.http import ApiError, Empty, Request, Response, Streamed
from workers.api.router import Router
from workers.api.service import Api

#: Go's os.FileMode type bits.
GO_DIR, GO_SYMLINK, GO_DEVICE, GO_PIPE, GO_SOCKET, GO_CHAR = 1 << 31, 1 << 27, 1 << 26, 1 << 25, 1 << 24, 1 << 21


def go_mode(member: tarfile.TarInfo) -> int:
    mode = member.mode & 0o7777
    if member.isdir():
        return mode | GO_DIR
    if member.issym():
        return mode | GO_SYMLINK
    if member.ischr():
        return mode | GO_DEVICE | GO_CHAR
    if member.isblk():
        return mode | GO_DEVICE
    if member.isfifo():
        return mode | GO_PIPE
    return mode


def path_stat(tar_path: Any, name: str) -> dict[str, Any]:
    """The stat docker sends for a copied path: from the first member of the tar."""
    with tarfile.open(tar_path) as archive:
        member = archive.next()
    if member is None:
        raise ApiError(404, f"Could not find the file {name} in container")
    mtime = datetime.fromtimestamp(member.mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"name": os.path.basename(member.name.rstrip("/")) or name, "size": member.size,
            "mode": go_mode(member), "mtime": mtime, "linkTarget": member.linkname}


def stat_header(stat: dict[str, Any]) -> tuple[str, str]:
    return "X-Docker-Container-Path-Stat", base64.b64encode(json.dumps(stat).encode()).decode()


def extract(tar_path: Any, directory: Any) -> list[str]:
    """Extract a client's tar safely (the image store's extractor: nothing written outside
    ``directory`` nor through a link, devices skipped, the owners the worker's, as docker
    cp's); returns its top names. Not tarfile's ``data`` filter: Debian 12's Python 3.11.2
    predates it (3.11.4).

    Raises:
        ImageError: a hostile, corrupt or truncated archive (the member and the reason).
    """
    with open(tar_path, "rb") as file:
        tarsafe.extract(file, directory, keep_owners=False)
    return sorted(os.listdir(directory))


def register(router: Router, api: Api) -> None:
    async def copy_out(request: Request, id: str) -> tuple[Any, dict[str, Any]]:
        path = request.arg("path")
        if not path:
            raise ApiError(400, "path is required")
        tar_path = api.scratch_path(".tar")
        try:
            await api.call(ops.CONTAINER_COPY_FROM, {"container": id, "source": path, "path": str(tar_path)},
                           what="container", timeout=3600)
            stat = await trio.to_thread.run_sync(path_stat, tar_path, os.path.basename(path.rstrip("/")))
        except ApiError as error:
            api.discard(tar_path)
            if error.status == 404 or "no such file" in error.message:
                raise ApiError(404, f"Could not find the file {path} in container {id}") from None
            raise
        except BaseException:
            api.discard(tar_path)
            raise
        return tar_path, stat

    async def head(request: Request, id: str) -> Response:
        tar_path, stat = await copy_out(request, id)
        api.discard(tar_path)
        return Empty(200, headers=[stat_header(stat)])

    async def get(request: Request, id: str) -> Response:
        tar_path, stat = await copy_out(request, id)
        return Streamed(file_chunks(api, tar_path), content_type="application/x-tar", headers=[stat_header(stat)])

    async def put(request: Request, id: str) -> Response:
        path = request.arg("path")
        if not path:
            raise ApiError(400, "path is required")
        document = await api.inspect(id)
        tar_path = api.scratch_path(".tar")
        directory = api.scratch_path(".d")
        try:
            file = await trio.open_file(tar_path, "wb")
            async with file:
                async for chunk in request.body_chunks():
                    await file.write(chunk)
            directory.mkdir(mode=0o700)
            try:
                names = await trio.to_thread.run_sync(extract, tar_path, directory)
            except ImageError as exc:
                raise ApiError(400, f"the archive could not be extracted: {exc.message}") from None
            except OSError as exc:
                raise ApiError(400, f"the archive could not be extracted: {exc}") from None
            for name in names:
                source = directory / name
                if stat_module.S_ISLNK(os.lstat(source).st_mode) and not os.path.lexists(source):
                    continue
                try:
                    await api.call(ops.CONTAINER_COPY_TO, {"container": document["Id"], "source": str(source),
                                                           "dest": path.rstrip("/") + "/"}, timeout=3600)
                except ApiError as error:
                    if "not a directory" in error.message or "no such" in error.message.lower():
                        raise ApiError(404 if "no such" in error.message.lower() else 400,
                                       f"Could not find the file {path} in container {id}"
                                       if "no such" in error.message.lower() else error.message) from None
                    raise
        finally:
            api.discard(tar_path)
            api.discard(directory)
        return Empty(200)

    router.add("HEAD", "/containers/{id}/archive", head)
    router.add("GET", "/containers/{id}/archive", get)
    router.add("PUT", "/containers/{id}/archive", put)
