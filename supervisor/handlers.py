"""The daemon's bus commands: one small handler per operation.

Each handler gets its arguments already checked against the operation's declaration in
supervisor/operations.py (the one place an argument's presence and type are checked), calls
the :class:`~supervisor.api.Supervisor`, and returns a msgpack-able result that becomes the
reply. Errors raised here carry a stable ``code`` that the bus puts in the error reply. Each
operation's arguments, reply and error codes are declared in supervisor/operations.py (which
generates docs/events.md's table); a handler's docstring sums them up beside the code.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bus import filters
from supervisor import __version__
from supervisor.api import EVENTS_CHANNEL, Supervisor
from supervisor.attach import Session
from supervisor.errors import InvalidArgument
from supervisor.health import Probe
from supervisor.exec import ExecSpec
from supervisor.images.store import Image
from supervisor.journal import Journal
from supervisor import operations as ops
from supervisor.spec import ContainerSpec, parse_signal

#: ``async def handler(request, args)``: ``args`` checked by supervisor/operations.py.
CheckedHandler = Callable[[Any, dict[str, Any]], Awaitable[Any]]


def checked(op: str, handler: CheckedHandler) -> Callable[[Any], Awaitable[Any]]:
    """The bus handler of ``op``: checks the request's arguments against the operation's
    declaration, then runs ``handler`` with them; a bad argument is refused before it runs."""
    operation = ops.DAEMON_OPERATIONS[op]

    async def run(request: Any) -> Any:
        return await handler(request, operation.check(request.args))

    run.__name__ = run.__qualname__ = f"checked {op}"
    return run


def checked_table(handlers: dict[str, CheckedHandler]) -> dict[str, Callable[[Any], Awaitable[Any]]]:
    """Every handler wrapped by :func:`checked`; an operation without a declaration, or a
    declared one without a handler, is a bug."""
    undeclared = sorted(set(handlers) - set(ops.DAEMON_OPERATIONS))
    if undeclared:
        raise ValueError(f"operations without a declaration in supervisor/operations.py: {', '.join(undeclared)}")
    unserved = sorted(set(ops.DAEMON_OPERATIONS) - set(handlers))
    if unserved:
        raise ValueError(f"declared operations without a handler: {', '.join(unserved)}")
    return {op: checked(op, handler) for op, handler in handlers.items()}


def _with_warnings(reply: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """``reply`` with ``warnings`` (what changed in a running container's files while they
    were read: docs/images.md) when there are any."""
    return {**reply, "warnings": warnings} if warnings else reply


class StreamAttachment:
    """Forwards a container's output to the client that asked for it, over its request."""

    def __init__(self, request: Any):
        self.request = request
        self.dropped = 0

    async def send(self, stream: str, data: bytes) -> None:
        if not await self.request.stream({"stream": stream, "data": data}):
            self.dropped += 1


def image_summary(image: Image) -> dict[str, Any]:
    return {"id": image.id, "repo_tags": list(image.repo_tags), "created": image.created, "size": image.size}


