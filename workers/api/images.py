"""``/images/...``: list, inspect, create (pull, or import from a tarball), push, tag, remove,
get/load (tarballs), history, prune; ``/commit``.

A tarball the client sends is streamed to a file of the worker's scratch directory and the
daemon reads it there (``image.load``, ``image.import`` take paths); one the daemon makes is
written there and streamed back, then removed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio

from bus.errors import BusError, RemoteError
from supervisor import operations as ops
from workers.api import views
from workers.api.containers import file_chunks
from workers.api.http import ApiError, Json, Request, Response, Streamed
from workers.api.router import Router
from workers.api.service import Api, api_error

PROGRESS_LABELS = {"waiting": "Waiting", "exists": "Already exists", "mounted": "Mounted from another repository",
                   "downloading": "Downloading", "uploading": "Pushing", "verifying": "Verifying Checksum",
                   "done": "Download complete", "extracting": "Extracting", "complete": "Pull complete"}


def image_row(summary: dict[str, Any]) -> dict[str, Any]:
    """An ``image.list`` summary as a row of ``GET /images/json``."""
    tags = list(summary.get("repo_tags") or [])
    return {"Id": f"sha256:{summary['id']}", "ParentId": "", "RepoTags": tags or ["<none>:<none>"],
            "RepoDigests": list(summary.get("repo_digests") or []), "Created": int(views.unix_time(summary["created"])) if summary.get("created") else 0,
            "Size": summary["size"], "SharedSize": -1, "VirtualSize": summary["size"], "Labels": {},
            "Containers": -1}


def reference_of(name: str, tag: str | None) -> str:
    """``fromImage``/``repo`` and ``tag`` as one reference (a digest or a tag in the name wins)."""
    if not tag or "@" in name:
        return name
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return name
    return f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}"


def progress_line(progress: dict[str, Any]) -> dict[str, Any]:
    """A dockyard progress event as one of docker's JSON progress messages."""
    short = str(progress.get("digest", "")).partition(":")[2][:12]
    status = progress.get("status")
    label = "Pushed" if progress.get("operation") == "push" and status == "done" else PROGRESS_LABELS.get(status, status)
    line: dict[str, Any] = {"status": label, "id": short}
    if progress.get("total"):
        line["progressDetail"] = {"current": progress.get("current", 0), "total": progress["total"]}
    return line


def _json_lines(*documents: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(document).encode() + b"\r\n" for document in documents)


