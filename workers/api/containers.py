"""``/containers/...``: create, inspect, list, start, stop, restart, kill, wait, remove, update,
changes, export, top, stats, prune, resize (attach, logs and exec: workers/api/sessions.py;
archive: workers/api/archive.py)."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import trio

from logs.options import LogOptions
from supervisor import operations as ops
from workers.api import specs, views
from workers.api.http import ApiError, Empty, Json, Request, Response, Streamed
from workers.api.router import Router
from workers.api.service import Api, start_error
from workers.api.sessions import start_attached

#: The waits of ``POST /containers/{id}/wait``.
WAIT_CONDITIONS = ("not-running", "next-exit", "removed")


def register(router: Router, api: Api) -> None:  # noqa: C901 - one table of routes
    async def create(request: Request) -> Response:
        body = await request.json_body({})
        spec = specs.spec_from_create(body, request.arg("name"))
        if spec.get("network", "bridge") not in ("bridge", "host", "none") and ":" not in spec["network"]:
            # docker checks the network at create (dockyard's spec would only fail at start)
            await api.call(ops.NETWORK_INSPECT, {"network": spec["network"]}, what="network")
        for name, labels in specs.labelled_volumes(body).items():  # a mount's VolumeOptions.Labels
            await api.call(ops.VOLUME_CREATE, {"name": name, "labels": labels})
        platform = request.arg("platform")
        if platform and not platform.startswith("linux"):
            raise ApiError(400, f"platform {platform!r} is not supported: dockyard runs linux containers")
        try:
            reply = await api.call(ops.CONTAINER_CREATE, {"spec": spec})
        except ApiError as error:
            if error.status == 404 and "image" in error.message.lower():
                raise ApiError(404, f"No such image: {spec['image']}") from None
            raise
        return Json({"Id": reply["id"], "Warnings": []}, 201)

    async def inspect(request: Request, id: str) -> Response:
        return Json(container_document(await api.inspect(id)))

    async def listing(request: Request) -> Response:
        filters = views.parse_filters(request.json_arg("filters"))
        everything = request.flag("all") or bool(filters.get("status")) or bool(filters.get("exited"))
        reply = await api.call(ops.CONTAINER_LIST, {"all": everything})
        now = time.time()
        rows = [views.container_row(row, now) for row in reply["containers"]]
        image_ids = await _ancestor_ids(api, filters.get("ancestor") or [])
        rows = [row for row in rows if views.container_matches(row, filters, image_ids)]
        rows.sort(key=lambda row: row["Created"], reverse=True)
        limit = request.integer("limit", -1)
        if limit is not None and limit > 0:
            rows = rows[:limit]
        return Json(rows)

    async def start(request: Request, id: str) -> Response:
        document = await api.inspect(id)
        if document["State"]["Running"]:
            return Empty(304)
        container_id = document["Id"]
        if api.waiting_attaches.get(container_id):
            await start_attached(api, container_id)
            return Empty(204)
        try:
            await api.client.request(ops.CONTAINER_START, {"container": container_id}, timeout=120)
        except Exception as error:
            raise start_error(error) from None
        return Empty(204)

    async def stop(request: Request, id: str) -> Response:
        document = await api.inspect(id)
        if not document["State"]["Running"]:
            return Empty(304)
        await api.call(ops.CONTAINER_STOP, {"container": document["Id"], "timeout": request.integer("t")},
                       what="container", timeout=3600)
        return Empty(204)

    async def restart(request: Request, id: str) -> Response:
        document = await api.inspect(id)
        try:
            await api.client.request(ops.CONTAINER_RESTART, {"container": document["Id"],
                                                             "timeout": request.integer("t")}, timeout=3600)
        except Exception as error:
            raise start_error(error) from None
        return Empty(204)

    async def kill(request: Request, id: str) -> Response:
        document = await api.inspect(id)
        if not document["State"]["Running"]:
            raise ApiError(409, f"Container {document['Id']} is not running")
        signal = request.arg("signal") or "KILL"
        killing = signal.upper().removeprefix("SIG") in ("KILL", "9")
        listener = api.hub.listen(lambda event: event.get("id") == document["Id"] and event.get("action") == "die")
        try:
            await api.call(ops.CONTAINER_KILL, {"container": document["Id"], "signal": signal}, what="container")
            if killing:  # docker answers a SIGKILL once the container is down
                with trio.move_on_after(10):
                    await listener.receive.receive()
        finally:
            api.hub.forget(listener)
        return Empty(204)

    async def wait(request: Request, id: str) -> Response:
        condition = request.arg("condition") or "not-running"
        if condition not in WAIT_CONDITIONS:
            raise ApiError(400, f"invalid condition {condition!r}: use {', '.join(WAIT_CONDITIONS)}")
        document = await api.inspect(id)
        container_id = document["Id"]
        listener = api.hub.listen(lambda event: event.get("id") == container_id
                                  and event.get("action") in ("die", "destroy"))
        try:  # listening from now: an exit after the inspect below is seen
            document = await api.inspect(id)
        except ApiError:
            api.hub.forget(listener)
            raise
        running = document["State"]["Running"] or document["State"]["Restarting"]
        if condition == "not-running" and not running:
            api.hub.forget(listener)
            return Json({"StatusCode": document["State"]["ExitCode"], "Error": None})
        return Streamed(_wait_body(api, listener, condition, document), headers=[])

    async def remove(request: Request, id: str) -> Response:
        if not request.flag("force"):
            state = (await api.inspect(id))["State"]
            if state["Running"] or state["Restarting"]:
                raise ApiError(409, f"You cannot remove a running container {id}. Stop the container before "
                                    "attempting removal or force remove")
        try:
            await api.client.request(ops.CONTAINER_REMOVE, {"container": id, "force": request.flag("force"),
                                                            "volumes": request.flag("v")}, timeout=120)
        except Exception as error:
            from bus.errors import RemoteError

            if isinstance(error, RemoteError) and error.code == "invalid_state":
                raise ApiError(409, f"You cannot remove a running container {id}. Stop the container before "
                                    "attempting removal or force remove") from None
            if isinstance(error, RemoteError) and error.code == "not_found":
                raise ApiError(404, f"No such container: {id}") from None
            raise start_error(error) from None
        return Empty(204)

    async def update(request: Request, id: str) -> Response:
        body = await request.json_body({})
        if not isinstance(body, dict):
            raise ApiError(400, "invalid update body: must be a JSON object")
        specs.refuse_unsupported({}, body)  # a blkio weight is told, not dropped
        limits = specs.resources(body)
        limits.pop("devices", None)
        restart = specs.restart_policy(body) or None
        if limits or restart:
            await api.call(ops.CONTAINER_UPDATE, {"container": id, "resources": limits, "restart": restart},
                           what="container")
        else:
            await api.inspect(id)
        return Json({"Warnings": []})

    async def changes(request: Request, id: str) -> Response:
        reply = await api.call(ops.CONTAINER_DIFF, {"container": id}, what="container", timeout=300)
        kinds = {"C": 0, "A": 1, "D": 2}
        return Json([{"Path": path, "Kind": kinds[kind]} for kind, path in reply["changes"]] or None)

    async def export(request: Request, id: str) -> Response:
        path = api.scratch_path(".tar")
        await api.call(ops.CONTAINER_EXPORT, {"container": id, "path": str(path)}, what="container", timeout=3600)
        return Streamed(file_chunks(api, path), content_type="application/x-tar")

    async def top(request: Request, id: str) -> Response:
        document = await api.inspect(id)
        if not document["State"]["Running"]:
            raise ApiError(409, f"Container {document['Id']} is not running")
        return Json(await trio.to_thread.run_sync(processes_of, document["State"]["Pid"], request.arg("ps_args")))

    async def stats(request: Request, id: str) -> Response:
        document = await api.inspect(id)
        stream = request.flag("stream", True) and not request.flag("one-shot")
        if not document["State"]["Running"]:
            sample = None
        else:
            sample = (await api.call(ops.CONTAINER_STATS, {"containers": [document["Id"]]}))["stats"][0]
        if not stream:
            return Json(stats_document(document, sample, None))
        return Streamed(_stats_stream(api, document, sample))

    async def prune(request: Request) -> Response:
        filters = views.parse_filters(request.json_arg("filters"))
        reply = await api.call(ops.CONTAINER_LIST, {"all": True})
        until = views.parse_time((filters.get("until") or [None])[0])
        deleted = []
        reclaimed = 0
        for row in reply["containers"]:
            if row["status"] not in ("exited", "created", "dead"):
                continue
            if filters.get("label") and not views.labels_match(row.get("labels") or {}, filters["label"]):
                continue
            if until is not None and views.unix_time(row["created"]) >= until:
                continue
            try:
                size = await _upper_size(api, row["id"])
                await api.client.request(ops.CONTAINER_REMOVE, {"container": row["id"]}, timeout=120)
                deleted.append(row["id"])
                reclaimed += size
            except Exception as error:  # removed meanwhile, or started again: not pruned
                api.log.info("prune: container not removed", container=row["id"], error=str(error))
        return Json({"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed})

    async def resize(request: Request, id: str) -> Response:
        document = await api.inspect(id)
        height, width = request.integer("h", 0), request.integer("w", 0)
        for session in api.sessions.get(document["Id"], []):
            await session.send({"resize": [height, width]})
        return Empty(200)

    async def pause(request: Request, id: str) -> Response:
        state = (document := await api.inspect(id))["State"]
        if not state["Running"]:
            raise ApiError(409, f"Container {document['Id']} is not running")
        if state["Paused"]:
            raise ApiError(409, f"Container {document['Id']} is already paused")
        await api.call(ops.CONTAINER_PAUSE, {"container": document["Id"]}, what="container")
        return Empty(204)

    async def unpause(request: Request, id: str) -> Response:
        document = await api.inspect(id)
        if not document["State"]["Paused"]:
            raise ApiError(409, f"Container {document['Id']} is not paused")
        await api.call(ops.CONTAINER_UNPAUSE, {"container": document["Id"]}, what="container")
        return Empty(204)

    async def rename(request: Request, id: str) -> Response:
        name = request.arg("name")
        if not name:
            raise ApiError(400, "name is required")
        await api.call(ops.CONTAINER_RENAME, {"container": id, "name": name}, what="container")
        return Empty(204)

    for method, pattern, handler in (
        ("POST", "/containers/create", create), ("GET", "/containers/json", listing),
        ("POST", "/containers/prune", prune), ("GET", "/containers/{id}/json", inspect),
        ("POST", "/containers/{id}/start", start), ("POST", "/containers/{id}/stop", stop),
        ("POST", "/containers/{id}/restart", restart), ("POST", "/containers/{id}/kill", kill),
        ("POST", "/containers/{id}/wait", wait), ("DELETE", "/containers/{id}", remove),
        ("POST", "/containers/{id}/update", update), ("GET", "/containers/{id}/changes", changes),
        ("GET", "/containers/{id}/export", export), ("GET", "/containers/{id}/top", top),
        ("GET", "/containers/{id}/stats", stats), ("POST", "/containers/{id}/resize", resize),
        ("POST", "/containers/{id}/rename", rename), ("POST", "/containers/{id}/pause", pause),
        ("POST", "/containers/{id}/unpause", unpause),
    ):
        router.add(method, pattern, handler)


async def _upper_size(api: Api, container: str) -> int:
    """Bytes in a container's own layer (what removing it frees)."""
    import os

    document = await api.inspect(container)
    upper = ((document.get("GraphDriver") or {}).get("Data") or {}).get("UpperDir")

    def size() -> int:
        total = 0
        for directory, _dirs, files in os.walk(upper or "/nonexistent"):
            for name in files:
                try:
                    total += os.lstat(os.path.join(directory, name)).st_size
                except OSError:
                    continue
        return total

    return await trio.to_thread.run_sync(size) if upper else 0


