"""The containers at daemon start: load every record and reconcile it with what is left.

When the daemon starts, the only containers that may still run are those the keeper holds
(live restore: ``core.held``, from ``runtime/keeperclient.py``), so:

* a record that says "running" whose container the keeper holds is kept as it is and
  adopted once the daemon runs (:mod:`supervisor.lifecycle.restore`);
* any other record that says "running" is a container the previous daemon lost: whatever
  is left of it is killed, its cgroup removed, and it is recorded as exited with
  :data:`ORPHAN_EXIT_CODE` (as docker), with a ``die`` event, and the ``daemon.restore``
  event names it as not adoptable;
* the cgroup of every other container, whatever its record says, is a leftover (a daemon
  killed in the middle of a start, after the cgroup was made and before the record said
  "running", or of an exit's clean-up, leaves one, maybe with processes in it): each is
  emptied (SIGKILL) and removed;
* a removal that was interrupted leaves the container "dead" (``rm`` again removes it);
* what another dockyard version left (an upgrade or a downgrade between two runs) is left
  alone, never killed, and named as not adoptable in ``daemon.restore`` with the reason: a
  record of a later format (:data:`~supervisor.container.RECORD_VERSION`) is not loaded, and
  a running record whose pid 1 still runs as the child of another keeper (one that speaks
  another protocol: ``KeeperClient.incompatible``) is shown "dead" (``rm -f`` ends it) while
  its record stays "running" on disk, for the dockyard that started it. Their cgroups,
  leases, veths and port rules are kept (``core.left_alone``);
* so is a container whose record this daemon cannot read or parse (a damaged file): its
  folder, cgroup and processes stay as they are, reported as not adoptable with the reason,
  for an operator to repair or remove.

The overlay goes with the last process of its mount namespace; the network's leases and
veths are reconciled next (``Network.start``).
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

import trio

from supervisor.container import RECORD_VERSION, Container, now_rfc3339
from supervisor.errors import DockyardError
from supervisor.state import Status

if TYPE_CHECKING:
    from supervisor.lifecycle.core import Lifecycle

#: Exit code recorded for a container that was running when the daemon died (as docker).
ORPHAN_EXIT_CODE = 255


async def load_and_reconcile(core: Lifecycle) -> None:
    """Load every record into ``core.containers`` and reconcile each (module docstring)."""
    records, broken = core.store.load_all()
    leftovers: list[str] = []
    for folder, reason in broken:  # a record's folder is named by its id
        leave_alone(core, folder.name, folder.name, f"its record is unreadable ({reason})")
    for record in records:
        if left_alone_record(core, record):
            continue
        try:
            container = Container.from_record(record)
        except (KeyError, ValueError, TypeError, DockyardError) as exc:
            if isinstance(record.get("id"), str):
                name = record.get("name") if isinstance(record.get("name"), str) else record["id"]
                leave_alone(core, record["id"], name, f"its record is invalid ({exc})")
            else:
                core.log.warning("invalid container record without an id, left alone", reason=str(exc))
            continue
        core.containers[container.id] = container
        core.forget_user_stop_at_daemon_start(container)
        if container.status.running:  # running or paused: a paused one stays frozen when adopted
            if container.id in core.held:
                core.restoring.append(container)
                continue
            reason = held_by_another_keeper(core, container)
            if reason:
                container.status = Status.DEAD  # in memory only: the record stays "running"
                container.error = reason
                core.left_alone[container.id] = container.name
                core.not_adopted[container.id] = reason
                core.log.warning("a running container of another dockyard version is left alone, not adopted",
                                 container=container.id, reason=reason)
                continue
            await reconcile_orphan(core, container)
            continue
        if container.status is Status.REMOVING:
            container.status = Status.DEAD  # the removal was interrupted
            core.save(container)
        leftovers.append(container.id)
    restoring = {container.id for container in core.restoring}
    leftovers += [container_id for container_id in core.held if container_id not in restoring
                  and container_id not in leftovers and container_id not in core.left_alone]
    # (a start the last daemon did not record)
    await remove_cgroups(core, leftovers)


def leave_alone(core: Lifecycle, container_id: str, name: str, why: str) -> None:
    """A container this daemon cannot read: its folder, cgroup and any process in it (held
    by the keeper or not) are left as they are, and it is reported in ``daemon.restore``
    (issue 21: never killed for a state it cannot adopt)."""
    reason = f"{why}: left as it is, not adopted (repair or remove its folder by hand)"
    core.log.warning("a container record this daemon cannot read is left alone", id=container_id, reason=reason)
    core.left_alone[container_id] = name
    core.not_adopted[container_id] = reason


def left_alone_record(core: Lifecycle, record: dict) -> bool:
    """A record of a later format than this daemon's: not loaded, and its container (and
    cgroup) left as they are (module docstring)."""
    version = record.get("version", 1)
    if type(version) is int and version <= RECORD_VERSION:
        return False
    container_id, name = record.get("id"), record.get("name")
    reason = (f"its record is of format {version!r}, this dockyard reads up to {RECORD_VERSION} (a later dockyard "
              "wrote it): left running, not adopted")
    core.log.warning("a container record of another dockyard version is left alone", id=container_id, reason=reason)
    if isinstance(container_id, str):
        core.left_alone[container_id] = name if isinstance(name, str) else container_id
        if record.get("status") in (Status.RUNNING.value, Status.PAUSED.value):
            core.not_adopted[container_id] = reason
    return True


def held_by_another_keeper(core: Lifecycle, container: Container) -> str:
    """Why a running record's container is left alone ("" if it is not): its pid 1 still
    runs (same start time) as the child of a keeper other than this daemon's."""
    from supervisor.runtime.process import parent_and_start_time

    if not container.pid:
        return ""
    try:
        parent, start_time = parent_and_start_time(container.pid)
        with open(f"/proc/{parent}/cmdline", "rb") as file:
            command = file.read().split(b"\0")
    except (OSError, ValueError, IndexError):
        return ""
    ours = core.keeper.pid if core.keeper is not None else 0
    if start_time != container.start_time or parent == ours or not any(arg.endswith(b"keeper.py") for arg in command):
        return ""
    incompatible = getattr(core.keeper, "incompatible", None)
    if incompatible is not None and incompatible.pid == parent:
        from supervisor.runtime.keeper import VERSION

        return (f"held by the container keeper pid {parent} ({incompatible.socket_path}), which speaks protocol "
                f"{incompatible.version!r}; this dockyard speaks {VERSION}: left running, not adopted")
    script = next(index for index, arg in enumerate(command) if arg.endswith(b"keeper.py"))
    socket_path = command[script + 1].decode(errors="replace") if len(command) > script + 1 else "?"
    return f"held by another dockyard's container keeper (pid {parent}, {socket_path}): left running, not adopted"


