"""Starting a container, and what happens when its process exits.

Theory of operation
-------------------
A start takes, in order, the container's cgroup (created, limits written), its network
(lease, ports, /etc files) and its process (launched by the fork server, which calls the
network's ``connect`` once pid 1 exists)::

    cgroups.create ─▶ cgroup.apply ─▶ network.prepare ─▶ launcher.launch(prepare=connect)
          │                                 │
          └─ undo: cgroup.remove            └─ undo: network.release

Each step that takes something pushes its undo on one exit stack (:func:`start_attempt`).
If any step fails, or the start is cancelled, the stack is unwound (shielded), the failure
recorded (exited, exit code 125 or the launcher's 126/127, the reason in ``error``), ``die``
published, a ``--rm`` container removed, and StartError raised (a cancellation is re-raised
as it is). That is the only clean-up path of a failed start. Once the process runs, the
container owns what the stack held, and :func:`supervise` gives it back at the exit.

The container's overlay is mounted inside its own mount namespace, so it disappears with the
container: nothing to unmount.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any, Protocol

import trio

from supervisor import health, stats, ulimits
from supervisor.container import Attachment, Container, now_rfc3339
from supervisor.errors import DockyardError, InvalidState, StartError
from supervisor.lifecycle import initbinary, pausing, privileges, remap
from supervisor.lifecycle import mounts as container_mounts
from supervisor.lifecycle.events import Events
from supervisor.lifecycle.mechanics import CgroupBackend, ImageResolver, Launcher, Network
from supervisor.logpump import drain, pump
from supervisor.logspool import Spool, capacity_for
from supervisor.runtime.spawn import LaunchConfig, LaunchError
from supervisor.runtime.stdio import StdioPlan
from supervisor.spec import terminal_env

#: After pid 1 exited, the pumps are cancelled once no output came for this long (processes
#: in other namespaces that inherited the pipes may hold them open).
OUTPUT_DRAIN_SECONDS = 2.0
#: The reason recorded for a start that was cancelled (the daemon stopping, a client gone).
CANCELLED_REASON = "the start was cancelled"


class Lifecycle(Protocol):
    """What a start needs of the lifecycle core (core.py's ``Lifecycle``; a protocol here, so
    that the core imports this module and not the other way round)."""

    cgroups: CgroupBackend
    network: Network
    launcher: Launcher
    volumes: Any  # supervisor.volumes.VolumeStore, or None
    keeper: Any  # runtime.keeperclient.KeeperClient (live restore), or None: the launcher starts containers
    images: ImageResolver
    logs: Any
    events: Events
    host_memory: int
    nursery: trio.Nursery | None
    remap: remap.Remap

    def get(self, ref: str) -> Container: ...

    def save(self, container: Container) -> None: ...

    async def auto_remove(self, container: Container) -> None: ...


async def mounts_released(container: Container) -> None:
    """Until the last run's overlay is unmounted (it is mounted again, or deleted, next)."""
    if container.unmounted is not None:
        await container.unmounted.wait()