async def _ancestor_ids(api: Api, references: list[str]) -> dict[str, str]:
    ids = {}
    for reference in references:
        try:
            ids[reference] = (await api.client.request(ops.IMAGE_INSPECT, {"image": reference}))["Id"]
        except Exception:
            continue
    return ids


async def _wait_body(api: Api, listener: Any, condition: str, document: dict[str, Any]):  # type: ignore[no-untyped-def]
    """The wait's body, once its condition is met; headers went first (docker flushes them,
    and its CLI starts the container only after)."""
    import json

    exit_code = document["State"]["ExitCode"]
    try:
        yield b""
        async for event in listener.receive:
            if event["action"] == "die":
                exit_code = int((event.get("attributes") or {}).get("exitCode", exit_code))
                if condition != "removed":
                    break
            elif event["action"] == "destroy":
                break
    finally:
        api.hub.forget(listener)
    yield json.dumps({"StatusCode": exit_code, "Error": None}).encode() + b"\n"


async def file_chunks(api: Api, path: Any, size: int = 256 * 1024):  # type: ignore[no-untyped-def]
    """A file the daemon wrote for us, streamed, then removed."""
    try:
        file = await trio.open_file(path, "rb")
        async with file:
            while chunk := await file.read(size):
                yield chunk
    finally:
        api.discard(path)


