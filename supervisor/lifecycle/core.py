"""The container lifecycle: create, start, stop, kill, wait, remove, update.

:class:`Lifecycle` holds the containers and decides every change of their state (the moves
are the table of :mod:`supervisor.state`); what touches the kernel is behind the interfaces
of :mod:`supervisor.lifecycle.mechanics`, given to it at construction. A start is in
:mod:`supervisor.lifecycle.start`, the reconcile at daemon start in
:mod:`supervisor.lifecycle.reconcile`.

Locking: each container's ``lock`` is held by a start (a user's or a restart policy's), an
update and a remove, so none of them sees another's half-done work. Stop and kill take no
lock: they signal the process and wait for the exit the supervising task records.

Every lifecycle change is saved (atomically) before its event is published, so a subscriber
that reacts to an event and asks for the container sees the new state.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import signal
from typing import Any

import trio

from supervisor import filters as container_filters
from supervisor import health
from supervisor import restart as restart_policy
from supervisor.container import Attachment, Container, random_name
from supervisor.errors import Conflict, DockyardError, InvalidArgument, InvalidState, NotFound
from supervisor.lifecycle import devices, initbinary, pausing, remap, start
from supervisor.lifecycle import mounts as container_mounts
from supervisor.lifecycle.events import Events
from supervisor.lifecycle.mechanics import CgroupBackend, ImageResolver, Launcher, Network, RecordStore
from supervisor.resources import UPDATABLE, Resources
from supervisor.spec import NAME, ContainerSpec
from supervisor.state import Status


def with_default_ulimits(spec: ContainerSpec, defaults: tuple[str, ...]) -> ContainerSpec:
    """The spec with each default ``NAME=SOFT[:HARD]`` whose name it does not set (docker's
    --default-ulimit: a container's own --ulimit wins)."""
    given = {entry.partition("=")[0] for entry in spec.ulimits}
    added = tuple(entry for entry in defaults if entry.partition("=")[0] not in given)
    return dataclasses.replace(spec, ulimits=spec.ulimits + added) if added else spec


def with_init(spec: ContainerSpec, default: bool, daemon_path: str) -> ContainerSpec:
    """The spec with ``init`` decided (unset: the daemon's ``default``) and, with an init, the
    canonical path of its binary (initbinary.find: raises InvalidArgument naming a missing one)."""
    init = default if spec.init is None else spec.init
    path = initbinary.find(spec.init_path, daemon_path) if init else spec.init_path
    return dataclasses.replace(spec, init=init, init_path=path)


class Lifecycle:
    """The containers and the rules of their lifecycle.

    Args:
        store: the containers' records and folders.
        images: resolves an image reference.
        cgroups: makes, opens and removes the containers' cgroups.
        launcher: starts a container's process.
        logs: the containers' output buffers (``supervisor.logbuffer.LogBuffers``).
        events: where events go.
        log: a structlog-style logger.
        network: the containers' network; may be set later (the daemon makes it once the
            records are reconciled), before the first start.
        default_pids_limit: the pids limit of a container created without one (-1: none).
        host_memory: the host's memory in bytes (the stats of a container without a limit).
        local_logs: the log store of an embedded supervisor (``supervisor.locallogs``), or None:
            a removed container's log is forgotten there.
        volumes: the volumes (``supervisor.volumes.VolumeStore``), or None: no volume can be used.
        default_ulimits: ``NAME=SOFT[:HARD]`` given at create to a container without a --ulimit of
            that name (``--default-ulimit``); stored in its spec, as the default pids limit.
        default_init: whether a container created without ``init`` gets one (``dockyard daemon
            --init``); stored in its spec.
        init_path: the init binary of ``--init`` when the container names none (the daemon's
            ``--init-path``; empty: looked for, supervisor/lifecycle/initbinary.py).
        keeper: the keeper's client (live restore), or None.
    """

    def __init__(self, *, store: RecordStore, images: ImageResolver, cgroups: CgroupBackend, launcher: Launcher,
                 logs: Any, events: Events, log: Any, network: Network | None = None, default_pids_limit: int = -1,
                 host_memory: int = 0, local_logs: Any = None, volumes: Any = None,
                 default_ulimits: tuple[str, ...] = (), default_init: bool = False, init_path: str = "",
                 keeper: Any = None):
        self.containers: dict[str, Container] = {}
        # Live restore: the keeper (runtime/keeperclient.py) launches containers and holds them
        # across daemon restarts; None: the launcher does, and they end with the daemon.
        self.keeper = keeper
        self.held: dict[str, Any] = {}  # at daemon start: what the keeper held (lifecycle/restore.py)
        self.restoring: list[Container] = []  # running records the keeper holds, adopted once the nursery runs
        self.not_adopted: dict[str, str] = {}  # container id -> why it could not be adopted (daemon.restore)
        # Containers that run but that this daemon cannot adopt (another dockyard version's
        # keeper or record: lifecycle/reconcile.py): id -> name. Left alone: never killed,
        # their cgroups, leases, veths and port rules kept.
        self.left_alone: dict[str, str] = {}
        self.store = store
        self.images = images
        self.cgroups = cgroups
        self.launcher = launcher
        self.logs = logs
        self.events = events
        self.log = log
        self.network: Any = network
        self.default_pids_limit = default_pids_limit
        self.host_memory = host_memory
        self.local_logs = local_logs
        self.volumes = volumes
        self.default_ulimits = default_ulimits
        self.default_init = default_init
        self.init_path = init_path
        self.remap = remap.Remap()  # --userns-remap: set by the Supervisor at start (lifecycle/remap.py)
        self.nursery: trio.Nursery | None = None  # where each running container's task runs
        self.shutting_down = False  # stops from now on are the daemon's, not the user's

    # --- lookups ----------------------------------------------------------------------

    def get(self, ref: str) -> Container:
        """A container by id, name, or unique id prefix."""
        if not ref:
            raise InvalidArgument("a container name or id is required")
        if ref in self.containers:
            return self.containers[ref]
        name = ref.lstrip("/")
        for container in self.containers.values():
            if container.name == name:
                return container
        matches = [c for c in self.containers.values() if c.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise Conflict(f"container id prefix {ref!r} is ambiguous: it matches {len(matches)} containers")
        raise NotFound(f"no such container: {ref}", container=ref)

    def list(self, all: bool = False, filters: list[str] | None = None) -> list[Container]:
        """The containers, newest first: running and restarting ones (``all``: every one), that
        pass ``filters`` (``ps --filter KEY=VALUE``, supervisor/filters.py; a status, before or
        since filter lists stopped ones too, as docker).

        Raises:
            InvalidArgument: an unknown filter key or a bad value. NotFound: a before=/since=
                container.
        """
        containers = sorted(self.containers.values(), key=lambda c: c.created, reverse=True)
        query = None
        if filters:
            query = container_filters.container_query(filters, lambda ref: self.get(ref).created, self._ancestors)
            all = all or query.includes_stopped
        return [c for c in containers if (all or c.status.running or c.pending_restart is not None)
                and (query is None or query.matches(c.filter_subject()))]

    def _ancestors(self, reference: str) -> set[str]:
        """The ids of the image ``reference`` names and of the images built on it (none for an
        unknown image, as docker)."""
        try:
            image = self.images.resolve(reference)
        except (NotFound, Conflict, InvalidArgument):
            return set()
        return container_filters.descendants(image, self.images.list())

    def save(self, container: Container) -> None:
        self.store.save(container.id, container.to_record())

    # --- create -------------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> Container:
        if not spec.resources.pids_limit and self.default_pids_limit > 0:
            # Stored in the spec (inspect shows it; a later change of the default leaves it), as podman.
            spec = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, pids_limit=self.default_pids_limit))
        spec = with_default_ulimits(spec, self.default_ulimits)
        spec = with_init(spec, self.default_init, self.init_path)
        self.check_resources(spec.resources)
        if self.network is not None:
            self.network.check(spec)  # docker: "network app not found", and no container is made
        image = self.images.resolve(spec.image)
        healthcheck = health.effective(spec.healthcheck, (image.config or {}).get("Healthcheck"))
        name = spec.name or self._unused_name()
        for other in self.containers.values():
            if other.name == name:
                raise Conflict(
                    f'the container name "{name}" is already in use by container {other.id}',
                    name=name,
                    container=other.id,
                )
        mounts = container_mounts.resolve(spec, image, self.volumes, self.get, self.volume_event)
        container_id = secrets.token_hex(32)
        container = Container(
            id=container_id,
            name=name,
            spec=spec,
            image_id=image.id,
            image_ref=spec.image,
            resolved=devices.resolve(spec, image, container_id),
            directory=self.store.path(container_id),
            layers=list(image.layers),
            healthcheck=healthcheck,
            mounts=mounts,
        )
        self.containers[container_id] = container  # reserves the name before any await
        try:
            container.directory.mkdir(mode=0o700, exist_ok=True)
            # The upper dir gives the container's / its owner and mode: 0755, as docker.
            for folder in (container.upper, container.work, container.rootfs):
                folder.mkdir(mode=0o755)
                folder.chmod(0o755)
            remap.prepare_create(self.remap, container)  # --userns-remap: the mapped root's
            self.save(container)
        except OSError as exc:
            del self.containers[container_id]
            shutil.rmtree(container.directory, ignore_errors=True)
            self.remove_anonymous_volumes(container)
            raise DockyardError(f"cannot create container {name}: {exc}") from exc
        self.events.container(container, "create")
        return container

    def check_resources(self, resources: Resources) -> None:
        """Refuse limits this host cannot give, before anything is created."""
        resources.check_host(os.cpu_count() or 1)
        self.cgroups.check(resources)
        devices.device_rules(resources)

    def check_default_pids_limit(self) -> None:
        """A host without the pids controller cannot apply the default: say so once, then create
        containers without it (an explicit --pids-limit still fails there, naming the controller)."""
        if self.default_pids_limit > 0 and not self.cgroups.has_controller("pids"):
            self.log.warning("no pids cgroup controller: containers get no default pids limit",
                             default_pids_limit=self.default_pids_limit)
            self.default_pids_limit = -1

    def _unused_name(self) -> str:
        taken = {c.name for c in self.containers.values()}
        for _ in range(100):
            name = random_name()
            if name not in taken:
                return name
        return f"{random_name()}_{secrets.token_hex(3)}"

    # --- start, stop, kill, wait ---------------------------------------------------------

    async def start(self, ref: str, attach: Attachment | None = None) -> Container:
        container = self.get(ref)
        async with container.lock:
            if not container.status.can_start():
                raise InvalidState(container.name, "start", container.status.value)
            self.started_by_user(container)
            await self.launch(container, attach)
        return container

    async def launch(self, container: Container, attach: Attachment | None) -> None:
        """Start the container's process (supervisor/lifecycle/start.py); the caller holds
        container.lock. Raises StartError once the failure is recorded and announced."""
        await start.launch(self, container, attach)

    async def stop(self, ref: str, timeout: int | None = None) -> Container:
        """SIGTERM (or the container's stop signal), then SIGKILL after ``timeout`` seconds.
        Stopping a container that is not running does nothing, as in docker."""
        container = self.get(ref)
        if container.pending_restart is not None:
            self.cancel_pending_restart(container)
            self.stopped_by_user(container)
        if not container.status.running:
            return container
        grace = container.spec.stop_timeout if timeout is None else timeout
        self.stopped_by_user(container)
        container.stopping = True
        self.signal(container, container.spec.stop_signal)
        await pausing.thaw(self, container)  # paused: the signal waits for the thaw (docker's order)
        with trio.move_on_after(grace):
            await self.until_not_running(container)
        if container.status.running:
            self.signal(container, signal.SIGKILL)
            await self.until_not_running(container)
        return container

    async def kill(self, ref: str, sig: int = signal.SIGKILL) -> Container:
        container = self.get(ref)
        if container.pending_restart is not None:  # docker: a kill ends the restart loop
            self.cancel_pending_restart(container)
            self.stopped_by_user(container)
            return container
        if not container.status.can_kill():
            raise InvalidState(container.name, "kill", container.status.value, "it is not running")
        if sig in (signal.SIGKILL, container.spec.stop_signal):  # a HUP to reload is no stop
            self.stopped_by_user(container)
        thaw = pausing.thaws_for(container, sig)
        self.signal(container, sig)
        if thaw:
            await pausing.thaw(self, container)
        return container

    async def pause(self, ref: str) -> Container:
        """Freeze every process of a running container (supervisor/lifecycle/pausing.py)."""
        return await pausing.pause(self, ref)

    async def unpause(self, ref: str) -> Container:
        return await pausing.unpause(self, ref)

    async def restart(self, ref: str, timeout: int | None = None) -> Container:
        container = await self.stop(ref, timeout)
        async with container.lock:
            if container.status.can_start():
                self.started_by_user(container)
                await self.launch(container, None)
        self.events.container(container, "restart")
        return container

    async def wait_for(self, container: Container) -> int:
        """The exit code, once the container is not running (at once if it is not)."""
        await self.until_not_running(container)
        return container.exit_code

    async def until_not_running(self, container: Container) -> None:
        while container.status.running:
            await container.changed.wait()

    def signal(self, container: Container, sig: int) -> None:
        if container.process is not None:
            container.process.send_signal(sig)
            self.events.container(container, "kill", signal=str(int(sig)))

    async def shutdown(self, timeout: float) -> None:
        """Stop every running container (each with its own grace period), in parallel; give
        up ``timeout`` seconds after the longest grace period."""
        self.shutting_down = True
        for container in self.containers.values():
            self.cancel_pending_restart(container)
        running = [c for c in self.containers.values() if c.status.running]
        with trio.move_on_after(timeout + max((c.spec.stop_timeout for c in running), default=0)):
            async with trio.open_nursery() as nursery:
                for container in running:
                    nursery.start_soon(self.stop, container.id)

    # --- who ended the last run (the restart policy's input) -----------------------------

    def cancel_pending_restart(self, container: Container) -> None:
        pending, container.pending_restart = container.pending_restart, None
        if pending is not None:
            pending.scope.cancel()

    def started_by_user(self, container: Container) -> None:
        """A user's start: the restart policy starts over (docker resets its count)."""
        self.cancel_pending_restart(container)
        container.user_stopped = False
        container.restart_count = 0
        container.restart_attempt = 0

    def stopped_by_user(self, container: Container) -> None:
        """A user's stop or kill is not a failure: no restart policy applies to this exit."""
        if self.shutting_down or container.user_stopped:
            return
        container.user_stopped = True
        self.save(container)

    def forget_user_stop_at_daemon_start(self, container: Container) -> None:
        if container.user_stopped and restart_policy.forgets_user_stop_at_daemon_start(container.spec.restart_policy):
            container.user_stopped = False  # docker: `always` comes back when the daemon starts
            self.save(container)

    # --- remove, update -----------------------------------------------------------------

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        """Remove a container (``force``: kill it first if it runs; ``volumes``: its anonymous
        volumes too, as ``docker rm -v``). Holds the container's lock, so a start in progress,
        a restart policy's included, is never removed from under."""
        container = self.get(ref)
        self.cancel_pending_restart(container)
        async with container.lock:  # a start under way (a user's or a restart policy's) ends first
            if container.status.running:
                if not force:
                    raise InvalidState(
                        container.name, "remove", container.status.value,
                        f"it is {container.status.value}: stop it first, or use --force"
                    )
                self.signal(container, signal.SIGKILL)
                await pausing.thaw(self, container)
                await self.until_not_running(container)
            if container.status is Status.REMOVING:
                return
            if container.id in self.left_alone:  # another dockyard's, still running: ended only now
                try:
                    await trio.to_thread.run_sync(self.cgroups.open(container.id).kill_and_remove)
                except OSError as exc:
                    raise DockyardError(f"cannot remove container {container.name}: end its processes: "
                                        f"{exc.strerror}") from exc
                del self.left_alone[container.id]
            container.move("remove")
            await self.network.settle(container.id)  # no veth of it is left once it is gone
            await start.mounts_released(container)
            try:
                await trio.to_thread.run_sync(shutil.rmtree, container.directory)
            except FileNotFoundError:
                pass
            except OSError as exc:
                container.move("remove_failed")
                self.save(container)
                raise DockyardError(f"cannot remove container {container.name}: {exc}") from exc
            if self.local_logs is not None:
                self.local_logs.forget(container.id)
            await trio.to_thread.run_sync(self.logs.remove, container.id)  # its stored log too
            self.containers.pop(container.id, None)
            self.events.container(container, "destroy")
            if volumes:
                self.remove_anonymous_volumes(container)

    # --- volumes (supervisor/lifecycle/mounts.py) ------------------------------------------

    def volume_event(self, action: str, name: str, attributes: dict[str, str]) -> None:
        self.events.emit("volume", action, name, attributes)

    def volume_users(self, name: str) -> list[str]:
        """The containers (any state) that use the volume ``name``."""
        return container_mounts.volume_users(self.containers.values(), name)

    def remove_anonymous_volumes(self, container: Container) -> None:
        """Remove the container's anonymous volumes that no other container uses (``rm -v``;
        docker keeps one another container took with --volumes-from)."""
        for mount in container.mounts:
            if not mount.get("anonymous") or self.volumes is None or mount["name"] not in self.volumes.volumes:
                continue
            if self.volume_users(mount["name"]):
                continue
            try:
                self.volumes.remove(mount["name"], [])
            except (DockyardError, OSError) as exc:
                self.log.warning("cannot remove an anonymous volume", volume=mount["name"], error=str(exc))
                continue
            self.volume_event("destroy", mount["name"], {"driver": "local"})

    async def auto_remove(self, container: Container) -> None:
        """Remove a ``--rm`` container after its exit (or its failed start)."""
        if self.containers.get(container.id) is not container:
            return  # removed meanwhile (a cancelled `run` removes its container itself)
        try:
            await self.remove(container.id, volumes=True)  # docker: --rm takes the anonymous volumes too
        except DockyardError as exc:
            self.log.warning("auto-remove failed", container=container.id, error=str(exc))

    async def update(self, ref: str, changes: dict[str, Any], restart: str | None = None) -> Container:
        """Change a container's limits (``dockyard update``): in its record, and in its
        cgroup when it is running. ``changes`` holds resource fields as ``Resources.from_map``
        takes them; a value of 0 leaves a limit as it is (docker's rule). ``restart``: a new
        restart policy, checked as at create (not with ``--rm``)."""
        container = self.get(ref)
        unknown = sorted(set(changes) - set(UPDATABLE) - {"cpus"})
        if unknown:
            raise InvalidArgument(f"cannot update {', '.join(unknown)}: only {', '.join(UPDATABLE)} can be updated")
        changes = {key: value for key, value in changes.items() if value not in (0, "0", "", None)}
        async with container.lock:
            resources = Resources.from_map(changes, base=container.spec.resources)
            self.check_resources(resources)
            spec = dataclasses.replace(container.spec, resources=resources, restart=restart or container.spec.restart)
            if container.status.running and container.cgroup is not None:
                try:
                    container.cgroup.apply(resources)
                except OSError as exc:
                    raise InvalidArgument(f"cannot update container {container.name}: {exc.strerror}") from exc
            container.spec = spec
            self.save(container)
        self.events.container(container, "update")
        return container

    async def rename(self, ref: str, name: str) -> Container:
        """Give a container another name (``docker rename``), running or not; a name in use
        by another container is refused, as at create."""
        container = self.get(ref)
        name = name.lstrip("/")
        if not NAME.match(name):
            raise InvalidArgument(f"cannot rename container {container.name}: {name!r} is invalid: use "
                                  "[a-zA-Z0-9][a-zA-Z0-9_.-]+", name=name)
        async with container.lock:
            for other in self.containers.values():
                if other.name == name and other is not container:
                    raise Conflict(f'cannot rename container {container.name}: the container name "{name}" is '
                                   f"already in use by container {other.id}", name=name)
            old = container.name
            if old == name:
                return container
            container.name = name
            container.spec = dataclasses.replace(container.spec, name=name)
            self.save(container)
        self.events.container(container, "rename", oldName=old)
        return container

    def log_dropped(self, container_id: str, stream: str, lines: int, size: int) -> None:
        """A non-blocking container's buffered output was lost before the collector stored it."""
        container = self.containers.get(container_id)
        if container is None:
            return
        container.log_dropped_lines += lines
        container.log_dropped_bytes += size
        self.save(container)
        self.events.container(container, "logs-dropped", stream=stream, lines=str(lines), bytes=str(size),
                              total=str(container.log_dropped_lines))
