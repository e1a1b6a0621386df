"""``/volumes/...`` over the volume operations (docs/volumes.md)."""

from __future__ import annotations

import secrets
from typing import Any

from supervisor import operations as ops
from workers.api import views
from workers.api.http import ApiError, Empty, Json, Request, Response
from workers.api.router import Router
from workers.api.service import Api

#: docker's label of an anonymous volume (one made without a name).
ANONYMOUS_LABEL = "com.docker.volume.anonymous"


def register(router: Router, api: Api) -> None:  # noqa: C901 - one table of routes
    async def listing(request: Request) -> Response:
        filters = views.parse_filters(request.json_arg("filters"))
        unknown = set(filters) - {"dangling", "name", "label", "driver"}
        if unknown:
            raise ApiError(400, f"invalid filter '{sorted(unknown)[0]}'")
        driver = filters.pop("driver", None)
        wanted = [f"{key}={value}" for key, values in filters.items() for value in values]
        volumes = (await api.call(ops.VOLUME_LIST, {"filters": wanted}))["volumes"]
        if driver and "local" not in driver:
            volumes = []
        return Json({"Volumes": volumes, "Warnings": None})

    async def create(request: Request) -> Response:
        body = await request.json_body({}) or {}
        name = body.get("Name") or secrets.token_hex(32)
        driver = body.get("Driver") or "local"
        if driver != "local":
            raise ApiError(404, f"error looking up volume plugin {driver}: plugin \"{driver}\" not found "
                                "(dockyard has the local driver only)")
        labels = dict(body.get("Labels") or {})
        if not body.get("Name"):  # docker (API 1.42+) makes a nameless volume anonymous: prune takes it
            labels[ANONYMOUS_LABEL] = ""
        await api.call(ops.VOLUME_CREATE, {"name": name, "labels": labels, "options": body.get("DriverOpts") or {}})
        return Json(await api.call(ops.VOLUME_INSPECT, {"name": name}), 201)

    async def inspect(request: Request, name: str) -> Response:
        return Json(await api.call(ops.VOLUME_INSPECT, {"name": name}, what="volume"))

    async def remove(request: Request, name: str) -> Response:
        await api.call(ops.VOLUME_REMOVE, {"name": name}, what="volume")
        return Empty(204)

    async def prune(request: Request) -> Response:
        filters = views.parse_filters(request.json_arg("filters"))
        everything = (filters.get("all") or ["false"])[0] in ("1", "true")
        if request.version is not None and request.version < "1.42":
            everything = True  # before 1.42, docker pruned every unused volume
        reply = await api.call(ops.VOLUME_PRUNE, {"all": everything})
        removed = list(reply["removed"])
        unused = await api.call(ops.VOLUME_LIST, {"filters": ["dangling=true", f"label={ANONYMOUS_LABEL}"]})
        for volume in unused["volumes"]:
            try:
                await api.client.request(ops.VOLUME_REMOVE, {"name": volume["Name"]})
                removed.append(volume["Name"])
            except Exception as error:  # taken meanwhile: not pruned
                api.log.info("prune: volume not removed", volume=volume["Name"], error=str(error))
        return Json({"VolumesDeleted": removed or None, "SpaceReclaimed": 0})

    router.add("GET", "/volumes", listing)
    router.add("POST", "/volumes/create", create)
    router.add("POST", "/volumes/prune", prune)
    router.add("GET", "/volumes/{name}", inspect)
    router.add("DELETE", "/volumes/{name}", remove)
