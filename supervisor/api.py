"""The supervisor as a library: create, start, stop, wait for and remove containers from any
trio program. The daemon (:mod:`supervisor.daemon`) is this API plus a bus.

    async with Supervisor(Config(root=..., run_dir=...), publish=on_event) as sup:
        await sup.import_image(open("rootfs.tar", "rb"), "base")
        container = await sup.run(ContainerSpec(image="base", cmd=["echo", "hi"]))
        exit_code = await sup.wait(container.id)

docs/operations.md ("Embedding") is the user's guide: the event callback's contract, where the
containers' output goes (``log_store``).

Theory of operation
-------------------
The Supervisor is the only thing that creates, signals or reaps container processes. It is a
child subreaper: the container init stage forks the container's pid 1 and exits, so pid 1 is
re-parented to the supervisor, which watches it through a pidfd. Each running container has
one task (:meth:`Supervisor._supervise`) that pumps its stdout and stderr into log events,
waits for its exit, records it and cleans up its cgroup. The container's overlay is mounted
inside its own mount namespace, so it disappears with the container: nothing to unmount.

Every lifecycle change is saved (atomically) before its event is published, so a subscriber
that reacts to an event and asks for the container sees the new state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import secrets
import shlex
import shutil
import signal
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO

import structlog
import trio

from logs.atomic import atomic_file
from supervisor.config import Config
from supervisor.container import Attachment, Container, Resolved, now_rfc3339, random_name
from supervisor.errors import Conflict, DockyardError, InvalidArgument, InvalidState, NotFound, StartError
from supervisor.images import archive as image_archive
from supervisor.images import containerfs
from supervisor.images.changes import WalkWarnings, container_diff
from supervisor.images.oci import container_config, parse_changes
from supervisor.images.store import Image, ImageStore
from supervisor import EVENT_TYPES, health, restart as restart_policy, stats
from supervisor.logbuffer import LogBuffers
from supervisor.logpump import drain, pump
from supervisor.locallogs import LocalLogStore, discard, read_records
from supervisor.resources import UPDATABLE, DeviceMapping, Resources, device_rule
from supervisor.runtime import cgroups
from supervisor.runtime.spawn import DEFAULT_CAPABILITIES, ForkServer, LaunchConfig, LaunchError, become_subreaper
from supervisor.runtime.stdio import StdioPlan, set_window_size
from supervisor.attach import Collector, Target
from supervisor.exec import ExecConfig, ExecResult, ExecSpec, Execution
from supervisor.spec import DEFAULT_PATH, ContainerSpec, merge_env, parse_signal
from supervisor.state import Status
from supervisor.store import ContainerStore

#: publish(topic, data, channel): the user's event callback (Supervisor(publish=...)). It
#: gets every event in one shape; a log record's bytes are in data["data"], whatever its size.
EventCallback = Callable[[str, dict[str, Any], str], Any]
#: publish(topic, data, channel, payload): the daemon's bus (BusServer.publish's shape), which
#: takes a big log record as ``payload`` (buffer, start, end) instead of data["data"], to
#: send it without a copy (supervisor/logbuffer.py). Supervisor(publish_frames=...) only.
EventSink = Callable[..., Any]

#: Who stores the containers' output (Supervisor(log_store=...), docs/operations.md):
#: "local": the Supervisor, in <root>/logs/<id>/ (supervisor/locallogs.py; the default);
#: "collector": a log collector over the bus acknowledges it (the daemon); a container whose
#: buffer is full waits for it (blocking mode). "none": nobody; records are let go once
#: published (the event callback is their only reader).
LOG_STORES = ("local", "collector", "none")

EVENTS_CHANNEL = "events"
#: Exit code recorded for a container that was running when the daemon died (as docker).
ORPHAN_EXIT_CODE = 255
#: After pid 1 exited, the pumps are cancelled once no output came for this long (processes
#: in other namespaces that inherited the pipes may hold them open).
OUTPUT_DRAIN_SECONDS = 2.0
#: cgroup v2 gets no device program (BPF) from dockyard yet: without CAP_MKNOD a container
#: cannot make a node for a host device (docs/architecture.md, "Security defaults").
V2_CAPABILITIES = tuple(cap for cap in DEFAULT_CAPABILITIES if cap != "CAP_MKNOD")


@dataclasses.dataclass(eq=False)
class PendingRestart:
    """A policy restart waiting for its delay (Supervisor.schedule_restart)."""

    exit_id: str
    attempt: int
    delay: float
    scope: trio.CancelScope = dataclasses.field(default_factory=trio.CancelScope)


class Supervisor:
    """Containers for a trio program (``async with Supervisor(config) as sup``).

    Args:
        config: paths and tunables (a private cgroup parent and bridge let it run beside a
            dockyard daemon).
        publish: ``publish(topic, data, channel)``, called on the trio thread for every event
            (docs/events.md: lifecycle events, ``log.<id>.stdout|stderr`` with the output's
            bytes in ``data["data"]``, ``stats.<id>``); it must not block. An exception it
            raises is logged and counted (:attr:`callback_errors`), never raised here.
        log: a structlog-style logger (default: structlog's ``dockyard`` logger).
        log_store: who stores the containers' output, one of :data:`LOG_STORES`.
        publish_frames: the daemon's bus (:data:`EventSink`); not for user code.
    """

    def __init__(self, config: Config | None = None, *, publish: EventCallback | None = None, log: Any = None,
                 log_store: str = "local", publish_frames: EventSink | None = None):
        if log_store not in LOG_STORES:
            raise ValueError(f"log_store must be one of {', '.join(LOG_STORES)}, not {log_store!r}")
        if publish is not None and (not callable(publish) or inspect.iscoroutinefunction(publish)):
            raise TypeError(f"publish must be a plain function publish(topic, data, channel), not {publish!r}: "
                            "it is called on the trio thread for every event (to handle events in a task, "
                            "give it a trio memory channel's send_nowait)")
        self.config = config or Config()
        self._callback = publish
        self._sink = publish_frames
        self.callback_errors = 0  # exceptions the event callback raised (each logged, at most one a second)
        self._callback_error_logged = -1.0
        self.log = log or structlog.get_logger("dockyard")
        self.log_store = log_store
        self._containers: dict[str, Container] = {}
        self._store = ContainerStore(self.config.containers_dir)
        self.images = ImageStore(self.config.root)
        self._cgroups = cgroups.detect(str(self.config.cgroup_root), self.config.cgroup_parent)
        self._host_memory = _host_memory()
        self._stack = contextlib.AsyncExitStack()
        self._nursery: trio.Nursery | None = None
        self._fork_server = ForkServer(self.config.python)  # forks every container's init stage
        self._shutting_down = False  # stops from now on are the daemon's, not the user's
        self._sampler: trio.CancelScope | None = None
        self.local_logs = LocalLogStore(self.config.root, self._log_dropped, self.log) if log_store == "local" else None
        keep = self.local_logs.keep if self.local_logs is not None else discard if log_store == "none" else None
        self.logs = LogBuffers(self.config.root, publish=self._publish, dropped=self._log_dropped, keep=keep)
        self.networking: Any = None  # supervisor.network.manager.Network, from __aenter__
        #: The pids limit given to a container created without one (-1: none); see __aenter__.
        self.default_pids_limit = self.config.default_pids_limit

    # --- lifecycle of the supervisor itself --------------------------------------------

    async def __aenter__(self) -> Supervisor:
        become_subreaper()
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._cgroups.enter()  # a delegated v2 cgroup: the daemon moves into its leaf first
        except OSError as exc:
            raise DockyardError(f"cannot prepare the containers' cgroups: {exc.strerror}") from exc
        self._check_default_pids_limit()
        await self._load_and_reconcile()
        await self._start_networking()
        await self._stack.enter_async_context(self._fork_server)  # closed after the nursery
        self._nursery = await self._stack.enter_async_context(trio.open_nursery())
        self.networking.nursery = self._nursery
        self._start_sampler()
        if self.local_logs is not None:
            self._nursery.start_soon(self.local_logs.sync_forever)
        self._emit("daemon", "start", "", {"pid": str(os.getpid()), "root": str(self.config.root)})
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        try:
            with trio.CancelScope(shield=True):
                await self.shutdown()
                if self.local_logs is not None:
                    self.local_logs.close()
                await trio.to_thread.run_sync(self._cgroups.remove_parent)
                if self.networking is not None:
                    await self.networking.stop()
        finally:
            assert self._nursery is not None
            self._nursery.cancel_scope.cancel()
            suppress = await self._stack.__aexit__(*exc_info)
        return suppress

    async def shutdown(self) -> None:
        """Stop every running container (each with its own grace period), in parallel."""
        self._shutting_down = True
        for container in self._containers.values():
            self._cancel_pending_restart(container)
        running = [c for c in self._containers.values() if c.status.running]
        with trio.move_on_after(self.config.shutdown_timeout + max((c.spec.stop_timeout for c in running), default=0)):
            async with trio.open_nursery() as nursery:
                for container in running:
                    nursery.start_soon(self.stop, container.id)
        self._emit("daemon", "stop", "", {"pid": str(os.getpid())})

    # --- images -----------------------------------------------------------------------

    async def import_image(self, source: BinaryIO, reference: str, changes: list[str] | None = None,
                           message: str = "") -> Image:
        config = parse_changes(changes, operation="import") if changes else None
        image = await trio.to_thread.run_sync(
            functools.partial(self.images.import_tar, source, reference, changes=config, message=message)
        )
        self._emit("image", "import", image.id, {"name": reference})
        return image

    async def commit(self, ref: str, reference: str | None = None, *, comment: str = "", author: str = "",
                     changes: list[str] | tuple[str, ...] = (), warnings: list[str] | None = None) -> Image:
        """A new image from a container's changes (``docker commit``); running is fine
        (it is not paused: a file being written at that moment may be caught half-way, one
        that vanishes is skipped; both are logged and added to ``warnings``)."""
        container = self.get(ref)
        base = self.images.resolve(container.image_id)
        config = commit_config(container.spec, base.config)
        if changes:
            config = container_config(parse_changes(list(changes), config.get("Env")), base=config, operation="commit")
        walked = WalkWarnings()
        image = await trio.to_thread.run_sync(functools.partial(
            self.images.commit_container, str(container.upper), base.id, reference=reference, config=config,
            created_by=shlex.join(container.resolved.argv), comment=comment, author=author, warnings=walked,
        ))
        self._walk_warnings("commit", container, walked, warnings)
        self._emit("container", "commit", container.id, {"name": container.name, "image": image.id,
                                                          **({"reference": reference} if reference else {})})
        return image

    async def diff(self, ref: str, warnings: list[str] | None = None) -> list[tuple[str, str]]:
        """``docker diff``: (kind, path) with kind A, C or D, sorted by path."""
        container = self.get(ref)
        walked = WalkWarnings()
        changes = await trio.to_thread.run_sync(container_diff, str(container.upper), list(container.layers), walked)
        self._walk_warnings("diff", container, walked, warnings)
        return changes

    async def export(self, ref: str, output: Path, warnings: list[str] | None = None) -> None:
        """Write the container's filesystem as a tar to ``output`` (replaced atomically)."""
        container = self.get(ref)
        walked = WalkWarnings()
        await trio.to_thread.run_sync(_write_file, output, functools.partial(
            containerfs.export, str(container.upper), container.layers, warnings=walked))
        self._walk_warnings("export", container, walked, warnings)
        self._emit("container", "export", container.id, {"name": container.name})

    async def copy_from(self, ref: str, source: str, output: Path, warnings: list[str] | None = None) -> str:
        """A tar of ``source`` in the container, written to ``output``; returns the name
        of its top member."""
        container = self.get(ref)
        names: list[str] = []
        walked = WalkWarnings()

        def write(stream: BinaryIO) -> None:
            names.append(containerfs.copy_out(container.name, str(container.upper), container.layers, source, stream,
                                              walked))

        await trio.to_thread.run_sync(_write_file, output, write)
        self._walk_warnings("copy from", container, walked, warnings)
        return names[0]

    async def copy_to(self, ref: str, source: Path, dest: str, warnings: list[str] | None = None) -> str:
        """Copy the host path ``source`` to ``dest`` in the container."""
        container = self.get(ref)
        walked = WalkWarnings()
        async with container.lock:
            pid = container.pid if container.status.running else 0
            written = await trio.to_thread.run_sync(functools.partial(
                containerfs.copy_in, container.name, str(container.upper), container.layers, pid, source, dest,
                container.directory, walked,
            ))
        self._walk_warnings("copy to", container, walked, warnings)
        return written

    def _walk_warnings(self, operation: str, container: Container, walked: WalkWarnings,
                       warnings: list[str] | None) -> None:
        """Log what a walk of live files skipped or took half-way, and hand it to the caller."""
        if not walked.count:
            return
        self.log.warning("files changed while they were read", operation=operation, container=container.id,
                         count=walked.count, first=walked.notes)
        if warnings is not None:
            warnings.extend(walked.messages())

    def image_users(self, image_id: str) -> list[tuple[str, bool]]:
        """(name, running) of every container made from the image."""
        return [(c.name, c.status.running) for c in self._containers.values() if c.image_id == image_id]

    async def remove_image(self, ref: str, force: bool = False) -> list[dict[str, str]]:
        image_id = self.images.resolve(ref).id
        report = await trio.to_thread.run_sync(
            functools.partial(self.images.remove, ref, force=force, users=self.image_users)
        )
        for line in report:  # docker's actions: untag (per tag), then delete
            if "Untagged" in line:
                self._emit("image", "untag", image_id, {"name": line["Untagged"]})
            else:
                self._emit("image", "delete", image_id, {"name": ref})
        return report

    async def tag_image(self, ref: str, reference: str) -> Image:
        image = await trio.to_thread.run_sync(self.images.tag, ref, reference)
        self._emit("image", "tag", image.id, {"name": reference})
        return image

    async def save_images(self, refs: list[str], output: Path) -> list[str]:
        saved = await trio.to_thread.run_sync(image_archive.save, self.images, refs, output)
        for name in saved:
            self._emit("image", "save", "", {"name": name})
        return saved

    async def load_images(self, source: Path) -> list[image_archive.LoadedImage]:
        """The images of an archive, each with the tags the archive named."""
        loaded = await trio.to_thread.run_sync(image_archive.load, self.images, source)
        for each in loaded:
            self._emit("image", "load", each.image.id, {"name": ",".join(each.tags)})
        return loaded

    # --- lookups ----------------------------------------------------------------------

    def get(self, ref: str) -> Container:
        """A container by id, name, or unique id prefix."""
        if not ref:
            raise InvalidArgument("a container name or id is required")
        if ref in self._containers:
            return self._containers[ref]
        name = ref.lstrip("/")
        for container in self._containers.values():
            if container.name == name:
                return container
        matches = [c for c in self._containers.values() if c.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise Conflict(f"container id prefix {ref!r} is ambiguous: it matches {len(matches)} containers")
        raise NotFound(f"no such container: {ref}", container=ref)

    def list(self, all: bool = False) -> list[Container]:
        containers = sorted(self._containers.values(), key=lambda c: c.created, reverse=True)
        return [c for c in containers if all or c.status.running or c.pending_restart is not None]

    # --- containers ---------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> Container:
        if not spec.resources.pids_limit and self.default_pids_limit > 0:
            # Stored in the spec (inspect shows it; a later change of the default leaves it), as podman.
            spec = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, pids_limit=self.default_pids_limit))
        self._check_resources(spec.resources)
        image = self.images.resolve(spec.image)
        healthcheck = health.effective(spec.healthcheck, (image.config or {}).get("Healthcheck"))
        name = spec.name or self._unused_name()
        for other in self._containers.values():
            if other.name == name:
                raise Conflict(
                    f'the container name "{name}" is already in use by container {other.id}',
                    name=name,
                    container=other.id,
                )
        container_id = secrets.token_hex(32)
        container = Container(
            id=container_id,
            name=name,
            spec=spec,
            image_id=image.id,
            image_ref=spec.image,
            resolved=_resolve(spec, image, container_id),
            directory=self._store.path(container_id),
            layers=list(image.layers),
            healthcheck=healthcheck,
        )
        self._containers[container_id] = container  # reserves the name before any await
        try:
            container.directory.mkdir(mode=0o700, exist_ok=True)
            # The upper dir gives the container's / its owner and mode: 0755, as docker.
            for folder in (container.upper, container.work, container.rootfs):
                folder.mkdir(mode=0o755)
                folder.chmod(0o755)
            self._save(container)
        except OSError as exc:
            del self._containers[container_id]
            shutil.rmtree(container.directory, ignore_errors=True)
            raise DockyardError(f"cannot create container {name}: {exc}") from exc
        self._emit_container(container, "create")
        return container

    async def start(self, ref: str, attach: Attachment | None = None) -> Container:
        container = self.get(ref)
        async with container.lock:
            if not container.status.can_start():
                raise InvalidState(container.name, "start", container.status.value)
            self._started_by_user(container)
            await self._launch(container, attach)
        return container

    async def run(self, spec: ContainerSpec, attach: Attachment | None = None) -> Container:
        container = await self.create(spec)
        try:
            return await self.start(container.id, attach)
        except StartError:
            raise
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.remove(container.id, force=True)
            raise

    async def stop(self, ref: str, timeout: int | None = None) -> Container:
        """SIGTERM (or the container's stop signal), then SIGKILL after ``timeout`` seconds.
        Stopping a container that is not running does nothing, as in docker."""
        container = self.get(ref)
        if container.pending_restart is not None:
            self._cancel_pending_restart(container)
            self._stopped_by_user(container)
        if not container.status.running:
            return container
        grace = container.spec.stop_timeout if timeout is None else timeout
        self._stopped_by_user(container)
        container.stopping = True
        self._signal(container, container.spec.stop_signal)
        with trio.move_on_after(grace):
            await self._until_not_running(container)
        if container.status.running:
            self._signal(container, signal.SIGKILL)
            await self._until_not_running(container)
        return container

    async def kill(self, ref: str, sig: int = signal.SIGKILL) -> Container:
        container = self.get(ref)
        if container.pending_restart is not None:  # docker: a kill ends the restart loop
            self._cancel_pending_restart(container)
            self._stopped_by_user(container)
            return container
        if not container.status.can_kill():
            raise InvalidState(container.name, "kill", container.status.value, "it is not running")
        if sig in (signal.SIGKILL, container.spec.stop_signal):  # a HUP to reload is no stop
            self._stopped_by_user(container)
        self._signal(container, sig)
        return container

    async def restart(self, ref: str, timeout: int | None = None) -> Container:
        container = await self.stop(ref, timeout)
        async with container.lock:
            if container.status.can_start():
                self._started_by_user(container)
                await self._launch(container, None)
        self._emit_container(container, "restart")
        return container

    async def wait(self, ref: str) -> int:
        """The exit code, once the container is not running (at once if it is not)."""
        return await self.wait_for(self.get(ref))

    async def wait_for(self, container: Container) -> int:
        """Like :meth:`wait`, for a container object (still works once it is removed)."""
        await self._until_not_running(container)
        return container.exit_code

    async def remove(self, ref: str, force: bool = False) -> None:
        """Remove a container (``force``: kill it first if it runs). Holds the container's lock,
        so a start in progress, a restart policy's included, is never removed from under."""
        container = self.get(ref)
        self._cancel_pending_restart(container)
        async with container.lock:  # a start under way (a user's or a restart policy's) ends first
            if container.status.running:
                if not force:
                    raise InvalidState(
                        container.name, "remove", "running", "it is running: stop it first, or use --force"
                    )
                self._signal(container, signal.SIGKILL)
                await self._until_not_running(container)
            if container.status is Status.REMOVING:
                return
            container.move("remove")
            await self.networking.settle(container.id)  # no veth of it is left once it is gone
            await self._mounts_released(container)
            try:
                await trio.to_thread.run_sync(shutil.rmtree, container.directory)
            except FileNotFoundError:
                pass
            except OSError as exc:
                container.move("remove_failed")
                self._save(container)
                raise DockyardError(f"cannot remove container {container.name}: {exc}") from exc
            if self.local_logs is not None:
                self.local_logs.forget(container.id)
            await trio.to_thread.run_sync(self.logs.remove, container.id)  # its stored log too
            self._containers.pop(container.id, None)
            self._emit_container(container, "destroy")

    async def read_logs(self, ref: str) -> AsyncIterator[tuple[str, float, bytes]]:
        """The container's stored output, oldest first: ``(stream, time, data)`` per record,
        where ``stream`` is "stdout" or "stderr", ``time`` a unix time, and ``data`` whole
        lines (or a piece of a line longer than 1 MiB). Lost output comes as a line saying how
        much. Needs a store: ``log_store="local"``, or the daemon's log collector."""
        from logs.format import dropped_message

        container = self.get(ref)
        async for record in read_records(self.logs.directory(container.id),
                                         lambda stream, lost: dropped_message(stream, *lost)):
            yield record

    async def update(self, ref: str, changes: dict[str, Any]) -> Container:
        """Change a container's limits (``dockyard update``): in its record, and in its
        cgroup when it is running. ``changes`` holds resource fields as ``Resources.from_map``
        takes them; a value of 0 leaves a limit as it is (docker's rule)."""
        container = self.get(ref)
        unknown = sorted(set(changes) - set(UPDATABLE) - {"cpus"})
        if unknown:
            raise InvalidArgument(f"cannot update {', '.join(unknown)}: only {', '.join(UPDATABLE)} can be updated")
        changes = {key: value for key, value in changes.items() if value not in (0, "0", "", None)}
        async with container.lock:
            resources = Resources.from_map(changes, base=container.spec.resources)
            self._check_resources(resources)
            if container.status.running and container.cgroup is not None:
                try:
                    container.cgroup.apply(resources)
                except OSError as exc:
                    raise InvalidArgument(f"cannot update container {container.name}: {exc.strerror}") from exc
            container.spec = dataclasses.replace(container.spec, resources=resources)
            self._save(container)
        self._emit_container(container, "update")
        return container

    async def stats(self, refs: list[str] | None = None) -> list[dict[str, Any]]:
        """One fresh sample of each named container (default: every running one), with the
        CPU % over the time since the sampler's last sample (at least ~0.2 s)."""
        containers = [self.get(ref) for ref in refs] if refs else self.list()
        if any(c.last_sample is None and c.stats_reader is not None for c in containers):
            for container in containers:
                if container.stats_reader is not None and container.last_sample is None:
                    container.last_sample = container.stats_reader.read()
            await trio.sleep(0.2)
        rows = []
        for container in containers:
            reader = container.stats_reader
            if reader is None:  # not running: docker shows zeros
                rows.append(stats.record(container.id, container.name, stats.Sample(time.monotonic()), None))
                continue
            rows.append(stats.record(container.id, container.name, reader.read(), container.last_sample))
        return rows

    # --- restart policies (the monitor decides, see supervisor/restart.py) --------------

    async def schedule_restart(self, ref: str, exit_id: str, attempt: int, delay: float) -> Container:
        """Restart an exited container after ``delay`` seconds, for its restart policy.

        ``exit_id`` names the exit this restart answers (the container's ``finished_at``): a
        second request for the same exit, or one for an exit that is no longer the last, is
        refused, so one exit never causes two restarts, whoever asks and however often.
        Publishes ``container.<id>.restart`` with the attempt and the delay at once.

        Raises:
            Conflict: the exit was already answered (restart scheduled or done), it is not the
                container's last exit, the user stopped the container, or the daemon is stopping.
            InvalidState: the container is not exited, or its policy is ``no``.
            InvalidArgument: attempt < 1, or a delay outside 0..3600 s.
        """
        container = self.get(ref)
        if type(attempt) is not int or attempt < 1:
            raise InvalidArgument(f"argument 'attempt' must be a whole number >= 1, not {attempt!r}")
        if not 0 <= delay <= 3600:
            raise InvalidArgument(f"argument 'delay' must be 0..3600 seconds, not {delay!r}")
        refused = f"cannot restart container {container.name} for its exit at {exit_id}"
        if self._shutting_down:
            raise Conflict(f"{refused}: the daemon is shutting down", container=container.id)
        if container.pending_restart is not None:
            raise Conflict(f"{refused}: a restart is already scheduled", container=container.id)
        if container.status.running:
            raise Conflict(f"{refused}: it is running", container=container.id)
        if container.status is not Status.EXITED:
            raise InvalidState(container.name, "restart", container.status.value)
        if container.finished_at != exit_id:
            raise Conflict(f"{refused}: its last exit is at {container.finished_at}", container=container.id)
        if container.user_stopped:
            raise Conflict(f"{refused}: the user stopped it", container=container.id)
        if container.spec.restart_policy.name == "no":
            raise InvalidState(container.name, "restart", container.status.value, "its restart policy is no")
        pending = PendingRestart(exit_id, attempt, delay)
        container.pending_restart = pending
        container.restart_count += 1
        container.restart_attempt = attempt
        self._save(container)
        self._emit_container(
            container, "restart", attempt=str(attempt), delay=f"{delay:.3f}", exitCode=str(container.exit_code),
            restartCount=str(container.restart_count), policy=container.spec.restart,
        )
        assert self._nursery is not None
        self._nursery.start_soon(self._restart_after, container, pending)
        return container

    async def _restart_after(self, container: Container, pending: PendingRestart) -> None:
        with pending.scope:
            await trio.sleep(pending.delay)
            async with container.lock:
                if container.pending_restart is not pending:
                    return
                container.pending_restart = None
                if not container.status.can_start():
                    return
                try:
                    await self._launch(container, None)
                except StartError as exc:  # its die event is out: the monitor decides again
                    self.log.warning("restart failed", container=container.id, error=exc.message)
                except DockyardError as exc:  # a background task: a refusal must not end the daemon
                    self.log.error("restart refused", container=container.id, error=exc.message)

    def _cancel_pending_restart(self, container: Container) -> None:
        pending, container.pending_restart = container.pending_restart, None
        if pending is not None:
            pending.scope.cancel()

    def _started_by_user(self, container: Container) -> None:
        """A user's start: the restart policy starts over (docker resets its count)."""
        self._cancel_pending_restart(container)
        container.user_stopped = False
        container.restart_count = 0
        container.restart_attempt = 0

    def _stopped_by_user(self, container: Container) -> None:
        """A user's stop or kill is not a failure: no restart policy applies to this exit."""
        if self._shutting_down or container.user_stopped:
            return
        container.user_stopped = True
        self._save(container)

    # --- health checks (the monitor probes, see supervisor/health.py) -------------------

    def report_health(self, ref: str, probe: health.Probe) -> Container:
        """Record one probe of a running container's health check; publishes
        ``container.<id>.health_status`` when its status changes.

        Raises:
            InvalidState: it is not running, or has no health check.
        """
        container = self.get(ref)
        if not container.status.running or container.health is None or container.healthcheck is None:
            why = "it is not running" if not container.status.running else "it has no health check"
            raise InvalidState(container.name, "record the health of", container.status.value, why)
        started = _unix_time(container.started_at)
        before = container.health.status
        container.health = container.health.record(container.healthcheck, probe, started)
        if container.health.status != before:
            self._emit_container(container, "health_status", health_status=container.health.status)
        return container

    async def run_health_check(self, ref: str) -> Container:
        """Run the container's health check once (its command, through :meth:`exec_run`, with
        its timeout) and record the result as :meth:`report_health` does. A command that
        cannot be started counts as a failed probe (exit 125/126/127), as in docker.

        Raises:
            InvalidState: it is not running, or has no health check.
        """
        container = self.get(ref)
        config = container.healthcheck
        if not container.status.running or container.health is None or config is None:
            why = "it is not running" if not container.status.running else "it has no health check"
            raise InvalidState(container.name, "check the health of", container.status.value, why)
        start = time.time()
        try:
            result = await self.exec_run(container.id, config.argv(), timeout=config.timeout,
                                         output_limit=health.OUTPUT_LIMIT)
        except StartError as exc:
            probe = health.Probe(start, time.time(), exc.exit_code, exc.message)
        else:
            if result.timed_out or result.exit_code is None:
                probe = health.Probe(start, time.time(), health.TIMEOUT_EXIT_CODE,
                                     f"Health check exceeded timeout ({config.timeout:g}s)")
            else:
                probe = health.Probe(start, time.time(), result.exit_code, result.output.decode(errors="replace"))
        return self.report_health(container.id, probe)

    # --- settings that change while running --------------------------------------------

    def reconfigure(self, **changes: Any) -> None:
        """Apply new values of the settings that can change while the supervisor runs (the
        daemon's reload on SIGHUP): ``stats_interval`` and ``shutdown_timeout``."""
        unknown = sorted(set(changes) - {"stats_interval", "shutdown_timeout"})
        if unknown:
            raise ValueError(f"cannot change {', '.join(unknown)} while the supervisor runs")
        old, self.config = self.config, dataclasses.replace(self.config, **changes)
        if self.config.stats_interval != old.stats_interval:
            self._start_sampler()

    def _start_sampler(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        if self.config.stats_interval > 0 and self._nursery is not None:
            self._sampler = trio.CancelScope()
            self._nursery.start_soon(self._sample_within, self._sampler, self.config.stats_interval)

    async def _sample_within(self, scope: trio.CancelScope, interval: float) -> None:
        with scope:
            await self._sample_forever(interval)

    # --- attached clients and exec (supervisor/attach.py, supervisor/exec.py) -------------

    def attach(self, ref: str, attachment: Any) -> Container:
        """Send a running container's output to ``attachment`` from now on, until it exits
        or :meth:`detach`. Raises InvalidState if it is not running."""
        container = self.get(ref)
        if not container.status.running or container.process is None:
            raise InvalidState(container.name, "attach to", container.status.value, "it is not running")
        container.attachments.append(attachment)
        return container

    def detach(self, container: Container, attachment: Any) -> None:
        with contextlib.suppress(ValueError):
            container.attachments.remove(attachment)

    def target(self, container: Container) -> Target:
        """What an attached client acts on: the running process's stdin, terminal, signals."""
        process = container.process

        def resize(rows: int, columns: int) -> None:
            if process is not None and process.tty and process.returncode is None and process.stdout is not None:
                with contextlib.suppress(OSError):
                    set_window_size(process.stdout.fileno(), rows, columns)

        async def deliver(number: int) -> None:
            number = parse_signal(number)
            if container.process is process and container.status.running:
                await self.kill(container.id, number)

        return Target(stdin=process.stdin if process is not None else None, resize=resize, signal=deliver)

    async def exec(self, ref: str, spec: ExecSpec, attach: Any = None) -> Execution:
        """Start ``spec.cmd`` inside the running container ``ref``: in all its namespaces
        and its cgroup, with its capabilities, no_new_privs, environment (plus ``spec.env``),
        user and working dir unless ``spec`` says otherwise. Returns once the command runs;
        ``await execution.wait()`` for its exit code. Its output goes to ``attach`` (and to
        any attachment added to ``execution.attachments``).

        Raises:
            InvalidState: the container is not running.
            StartError: the command could not be started (exit_code 125/126/127).
        """
        container = self.get(ref)
        process, cgroup = container.process, container.cgroup
        if not container.status.running or process is None or cgroup is None:
            raise InvalidState(container.name, "exec in", container.status.value, "it is not running")
        execution = Execution(container=container, spec=spec)
        if attach is not None:
            execution.attachments.append(attach)
        resolved = container.resolved
        config = ExecConfig(
            container_id=container.id,
            pid=process.pid,
            start_time=process.start_time,
            argv=spec.cmd,
            env=tuple(merge_env(resolved.env, spec.env)),
            cwd=spec.workdir or resolved.workdir,
            user=spec.user or resolved.user,
            cgroup_procs=tuple(cgroup.procs_files),
            capabilities=V2_CAPABILITIES if cgroup.version == 2 else DEFAULT_CAPABILITIES,
        )
        names = {"execID": execution.id, "command": execution.command}
        self._emit_container(container, "exec_create", **names)
        stdio = StdioPlan(stdin=spec.stdin, tty=spec.tty, output=not spec.detach)
        try:
            execution.process = await self._fork_server.launch(config, stdio)  # type: ignore[arg-type]
        except LaunchError as exc:
            execution.exit_code = exc.exit_code
            execution.done.set()
            self._emit_container(container, "exec_die", **names, exitCode=str(exc.exit_code))
            reason = exc.details.get("reason", exc.message)
            raise StartError(
                f"cannot exec in container {container.name}: {reason}", exit_code=exc.exit_code, container=container.id
            ) from exc
        execution.pid = execution.process.pid
        self._emit_container(container, "exec_start", **names)
        assert self._nursery is not None
        self._nursery.start_soon(self._supervise_exec, execution, names)
        return execution

    async def exec_run(
        self, ref: str, argv: list[str] | tuple[str, ...], *, timeout: float | None = None, output_limit: int = 4096
    ) -> ExecResult:
        """Run ``argv`` in the container to its end (health checks): its exit code and the
        last ``output_limit`` bytes of its output. After ``timeout`` seconds it is killed
        and the result says ``timed_out``. Raises as :meth:`exec`."""
        collector = Collector(output_limit)
        execution = await self.exec(ref, ExecSpec(cmd=tuple(argv)), attach=collector)
        with trio.move_on_after(float("inf") if timeout is None else timeout):
            exit_code = await execution.wait()
            return ExecResult(exit_code, bytes(collector.data))
        if execution.process is not None:
            execution.process.send_signal(signal.SIGKILL)
        await execution.wait()
        return ExecResult(None, bytes(collector.data), timed_out=True)

    async def _supervise_exec(self, execution: Execution, names: dict[str, str]) -> None:
        try:
            exit_code = await execution.supervise(OUTPUT_DRAIN_SECONDS)
        finally:
            if execution.exit_code is None:  # cancelled: the daemon stops, and the container with it
                execution.exit_code = ORPHAN_EXIT_CODE
            execution.done.set()
        self._emit_container(execution.container, "exec_die", **names, exitCode=str(exit_code))

    # --- internals ----------------------------------------------------------------------

    @property
    def cgroup_path(self) -> str:
        """The cgroup that holds the containers' cgroups (``<controller>`` in it on v1)."""
        return self._cgroups.parent_path

    def _check_default_pids_limit(self) -> None:
        """A host without the pids controller cannot apply the default: say so once, then create
        containers without it (an explicit --pids-limit still fails there, naming the controller)."""
        if self.config.default_pids_limit > 0 and not self._cgroups.has_controller("pids"):
            self.log.warning("no pids cgroup controller: containers get no default pids limit",
                             default_pids_limit=self.config.default_pids_limit)
            self.default_pids_limit = -1

    def _check_resources(self, resources: Resources) -> None:
        """Refuse limits this host cannot give, before anything is created."""
        resources.check_host(os.cpu_count() or 1)
        self._cgroups.check(resources)
        _device_rules(resources)

    async def _sample_forever(self, interval: float) -> None:
        """Publish ``stats.<id>`` for every running container every ``interval`` seconds.

        One pass reads every container's files in this thread: a few preads each, no
        process, and no thread that could race with a container's cgroup being removed."""
        deadline = trio.current_time()
        while True:
            deadline = max(deadline + interval, trio.current_time())
            await trio.sleep_until(deadline)
            self.sample_once()

    def sample_once(self) -> int:
        """Sample and publish every running container once; returns how many."""
        count = 0
        for container in tuple(self._containers.values()):
            reader = container.stats_reader
            if reader is None:
                continue
            sample = reader.read()
            data = stats.record(container.id, container.name, sample, container.last_sample)
            container.last_sample = sample
            topic = f"stats.{container.id}"
            self._publish(topic, data, topic)
            count += 1
        return count

    async def _launch(self, container: Container, attach: Attachment | None) -> None:
        """Start the container's process; the caller holds container.lock."""
        await self._mounts_released(container)
        cgroup = self._cgroups.create(container.id)
        try:
            cgroup.apply(container.spec.resources, devices=_device_rules(container.spec.resources))
        except (OSError, DockyardError) as exc:
            await trio.to_thread.run_sync(cgroup.remove)
            reason = getattr(exc, "message", None) or exc.strerror or str(exc)
            await self._start_failed(container, LaunchError(f"cannot start container {container.name}: {reason}", reason=reason))
        network = await self._network_prepare(container, cgroup)
        resolved = container.resolved
        # A kept writable layer is synced when its overlay is unmounted: we hold pid 1's mount
        # namespace so that happens after its exit is reported (_release_mounts), and pid 1
        # waits for the go (network_sync) so the namespace is there to hold. A --rm layer is
        # mounted volatile instead: it is deleted at the exit and never synced.
        hold = not container.spec.auto_remove
        launch_config = LaunchConfig(
            container_id=container.id,
            lower=(network.init_layer,) + tuple(container.layers),
            upper=str(container.upper),
            work=str(container.work),
            rootfs=str(container.rootfs),
            argv=tuple(resolved.argv),
            env=tuple(resolved.env),
            cwd=resolved.workdir,
            user=resolved.user,
            hostname=resolved.hostname,
            cgroup_procs=tuple(cgroup.procs_files),
            capabilities=V2_CAPABILITIES if cgroup.version == 2 else DEFAULT_CAPABILITIES,
            devices=_device_nodes(container.spec.resources),
            network_namespace=network.namespace,
            etc_dir=network.etc_dir,
            network_sync=network.sync or hold,
            volatile=not hold,
        )
        try:
            stdio = StdioPlan(stdin=container.spec.open_stdin, tty=container.spec.tty)
            prepare = functools.partial(self.networking.connect, network)
            process = await self._fork_server.launch(launch_config, stdio, prepare=prepare, hold_mounts=hold)
        except LaunchError as exc:
            await self.networking.release(network)
            await trio.to_thread.run_sync(cgroup.remove)
            await self._start_failed(container, exc)
        except DockyardError as exc:  # the network set-up (links.NetworkError)
            await self.networking.release(network)
            await trio.to_thread.run_sync(cgroup.remove)
            await self._start_failed(container, LaunchError(exc.message, reason=exc.message))
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.networking.release(network)
                await trio.to_thread.run_sync(cgroup.remove)
            raise
        container.network = network
        container.process = process
        container.cgroup = cgroup
        container.stats_reader = stats.StatsReader(cgroup, self._host_memory)
        container.last_sample = None
        container.oom_killed = False
        container.pid = process.pid
        container.start_time = process.start_time
        container.started_at = now_rfc3339()
        container.exit_code = 0
        container.error = ""
        container.stopping = False
        container.health = health.HealthState() if container.healthcheck else None
        if attach is not None:
            container.attachments.append(attach)
        container.move("start")
        self._save(container)
        self._emit_container(container, "start")
        self.logs.open(container.id, container.spec.log_options)
        assert self._nursery is not None
        self._nursery.start_soon(self._supervise, container, process)
        self.networking.serve(network, self._nursery)

    async def _start_networking(self) -> None:
        """The bridge, and the clean-up of what a crashed daemon left (after the records are
        reconciled: no container runs yet, so every lease and veth of ours is stale)."""
        from supervisor.network.manager import Network  # pyroute2: the daemon only

        self.networking = Network(
            self.config.root, self.config.bridge_name, self.config.bridge_subnet, self.config.ip_masq, self.log
        )
        running = {c.id for c in self._containers.values() if c.status.running}
        await self.networking.start(running)

    async def _network_prepare(self, container: Container, cgroup: Any) -> Any:
        """The container's network before its launch (lease, ports bound, /etc files); a
        failure is a failed start (the cgroup goes)."""
        try:
            peer = None
            if container.spec.network.startswith("container:"):
                peer = self.get(container.spec.network.partition(":")[2])
                if peer.id == container.id or not peer.status.running or peer.network is None:
                    raise InvalidState(
                        peer.name, "join the network of", peer.status.value,
                        "it is not running",
                    )
            image_config = self.images.resolve(container.image_id).config if container.spec.publish_all else None
            return await self.networking.prepare(container, peer, image_config)
        except (DockyardError, OSError) as exc:  # OSError: the /etc files could not be written
            await trio.to_thread.run_sync(cgroup.remove)
            reason = exc.message if isinstance(exc, DockyardError) else f"set up the network: {exc}"
            await self._start_failed(container, LaunchError(reason, reason=reason))

    async def _start_failed(self, container: Container, exc: LaunchError) -> None:
        """Record and announce a start that failed before the payload ran; raises StartError."""
        reason = exc.details.get("reason", exc.message)
        container.exit_code = exc.exit_code
        container.error = reason
        container.finished_at = now_rfc3339()
        container.move("start_failed")
        self._save(container)
        self._emit_container(container, "die", exitCode=str(exc.exit_code), error=reason)
        if container.spec.auto_remove:
            assert self._nursery is not None
            self._nursery.start_soon(self._auto_remove, container)
        raise StartError(
            f"cannot start container {container.name}: {reason}",
            exit_code=exc.exit_code,
            container=container.id,
        ) from exc

    async def _supervise(self, container: Container, process: Any) -> None:
        """Pump the container's output until it exits, then record the exit and clean up."""
        async with trio.open_nursery() as pumps:
            for name in ("stdout", "stderr"):  # a terminal has no stderr: it is merged
                if getattr(process, name) is not None:
                    pumps.start_soon(self._pump, container, getattr(process, name), name)
            exit_code = await process.wait()
            output = self.logs.get(container.id)
            output.finish()  # from now on the pumps never block
            pumps.start_soon(drain, output, pumps.cancel_scope, OUTPUT_DRAIN_SECONDS)
        mounts = process.take_mount_namespace()
        if mounts >= 0:
            container.unmounted = trio.Event()
        process.close()
        cgroup, container.cgroup = container.cgroup, None
        reader, container.stats_reader = container.stats_reader, None
        if reader is not None:
            reader.close()
        # Read before the cgroup goes: the kernel's count of OOM kills in it.
        oom_killed = cgroup is not None and cgroup.oom_kills() > 0
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_kill_and_remove, cgroup)
            network, container.network = container.network, None
            await self.networking.release(network)
        container.process = None
        container.attachments.clear()
        container.exit_code = exit_code
        container.oom_killed = oom_killed
        container.finished_at = now_rfc3339()
        container.move("exit")
        self._save(container)
        if oom_killed:
            self._emit_container(container, "oom")
        self._emit_container(container, "die", exitCode=str(exit_code))
        if container.stopping:
            self._emit_container(container, "stop")
        if mounts >= 0:
            await self._release_mounts(container, mounts)
        if container.spec.auto_remove:
            await self._auto_remove(container)

    async def _release_mounts(self, container: Container, mount_namespace: int) -> None:
        """Let the exited container's mounts go (see ContainerProcess.take_mount_namespace):
        the overlay's unmount syncs the upper dir's filesystem in a thread, after the exit
        was reported. A start or rm of the container waits for it (_mounts_released)."""
        try:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(os.close, mount_namespace)
        finally:
            released, container.unmounted = container.unmounted, None
            if released is not None:
                released.set()

    @staticmethod
    async def _mounts_released(container: Container) -> None:
        """Until the last run's overlay is unmounted (it is mounted again, or deleted, next)."""
        if container.unmounted is not None:
            await container.unmounted.wait()

    async def _auto_remove(self, container: Container) -> None:
        try:
            await self.remove(container.id)
        except DockyardError as exc:
            self.log.warning("auto-remove failed", container=container.id, error=str(exc))

    async def _pump(self, container: Container, stream: Any, name: str) -> None:
        await pump(self.logs.get(container.id), name, stream, container.attachments)

    def _log_dropped(self, container_id: str, stream: str, lines: int, size: int) -> None:
        """A non-blocking container's buffered output was lost before the collector stored it."""
        container = self._containers.get(container_id)
        if container is None:
            return
        container.log_dropped_lines += lines
        container.log_dropped_bytes += size
        self._save(container)
        self._emit_container(container, "logs-dropped", stream=stream, lines=str(lines), bytes=str(size),
                             total=str(container.log_dropped_lines))

    async def _until_not_running(self, container: Container) -> None:
        while container.status.running:
            await container.changed.wait()

    def _signal(self, container: Container, sig: int) -> None:
        if container.process is not None:
            container.process.send_signal(sig)
            self._emit_container(container, "kill", signal=str(int(sig)))

    def _unused_name(self) -> str:
        taken = {c.name for c in self._containers.values()}
        for _ in range(100):
            name = random_name()
            if name not in taken:
                return name
        return f"{random_name()}_{secrets.token_hex(3)}"

    def _save(self, container: Container) -> None:
        self._store.save(container.id, container.to_record())

    async def _load_and_reconcile(self) -> None:
        """Load every record; a container that was running when the daemon died is killed
        (if anything of it is left), its cgroup removed, and it is marked exited.

        No container runs yet, so the cgroup of every container, whatever its record says, is
        a leftover: a daemon killed in the middle of a start (after the cgroup was made, before
        the record said "running") or of an exit's clean-up leaves one, maybe with the
        container's processes in it. Each is emptied (SIGKILL) and removed in every hierarchy;
        the overlay goes with the last process of its mount namespace, and the network's
        leases and veths are reconciled next (_start_networking)."""
        records, broken = self._store.load_all()
        leftovers = [folder.name for folder, _ in broken]  # a record's folder is named by its id
        for folder, reason in broken:
            self.log.warning("unreadable container record, left alone", path=str(folder), reason=reason)
        for record in records:
            try:
                container = Container.from_record(record)
            except (KeyError, ValueError, TypeError, DockyardError) as exc:
                self.log.warning("invalid container record, left alone", id=record.get("id"), reason=str(exc))
                if isinstance(record.get("id"), str):
                    leftovers.append(record["id"])
                continue
            self._containers[container.id] = container
            if container.user_stopped and restart_policy.forgets_user_stop_at_daemon_start(container.spec.restart_policy):
                container.user_stopped = False  # docker: `always` comes back when the daemon starts
                self._save(container)
            if container.status is Status.RUNNING:
                await self._reconcile_orphan(container)
                continue
            if container.status is Status.REMOVING:
                container.status = Status.DEAD  # the removal was interrupted
                self._save(container)
            leftovers.append(container.id)
        await self._remove_cgroups(leftovers)

    async def _remove_cgroups(self, container_ids: list[str]) -> None:
        """Kill what is left in these containers' cgroups and remove them (at daemon start)."""
        def remove_all() -> list[tuple[str, str]]:
            failures = []
            for container_id in container_ids:
                try:
                    self._cgroups.open(container_id).kill_and_remove()
                except (OSError, DockyardError) as exc:  # DockyardError: not a cgroup name
                    failures.append((container_id, getattr(exc, "message", None) or exc.strerror or str(exc)))
            return failures

        for container_id, reason in await trio.to_thread.run_sync(remove_all):
            self.log.warning("cannot remove the cgroup of a container that is not running", container=container_id,
                             error=reason)

    async def _reconcile_orphan(self, container: Container) -> None:
        _kill_if_same(container.pid, container.start_time)
        cgroup = self._cgroups.open(container.id)
        try:
            await trio.to_thread.run_sync(_kill_and_remove, cgroup)
        except OSError as exc:  # recorded as exited all the same; the log says what is left
            self.log.warning("cannot remove the cgroup of a container left running", container=container.id,
                             error=exc.strerror)
        container.exit_code = ORPHAN_EXIT_CODE
        container.error = "the daemon stopped while the container was running"
        container.finished_at = now_rfc3339()
        container.pid = 0
        container.move("exit")
        self._save(container)
        self.log.info("reconciled container left running by a previous daemon", container=container.id)
        self._emit_container(container, "die", exitCode=str(ORPHAN_EXIT_CODE), reason="daemon restart")

    # --- events -------------------------------------------------------------------------

    def _emit_container(self, container: Container, action: str, **attributes: str) -> None:
        attributes = {"name": container.name, "image": container.image_ref, **attributes}
        self._emit("container", action, container.id, attributes)

    def emit(self, kind: str, action: str, actor: str, attributes: dict[str, str]) -> None:
        """Publish a ``<kind>.<actor>.<action>`` event in the shape of container events (for
        the daemon's own actors: workers)."""
        self._emit(kind, action, actor, attributes)

    def _emit(self, kind: str, action: str, actor: str, attributes: dict[str, str]) -> None:
        if kind not in EVENT_TYPES:  # a subscriber to the documented prefixes would see a gap
            raise ValueError(f"cannot publish a {kind!r} event: the events channel holds {', '.join(EVENT_TYPES)}")
        topic = f"{kind}.{actor}.{action}" if actor else f"{kind}.{action}"
        data = {"type": kind, "action": action, "id": actor, "attributes": attributes, "time": time.time()}
        self._publish(topic, data, EVENTS_CHANNEL)

    def _publish(self, topic: str, data: dict[str, Any], channel: str, payload: Any = None) -> None:
        if self._sink is not None:
            self._sink(topic, data, channel, payload)
        if self._callback is None:
            return
        if payload is not None:  # the callback's one shape: the record's bytes in data["data"]
            buffer, start, end = payload
            data = {**data, "data": bytes(memoryview(buffer)[start:end])}
        try:
            self._callback(topic, data, channel)
        except Exception as exc:  # the user's code: it must not take the containers down
            self._callback_failed(topic, exc)

    def _callback_failed(self, topic: str, exc: Exception) -> None:
        """Count, and log (the first one with its traceback, then at most one a second)."""
        self.callback_errors += 1
        now = time.monotonic()
        if self._callback_error_logged < 0 or now - self._callback_error_logged >= 1.0:
            self._callback_error_logged = now
            first = {"exc_info": exc} if self.callback_errors == 1 else {}
            self.log.error("the event callback raised an exception; the event was not retried", topic=topic,
                           error=f"{type(exc).__name__}: {exc}", errors=self.callback_errors, **first)