#: HostConfig fields docker always shows, at the values dockyard runs with.
HOST_CONFIG_DEFAULTS = {"PidMode": "", "UTSMode": "", "IpcMode": "private", "UsernsMode": "", "Isolation": "",
                        "CgroupnsMode": "host", "Links": None, "Init": None, "DeviceCgroupRules": None,
                        "MemorySwappiness": None, "OomKillDisable": False, "CpuPeriod": 0, "CpuQuota": 0,
                        "BlkioWeight": 0, "VolumeDriver": "", "ConsoleSize": [0, 0], "Runtime": "dockyard"}


def container_document(document: dict[str, Any]) -> dict[str, Any]:
    """``container.inspect``'s document with the fields docker clients read besides."""
    document = dict(document)
    document.pop("Dockyard", None)
    config = dict(document.get("Config") or {})
    host = dict(document.get("HostConfig") or {})
    config.setdefault("ExposedPorts", {key: {} for key in host.get("PortBindings") or {}} or None)
    config.setdefault("Entrypoint", None)
    config.setdefault("Volumes", None)
    config.setdefault("AttachStdin", False)
    config.setdefault("AttachStdout", True)
    config.setdefault("AttachStderr", True)
    config.setdefault("StdinOnce", False)
    document["Config"] = config
    document.setdefault("ResolvConfPath", "")
    document.setdefault("HostnamePath", "")
    document.setdefault("HostsPath", "")
    document.setdefault("LogPath", "")
    document.setdefault("Platform", "linux")
    document.setdefault("MountLabel", "")
    document.setdefault("ProcessLabel", "")
    document.setdefault("AppArmorProfile", "")
    document.setdefault("ExecIDs", None)
    log_config = dict(host.get("LogConfig") or {})
    log_config["Type"] = "json-file"  # dockyard's own store, under the name docker clients expect (docs/api.md)
    defaults = {key: str(value) for key, value in LogOptions().to_map().items()}
    log_config["Config"] = {key: value for key, value in (log_config.get("Config") or {}).items()
                            if defaults.get(key) != value}  # what the user set, as docker shows it
    host["LogConfig"] = log_config
    for key, default in HOST_CONFIG_DEFAULTS.items():
        host.setdefault(key, default)
    document["HostConfig"] = host
    settings = dict(document.get("NetworkSettings") or {})
    short_id = document["Id"][:12]
    networks = {}
    for name, endpoint in (settings.get("Networks") or {}).items():
        endpoint = {"DriverOpts": None, **endpoint}
        if name not in ("bridge", "host", "none"):  # docker before API 1.45: the short id is an alias
            endpoint["Aliases"] = [*(alias for alias in endpoint.get("Aliases") or [] if alias != short_id), short_id]
        networks[name] = endpoint
    settings["Networks"] = networks
    document["NetworkSettings"] = settings
    return document


