"""``/volumes/...`` over the volume operations, and ``/networks/...``: the default networks
(bridge, host, none) listed and inspected; user networks are not served yet (501, docs/api.md)."""

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
#: The networks every dockyard daemon has (docs/network.md): name -> driver.
DEFAULT_NETWORKS = {"bridge": "bridge", "host": "host", "none": "null"}


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

    async def networks(request: Request) -> Response:
        filters = views.parse_filters(request.json_arg("filters"))
        found = [network_document(name) for name in DEFAULT_NETWORKS]
        for key, values in filters.items():
            if key == "name":
                found = [net for net in found if any(value in net["Name"] for value in values)]
            elif key == "id":
                found = [net for net in found if any(net["Id"].startswith(value) for value in values)]
            elif key == "driver":
                found = [net for net in found if net["Driver"] in values]
            elif key == "type":
                found = [net for net in found if "builtin" in values]
            elif key in ("label", "scope"):
                found = [net for net in found if key == "scope" and "local" in values]
            else:
                raise ApiError(400, f"invalid filter '{key}'")
        return Json(found)

    async def network(request: Request, name: str) -> Response:
        for known in DEFAULT_NETWORKS:
            if name in (known, network_document(known)["Id"]) or network_document(known)["Id"].startswith(name):
                return Json(network_document(known))
        raise ApiError(404, f"network {name} not found")

    async def user_networks(request: Request, **_: str) -> Response:
        raise ApiError(501, "user-defined networks are not served by dockyard's Engine API yet: only the default "
                            "bridge, host and none networks (docs/api.md)")

    router.add("GET", "/volumes", listing)
    router.add("POST", "/volumes/create", create)
    router.add("POST", "/volumes/prune", prune)
    router.add("GET", "/volumes/{name}", inspect)
    router.add("DELETE", "/volumes/{name}", remove)
    router.add("GET", "/networks", networks)
    router.add("POST", "/networks/create", user_networks)
    router.add("POST", "/networks/prune", _networks_prune)
    router.add("GET", "/networks/{name}", network)
    router.add("DELETE", "/networks/{name}", user_networks)
    router.add("POST", "/networks/{name}/connect", user_networks)
    router.add("POST", "/networks/{name}/disconnect", user_networks)


async def _networks_prune(request: Request) -> Response:
    return Json({"NetworksDeleted": None})


def network_document(name: str) -> dict[str, Any]:
    import hashlib

    driver = DEFAULT_NETWORKS[name]
    return {"Name": name, "Id": hashlib.sha256(f"dockyard-network-{name}".encode()).hexdigest(),
            "Created": "0001-01-01T00:00:00Z", "Scope": "local", "Driver": driver, "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": []}, "Internal": False, "Attachable": False,
            "Ingress": False, "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {},
            "Options": {}, "Labels": {}}
