"""The daemon's bus commands: one small handler per operation.

Each handler validates its arguments (an :class:`InvalidArgument` names the bad one), calls
the :class:`~supervisor.api.Supervisor`, and returns a msgpack-able result that becomes the
reply. Errors raised here carry a stable ``code`` that the bus puts in the error reply. The
argument and result schema of each operation is in its docstring and in docs/events.md.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from supervisor import __version__
from supervisor.api import EVENTS_CHANNEL, Supervisor
from supervisor.errors import InvalidArgument
from supervisor.images.store import Image
from supervisor.journal import Journal
from supervisor.spec import ContainerSpec, parse_signal

_REQUIRED = object()


def _arg(args: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = _REQUIRED) -> Any:
    if name not in args or args[name] is None:
        if default is _REQUIRED:
            raise InvalidArgument(f"argument {name!r} is required")
        return default
    value = args[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InvalidArgument(f"argument {name!r} must be {expected}, not {type(value).__name__}")
    return value


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
        from supervisor.loghandlers import LogHandlers

        return {
            **LogHandlers(self.sup).table(),
            "container.create": self.create,
            "container.run": self.run,
            "container.start": self.start,
            "container.stop": self.stop,
            "container.kill": self.kill,
            "container.restart": self.restart,
            "container.wait": self.wait,
            "container.remove": self.remove,
            "container.list": self.list,
            "container.inspect": self.inspect,
            "container.update": self.update,
            "container.stats": self.stats,
            "image.import": self.image_import,
            "image.list": self.image_list,
            "image.inspect": self.image_inspect,
            "events.replay": self.events_replay,
            "daemon.info": self.info,
        }

    async def create(self, req: Any) -> dict[str, Any]:
        """{spec: ContainerSpec map} -> {id, name}"""
        container = await self.sup.create(ContainerSpec.from_map(_arg(req.args, "spec", dict)))
        return {"id": container.id, "name": container.name}

    async def run(self, req: Any) -> dict[str, Any]:
        """{spec, attach: bool} -> {id, name} at once, or, attached: stream payloads
        {stream: "stdout"|"stderr", data: bytes} while it runs, then {id, name, exit_code,
        dropped} once it has exited and all its output was sent."""
        spec = ContainerSpec.from_map(_arg(req.args, "spec", dict))
        if not _arg(req.args, "attach", bool, False):
            container = await self.sup.run(spec)
            return {"id": container.id, "name": container.name}
        attachment = StreamAttachment(req)
        container = await self.sup.run(spec, attach=attachment)
        exit_code = await self.sup.wait_for(container)
        return {"id": container.id, "name": container.name, "exit_code": exit_code, "dropped": attachment.dropped}

    async def start(self, req: Any) -> dict[str, Any]:
        """{container} -> {id}"""
        container = await self.sup.start(_arg(req.args, "container", str))
        return {"id": container.id}

    async def stop(self, req: Any) -> dict[str, Any]:
        """{container, timeout?: seconds} -> {id}"""
        timeout = _arg(req.args, "timeout", int, None)
        if timeout is not None and timeout < 0:
            raise InvalidArgument(f"argument 'timeout' must be >= 0, not {timeout}")
        container = await self.sup.stop(_arg(req.args, "container", str), timeout)
        return {"id": container.id}

    async def kill(self, req: Any) -> dict[str, Any]:
        """{container, signal?: name or number (default KILL)} -> {id}"""
        sig = parse_signal(_arg(req.args, "signal", (str, int), "KILL"))
        container = await self.sup.kill(_arg(req.args, "container", str), sig)
        return {"id": container.id}

    async def restart(self, req: Any) -> dict[str, Any]:
        """{container, timeout?} -> {id}"""
        container = await self.sup.restart(_arg(req.args, "container", str), _arg(req.args, "timeout", int, None))
        return {"id": container.id}

    async def wait(self, req: Any) -> dict[str, Any]:
        """{container} -> {exit_code}, once the container is not running"""
        return {"exit_code": await self.sup.wait(_arg(req.args, "container", str))}

    async def remove(self, req: Any) -> dict[str, Any]:
        """{container, force?: bool} -> {id}"""
        container = self.sup.get(_arg(req.args, "container", str))
        await self.sup.remove(container.id, force=_arg(req.args, "force", bool, False))
        return {"id": container.id}

    async def list(self, req: Any) -> dict[str, Any]:
        """{all?: bool} -> {containers: [ps rows]}"""
        return {"containers": [c.summary() for c in self.sup.list(all=_arg(req.args, "all", bool, False))]}

    async def inspect(self, req: Any) -> dict[str, Any]:
        """{container} -> the docker-shaped inspect document"""
        return self.sup.get(_arg(req.args, "container", str)).inspect()

    async def update(self, req: Any) -> dict[str, Any]:
        """{container, resources: {memory?, memory_swap?, memory_reservation?, cpus? | nano_cpus?,
        cpu_shares?, cpuset_cpus?, pids_limit?}} -> {id, resources}. Values as in a spec
        ("64m", "0.5", or numbers); 0 leaves a limit unchanged."""
        container = await self.sup.update(_arg(req.args, "container", str), _arg(req.args, "resources", dict))
        return {"id": container.id, "resources": container.spec.resources.to_map()}

    async def stats(self, req: Any) -> dict[str, Any]:
        """{containers?: [ref]} -> {stats: [{id, name, time, cpu_usage_ns, cpu_percent,
        memory_usage, memory_limit, memory_percent, pids, block_read_bytes,
        block_write_bytes}]}: one fresh sample each (default: every running container)."""
        refs = _arg(req.args, "containers", list, [])
        if not all(isinstance(ref, str) for ref in refs):
            raise InvalidArgument("argument 'containers' must be a list of strings")
        return {"stats": await self.sup.stats(refs)}

    async def image_import(self, req: Any) -> dict[str, Any]:
        """{path: a tar file the daemon can read, reference: NAME[:TAG]} -> image summary"""
        path = _arg(req.args, "path", str)
        reference = _arg(req.args, "reference", str)
        try:
            source = open(path, "rb")
        except OSError as exc:
            raise InvalidArgument(f"cannot import {path}: {exc.strerror}", path=path) from exc
        with source:
            image = await self.sup.import_image(source, reference)
        return image_summary(image)

    async def image_list(self, req: Any) -> dict[str, Any]:
        """{} -> {images: [summary]}"""
        return {"images": [image_summary(image) for image in self.sup.images.list()]}

    async def image_inspect(self, req: Any) -> dict[str, Any]:
        """{image} -> the docker-shaped image inspect document"""
        return self.sup.images.resolve(_arg(req.args, "image", str)).to_inspect()

    async def events_replay(self, req: Any) -> dict[str, Any]:
        """{since?: unix time, until?: unix time} -> {events: [envelope maps], last_seq}.
        ``last_seq`` is the seq of the newest event published so far: a client that
        subscribed before asking shows live events with a greater seq, and so sees each
        event exactly once."""
        since = _arg(req.args, "since", (int, float), None)
        until = _arg(req.args, "until", (int, float), None)
        # No await between these two lines: the replay and last_seq describe the same moment.
        events = list(self.journal.replay(since, until))
        return {"events": events, "last_seq": self.last_event_seq()}

    async def info(self, req: Any) -> dict[str, Any]:
        """{} -> daemon facts and counters"""
        containers = self.sup.list(all=True)
        return {
            "version": __version__,
            "pid": os.getpid(),
            "root": str(self.sup.config.root),
            "run_dir": str(self.sup.config.run_dir),
            "cgroup_parent": self.sup.config.cgroup_parent,
            "containers": len(containers),
            "running": sum(1 for c in containers if c.status.running),
            "images": len(self.sup.images.list()),
            "events_channel": EVENTS_CHANNEL,
            "bus": self.bus_stats(),
            "workers": self.workers(),
        }
