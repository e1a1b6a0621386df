"""``/networks/...`` over the network operations (docs/network.md): list, inspect, create,
connect, disconnect, prune, remove; and docker's endpoint config (``EndpointsConfig``) as
dockyard's ``endpoints`` (the container create of ``containers.py`` uses it too).

docker's body fields dockyard has are translated; a field it cannot honour with a value that
matters (another driver, swarm scope, links, a MAC address...) is refused by name (400, or
404 for a driver plugin, as docker answers a missing plugin), never dropped. The bridge name
dockyard picked itself (``br-<12 hex>``) is left out of ``Options`` as docker leaves its own
out: docker-compose compares a network's options with its file's and would recreate it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from supervisor import operations as ops
from workers.api import views
from workers.api.http import ApiError, Empty, Json, Request, Response
from workers.api.router import Router
from workers.api.service import Api

#: The networks every daemon has; they cannot be created, removed, connected to.
PREDEFINED = ("bridge", "host", "none")
#: docker's network list filters, and which of them the daemon's ``network.list`` takes.
LIST_FILTERS = ("dangling", "driver", "id", "label", "name", "scope", "type")
BRIDGE_OPTION = "com.docker.network.bridge.name"

def network_view(document: dict[str, Any]) -> dict[str, Any]:
    """``network.inspect``'s document as docker shows it."""
    document = dict(document)
    options = dict(document.get("Options") or {})
    if options.get(BRIDGE_OPTION, "").startswith("br-") and document["Id"].startswith(options[BRIDGE_OPTION][3:]):
        del options[BRIDGE_OPTION]  # dockyard's own choice, not the user's
    document["Options"] = options
    document["Created"] = document.get("Created") or views.ZERO_TIME  # the CLI parses it (built-in ones have none)
    return document


def create_args(body: Any) -> dict[str, Any]:
    """``POST /networks/create``'s body as ``network.create``'s arguments.

    Raises:
        ApiError: 400 for a bad body or a field dockyard cannot honour; 404 for a driver
            (or IPAM driver) other than docker's default ones, 403 for host and null.
    """
    if not isinstance(body, dict) or not isinstance(body.get("Name"), str) or not body["Name"]:
        raise ApiError(400, "network create: Name is required")
    name = body["Name"]
    driver = body.get("Driver") or "bridge"
    if driver in ("host", "null"):
        raise ApiError(403, f'only one instance of "{driver}" network is allowed')
    if driver != "bridge":
        raise ApiError(404, f'plugin "{driver}" not found: dockyard has the bridge network driver only')
    # Attachable is accepted: it lets swarm services' tasks and plain containers share an
    # overlay network; a local network is attachable anyway (docker-compose 3.x files ask for it).
    for field in ("Ingress", "ConfigOnly"):
        if body.get(field):
            raise ApiError(400, f"cannot create network {name}: {field} is a swarm feature dockyard does not have")
    if body.get("ConfigFrom") and (body["ConfigFrom"] or {}).get("Network"):
        raise ApiError(400, f"cannot create network {name}: ConfigFrom is a swarm feature dockyard does not have")
    if (body.get("Scope") or "local") != "local":
        raise ApiError(400, f"cannot create network {name}: scope {body['Scope']} needs swarm mode; dockyard "
                            "networks are local")
    args: dict[str, Any] = {"name": name, "internal": bool(body.get("Internal")),
                            "ipv6": bool(body.get("EnableIPv6")),
                            "labels": _string_map(body.get("Labels"), "Labels"),
                            "options": _string_map(body.get("Options"), "Options")}
    ipam = body.get("IPAM") or {}
    if not isinstance(ipam, dict):
        raise ApiError(400, "network create: IPAM must be a JSON object")
    if (ipam.get("Driver") or "default") != "default":
        raise ApiError(404, f'plugin "{ipam["Driver"]}" not found: dockyard has the default IPAM driver only')
    if ipam.get("Options"):
        raise ApiError(400, f"cannot create network {name}: IPAM options are not supported by the default driver")
    aux: dict[str, str] = {}
    for pool in ipam.get("Config") or []:
        _pool_args(pool, args, aux, name)
    if aux:
        args["aux_addresses"] = aux
    return args


def _pool_args(pool: Any, args: dict[str, Any], aux: dict[str, str], name: str) -> None:
    """One IPAM pool (Subnet, IPRange, Gateway, AuxiliaryAddresses) into the arguments: the
    IPv4 one is ``subnet``, the IPv6 one ``subnet6`` (an IPv6 pool turns IPv6 on, as docker
    then gives the containers IPv6 addresses)."""
    if not isinstance(pool, dict):
        raise ApiError(400, "network create: IPAM.Config entries must be JSON objects")
    subnet = pool.get("Subnet") or ""
    try:
        version = ipaddress.ip_network(subnet, strict=False).version if subnet else 4
    except ValueError:
        raise ApiError(400, f"cannot create network {name}: invalid subnet {subnet!r}") from None
    if version == 6:
        if args.get("subnet6"):
            raise ApiError(400, f"cannot create network {name}: dockyard takes one IPv6 pool per network")
        args.update(ipv6=True, subnet6=subnet, gateway6=pool.get("Gateway") or "")
        # IPRange of an IPv6 pool: addresses come from the whole subnet (docs/api.md)
    else:
        if args.get("subnet") or args.get("ip_range"):
            raise ApiError(400, f"cannot create network {name}: dockyard takes one IPv4 pool per network")
        args.update(subnet=subnet, gateway=pool.get("Gateway") or "", ip_range=pool.get("IPRange") or "")
    aux.update(_string_map(pool.get("AuxiliaryAddresses"), "AuxiliaryAddresses"))