def _resolve(spec: ContainerSpec, image: Image, container_id: str) -> Resolved:
    config = image.config or {}
    if spec.entrypoint is not None:  # docker: --entrypoint also drops the image's CMD
        argv = list(spec.entrypoint) + list(spec.cmd)
    else:
        argv = list(config.get("Entrypoint") or []) + list(spec.cmd or config.get("Cmd") or [])
    if not argv:
        raise InvalidArgument(f"no command specified: image {spec.image} has no default command")
    hostname = spec.hostname or container_id[:12]
    env = merge_env([f"PATH={DEFAULT_PATH}"], config.get("Env") or [], [f"HOSTNAME={hostname}"], spec.env)
    return Resolved(
        argv=argv,
        env=env,
        workdir=spec.workdir or config.get("WorkingDir") or "/",
        user=spec.user or config.get("User") or "",
        hostname=hostname,
    )


def _unix_time(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def commit_config(spec: ContainerSpec, image_config: dict[str, Any]) -> dict[str, Any]:
    """The config a commit gives its image: the image's, with what the container's spec
    set (command, entrypoint, env, workdir, user), as ``docker commit``."""
    config = dict(image_config)
    if spec.entrypoint is not None:
        config["Entrypoint"] = list(spec.entrypoint) or None
        config["Cmd"] = list(spec.cmd) or None
    elif spec.cmd:
        config["Cmd"] = list(spec.cmd)
    if spec.env:
        config["Env"] = merge_env(config.get("Env") or [], spec.env)
    if spec.workdir:
        config["WorkingDir"] = spec.workdir
    if spec.user:
        config["User"] = spec.user
    return config


def _write_file(output: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write`` with a file that replaces ``output`` once complete (never half-written)."""
    try:
        with atomic_file(output, durable=False, mode=0o644) as stream:
            write(stream)
    except OSError as exc:
        if exc.filename != str(output):  # the source, not the output
            raise
        raise InvalidArgument(f"cannot write {output}: {exc.strerror}", path=str(output)) from None


def _host_memory() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            return stats.host_memory(meminfo.read())
    except OSError:
        return 0


def _host_devices(resources: Resources) -> list[tuple[DeviceMapping, str, os.stat_result]]:
    """Each ``--device`` mapping with its host node's kind ("c" or "b") and stat.

    Raises:
        InvalidArgument: a host path that is not a device node, or a container path that is
            not under /dev.
    """
    found = []
    for text in resources.devices:
        mapping = DeviceMapping.parse(text)
        if not mapping.container.startswith("/dev/") or " " in mapping.container:
            raise InvalidArgument(
                f"invalid value {text!r} for --device: the container path must be under /dev/", flag="--device"
            )
        try:
            node = os.stat(mapping.host)
        except OSError as exc:
            raise InvalidArgument(f"invalid value {mapping.host!r} for --device: {exc.strerror}", flag="--device") from None
        if stat.S_ISCHR(node.st_mode):
            kind = "c"
        elif stat.S_ISBLK(node.st_mode):
            kind = "b"
        else:
            raise InvalidArgument(f"invalid value {mapping.host!r} for --device: not a device node", flag="--device")
        found.append((mapping, kind, node))
    return found


def _device_rules(resources: Resources) -> tuple[str, ...]:
    """The devices cgroup rules of the ``--device`` mappings."""
    return tuple(
        device_rule(kind, os.major(node.st_rdev), os.minor(node.st_rdev), mapping.permissions)
        for mapping, kind, node in _host_devices(resources)
    )


def _device_nodes(resources: Resources) -> tuple[str, ...]:
    """The nodes the init stage makes in the container's /dev (LaunchConfig.devices), with
    the host node's numbers and permission bits."""
    return tuple(
        f"{kind} {os.major(node.st_rdev)} {os.minor(node.st_rdev)} {stat.S_IMODE(node.st_mode):o} {mapping.container}"
        for mapping, kind, node in _host_devices(resources)
    )


def _kill_and_remove(cgroup: Any) -> None:
    if cgroup is None:
        return
    cgroup.kill_and_remove()


def _kill_if_same(pid: int, start_time: int) -> None:
    """SIGKILL ``pid`` only if it is still the process we started (same start time)."""
    if not pid:
        return
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        if int(fields[19]) == start_time:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except (OSError, IndexError, ValueError):
        pass
    finally:
        os.close(pidfd)