async def launch(core: Lifecycle, container: Container, attach: Attachment | None) -> None:
    """Start the container's process; the caller holds container.lock.

    Raises:
        StartError: the start failed (recorded and announced; nothing of it is left).
    """
    await mounts_released(container)
    async with start_attempt(core, container) as undo:
        cgroup = core.cgroups.create(container.id)
        undo.push_async_callback(trio.to_thread.run_sync, cgroup.remove)
        cgroup.apply(container.spec.resources, devices=privileges.device_rules(container.spec))
        network = await prepare_network(core, container)
        undo.push_async_callback(core.network.release, network)
        await acquire_volumes(core, container, undo)
        # A kept writable layer is synced when its overlay is unmounted: we hold pid 1's mount
        # namespace so that happens after its exit is reported (release_mounts), and pid 1
        # waits for the go (network_sync) so the namespace is there to hold. A --rm layer is
        # mounted volatile instead: it is deleted at the exit and never synced.
        hold = not container.spec.auto_remove
        stdio = StdioPlan(stdin=container.spec.open_stdin, tty=container.spec.tty)
        prepare = functools.partial(core.network.connect, network)
        # In a thread: the first start with a profile and capability set compiles its seccomp
        # filter (~30 ms); later ones find it cached (lifecycle/privileges.py).
        security = await trio.to_thread.run_sync(privileges.launch_fields, container.spec, cgroup)
        # --userns-remap (lifecycle/remap.py): in a thread, as a first start under chowned
        # copies copies the image's layers.
        security.update(await trio.to_thread.run_sync(
            remap.launch_fields, core.remap, container, lower_dirs(container, network), network.etc_dir))
        config = launch_config(container, cgroup, network, hold, security)
        if core.keeper is not None:  # live restore: the keeper holds the stdio, spools and ports too
            process = await core.keeper.launch(config, stdio, prepare=prepare, hold_mounts=hold,
                                               **kept_network(network))
        else:
            process = await core.launcher.launch(config, stdio, prepare=prepare, hold_mounts=hold)
    container.network = network
    container.process = process
    container.cgroup = cgroup
    container.stats_reader = stats.StatsReader(cgroup, core.host_memory)
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
    core.save(container)
    volume_events(core, container, "mount")
    core.events.container(container, "start")
    core.logs.open(container.id, container.spec.log_options)
    assert core.nursery is not None
    core.nursery.start_soon(supervise, core, container, process)
    core.network.serve(network, core.nursery)


def kept_network(network: Any) -> dict[str, Any]:
    """What the keeper holds of the network: the published ports' sockets, and how to
    rebuild their mappings (``Network.adopt``)."""
    sockets = getattr(network, "sockets", None) or []
    return {"hold": {f"port.{index}": sock.fileno() for index, sock in enumerate(sockets)},
            "extra": {"ports": [[mapping.host_ip, mapping.host_port, mapping.container_port, mapping.protocol, port]
                                for mapping, port in getattr(network, "ports", [])]}}


def launch_config(container: Container, cgroup: Any, network: Any, hold: bool, security: dict[str, Any]) -> LaunchConfig:
    """What the init stage needs to make the container's process (``security``: the fields
    of ``privileges.launch_fields``)."""
    resolved = container.resolved
    security = dict(security)
    return LaunchConfig(
        container_id=container.id,
        lower=security.pop("lower", lower_dirs(container, network)),
        upper=str(container.upper),
        work=str(container.work),
        rootfs=str(container.rootfs),
        argv=initbinary.command(resolved.argv) if container.spec.init else tuple(resolved.argv),
        env=tuple(terminal_env(resolved.env, container.spec.tty)),
        cwd=resolved.workdir,
        user=resolved.user,
        hostname=resolved.hostname,
        cgroup_procs=tuple(cgroup.procs_files),
        cgroupfs=cgroup.cgroupfs_entries,
        network_namespace=network.namespace,
        uts_namespace=container.spec.uts,
        etc_dir=network.etc_dir,
        network_sync=network.sync or hold,
        volatile=not hold,
        **security,
        **mount_config(container),
    )


def lower_dirs(container: Container, network: Any) -> tuple[str, ...]:
    """The overlay's lower dirs, top first: the network's init layer, the image's layers."""
    return (network.init_layer,) + tuple(container.layers)


def mount_config(container: Container) -> dict[str, Any]:
    """The launch config's volumes, binds and tmpfs mounts (and --init's binary), --read-only,
    the rlimits and /dev/shm's size."""
    mounts = container_mounts.stage_entries(container.mounts)
    if container.spec.init:
        mounts += (initbinary.stage_entry(container.spec.init_path),)
    return {"mounts": mounts, "readonly_rootfs": container.spec.read_only,
            "rlimits": ulimits.launch_rlimits(container.spec.ulimits, nofile_ceiling()),
            "shm_size": str(container.spec.shm_size) if container.spec.shm_size else ""}


CAP_SYS_RESOURCE = 24


