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
:class:`Supervisor` is a facade: it builds the lifecycle core (:mod:`supervisor.lifecycle`,
which decides every change of a container's state) with the real kernel mechanics, and the
services around it (:mod:`supervisor.services`: images, exec and attach, restarts, health
checks, stats), and hands each call to the one that owns it. docs/architecture.md draws it.

The Supervisor is the only thing that creates, signals or reaps container processes. It is a
child subreaper: the container init stage forks the container's pid 1 and exits, so pid 1 is
re-parented to the supervisor, which watches it through a pidfd. Each running container has
one task (:func:`supervisor.lifecycle.start.supervise`) that pumps its stdout and stderr into
log events, waits for its exit, records it and cleans up its cgroup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO

import structlog
import trio

from supervisor import health
from supervisor.config import Config
from supervisor.container import Attachment, Container
from supervisor.errors import DockyardError, StartError
from supervisor.exec import ExecResult, ExecSpec, Execution
from supervisor.images import archive as image_archive
from supervisor.images.store import Image, ImageStore
from supervisor.attach import Target
from supervisor.lifecycle import reconcile, remap, restore
from supervisor.lifecycle.core import Lifecycle
from supervisor.lifecycle.devices import V2_CAPABILITIES  # noqa: F401 - its old home
from supervisor.lifecycle.events import EVENTS_CHANNEL, Events
from supervisor.lifecycle.reconcile import ORPHAN_EXIT_CODE  # noqa: F401 - its old home
from supervisor.lifecycle.start import OUTPUT_DRAIN_SECONDS  # noqa: F401 - its old home
from supervisor.locallogs import LocalLogStore, discard, read_records
from supervisor.logbuffer import LogBuffers
from supervisor.runtime import cgroups
from supervisor.runtime.keeperclient import KeeperClient
from supervisor.runtime.spawn import ForkServer, become_subreaper
from supervisor.services.execs import Execs
from supervisor.services.healthchecks import HealthChecks
from supervisor.services.images import Images, commit_config  # noqa: F401 - commit_config: its old home
from supervisor.services.restarts import PendingRestart, Restarts  # noqa: F401 - PendingRestart: its old home
from supervisor.services.sampler import Sampler, host_memory
from supervisor.services.networks import Networks
from supervisor.services.volumes import Volumes
from supervisor.spec import ContainerSpec
from supervisor.store import ContainerStore
from supervisor.volumes import Volume, VolumeStore

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

__all__ = ["EVENTS_CHANNEL", "LOG_STORES", "EventCallback", "EventSink", "Supervisor"]


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

    Attributes:
        lifecycle: the core (:class:`supervisor.lifecycle.core.Lifecycle`).
        image_service, execs, restarts, health_checks, sampler: the services around it.
        images: the image store; logs: the containers' output buffers; local_logs: the
            local log store (``log_store="local"``), else None.
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
        self.log = log or structlog.get_logger("dockyard")
        self.log_store = log_store
        self.events = Events(publish, publish_frames, self.log)
        self.images = ImageStore(self.config.root, log=self.log)
        self.volume_store = VolumeStore(self.config.root)
        self._stack = contextlib.AsyncExitStack()
        self._fork_server = ForkServer(self.config.python)  # forks every exec's stage (and containers' without live restore)
        self.keeper: KeeperClient | None = None  # live restore: forks containers' init stage, holds them
        self.local_logs = (LocalLogStore(self.config.root, self._log_dropped, self.log)
                           if log_store == "local" else None)
        keep = self.local_logs.keep if self.local_logs is not None else discard if log_store == "none" else None
        self.logs = LogBuffers(self.config.root, publish=self.events.publish, dropped=self._log_dropped, keep=keep)
        if publish is not None:  # the event callback may read log events live: the short window
            self.logs.watched = lambda container_id: True
        self.lifecycle = Lifecycle(
            store=ContainerStore(self.config.containers_dir), images=self.images,
            cgroups=cgroups.detect(str(self.config.cgroup_root), self.config.cgroup_parent),
            launcher=self._fork_server, logs=self.logs, events=self.events, log=self.log,
            default_pids_limit=self.config.default_pids_limit, host_memory=host_memory(), local_logs=self.local_logs,
            volumes=self.volume_store, default_ulimits=self.config.default_ulimits,
            default_init=self.config.init, init_path=self.config.init_path,
        )
        if self.config.live_restore or (self.config.run_dir / "keeper.sock").exists():
            # Without live restore a keeper left by an earlier daemon is used all the same, so
            # that its containers are adopted (and stopped with this daemon) rather than lost.
            self.keeper = self.lifecycle.keeper = KeeperClient(self.config.run_dir, self.config.python, self.log)
        self.volumes = Volumes(self.lifecycle, self.volume_store)
        self.networks = Networks(self.lifecycle)  # network create|ls|inspect|rm|prune|connect|disconnect
        self.image_service = Images(self.lifecycle, self.images)
        self.execs = Execs(self.lifecycle)
        self.restarts = Restarts(self.lifecycle)
        self.health_checks = HealthChecks(self.lifecycle, self.execs)
        self.sampler = Sampler(self.lifecycle)

    @property
    def callback_errors(self) -> int:
        """Exceptions the event callback raised (each logged, at most one a second)."""
        return self.events.callback_errors

    @property
    def networking(self) -> Any:
        """The containers' network (supervisor.network.manager.Network), from __aenter__."""
        return self.lifecycle.network

    @networking.setter
    def networking(self, network: Any) -> None:
        self.lifecycle.network = network

    @property
    def default_pids_limit(self) -> int:
        """The pids limit given to a container created without one (-1: none); see __aenter__."""
        return self.lifecycle.default_pids_limit

    @default_pids_limit.setter
    def default_pids_limit(self, limit: int) -> None:
        self.lifecycle.default_pids_limit = limit

    @property
    def cgroup_path(self) -> str:
        """The cgroup that holds the containers' cgroups (``<controller>`` in it on v1)."""
        return self.lifecycle.cgroups.parent_path

    # --- lifecycle of the supervisor itself --------------------------------------------

    async def __aenter__(self) -> Supervisor:
        become_subreaper()
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.lifecycle.cgroups.enter()  # a delegated v2 cgroup: the daemon moves into its leaf first
        except OSError as exc:
            raise DockyardError(f"cannot prepare the containers' cgroups: {exc.strerror}") from exc
        self.lifecycle.check_default_pids_limit()
        self.lifecycle.remap = await remap.start(self.config, self.log)
        if self.keeper is not None:  # what the last daemon's containers left with the keeper
            self._stack.push_async_callback(self.keeper.aclose)
            held = await self.keeper.connect()
            self.lifecycle.held = {container.id: container for container in held}
        await self._load_and_reconcile()
        await self.networks.start(self.config)
        await self._stack.enter_async_context(self._fork_server)  # closed after the nursery
        nursery = await self._stack.enter_async_context(trio.open_nursery())
        self.lifecycle.nursery = nursery
        self.networking.nursery = nursery
        if self.keeper is not None:
            nursery.start_soon(self.keeper.serve)
            outcome = await restore.resume(self.lifecycle)
            self.emit("daemon", "restore", "", {"pid": str(os.getpid()), "keeper": str(self.keeper.pid),
                                                **{kind: "; ".join(names) for kind, names in outcome.items()}})
        self.sampler.restart(self.config.stats_interval)
        if self.local_logs is not None:
            nursery.start_soon(self.local_logs.sync_forever)
        self.emit("daemon", "start", "", {"pid": str(os.getpid()), "root": str(self.config.root)})
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        try:
            with trio.CancelScope(shield=True):
                leaving = self.config.live_restore and any(c.status.running for c in self.lifecycle.containers.values())
                if leaving:  # live restore: they run on, held by the keeper, for the next daemon
                    self.leave_running()
                else:
                    await self.shutdown()
                    if self.keeper is not None:
                        await self.keeper.stop_when_idle()
                if self.local_logs is not None:
                    self.local_logs.close()
                if self.lifecycle.left_alone:  # another dockyard's containers run on in them
                    self.log.info("the bridges and the cgroup parent are left for the containers of another "
                                  "dockyard version", containers=len(self.lifecycle.left_alone))
                elif not leaving:
                    await trio.to_thread.run_sync(self.lifecycle.cgroups.remove_parent)
                    if self.networking is not None:
                        await self.networking.stop()
        finally:
            assert self.lifecycle.nursery is not None
            self.lifecycle.nursery.cancel_scope.cancel()
            suppress = await self._stack.__aexit__(*exc_info)
        return suppress

    async def shutdown(self) -> None:
        """Stop every running container (each with its own grace period), in parallel."""
        await self.lifecycle.shutdown(self.config.shutdown_timeout)
        self.emit("daemon", "stop", "", {"pid": str(os.getpid())})

    def leave_running(self) -> None:
        """Stop supervising (live restore): the containers run on; their pumps stop reading,
        what was read and not stored stays in the spools for the next daemon."""
        for log in self.logs.all().values():
            log.detached = True
        running = [c.name for c in self.lifecycle.containers.values() if c.status.running]
        self.log.info("leaving containers running (live restore)", running=len(running))
        self.emit("daemon", "stop", "", {"pid": str(os.getpid()), "live_restore": "true",
                                         "running": str(len(running))})

    async def _load_and_reconcile(self) -> None:
        """Load every record and reconcile it (supervisor/lifecycle/reconcile.py); the volumes first."""
        self.volume_store.load()
        for skipped in self.volume_store.skipped:
            self.log.warning("a volume's record cannot be read: it is not listed", volume=skipped)
        await reconcile.load_and_reconcile(self.lifecycle)

    def reconfigure(self, **changes: Any) -> None:
        """Apply new values of the settings that can change while the supervisor runs (the
        daemon's reload on SIGHUP): ``stats_interval`` and ``shutdown_timeout``."""
        unknown = sorted(set(changes) - {"stats_interval", "shutdown_timeout"})
        if unknown:
            raise ValueError(f"cannot change {', '.join(unknown)} while the supervisor runs")
        old, self.config = self.config, dataclasses.replace(self.config, **changes)
        if self.config.stats_interval != old.stats_interval:
            self.sampler.restart(self.config.stats_interval)

    # --- images and containers' files (supervisor/services/images.py) --------------------

    async def import_image(self, source: BinaryIO, reference: str, changes: list[str] | None = None,
                           message: str = "") -> Image:
        return await self.image_service.import_image(source, reference, changes, message)

    async def commit(self, ref: str, reference: str | None = None, *, comment: str = "", author: str = "",
                     changes: list[str] | tuple[str, ...] = (), warnings: list[str] | None = None) -> Image:
        """A new image from a container's changes (``docker commit``); see Images.commit."""
        return await self.image_service.commit(ref, reference, comment=comment, author=author, changes=changes,
                                               warnings=warnings)

    async def diff(self, ref: str, warnings: list[str] | None = None) -> list[tuple[str, str]]:
        """``docker diff``: (kind, path) with kind A, C or D, sorted by path."""
        return await self.image_service.diff(ref, warnings)

    async def export(self, ref: str, output: Path, warnings: list[str] | None = None) -> None:
        """Write the container's filesystem as a tar to ``output`` (replaced atomically)."""
        await self.image_service.export(ref, output, warnings)

    async def copy_from(self, ref: str, source: str, output: Path, warnings: list[str] | None = None) -> str:
        """A tar of ``source`` in the container, written to ``output``; returns its top member."""
        return await self.image_service.copy_from(ref, source, output, warnings)

    async def copy_to(self, ref: str, source: Path, dest: str, warnings: list[str] | None = None) -> str:
        """Copy the host path ``source`` to ``dest`` in the container."""
        return await self.image_service.copy_to(ref, source, dest, warnings)

    def image_users(self, image_id: str) -> list[tuple[str, bool]]:
        """(name, running) of every container made from the image."""
        return self.image_service.users(image_id)

    async def remove_image(self, ref: str, force: bool = False, *, prune: bool = True) -> list[dict[str, str]]:
        """``rmi``: untag, delete once no tag is left, and (``prune``) each untagged parent
        left with no child; docker's report."""
        return await self.image_service.remove(ref, force, prune=prune)

    async def tag_image(self, ref: str, reference: str) -> Image:
        return await self.image_service.tag(ref, reference)

    async def save_images(self, refs: list[str], output: Path) -> list[str]:
        return await self.image_service.save(refs, output)

    async def load_images(self, source: Path) -> list[image_archive.LoadedImage]:
        """The images of an archive, each with the tags the archive named."""
        return await self.image_service.load(source)

    # --- containers (supervisor/lifecycle/) ------------------------------------------------

    def get(self, ref: str) -> Container:
        """A container by id, name, or unique id prefix."""
        return self.lifecycle.get(ref)

    def list(self, all: bool = False, filters: list[str] | None = None) -> list[Container]:
        """The containers as ``ps`` lists them (``filters``: ``KEY=VALUE``, docs/cli.md)."""
        return self.lifecycle.list(all, filters)

    async def create(self, spec: ContainerSpec) -> Container:
        return await self.lifecycle.create(spec)

    async def start(self, ref: str, attach: Attachment | None = None) -> Container:
        return await self.lifecycle.start(ref, attach)

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
        return await self.lifecycle.stop(ref, timeout)

    async def kill(self, ref: str, sig: int = signal.SIGKILL) -> Container:
        return await self.lifecycle.kill(ref, sig)

    async def pause(self, ref: str) -> Container:
        """Freeze every process of a running container (docker pause)."""
        return await self.lifecycle.pause(ref)

    async def unpause(self, ref: str) -> Container:
        return await self.lifecycle.unpause(ref)

    async def restart(self, ref: str, timeout: int | None = None) -> Container:
        return await self.lifecycle.restart(ref, timeout)

    async def wait(self, ref: str) -> int:
        """The exit code, once the container is not running (at once if it is not)."""
        return await self.lifecycle.wait_for(self.get(ref))

    async def wait_for(self, container: Container) -> int:
        """Like :meth:`wait`, for a container object (still works once it is removed)."""
        return await self.lifecycle.wait_for(container)

    # --- volumes (supervisor/services/volumes.py) -----------------------------------------

    def create_volume(self, name: str, labels: dict[str, str] | None = None,
                      options: dict[str, str] | None = None) -> Volume:
        return self.volumes.create(name, labels, options)

    def list_images(self, filters: list[str] | None = None, all: bool = False) -> list[tuple[Image, list[str]]]:
        """The images as ``images`` lists them, each with the tags to show (``filters``:
        ``KEY=VALUE``, docs/cli.md; ``all``: a build's intermediate images too)."""
        return self.image_service.list(filters, all)

    def list_volumes(self, filters: list[str] | None = None) -> list[Volume]:
        return self.volumes.list(filters)

    def inspect_volume(self, name: str) -> dict[str, Any]:
        return self.volumes.inspect(name)

    async def remove_volume(self, name: str, force: bool = False) -> None:
        await self.volumes.remove(name, force)

    async def prune_volumes(self, all: bool = False) -> list[str]:
        return await self.volumes.prune(all)

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        """Remove a container (``force``: kill it first if it runs; ``volumes``: its anonymous
        volumes too). A start in progress, a restart policy's included, ends first: it is never
        removed from under."""
        await self.lifecycle.remove(ref, force, volumes)

    async def rename(self, ref: str, name: str) -> Container:
        """Give a container another name (``docker rename``)."""
        return await self.lifecycle.rename(ref, name)

    async def update(self, ref: str, changes: dict[str, Any], restart: str | None = None) -> Container:
        """Change a container's limits (``dockyard update``): in its record, and in its
        cgroup when it is running; a value of 0 leaves a limit as it is (docker's rule).
        ``restart``: a new restart policy (``update --restart``), for its next exits."""
        return await self.lifecycle.update(ref, changes, restart)

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

    def _log_dropped(self, container_id: str, stream: str, lines: int, size: int) -> None:
        self.lifecycle.log_dropped(container_id, stream, lines, size)

    # --- stats (supervisor/services/sampler.py) -------------------------------------------

    async def stats(self, refs: list[str] | None = None) -> list[dict[str, Any]]:
        """One fresh sample of each named container (default: every running one), with the
        CPU % over the time since the sampler's last sample (at least ~0.2 s)."""
        return await self.sampler.sample(refs)

    def sample_once(self) -> int:
        """Sample and publish every running container once; returns how many."""
        return self.sampler.sample_once()

    # --- restart policies and health checks (supervisor/services/) -------------------------

    async def schedule_restart(self, ref: str, exit_id: str, attempt: int, delay: float) -> Container:
        """Restart an exited container after ``delay`` seconds, for its restart policy
        (supervisor/services/restarts.py says when it is refused)."""
        return await self.restarts.schedule(ref, exit_id, attempt, delay)

    def report_health(self, ref: str, probe: health.Probe) -> Container:
        """Record one probe of a running container's health check."""
        return self.health_checks.report(ref, probe)

    async def run_health_check(self, ref: str) -> Container:
        """Run the container's health check once and record the result."""
        return await self.health_checks.run(ref)

    # --- attached clients and exec (supervisor/services/execs.py) --------------------------

    def attach(self, ref: str, attachment: Any) -> Container:
        """Send a running container's output to ``attachment`` from now on, until it exits
        or :meth:`detach`. Raises InvalidState if it is not running."""
        return self.execs.attach(ref, attachment)

    def detach(self, container: Container, attachment: Any) -> None:
        self.execs.detach(container, attachment)

    def target(self, container: Container) -> Target:
        """What an attached client acts on: the running process's stdin, terminal, signals."""
        return self.execs.target(container)

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
        return await self.execs.start(ref, spec, attach)

    async def exec_run(
        self, ref: str, argv: list[str] | tuple[str, ...], *, timeout: float | None = None, output_limit: int = 4096
    ) -> ExecResult:
        """Run ``argv`` in the container to its end: its exit code and the last
        ``output_limit`` bytes of its output (``timed_out`` after ``timeout`` seconds)."""
        return await self.execs.run(ref, argv, timeout=timeout, output_limit=output_limit)

    # --- events -------------------------------------------------------------------------

    def emit(self, kind: str, action: str, actor: str, attributes: dict[str, str]) -> None:
        """Publish a ``<kind>.<actor>.<action>`` event in the shape of container events (for
        the daemon's own actors: workers)."""
        self.events.emit(kind, action, actor, attributes)