async def remove_cgroups(core: Lifecycle, container_ids: list[str]) -> None:
    """Kill what is left in these containers' cgroups and remove them."""
    def remove_all() -> list[tuple[str, str]]:
        failures = []
        for container_id in container_ids:
            try:
                core.cgroups.open(container_id).kill_and_remove()
            except (OSError, DockyardError) as exc:  # DockyardError: not a cgroup name
                failures.append((container_id, getattr(exc, "message", None) or exc.strerror or str(exc)))
        return failures

    for container_id, reason in await trio.to_thread.run_sync(remove_all):
        core.log.warning("cannot remove the cgroup of a container that is not running", container=container_id,
                         error=reason)


async def reconcile_orphan(core: Lifecycle, container: Container,
                           reason: str = "the daemon stopped while the container was running") -> None:
    """A container the previous daemon left running: killed, its cgroup removed, exited."""
    kill_if_same(container.pid, container.start_time)
    cgroup = core.cgroups.open(container.id)
    try:
        await trio.to_thread.run_sync(cgroup.kill_and_remove)
    except OSError as exc:  # recorded as exited all the same; the log says what is left
        core.log.warning("cannot remove the cgroup of a container left running", container=container.id,
                         error=exc.strerror)
    container.exit_code = ORPHAN_EXIT_CODE
    container.error = reason
    core.not_adopted[container.id] = reason
    container.finished_at = now_rfc3339()
    container.pid = 0
    container.move("exit")
    core.save(container)
    core.log.info("reconciled container left running by a previous daemon", container=container.id)
    core.events.container(container, "die", exitCode=str(ORPHAN_EXIT_CODE), reason="daemon restart")


def kill_if_same(pid: int, start_time: int) -> None:
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