def endpoint_config(network: str, config: Any) -> dict[str, Any]:
    """docker's EndpointSettings (a create's ``EndpointsConfig`` entry, a connect's
    ``EndpointConfig``) as a spec endpoint ``{aliases, ipv4, ipv6}``.

    Raises:
        ApiError: 400 for links, a MAC address, link-local addresses or driver options
            (dockyard's endpoints have none of these).
    """
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ApiError(400, f"invalid endpoint config for network {network}: must be a JSON object")
    ipam = config.get("IPAMConfig") or {}
    for field, value in (("Links", config.get("Links")), ("MacAddress", config.get("MacAddress")),
                         ("DriverOpts", config.get("DriverOpts")), ("IPAMConfig.LinkLocalIPs", ipam.get("LinkLocalIPs"))):
        if value:
            raise ApiError(400, f"network {network}: endpoint {field} is not supported by dockyard (docs/api.md)")
    endpoint: dict[str, Any] = {}
    aliases = config.get("Aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(alias, str) for alias in aliases):
        raise ApiError(400, f"network {network}: Aliases must be a list of strings")
    if aliases:
        endpoint["aliases"] = list(dict.fromkeys(aliases))
    for key, field in (("ipv4", "IPv4Address"), ("ipv6", "IPv6Address")):
        if ipam.get(field):
            endpoint[key] = str(ipam[field])
    return endpoint


def _string_map(value: Any, field: str) -> dict[str, str]:
    if not value:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"invalid {field}: must be a JSON object of strings")
    return {str(key): str(item) for key, item in value.items()}


def list_filters(filters: dict[str, list[str]]) -> tuple[list[str], bool]:
    """docker's network filters as ``network.list``'s, and whether ``scope`` leaves none."""
    unknown = sorted(set(filters) - set(LIST_FILTERS))
    if unknown:
        raise ApiError(400, f"invalid filter '{unknown[0]}'")
    scopes = filters.get("scope")
    wanted = [f"{key}={value}" for key, values in filters.items() if key != "scope" for value in values]
    return wanted, bool(scopes) and "local" not in scopes


def register(router: Router, api: Api) -> None:  # noqa: C901 - one table of routes
    async def listing(request: Request) -> Response:
        wanted, none_left = list_filters(views.parse_filters(request.json_arg("filters")))
        if none_left:
            return Json([])
        reply = await api.call(ops.NETWORK_LIST, {"filters": wanted})
        return Json([network_view(document) for document in reply["networks"]])

    async def inspect(request: Request, name: str) -> Response:
        document = await api.call(ops.NETWORK_INSPECT, {"network": name}, what="network")
        scope = request.arg("scope")
        if scope and scope != "local":
            raise ApiError(404, f"network {name} not found (scope {scope}: dockyard networks are local)")
        return Json(network_view(document))

    async def create(request: Request) -> Response:
        args = create_args(await request.json_body({}))
        reply = await api.call(ops.NETWORK_CREATE, args)
        return Json({"Id": reply["id"], "Warning": ""}, 201)

    async def remove(request: Request, name: str) -> Response:
        if name in PREDEFINED:
            raise ApiError(403, f"{name} is a pre-defined network and cannot be removed")
        try:
            await api.call(ops.NETWORK_REMOVE, {"network": name}, what="network")
        except ApiError as error:
            if error.status == 409:  # docker's status for active endpoints
                raise ApiError(403, error.message) from None
            raise
        return Empty(204)

    async def prune(request: Request) -> Response:
        filters = views.parse_filters(request.json_arg("filters"))
        if filters:  # until=, label=: the daemon's prune takes every unused network
            raise ApiError(400, f"network prune: the {sorted(filters)[0]!r} filter is not supported by dockyard")
        reply = await api.call(ops.NETWORK_PRUNE)
        return Json({"NetworksDeleted": reply["removed"] or None})

    async def connect(request: Request, name: str) -> Response:
        body = await request.json_body({}) or {}
        container = body.get("Container")
        if not isinstance(container, str) or not container:
            raise ApiError(400, "network connect: Container is required")
        if name in PREDEFINED:
            raise ApiError(400, f"cannot connect container {container} to network {name}: dockyard connects "
                                "containers to user-defined networks only (the default bridge is chosen at create)")
        endpoint = endpoint_config(name, body.get("EndpointConfig"))
        await _resolve(api, container, name)
        await api.call(ops.NETWORK_CONNECT, {"network": name, "container": container, **endpoint})
        return Empty(200)

    async def disconnect(request: Request, name: str) -> Response:
        body = await request.json_body({}) or {}
        container = body.get("Container")
        if not isinstance(container, str) or not container:
            raise ApiError(400, "network disconnect: Container is required")
        if name in PREDEFINED:
            raise ApiError(400, f"cannot disconnect container {container} from network {name}: dockyard "
                                "disconnects containers from user-defined networks only")
        await _resolve(api, container, name)
        # docker's Force is about endpoints of containers that are gone: a container that is
        # not connected is an error with or without it (dockyard's force would hide that).
        await api.call(ops.NETWORK_DISCONNECT, {"network": name, "container": container}, what="network")
        return Empty(200)

    router.add("GET", "/networks", listing)
    router.add("POST", "/networks/create", create)
    router.add("POST", "/networks/prune", prune)
    router.add("GET", "/networks/{name}", inspect)
    router.add("DELETE", "/networks/{name}", remove)
    router.add("POST", "/networks/{name}/connect", connect)
    router.add("POST", "/networks/{name}/disconnect", disconnect)


async def _resolve(api: Api, container: str, network: str) -> None:
    """404 with docker's words for a missing container or network, before the operation."""
    await api.inspect(container)
    await api.call(ops.NETWORK_INSPECT, {"network": network}, what="network")