def processes_of(pid: int, ps_args: str | None) -> dict[str, Any]:
    """``docker top``: the processes in the pid namespace of ``pid`` (``ps -ef`` columns)."""
    import os

    try:
        namespace = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        raise ApiError(409, f"the container's process {pid} is gone") from None
    members = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == namespace:
                    members.add(entry)
            except OSError:
                continue
    args = ["ps", *(ps_args.split() if ps_args else ["-ef"])]
    try:
        output = subprocess.run(args, capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ApiError(500, f"ps {ps_args or '-ef'} failed: {exc}") from None
    titles = output[0].split()
    pid_column = titles.index("PID") if "PID" in titles else 1
    processes = []
    for line in output[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > pid_column and fields[pid_column] in members:
            processes.append(fields)
    return {"Titles": titles, "Processes": processes}


def stats_document(document: dict[str, Any], sample: dict[str, Any] | None, previous: dict[str, Any] | None,
                   ) -> dict[str, Any]:
    """A ``container.stats`` sample as docker's stats JSON (cpu, memory, blkio, pids)."""
    sample = sample or {}
    previous = previous or {}
    now = sample.get("time") or time.time()
    online = len(__import__("os").sched_getaffinity(0))

    def cpu(of: dict[str, Any]) -> dict[str, Any]:
        usage = int(of.get("cpu_usage_ns") or 0)
        return {"cpu_usage": {"total_usage": usage, "usage_in_kernelmode": 0, "usage_in_usermode": usage,
                              "percpu_usage": None},
                "system_cpu_usage": int((of.get("time") or now) * 1e9 * online) if of else 0,
                "online_cpus": online, "throttling_data": {"periods": 0, "throttled_periods": 0,
                                                           "throttled_time": 0}}

    blkio = [{"major": 0, "minor": 0, "op": "read", "value": int(sample.get("block_read_bytes") or 0)},
             {"major": 0, "minor": 0, "op": "write", "value": int(sample.get("block_write_bytes") or 0)}]
    return {
        "read": views.rfc3339(now), "preread": views.rfc3339(previous["time"]) if previous else views.ZERO_TIME,
        "id": document["Id"], "name": document["Name"], "num_procs": 0,
        "pids_stats": {"current": int(sample.get("pids") or 0)},
        "cpu_stats": cpu(sample), "precpu_stats": cpu(previous),
        "memory_stats": {"usage": int(sample.get("memory_usage") or 0),
                         "limit": int(sample.get("memory_limit") or 0), "stats": {}} if sample else {},
        "blkio_stats": {"io_service_bytes_recursive": blkio if sample else None},
        "networks": {},
        "storage_stats": {},
    }


async def _stats_stream(api: Api, document: dict[str, Any], sample: dict[str, Any] | None):  # type: ignore[no-untyped-def]
    import json

    previous = None
    while True:
        yield json.dumps(stats_document(document, sample, previous)).encode() + b"\n"
        if sample is None:
            return
        await trio.sleep(1.0)
        previous = sample
        try:
            reply = await api.client.request(ops.CONTAINER_STATS, {"containers": [document["Id"]]})
            sample = reply["stats"][0]
        except Exception:
            return  # it stopped or was removed: the stream ends, as docker's
