"""System endpoints (``_ping``, ``version``, ``info``, ``events``, ``system/df``, ``auth``)
and docker's answer for the features dockyard does not have (swarm, plugins, secrets,
configs, BuildKit sessions, ...)."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import AsyncIterator
from typing import Any

import trio

from supervisor import operations as ops
from workers.api import views
from workers.api.http import ApiError, Empty, Json, Request, Response, Streamed, error_body
from workers.api.router import API_VERSION, MIN_API_VERSION, Router
from workers.api.service import Api

#: Features dockyard does not have: path prefix -> what docker's error names.
UNSUPPORTED = {
    "/swarm": "swarm mode", "/nodes": "swarm mode (nodes)", "/services": "swarm mode (services)",
    "/tasks": "swarm mode (tasks)", "/secrets": "swarm secrets", "/configs": "swarm configs",
    "/plugins": "plugins (none are installed)", "/session": "BuildKit sessions",
    "/distribution": "registry distribution inspection", "/grpc": "BuildKit (grpc)",
}


def _version_document(daemon_version: str) -> dict[str, Any]:
    uname = platform.uname()
    return {
        "Platform": {"Name": "dockyard"},
        "Components": [{"Name": "Engine", "Version": daemon_version,
                        "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION}}],
        "Version": daemon_version, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "dockyard", "GoVersion": f"python{platform.python_version()}", "Os": "linux",
        "Arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(uname.machine, uname.machine),
        "KernelVersion": uname.release, "BuildTime": "",
    }


def _ping_headers() -> list[tuple[str, str]]:
    return [("Api-Version", API_VERSION), ("Cache-Control", "no-cache, no-store, must-revalidate"),
            ("Pragma", "no-cache"), ("Builder-Version", "1")]


def register(router: Router, api: Api) -> None:
    async def ping(request: Request) -> Response:
        return Empty(200, b"" if request.method == "HEAD" else b"OK", headers=_ping_headers())

    async def version(request: Request) -> Response:
        info = await api.call(ops.DAEMON_INFO)
        return Json(_version_document(info["version"]))

    async def info(request: Request) -> Response:
        return Json(info_document(await api.call(ops.DAEMON_INFO)))

    async def events(request: Request) -> Response:
        filters = views.parse_filters(request.json_arg("filters"))
        since = views.parse_time(request.arg("since"))
        until = views.parse_time(request.arg("until"))
        views.event_matches({"Type": "", "Action": "", "Actor": {"ID": "", "Attributes": {}}}, {
            key: [] for key in filters})  # an unknown filter is refused before the stream starts
        listener = None
        if until is None or until > time.time():
            listener = api.hub.listen()  # before the replay: nothing falls between the two
        return Streamed(_events(api, listener, filters, since, until))

    async def disk_usage(request: Request) -> Response:
        images = (await api.call(ops.IMAGE_LIST, {"all": True}))["images"]
        containers = (await api.call(ops.CONTAINER_LIST, {"all": True}))["containers"]
        volumes = (await api.call(ops.VOLUME_LIST))["volumes"]
        from workers.api.images import image_row

        return Json({
            "LayersSize": sum(image["size"] for image in images),
            "Images": [image_row(image) for image in images],
            "Containers": [views.container_row(row) for row in containers],
            "Volumes": [{**volume, "UsageData": {"Size": -1, "RefCount": -1}} for volume in volumes],
            "BuildCache": [],
        })

    async def auth(request: Request) -> Response:
        body = await request.json_body({})
        server = body.get("serveraddress") or None
        if server:
            server = server.removeprefix("https://").removeprefix("http://").rstrip("/").removesuffix("/v1")
            server = server.removesuffix("/v2")
        await api.call(ops.IMAGE_LOGIN, {"registry": server, "username": body.get("username") or "",
                                         "password": body.get("password") or ""}, timeout=120)
        return Json({"Status": "Login Succeeded", "IdentityToken": ""})

    async def plugins(request: Request) -> Response:
        return Json([])  # none installed: clients that look (docker inspect, info) find none

    async def plugin(request: Request, name: str) -> Response:
        return error_body(404, f"plugin \"{name}\" not found")

    router.add("GET", "/plugins", plugins)
    router.add("GET", "/plugins/{name:path}/json", plugin)
    router.add("GET", "/_ping", ping)
    router.add("HEAD", "/_ping", ping)
    router.add("GET", "/version", version)
    router.add("GET", "/info", info)
    router.add("GET", "/events", events)
    router.add("GET", "/system/df", disk_usage)
    router.add("POST", "/auth", auth)
    for prefix, feature in UNSUPPORTED.items():
        for method in ("GET", "POST", "DELETE", "PUT"):
            router.add(method, prefix, _unsupported(feature))
            router.add(method, prefix + "/{rest:path}", _unsupported(feature))
    router.add("GET", "/images/search", _unsupported("image search"))


def _unsupported(feature: str) -> Any:
    async def handler(request: Request, **_: str) -> Response:
        if feature.startswith("swarm"):
            # docker's own answer on a node that is not in a swarm (clients know this one)
            return error_body(503, f"This node is not a swarm manager. dockyard does not support {feature}.")
        return error_body(501, f"dockyard does not support {feature} (docs/api.md lists what it serves)")
    return handler


async def _events(api: Api, listener: Any, filters: dict[str, list[str]], since: float | None,
                  until: float | None) -> AsyncIterator[bytes]:
    def shown(data: dict[str, Any]) -> bytes | None:
        if data.get("type") not in ("container", "image", "volume", "daemon"):
            return None  # the workers' events are dockyard's own
        event = views.docker_event(data)
        if not views.event_matches(event, filters):
            return None
        return json.dumps(event).encode() + b"\n"

    try:
        yield b""  # the head now: clients wait for it before they act
        if since is not None:
            reply = await api.call(ops.EVENTS_REPLAY, {"since": since, "until": until})
            last_seq = reply["last_seq"]
            for envelope in reply["events"]:
                line = shown(envelope.get("data") or {})
                if line:
                    yield line
        else:
            last_seq = None
        if listener is None:
            return
        deadline = trio.current_time() + (until - time.time()) if until is not None else float("inf")
        with trio.move_on_at(deadline):
            async for data in listener.receive:
                if last_seq is not None and data.get("seq", last_seq + 1) <= last_seq:
                    continue
                line = shown(data)
                if line:
                    yield line
    finally:
        if listener is not None:
            api.hub.forget(listener)


def info_document(info: dict[str, Any]) -> dict[str, Any]:
    """``daemon.info`` as docker's ``/info``."""
    uname = platform.uname()
    containers, running, paused = info["containers"], info["running"], info.get("paused", 0)
    return {
        "ID": f"dockyard-{info['pid']}", "Containers": containers, "ContainersRunning": running,
        "ContainersPaused": paused, "ContainersStopped": containers - running - paused, "Images": info["images"],
        "Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]],
        "DockerRootDir": info["root"], "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"],
                                                  "Log": ["json-file", "local"], "Authorization": None},
        "MemoryLimit": True, "SwapLimit": True, "CpuCfsPeriod": True, "CpuCfsQuota": True, "CPUShares": True,
        "CPUSet": True, "PidsLimit": True, "IPv4Forwarding": True, "BridgeNfIptables": False,
        "BridgeNfIp6tables": False, "Debug": False, "NFd": len(os.listdir("/proc/self/fd")), "NGoroutines": 0,
        "OomKillDisable": False, "SystemTime": views.rfc3339(time.time()), "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs", "CgroupVersion": "1" if not os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        else "2", "NEventsListener": 0, "KernelVersion": uname.release, "OperatingSystem": "dockyard",
        "OSVersion": "", "OSType": "linux", "Architecture": uname.machine, "IndexServerAddress":
        "https://index.docker.io/v1/", "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": ["127.0.0.0/8"],
                                                          "Mirrors": []},
        "NCPU": os.cpu_count() or 1, "MemTotal": _memory_total(), "Name": uname.node, "Labels": [],
        "ExperimentalBuild": False, "ServerVersion": info["version"], "HttpProxy": "", "HttpsProxy": "",
        "NoProxy": "", "Runtimes": {"dockyard": {"path": "dockyard"}}, "DefaultRuntime": "dockyard",
        "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": False,
                  "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": False, "Isolation": "", "InitBinary": "", "SecurityOptions": ["name=seccomp,profile=default"],
        "Warnings": info.get("warnings") or None,
    }


def _memory_total() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def not_found(message: str) -> ApiError:
    return ApiError(404, message)