def nofile_ceiling() -> int:
    """The highest open-files limit the init stage can give: the kernel's ``fs.nr_open`` when
    the daemon may raise a hard limit (CAP_SYS_RESOURCE), else its own hard limit; 0 when unknown."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    try:
        with open("/proc/sys/fs/nr_open") as file:
            ceiling = int(file.read())
        with open("/proc/self/status") as file:
            effective = next(int(line.split()[1], 16) for line in file if line.startswith("CapEff:"))
    except (OSError, ValueError, StopIteration):
        return hard if hard != resource.RLIM_INFINITY else 0
    if not effective >> CAP_SYS_RESOURCE & 1 and hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    return ceiling


async def acquire_volumes(core: Lifecycle, container: Container, undo: contextlib.AsyncExitStack) -> None:
    """Mount the container's volumes that have driver options (``volume create --opt``) and
    that no running container holds yet; given back at the exit (:func:`release_volumes`)."""
    names = container_mounts.volume_names(container.mounts)
    if names and core.volumes is not None:
        await trio.to_thread.run_sync(core.volumes.acquire, names, container.id)
        undo.callback(core.volumes.release, names, container.id)


def release_volumes(core: Lifecycle, container: Container) -> None:
    """The exited container's hold on its volumes: the last one out unmounts a volume's filesystem."""
    names = container_mounts.volume_names(container.mounts)
    if names and core.volumes is not None:
        core.volumes.release(names, container.id)


def volume_events(core: Lifecycle, container: Container, action: str) -> None:
    """``volume.<name>.mount|unmount`` for each volume of the container (docker's attributes)."""
    for mount in container.mounts:
        if mount["type"] == "volume":
            core.events.emit("volume", action, mount["name"], {
                "container": container.id, "destination": mount["target"], "driver": "local",
                "propagation": mount["propagation"], "read/write": "false" if mount["readonly"] else "true"})


async def prepare_network(core: Lifecycle, container: Container) -> Any:
    """The container's network before its launch (lease, ports bound, /etc files)."""
    peer = None
    if container.spec.network.startswith("container:"):
        peer = core.get(container.spec.network.partition(":")[2])
        if peer.id == container.id or not peer.status.running or peer.network is None:
            raise InvalidState(peer.name, "join the network of", peer.status.value, "it is not running")
    image_config = core.images.resolve(container.image_id).config if container.spec.publish_all else None
    try:
        return await core.network.prepare(container, peer, image_config)
    except OSError as exc:  # the /etc files could not be written
        reason = f"set up the network: {exc}"
        raise LaunchError(reason, reason=reason) from exc


@contextlib.asynccontextmanager
async def start_attempt(core: Lifecycle, container: Container) -> AsyncIterator[contextlib.AsyncExitStack]:
    """The one clean-up path of a failed start (see the module's docstring): yields an exit
    stack for the undo of each step; kept on success, unwound on any failure."""
    undo = contextlib.AsyncExitStack()
    try:
        yield undo
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await undo.aclose()
            exit_code, reason = failure(exc)
            start_failed(core, container, exit_code, reason)
        if isinstance(exc, (LaunchError, DockyardError, OSError)):
            raise StartError(f"cannot start container {container.name}: {reason}", exit_code=exit_code,
                             container=container.id) from exc
        raise
    undo.pop_all()


def failure(exc: BaseException) -> tuple[int, str]:
    """The exit code and the reason a failed start records."""
    if isinstance(exc, LaunchError):
        return exc.exit_code, exc.details.get("reason", exc.message)
    if isinstance(exc, DockyardError):  # a limit the cgroup cannot give, the network's refusal
        return 125, exc.message
    if isinstance(exc, OSError):  # the cgroup could not be made or written
        return 125, exc.strerror or str(exc)
    if isinstance(exc, trio.Cancelled):
        return 125, CANCELLED_REASON
    return 125, f"{type(exc).__name__}: {exc}"


def start_failed(core: Lifecycle, container: Container, exit_code: int, reason: str) -> None:
    """Record and announce a start that failed before the payload ran."""
    container.exit_code = exit_code
    container.error = reason
    container.finished_at = now_rfc3339()
    container.move("start_failed")
    core.save(container)
    core.events.container(container, "die", exitCode=str(exit_code), error=reason)
    if container.spec.auto_remove:
        assert core.nursery is not None
        core.nursery.start_soon(core.auto_remove, container)


async def supervise(core: Lifecycle, container: Container, process: Any,
                    restored: dict[str, tuple[Spool, bytes]] | None = None) -> None:
    """Pump the container's output until it exits, then record the exit and clean up.
    ``restored``: a container adopted at daemon start (lifecycle/restore.py), each stream's
    spool already in use and the output it holds that was not stored."""
    log = core.logs.get(container.id)
    if restored is None:
        restored = {}
        for name, fd in getattr(process, "spools", {}).items():
            restored[name] = (Spool(fd, capacity_for(log.options.max_buffer_size)), b"")
            log.use_spool(name, restored[name][0])
    async with trio.open_nursery() as pumps:
        for name in ("stdout", "stderr"):  # a terminal has no stderr: it is merged
            if getattr(process, name) is not None:
                spool, recovered = restored.get(name, (None, b""))
                pumps.start_soon(functools.partial(pump, log, name, getattr(process, name), container.attachments,
                                                   spool=spool, recovered=recovered))
        exit_code = await process.wait()
        output = core.logs.get(container.id)
        output.finish()  # from now on the pumps never block
        pumps.start_soon(drain, output, pumps.cancel_scope, OUTPUT_DRAIN_SECONDS)
    mounts = process.take_mount_namespace()
    if mounts >= 0:
        container.unmounted = trio.Event()
    for spool, _ in (restored or {}).values():  # their fds close with the process; what is left
        spool.close()  # is released by the keeper
    if log.spools:
        log.spools.clear()
    if log.spool_failures:
        core.log.warning("an output spool failed: output is not kept across a daemon restart",
                         container=container.id, failures=log.spool_failures)
    process.close()
    cgroup, container.cgroup = container.cgroup, None
    reader, container.stats_reader = container.stats_reader, None
    if reader is not None:
        reader.close()
    # Read before the cgroup goes: the kernel's count of OOM kills in it.
    oom_killed = cgroup is not None and cgroup.oom_kills() > 0
    with trio.CancelScope(shield=True):
        if cgroup is not None:
            await trio.to_thread.run_sync(cgroup.kill_and_remove)
        network, container.network = container.network, None
        await core.network.release(network)
    container.process = None
    container.attachments.clear()
    container.exit_code = exit_code
    container.oom_killed = oom_killed
    finished = getattr(process, "finished_at", None)  # the keeper's time of the reaping
    await pausing.thawed(container)  # a stop's thaw ends it: its unpause goes first
    container.finished_at = (datetime.fromtimestamp(finished, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                             if finished else now_rfc3339())
    container.move("exit")
    core.save(container)
    volume_events(core, container, "unmount")
    release_volumes(core, container)
    if oom_killed:
        core.events.container(container, "oom")
    core.events.container(container, "die", exitCode=str(exit_code))
    if container.stopping:
        core.events.container(container, "stop")
    if core.keeper is not None:
        assert core.nursery is not None
        core.nursery.start_soon(release_when_stored, core, container.id, process.pid, output)
    if mounts >= 0:
        await release_mounts(container, mounts)
    if container.spec.auto_remove:
        await core.auto_remove(container)


async def release_when_stored(core: Lifecycle, container_id: str, pid: int, output: Any) -> None:
    """The keeper lets an exited run's fds (its output spools) go once its output is stored:
    a daemon killed before that finds the rest in the spools."""
    while not output.settled() and core.logs.get(container_id) is output:  # not removed (rm)
        await output.wait_changed(1.0)
    await core.keeper.release(container_id, pid)


async def release_mounts(container: Container, mount_namespace: int) -> None:
    """Let the exited container's mounts go (see ContainerProcess.take_mount_namespace):
    the overlay's unmount syncs the upper dir's filesystem in a thread, after the exit
    was reported. A start or rm of the container waits for it (mounts_released)."""
    try:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(os.close, mount_namespace)
    finally:
        released, container.unmounted = container.unmounted, None
        if released is not None:
            released.set()