def register(router: Router, api: Api) -> None:  # noqa: C901 - one table of routes
    async def listing(request: Request) -> Response:
        filters = views.parse_filters(request.json_arg("filters"))
        images = (await api.call(ops.IMAGE_LIST, {"all": request.flag("all")}))["images"]
        rows = [image_row(image) for image in images]
        for reference in filters.get("reference", []):
            rows = [row for row in rows if any(_reference_matches(tag, reference) for tag in row["RepoTags"])]
        if filters.get("dangling") and filters["dangling"][0] in ("true", "1"):
            rows = [row for row in rows if row["RepoTags"] == ["<none>:<none>"]]
        if filters.get("label"):
            rows = [row for row in rows if views.labels_match(row["Labels"], filters["label"])]
        name = request.arg("filter")
        if name:
            rows = [row for row in rows if any(_reference_matches(tag, name) for tag in row["RepoTags"])]
        return Json(rows)

    async def inspect(request: Request, name: str) -> Response:
        document = await api.call(ops.IMAGE_INSPECT, {"image": name}, what="image")
        if isinstance(document.get("Config"), dict):
            document["Config"].setdefault("OnBuild", None)  # docker's field (docker-py reads it)
        document.setdefault("ContainerConfig", document.get("Config"))
        document.setdefault("DockerVersion", "")
        document.setdefault("VirtualSize", document.get("Size", 0))
        return Json(document)

    async def create(request: Request) -> Response:
        source = request.arg("fromSrc")
        if source is not None:
            return await _import(api, request, source)
        name = request.arg("fromImage")
        if not name:
            raise ApiError(400, "fromImage or fromSrc is required")
        reference = reference_of(name, request.arg("tag"))
        session = await _open(api, ops.IMAGE_PULL, {"reference": reference, "platform": request.arg("platform")})
        first = await _first(session, "image")
        return Streamed(_transfer(session, f"Pulling from {reference}", first))

    async def push(request: Request, name: str) -> Response:
        reference = reference_of(name, request.arg("tag"))
        session = await _open(api, ops.IMAGE_PUSH, {"reference": reference})
        first = await _first(session, "image")
        return Streamed(_transfer(session, f"The push refers to repository [{name}]", first))

    async def tag(request: Request, name: str) -> Response:
        repo = request.arg("repo")
        if not repo:
            raise ApiError(400, "repo is required")
        await api.call(ops.IMAGE_TAG, {"image": name, "reference": reference_of(repo, request.arg("tag") or "latest")},
                       what="image")
        return Json(None, 201)

    async def remove(request: Request, name: str) -> Response:
        reply = await api.call(ops.IMAGE_REMOVE, {"image": name, "force": request.flag("force"),
                                                  "no_prune": request.flag("noprune")}, what="image")
        return Json(reply["report"])

    async def history(request: Request, name: str) -> Response:
        reply = await api.call(ops.IMAGE_HISTORY, {"image": name}, what="image")
        return Json([{"Id": f"sha256:{row['id']}" if row.get("id") and row["id"] != "<missing>" else "<missing>",
                      "Created": int(views.unix_time(row["created"])) if isinstance(row.get("created"), str)
                      else int(row.get("created") or 0),
                      "CreatedBy": row.get("created_by", ""), "Tags": None, "Size": row.get("size", 0),
                      "Comment": row.get("comment", "")} for row in reply["history"]])

    async def get_one(request: Request, name: str) -> Response:
        return await _save(api, [name])

    async def get_many(request: Request) -> Response:
        names = request.query.get("names") or []
        if not names:
            raise ApiError(400, "names is required")
        return await _save(api, names)

    async def load(request: Request) -> Response:
        path = api.scratch_path(".tar")
        try:
            await _receive_file(request, path)
            reply = await api.call(ops.IMAGE_LOAD, {"path": str(path)}, timeout=3600)
        except ApiError as error:
            if error.status != 400:
                raise
            # docker answers an archive it cannot load in the stream (clients raise ImageLoadError)
            return Streamed(_once(_json_lines({"errorDetail": {"message": error.message}, "error": error.message})))
        finally:
            api.discard(path)
        lines = []
        for image in reply["images"]:
            for tag in image.get("loaded_tags") or []:
                lines.append({"stream": f"Loaded image: {tag}\n"})
            if not image.get("loaded_tags"):
                lines.append({"stream": f"Loaded image ID: sha256:{image['id']}\n"})
        if request.flag("quiet"):
            return Json(lines[-1] if lines else {})
        return Streamed(_once(_json_lines(*lines)))

    async def prune(request: Request) -> Response:
        filters = views.parse_filters(request.json_arg("filters"))
        dangling_only = (filters.get("dangling") or ["true"])[0] not in ("false", "0")
        images = (await api.call(ops.IMAGE_LIST, {"all": True}))["images"]
        containers = (await api.call(ops.CONTAINER_LIST, {"all": True}))["containers"]
        used = {row.get("image_id") for row in containers}
        deleted: list[dict[str, str]] = []
        reclaimed = 0
        for image in images:
            if image["id"] in used or (dangling_only and image.get("repo_tags")):
                continue
            try:
                reply = await api.client.request(ops.IMAGE_REMOVE, {"image": image["id"], "force": True})
            except BusError:
                continue
            deleted += reply["report"]
            reclaimed += image["size"]
        return Json({"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed})

    async def commit(request: Request) -> Response:
        container = request.arg("container")
        if not container:
            raise ApiError(400, "container is required")
        repo = request.arg("repo")
        reference = reference_of(repo, request.arg("tag") or "latest") if repo else None
        body = await request.json_body({}) or {}
        changes = list(request.query.get("changes") or [])
        changes += _config_changes(body)
        reply = await api.call(ops.CONTAINER_COMMIT, {
            "container": container, "reference": reference, "comment": request.arg("comment") or "",
            "author": request.arg("author") or "", "changes": changes}, what="container", timeout=3600)
        return Json({"Id": f"sha256:{reply['id']}"}, 201)

    router.add("GET", "/images/json", listing)
    router.add("POST", "/images/create", create)
    router.add("POST", "/images/load", load)
    router.add("POST", "/images/prune", prune)
    router.add("GET", "/images/get", get_many)
    router.add("POST", "/commit", commit)
    router.add("GET", "/images/{name:path}/json", inspect)
    router.add("GET", "/images/{name:path}/history", history)
    router.add("GET", "/images/{name:path}/get", get_one)
    router.add("POST", "/images/{name:path}/push", push)
    router.add("POST", "/images/{name:path}/tag", tag)
    router.add("DELETE", "/images/{name:path}", remove)


def _reference_matches(tag: str, pattern: str) -> bool:
    import fnmatch

    if ":" not in pattern.rsplit("/", 1)[-1]:
        return fnmatch.fnmatch(tag.rsplit(":", 1)[0], pattern)
    return fnmatch.fnmatch(tag, pattern)


def _config_changes(body: dict[str, Any]) -> list[str]:
    """A commit's ``Config`` body as Dockerfile instructions (what ``container.commit`` takes)."""
    changes = []
    if body.get("Cmd"):
        changes.append("CMD " + json.dumps(body["Cmd"] if isinstance(body["Cmd"], list) else [body["Cmd"]]))
    if body.get("Entrypoint"):
        changes.append("ENTRYPOINT " + json.dumps(body["Entrypoint"]))
    for entry in body.get("Env") or []:
        changes.append(f"ENV {entry}")
    if body.get("WorkingDir"):
        changes.append(f"WORKDIR {body['WorkingDir']}")
    if body.get("User"):
        changes.append(f"USER {body['User']}")
    for key, value in (body.get("Labels") or {}).items():
        changes.append(f"LABEL {json.dumps(key)}={json.dumps(value)}")
    for port in body.get("ExposedPorts") or {}:
        changes.append(f"EXPOSE {port}")
    return changes


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _open(api: Api, op: str, args: dict[str, Any]) -> Any:
    try:
        return await api.client.open_stream(op, args)
    except BusError as error:
        raise api_error(error, "image") from None


async def _first(session: Any, what: str) -> dict[str, Any] | None:
    """A transfer's first message, before the head is sent: a failure at once (no such
    image, a registry that refuses) is then an HTTP error, as docker answers it."""
    try:
        return await session.receive()
    except RemoteError as error:
        await session.aclose()
        raise api_error(error, what) from None


async def _transfer(session: Any, status: str, first: dict[str, Any] | None) -> AsyncIterator[bytes]:
    """A pull's or push's progress as docker's JSON lines; a later failure is the last
    line's ``error`` (the status is already sent: docker does the same)."""
    try:
        yield _json_lines({"status": status})
        payload = first
        while True:
            if payload is not None and "progress" in payload:
                yield _json_lines(progress_line(payload["progress"]))
            if payload is None and session.done:
                break
            try:
                payload = await session.receive()
            except RemoteError as error:
                yield _json_lines({"errorDetail": {"message": error.message}, "error": error.message})
                return
        result = session.result or {}
        digest = result.get("digest", "")
        if "image" in result:  # a pull
            yield _json_lines({"status": f"Digest: {digest}"},
                              {"status": f"Status: Downloaded newer image for {result.get('reference', '')}"})
        else:
            tag = str(result.get("reference", "")).rpartition(":")[2]
            # two lines, as docker's daemon: clients print the status and keep the aux silently
            yield _json_lines({"status": f"{tag}: digest: {digest} size: {result.get('size', 0)}"},
                              {"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest,
                                                             "Size": result.get("size", 0)}})
    finally:
        await session.aclose()


async def _receive_file(request: Request, path: Any) -> None:
    file = await trio.open_file(path, "wb")
    async with file:
        async for chunk in request.body_chunks():
            await file.write(chunk)


async def _import(api: Api, request: Request, source: str) -> Response:
    if source != "-":
        raise ApiError(501, "importing from a URL is not supported by dockyard: send the tarball (fromSrc=-)")
    repo = request.arg("repo") or ""
    reference = reference_of(repo, request.arg("tag") or "latest") if repo else ""
    path = api.scratch_path(".tar")
    try:
        await _receive_file(request, path)
        reply = await api.call(ops.IMAGE_IMPORT, {"path": str(path), "reference": reference or "dockyard-import:latest",
                                                  "changes": list(request.query.get("changes") or []),
                                                  "message": request.arg("message") or ""}, timeout=3600)
    finally:
        api.discard(path)
    return Streamed(_once(_json_lines({"status": f"sha256:{reply['id']}"})))


async def _save(api: Api, names: list[str]) -> Response:
    path = api.scratch_path(".tar")
    try:
        await api.call(ops.IMAGE_SAVE, {"images": names, "path": str(path)}, what="image", timeout=3600)
    except BaseException:
        api.discard(path)
        raise
    return Streamed(file_chunks(api, path), content_type="application/x-tar")