class Handlers:
    def __init__(self, supervisor: Supervisor, journal: Journal, last_event_seq: Callable[[], int],
                 bus_stats: Callable[[], dict], workers: Callable[[], dict] = dict):
        self.sup = supervisor
        self.journal = journal
        self.last_event_seq = last_event_seq
        self.bus_stats = bus_stats
        self.workers = workers

    def table(self) -> dict[str, Callable[[Any], Awaitable[Any]]]:
        """The bus handlers, each behind the check of its declared arguments."""
        from supervisor.loghandlers import LogHandlers
        from supervisor.buildhandlers import BuildHandlers
        from supervisor.registryhandlers import RegistryHandlers
        from supervisor.eventkeyhandlers import EventKeyHandlers
        from supervisor.networkhandlers import NetworkHandlers
        from supervisor.volumehandlers import VolumeHandlers

        return checked_table({
            **LogHandlers(self.sup, self.workers).table(),
            **RegistryHandlers(self.sup).table(),
            **BuildHandlers(self.sup).table(),
            **VolumeHandlers(self.sup).table(),
            **NetworkHandlers(self.sup).table(),
            **EventKeyHandlers(self.sup).table(),
            ops.CONTAINER_CREATE: self.create,
            ops.CONTAINER_RUN: self.run,
            ops.CONTAINER_START: self.start,
            ops.CONTAINER_STOP: self.stop,
            ops.CONTAINER_KILL: self.kill,
            ops.CONTAINER_PAUSE: self.pause,
            ops.CONTAINER_UNPAUSE: self.unpause,
            ops.CONTAINER_RESTART: self.restart,
            ops.CONTAINER_WAIT: self.wait,
            ops.CONTAINER_REMOVE: self.remove,
            ops.CONTAINER_LIST: self.list,
            ops.CONTAINER_INSPECT: self.inspect,
            ops.CONTAINER_UPDATE: self.update,
            ops.CONTAINER_RENAME: self.rename,
            ops.CONTAINER_STATS: self.stats,
            ops.CONTAINER_SCHEDULE_RESTART: self.schedule_restart,
            ops.CONTAINER_HEALTH_REPORT: self.health_report,
            ops.CONTAINER_HEALTH_CHECK: self.health_check,
            ops.CONTAINER_ATTACH: self.attach,
            ops.CONTAINER_EXEC: self.exec,
            ops.IMAGE_IMPORT: self.image_import,
            ops.IMAGE_LIST: self.image_list,
            ops.IMAGE_INSPECT: self.image_inspect,
            ops.IMAGE_TAG: self.image_tag,
            ops.IMAGE_REMOVE: self.image_remove,
            ops.IMAGE_HISTORY: self.image_history,
            ops.IMAGE_SAVE: self.image_save,
            ops.IMAGE_LOAD: self.image_load,
            ops.CONTAINER_COMMIT: self.commit,
            ops.CONTAINER_DIFF: self.diff,
            ops.CONTAINER_EXPORT: self.export,
            ops.CONTAINER_COPY_FROM: self.copy_from,
            ops.CONTAINER_COPY_TO: self.copy_to,
            ops.EVENTS_REPLAY: self.events_replay,
            ops.DAEMON_INFO: self.info,
        })

    async def create(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{spec: ContainerSpec map} -> {id, name}"""
        container = await self.sup.create(ContainerSpec.from_map(args["spec"]))
        return {"id": container.id, "name": container.name}

    async def run(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{spec, attach: bool, stdin?: bool, window?: chunks} -> {id, name} at once, or,
        attached: a session (supervisor/attach.py: stream payloads {stream: "stdout"|"stderr",
        data: bytes} while it runs, input and control messages from the client), then
        {id, name, exit_code, dropped} once it has exited and all its output was sent, or
        {id, name, detached: true}."""
        spec = ContainerSpec.from_map(args["spec"])
        if not args["attach"]:
            container = await self.sup.run(spec)
            return {"id": container.id, "name": container.name}
        session = self._session(req, args)
        container = await self.sup.run(spec, attach=session)
        return await self._serve_container(session, container)

    async def start(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, attach?: bool, stdin?: bool, window?} -> {id}, or attached: a session
        as for run, then {id, name, exit_code, dropped} or {id, name, detached: true}"""
        ref = args["container"]
        if not args["attach"]:
            container = await self.sup.start(ref)
            return {"id": container.id}
        session = self._session(req, args)
        container = await self.sup.start(ref, attach=session)
        return await self._serve_container(session, container)

    async def attach(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, stdin?: bool, window?} -> a session with a running container (its
        output from now on), then {id, name, exit_code, dropped} or {id, name, detached: true}"""
        session = self._session(req, args)
        container = self.sup.attach(args["container"], session)
        return await self._serve_container(session, container)

    async def exec(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, exec: {cmd, env?, workdir?, user?, tty?, stdin?, detach?}, window?}
        -> with detach: {exec_id, pid} once it runs; else a session with the exec'd process,
        then {exec_id, exit_code, dropped} or {exec_id, detached: true}"""
        ref = args["container"]
        spec = ExecSpec.from_map(args["exec"])
        if spec.detach:
            execution = await self.sup.exec(ref, spec)
            return {"exec_id": execution.id, "pid": execution.pid}
        session = Session(req, args["window"], stdin=spec.stdin)
        execution = await self.sup.exec(ref, spec, attach=session)
        try:
            exit_code = await session.serve(execution.target(), execution.wait)
        finally:
            if session in execution.attachments:
                execution.attachments.remove(session)
        if session.detached or exit_code is None:
            return {"exec_id": execution.id, "detached": True}
        return {"exec_id": execution.id, "exit_code": exit_code, "dropped": session.dropped}

    def _session(self, req: Any, args: dict[str, Any]) -> Session:
        return Session(req, args["window"], stdin=args["stdin"])

    async def _serve_container(self, session: Session, container: Any) -> dict[str, Any]:
        try:
            exit_code = await session.serve(self.sup.target(container), lambda: self.sup.wait_for(container))
        finally:
            self.sup.detach(container, session)
        if session.detached or exit_code is None:
            return {"id": container.id, "name": container.name, "detached": True}
        return {"id": container.id, "name": container.name, "exit_code": exit_code, "dropped": session.dropped}

    async def stop(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, timeout?: seconds} -> {id}"""
        container = await self.sup.stop(args["container"], args["timeout"])
        return {"id": container.id}

    async def kill(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, signal?: name or number (default KILL)} -> {id}"""
        sig = parse_signal(args["signal"])
        container = await self.sup.kill(args["container"], sig)
        return {"id": container.id}

    async def pause(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container} -> {id}, once its processes are frozen"""
        return {"id": (await self.sup.pause(args["container"])).id}

    async def unpause(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container} -> {id}, once its processes run again"""
        return {"id": (await self.sup.unpause(args["container"])).id}

    async def restart(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, timeout?} -> {id}"""
        container = await self.sup.restart(args["container"], args["timeout"])
        return {"id": container.id}

    async def wait(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container} -> {exit_code}, once the container is not running"""
        return {"exit_code": await self.sup.wait(args["container"])}

    async def remove(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, force?: bool} -> {id}"""
        container = self.sup.get(args["container"])
        await self.sup.remove(container.id, force=args["force"], volumes=args["volumes"])
        return {"id": container.id}

    async def list(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{all?: bool, filters?: [KEY=VALUE]} -> {containers: [ps rows]}"""
        return {"containers": [c.summary() for c in self.sup.list(all=args["all"], filters=args["filters"])]}

    async def inspect(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container} -> the docker-shaped inspect document"""
        return self.sup.get(args["container"]).inspect()

    async def rename(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, name} -> {id, name}: the container's new name (docker rename)."""
        container = await self.sup.rename(args["container"], args["name"])
        return {"id": container.id, "name": container.name}

    async def update(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, resources?: {memory?, memory_swap?, memory_reservation?, cpus? | nano_cpus?,
        cpu_shares?, cpuset_cpus?, pids_limit?}, restart?: policy} -> {id, resources}. Values as
        in a spec ("64m", "0.5", or numbers); 0 leaves a limit unchanged."""
        container = await self.sup.update(args["container"], args["resources"] or {}, restart=args["restart"])
        return {"id": container.id, "resources": container.spec.resources.to_map()}

    async def stats(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{containers?: [ref]} -> {stats: [{id, name, time, cpu_usage_ns, cpu_percent,
        memory_usage, memory_limit, memory_percent, pids, block_read_bytes,
        block_write_bytes}]}: one fresh sample each (default: every running container)."""
        return {"stats": await self.sup.stats(args["containers"])}

    async def schedule_restart(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, exit: the exit's finished_at, attempt: int >= 1, delay: seconds} ->
        {id, restart_count}: restart an exited container after delay, for its restart policy
        (the monitor's request). Refused with ``conflict`` when that exit was already answered
        or is not the container's last: one exit never causes two restarts."""
        container = await self.sup.schedule_restart(
            args["container"],
            args["exit"],
            args["attempt"],
            float(args["delay"]),
        )
        return {"id": container.id, "restart_count": container.restart_count}

    async def health_check(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container} -> {id, status, failing_streak, exit_code}: run the container's health
        check once now (in the container, with its timeout) and record it (the monitor
        asks for this every interval)."""
        container = await self.sup.run_health_check(args["container"])
        state = container.health
        return {"id": container.id, "status": state.status, "failing_streak": state.failing_streak,
                "exit_code": state.log[-1].exit_code}

    async def health_report(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, start, end: unix seconds, exit_code: int (-1: timed out), output: str}
        -> {id, status, failing_streak}: one probe of the container's health check (the
        monitor's report)."""
        probe = Probe(
            start=float(args["start"]),
            end=float(args["end"]),
            exit_code=args["exit_code"],
            output=args["output"],
        )
        container = self.sup.report_health(args["container"], probe)
        return {"id": container.id, "status": container.health.status, "failing_streak": container.health.failing_streak}

    async def image_import(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{path: a tar file the daemon can read, reference: NAME[:TAG], changes?: [Dockerfile
        instruction], message?: the history comment} -> image summary"""
        path = args["path"]
        reference = args["reference"]
        try:
            source = open(path, "rb")
        except OSError as exc:
            raise InvalidArgument(f"cannot import {path}: {exc.strerror}", path=path) from exc
        changes = args["changes"]
        message = args["message"]
        with source:
            image = await self.sup.import_image(source, reference, changes, message)
        return image_summary(image)

    async def image_tag(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{image, reference: NAME[:TAG]} -> image summary"""
        image = await self.sup.tag_image(args["image"], args["reference"])
        return image_summary(image)

    async def image_remove(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{image, force?: bool, no_prune?: bool} -> {report: [{"Untagged": ref} | {"Deleted": "sha256:<id>"}]}"""
        report = await self.sup.remove_image(args["image"], args["force"], prune=not args["no_prune"])
        return {"report": report}

    async def image_history(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{image} -> {history: [{id, created, created_by, size, comment}], newest first}"""
        return {"history": self.sup.images.history(args["image"])}

    async def image_save(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{images: [ref], path: absolute path the daemon writes} -> {saved: [ref]}"""
        refs = args["images"]
        if not refs:
            raise InvalidArgument(f"{ops.IMAGE_SAVE}: argument 'images' must name at least one image",
                                  argument="images")
        return {"saved": await self.sup.save_images(refs, Path(args["path"]))}

    async def image_load(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{path: an archive the daemon can read} -> {images: [summary + loaded_tags: the
        tags the archive named]}"""
        loaded = await self.sup.load_images(Path(args["path"]))
        return {"images": [{**image_summary(each.image), "loaded_tags": list(each.tags)} for each in loaded]}

    async def commit(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, reference?: NAME[:TAG], comment?, author?, changes?: [Dockerfile
        instruction]} -> image summary (+ warnings?: [what changed while it was read])"""
        warnings: list[str] = []
        image = await self.sup.commit(
            args["container"],
            args["reference"] or None,
            comment=args["comment"],
            author=args["author"],
            changes=args["changes"],
            warnings=warnings,
        )
        return _with_warnings(image_summary(image), warnings)

    async def diff(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container} -> {changes: [[kind ("A"|"C"|"D"), path]], warnings?}, sorted by path"""
        warnings: list[str] = []
        changes = await self.sup.diff(args["container"], warnings)
        return _with_warnings({"changes": [list(change) for change in changes]}, warnings)

    async def export(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, path: absolute path the daemon writes the tar to} -> {path, warnings?}"""
        path = Path(args["path"])
        warnings: list[str] = []
        await self.sup.export(args["container"], path, warnings)
        return _with_warnings({"path": str(path)}, warnings)

    async def copy_from(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, source: container path, path: where the daemon writes a tar of it}
        -> {name: the tar's top member, warnings?}"""
        path = Path(args["path"])
        warnings: list[str] = []
        name = await self.sup.copy_from(args["container"], args["source"], path, warnings)
        return _with_warnings({"name": name}, warnings)

    async def copy_to(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{container, source: absolute host path, dest: container path} -> {path: written, warnings?}"""
        warnings: list[str] = []
        written = await self.sup.copy_to(
            args["container"], Path(args["source"]), args["dest"], warnings
        )
        return _with_warnings({"path": written}, warnings)

    async def image_list(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{filters?: [KEY=VALUE], all?} -> {images: [summary + labels]} (a ``reference=`` filter
        keeps the tags that match; ``all``: a build's intermediate images too)."""
        return {"images": [{**image_summary(image), "repo_tags": tags,
                            "labels": (image.config or {}).get("Labels") or {},
                            "repo_digests": list(image.repo_digests)}
                           for image, tags in self.sup.list_images(args["filters"], args["all"])]}

    async def image_inspect(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{image} -> the docker-shaped image inspect document"""
        return self.sup.images.resolve(args["image"]).to_inspect()

    async def events_replay(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{since?, until?, after_seq?, filters?} -> {events: [envelope maps], last_seq, lost}.
        ``last_seq`` is the seq of the newest event published so far: a client that
        subscribed before asking shows live events with a greater seq, and so sees each
        event exactly once. ``lost``: how many events after ``after_seq`` are older than
        the journal (its size is the daemon's ``--events-journal``)."""
        since, until, after_seq = args["since"], args["until"], args["after_seq"]
        try:
            wanted = filters.normalize(args["filters"] or {})
        except filters.FilterError as error:
            raise InvalidArgument(f"events.replay: {error}") from None
        # No await from here to the return: the replay and last_seq describe the same moment.
        last_seq = self.last_event_seq()
        lost = 0
        if after_seq is not None:
            events, lost = self.journal.after(after_seq, last_seq)
            events = [event for event in events if (since is None or event.get("ts", 0) >= since)
                      and (until is None or event.get("ts", 0) <= until)]
        else:
            events = list(self.journal.replay(since, until))
        if wanted:
            events = [event for event in events if filters.matches(wanted, event.get("data"))]
        return {"events": events, "last_seq": last_seq, "lost": lost}

    async def info(self, req: Any, args: dict[str, Any]) -> dict[str, Any]:
        """{} -> daemon facts and counters; ``logs``: whether a log collector is there and
        the output no collector has stored yet; ``warnings``: what an operator should fix,
        for people (``dockyard info`` prints them on stderr)."""
        containers = self.sup.list(all=True)
        logs = self._logs_info(containers)
        return {
            "version": __version__,
            "pid": os.getpid(),
            "root": str(self.sup.config.root),
            "run_dir": str(self.sup.config.run_dir),
            "cgroup_parent": self.sup.config.cgroup_parent,
            "cgroup_path": self.sup.cgroup_path,
            "default_pids_limit": self.sup.default_pids_limit if self.sup.default_pids_limit > 0 else None,
            "containers": len(containers),
            "running": sum(1 for c in containers if c.status.running and not c.status.can_unpause()),
            "paused": sum(1 for c in containers if c.status.can_unpause()),
            "images": len(self.sup.images.list()),
            "events_channel": EVENTS_CHANNEL,
            "bus": self.bus_stats(),
            "workers": self.workers(),
            "network": self.sup.networking.info() if self.sup.networking is not None else None,
            "SecurityOptions": security_options(self.sup.lifecycle.remap),
            "userns": self.sup.lifecycle.remap.info(),
            "logs": logs,
            "warnings": logs_warnings(logs),
        }

    def _logs_info(self, containers: list[Any]) -> dict[str, Any]:
        from supervisor.loghandlers import LogHandlers, unstored_map

        present = LogHandlers(self.sup, self.workers).collector_present()
        names = {container.id: container.name for container in containers}
        unstored = []
        for container_id, log in self.sup.logs.all().items():
            waiting = unstored_map(log, None, present)
            if waiting is not None and container_id in names:
                del waiting["collector"]
                unstored.append({"id": container_id, "name": names[container_id], **waiting})
        return {
            "collector": {"present": present, "last_seen": self.sup.logs.collector.last_seen},
            "unstored": sorted(unstored, key=lambda row: row["name"]),
        }


def security_options(remap: Any) -> list[str]:
    """docker info's ``SecurityOptions``: the default seccomp profile, the private cgroup
    namespace every container gets, and ``name=userns`` under --userns-remap. (There is no
    daemon-wide no-new-privileges, so ``name=no-new-privileges`` is never listed.)"""
    options = ["name=seccomp,profile=default", "name=cgroupns"]
    if remap.mapping is not None:
        options.append("name=userns")
    return options


def logs_warnings(logs: dict[str, Any]) -> list[str]:
    warnings = []
    if not logs["collector"]["present"]:
        warnings.append(
            "no log collector is running: container output is not stored (dockyard logs cannot show it), "
            "and a container in blocking log mode stops once it has written its max-buffer-size; run the "
            "daemon with the logcollector worker, or `dockyard worker logcollector` beside it")
    blocked = [row for row in logs["unstored"] if row["blocked"]]
    if blocked:
        warnings.append(
            f"{len(blocked)} container(s) blocked until a log collector stores their output: "
            + ", ".join(f"{row['name']} ({row['bytes']} bytes waiting)" for row in blocked))
    return warnings
