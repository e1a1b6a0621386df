"""The supervisor as a library: create, start, stop, wait for and remove containers from any
trio program. The daemon (:mod:`supervisor.daemon`) is this API plus a bus.

    async with Supervisor(Config(root=..., run_dir=...)) as sup:
        await sup.import_image(open("rootfs.tar", "rb"), "base")
        container = await sup.run(ContainerSpec(image="base", cmd=("echo", "hi")))
        exit_code = await sup.wait(container.id)

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
import os
import secrets
import shutil
import signal
import stat
import time
from collections.abc import Callable
from typing import Any, BinaryIO

import structlog
import trio

from supervisor.config import Config
from supervisor.container import Attachment, Container, Resolved, now_rfc3339, random_name
from supervisor.errors import Conflict, DockyardError, InvalidArgument, InvalidState, NotFound, StartError
from supervisor.images.store import Image, ImageStore
from supervisor import stats
from supervisor.journal import Journal
from supervisor.logbuffer import LogBuffers, drain, pump
from supervisor.resources import UPDATABLE, DeviceMapping, Resources, device_rule
from supervisor.runtime import cgroups
from supervisor.runtime.spawn import DEFAULT_CAPABILITIES, ForkServer, LaunchConfig, LaunchError, become_subreaper
from supervisor.spec import DEFAULT_PATH, ContainerSpec, merge_env
from supervisor.state import Status
from supervisor.store import ContainerStore

#: publish(topic, data, channel): where the supervisor sends its events (the daemon's bus).
EventSink = Callable[[str, dict[str, Any], str], Any]

EVENTS_CHANNEL = "events"
#: Exit code recorded for a container that was running when the daemon died (as docker).
ORPHAN_EXIT_CODE = 255
#: After pid 1 exited, the pumps are cancelled once no output came for this long (processes
#: in other namespaces that inherited the pipes may hold them open).
OUTPUT_DRAIN_SECONDS = 2.0
#: cgroup v2 gets no device program (BPF) from dockyard yet: without CAP_MKNOD a container
#: cannot make a node for a host device (docs/architecture.md, "Security defaults").
V2_CAPABILITIES = tuple(cap for cap in DEFAULT_CAPABILITIES if cap != "CAP_MKNOD")


class Supervisor:
    def __init__(self, config: Config | None = None, *, publish: EventSink | None = None, log: Any = None):
        self.config = config or Config()
        self._sink = publish
        self.log = log or structlog.get_logger("dockyard")
        self._containers: dict[str, Container] = {}
        self._store = ContainerStore(self.config.containers_dir)
        self.images = ImageStore(self.config.root)
        self._cgroups = cgroups.detect(str(self.config.cgroup_root), self.config.cgroup_parent)
        self._host_memory = _host_memory()
        self._stack = contextlib.AsyncExitStack()
        self._nursery: trio.Nursery | None = None
        self._fork_server = ForkServer(self.config.python)  # forks every container's init stage
        self.logs = LogBuffers(self.config.root, publish=self._publish, dropped=self._log_dropped)

    # --- lifecycle of the supervisor itself --------------------------------------------

    async def __aenter__(self) -> Supervisor:
        become_subreaper()
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        await self._load_and_reconcile()
        await self._stack.enter_async_context(self._fork_server)  # closed after the nursery
        self._nursery = await self._stack.enter_async_context(trio.open_nursery())
        if self.config.stats_interval > 0:
            self._nursery.start_soon(self._sample_forever, self.config.stats_interval)
        self._emit("daemon", "start", "", {"pid": str(os.getpid()), "root": str(self.config.root)})
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        try:
            with trio.CancelScope(shield=True):
                await self.shutdown()
                await trio.to_thread.run_sync(self._cgroups.remove_parent)
        finally:
            assert self._nursery is not None
            self._nursery.cancel_scope.cancel()
            suppress = await self._stack.__aexit__(*exc_info)
        return suppress

    async def shutdown(self) -> None:
        """Stop every running container (each with its own grace period), in parallel."""
        running = [c for c in self._containers.values() if c.status.running]
        with trio.move_on_after(self.config.shutdown_timeout + max((c.spec.stop_timeout for c in running), default=0)):
            async with trio.open_nursery() as nursery:
                for container in running:
                    nursery.start_soon(self.stop, container.id)
        self._emit("daemon", "stop", "", {"pid": str(os.getpid())})

    # --- images -----------------------------------------------------------------------

    async def import_image(self, source: BinaryIO, reference: str) -> Image:
        image = await trio.to_thread.run_sync(self.images.import_tar, source, reference)
        self._emit("image", "import", image.id, {"name": reference})
        return image

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
        return [c for c in containers if all or c.status.running]

    # --- containers ---------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> Container:
        self._check_resources(spec.resources)
        image = self.images.resolve(spec.image)
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
        if not container.status.running:
            return container
        grace = container.spec.stop_timeout if timeout is None else timeout
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
        if not container.status.can_kill():
            raise InvalidState(container.name, "kill", container.status.value, "it is not running")
        self._signal(container, sig)
        return container

    async def restart(self, ref: str, timeout: int | None = None) -> Container:
        container = await self.stop(ref, timeout)
        async with container.lock:
            if container.status.can_start():
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
        container = self.get(ref)
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
        try:
            await trio.to_thread.run_sync(shutil.rmtree, container.directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            container.move("remove_failed")
            self._save(container)
            raise DockyardError(f"cannot remove container {container.name}: {exc}") from exc
        await trio.to_thread.run_sync(self.logs.remove, container.id)  # its stored log too
        self._containers.pop(container.id, None)
        self._emit_container(container, "destroy")

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

    # --- internals ----------------------------------------------------------------------

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
        cgroup = self._cgroups.create(container.id)
        try:
            cgroup.apply(container.spec.resources, devices=_device_rules(container.spec.resources))
        except (OSError, DockyardError) as exc:
            await trio.to_thread.run_sync(cgroup.remove)
            reason = getattr(exc, "message", None) or exc.strerror or str(exc)
            await self._start_failed(container, LaunchError(f"cannot start container {container.name}: {reason}", reason=reason))
        resolved = container.resolved
        launch_config = LaunchConfig(
            container_id=container.id,
            lower=tuple(container.layers),
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
        )
        try:
            process = await self._fork_server.launch(launch_config)
        except LaunchError as exc:
            await trio.to_thread.run_sync(cgroup.remove)
            await self._start_failed(container, exc)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(cgroup.remove)
            raise
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
        if attach is not None:
            container.attachments.append(attach)
        container.move("start")
        self._save(container)
        self._emit_container(container, "start")
        self.logs.open(container.id, container.spec.log_options)
        assert self._nursery is not None
        self._nursery.start_soon(self._supervise, container, process)

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
            pumps.start_soon(self._pump, container, process.stdout, "stdout")
            pumps.start_soon(self._pump, container, process.stderr, "stderr")
            exit_code = await process.wait()
            output = self.logs.get(container.id)
            output.finish()  # from now on the pumps never block
            pumps.start_soon(drain, output, pumps.cancel_scope, OUTPUT_DRAIN_SECONDS)
        process.close()
        cgroup, container.cgroup = container.cgroup, None
        reader, container.stats_reader = container.stats_reader, None
        if reader is not None:
            reader.close()
        # Read before the cgroup goes: the kernel's count of OOM kills in it.
        oom_killed = cgroup is not None and cgroup.oom_kills() > 0
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_kill_and_remove, cgroup)
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
        if container.spec.auto_remove:
            await self._auto_remove(container)

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
        (if anything of it is left), its cgroup removed, and it is marked exited."""
        records, broken = self._store.load_all()
        for folder, reason in broken:
            self.log.warning("unreadable container record, left alone", path=str(folder), reason=reason)
        for record in records:
            try:
                container = Container.from_record(record)
            except (KeyError, ValueError, TypeError, DockyardError) as exc:
                self.log.warning("invalid container record, left alone", id=record.get("id"), reason=str(exc))
                continue
            self._containers[container.id] = container
            if container.status is Status.RUNNING:
                await self._reconcile_orphan(container)
            elif container.status is Status.REMOVING:
                container.status = Status.DEAD  # the removal was interrupted
                self._save(container)

    async def _reconcile_orphan(self, container: Container) -> None:
        _kill_if_same(container.pid, container.start_time)
        cgroup = self._cgroups.open(container.id)
        await trio.to_thread.run_sync(_kill_and_remove, cgroup)
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
        topic = f"{kind}.{actor}.{action}" if actor else f"{kind}.{action}"
        data = {"type": kind, "action": action, "id": actor, "attributes": attributes, "time": time.time()}
        self._publish(topic, data, EVENTS_CHANNEL)

    def _publish(self, topic: str, data: dict[str, Any], channel: str) -> None:
        if self._sink is not None:
            self._sink(topic, data, channel)


def _resolve(spec: ContainerSpec, image: Image, container_id: str) -> Resolved:
    config = image.config or {}
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
    cgroup.kill_all(signal.SIGKILL)
    cgroup.remove()


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
