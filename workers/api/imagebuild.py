"""``POST /build``: docker's classic builder API over dockyard's ``image.build`` (docs/build.md).

Theory of operation: the body is a tar of the build context (plain or compressed; docker-py
gzips it with ``encoding=gzip``). It is streamed to a file of the worker's scratch directory,
the Dockerfile named by ``dockerfile`` is read out of it, and the daemon is asked for
``image.build`` with that file's path, exactly as ``dockyard build`` does with its own tar
(supervisor/cli/build.py); the daemon unpacks it with the safe extractor. The builder's
``{stream: text}`` messages become docker's JSON lines. As docker's daemon does, a failure
before the first line is an HTTP error (400 for a bad parameter or Dockerfile, 404 for a
missing base image...); once a line is out, the status is sent and a failure is the last
line, ``{"errorDetail": {"message": m}, "error": m}``. Before ``Successfully built`` comes
``{"aux": {"ID": "sha256:..."}}``, which docker-py and the CLI's ``--iidfile`` read.

Query parameters dockyard does not use (``rm``, ``forcerm``, ``shmsize``, ``memory``,
``cpu*``, ``cachefrom``, ``version``...) are accepted and ignored: the classic CLI sends
them on every build, mostly at their zero values.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import AsyncIterator
from typing import Any

import trio

from bus.errors import BusError, RemoteError
from supervisor import operations as ops
from workers.api.http import ApiError, Json, Request, Response, Streamed
from workers.api.router import Router
from workers.api.service import Api, api_error

#: ``networkmode`` values -> the network RUN's containers get (docker's ``default`` is bridge).
NETWORK_MODES = {"": "bridge", "default": "bridge", "bridge": "bridge", "host": "host", "none": "none"}
#: The longest Dockerfile read out of the context (docker's own limit is far above any real one).
DOCKERFILE_LIMIT = 4 << 20


def _string_map(request: Request, name: str) -> dict[str, str]:
    """``buildargs``/``labels``: a JSON object of strings; a null value (docker: "take it from
    the environment", which the daemon does not have) leaves the key out."""
    value = request.json_arg(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"cannot build: {name}: expected a JSON object of strings, got {json.dumps(value)[:80]}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if item is None:
            continue
        if not isinstance(item, str):
            raise ApiError(400, f"cannot build: {name}: the value of {key!r} is not a string")
        out[key] = item
    return out


def build_arguments(request: Request) -> dict[str, Any]:
    """The query of ``POST /build`` as ``image.build``'s arguments (without ``context`` and
    ``dockerfile``, which come from the body).

    Raises:
        ApiError(400): a parameter dockyard cannot honour or cannot read.
    """
    if request.arg("remote"):
        raise ApiError(400, "cannot build: remote contexts (a git or tarball URL) are not supported by dockyard: "
                            "send the context as the request body")
    mode = request.arg("networkmode") or ""
    if mode not in NETWORK_MODES:
        raise ApiError(400, f"cannot build: networkmode `{mode}`: use default, bridge, host or none")
    if request.arg("isolation") not in (None, "", "default"):
        raise ApiError(400, f"cannot build: isolation `{request.arg('isolation')}` is not supported")
    if request.arg("extrahosts") not in (None, "", "null", "[]"):
        raise ApiError(400, "cannot build: extrahosts: extra /etc/hosts entries for RUN are not supported by "
                            "dockyard's builder")
    if request.flag("squash"):
        raise ApiError(400, "cannot build: squash is not supported by dockyard's builder")
    args: dict[str, Any] = {
        "tags": [tag for tag in request.query.get("t") or [] if tag],
        "build_args": _string_map(request, "buildargs"), "labels": _string_map(request, "labels"),
        "no_cache": request.flag("nocache"), "network": NETWORK_MODES[mode],
        "pull": request.flag("pull"),
    }
    if request.arg("target"):
        args["target"] = request.arg("target")
    if request.arg("platform"):
        args["platform"] = request.arg("platform")
    return args


def dockerfile_name(request: Request) -> str:
    """The Dockerfile's path inside the context (``dockerfile``, default ``Dockerfile``)."""
    given = request.query.get("dockerfile") or [""]
    name = given[0] or "Dockerfile"  # docker reads the first (docker-py may add a second: the text)
    while name.startswith("./"):
        name = name[2:]
    if not name or name.startswith("/") or ".." in name.split("/"):
        raise ApiError(400, f"cannot build: the Dockerfile `{given[0]}` must be a path inside the "
                            "context")
    return name


def read_dockerfile(tar_path: str, name: str) -> str:
    """The Dockerfile ``name`` out of the context tar at ``tar_path`` (plain or compressed).

    Raises:
        ApiError(400): the body is not a tar, or holds no such file (docker's message).
    """
    try:
        with tarfile.open(tar_path, mode="r:*") as tar:
            member = None
            for candidate in tar:
                if candidate.name.removeprefix("./").rstrip("/") == name:
                    member = candidate
            if member is None or not member.isfile():
                raise ApiError(400, f"Cannot locate specified Dockerfile: {name}")
            if member.size > DOCKERFILE_LIMIT:
                raise ApiError(400, f"cannot build: the Dockerfile {name} is larger than {DOCKERFILE_LIMIT} bytes")
            data = tar.extractfile(member)
            text = data.read() if data is not None else b""
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ApiError(400, f"cannot build: the context is not a tar archive: {exc}") from None
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, f"cannot build: the Dockerfile {name} is not UTF-8 text") from None


def json_line(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode() + b"\r\n"


class BuildLines:
    """The builder's messages as docker's lines (sans-IO: messages in, bytes out).

    The builder's closing lines (``Successfully built``, ``Successfully tagged``) are held
    until the result names the full image id, so that ``aux`` comes first, as docker sends
    it. With ``quiet`` only ``aux`` and the id are sent (``docker build -q`` prints that id).
    """

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.held: list[str] = []

    def message(self, payload: dict[str, Any]) -> bytes:
        text = payload.get("stream")
        if not isinstance(text, str):
            return b""
        if self.held or text.startswith("Successfully built "):
            self.held.append(text)
            return b""
        return b"" if self.quiet else json_line({"stream": text})

    def result(self, result: dict[str, Any]) -> bytes:
        image_id = f"sha256:{result['id']}"
        lines = [json_line({"aux": {"ID": image_id}})]
        if self.quiet:
            lines.append(json_line({"stream": f"{image_id}\n"}))
        else:
            lines += [json_line({"stream": text}) for text in self.held]
        return b"".join(lines)

    def failure(self, message: str) -> bytes:
        held = b"" if self.quiet else b"".join(json_line({"stream": text}) for text in self.held)
        return held + json_line({"errorDetail": {"message": message}, "error": message})


async def _receive_body(request: Request, path: Any) -> None:
    file = await trio.open_file(path, "wb")
    async with file:
        async for chunk in request.body_chunks():
            await file.write(chunk)


async def _lines(session: Any, lines: BuildLines, first: dict[str, Any] | None, path: Any,
                 api: Api) -> AsyncIterator[bytes]:
    try:
        yield b""  # the head now: the build may take minutes before its next line
        payload = first
        while payload is not None:
            out = lines.message(payload)
            if out:
                yield out
            try:
                payload = await session.receive()
            except RemoteError as error:
                yield lines.failure(error.message)
                return
        yield lines.result(session.result or {})
    finally:
        await session.aclose()
        api.discard(path)


def register(router: Router, api: Api) -> None:
    async def build(request: Request) -> Response:
        args = build_arguments(request)
        name = dockerfile_name(request)
        path = api.scratch_path(".tar")
        try:
            await _receive_body(request, path)
            dockerfile = await trio.to_thread.run_sync(read_dockerfile, str(path), name)
            try:
                session = await api.client.open_stream(ops.IMAGE_BUILD,
                                                       {**args, "context": str(path), "dockerfile": dockerfile,
                                                        "dockerfile_path": name})
            except BusError as error:
                raise api_error(error, "image") from None
            try:
                first = await session.receive()  # a failure before any line is an HTTP error, as docker's
            except RemoteError as error:
                await session.aclose()
                raise api_error(error, "image") from None
        except BaseException:
            api.discard(path)
            raise
        return Streamed(_lines(session, BuildLines(request.flag("q")), first, path, api))

    async def prune(request: Request) -> Response:
        # dockyard's build cache holds no data of its own: its index (build-cache.json)
        # points at images of the store, which `docker image prune`/`rmi` remove
        # (docs/build.md). There is nothing a build-cache prune could reclaim.
        return Json({"CachesDeleted": [], "SpaceReclaimed": 0})

    router.add("POST", "/build", build)
    router.add("POST", "/build/prune", prune)
