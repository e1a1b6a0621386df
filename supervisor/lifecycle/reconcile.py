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
* a removal that was interrupted leaves the container "dead" (``rm`` again removes it).

The overlay goes with the last process of its mount namespace; the network's leases and
veths are reconciled next (``Network.start``).
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

import trio

from supervisor.container import Container, now_rfc3339
from supervisor.errors import DockyardError
from supervisor.state import Status

if TYPE_CHECKING:
    from supervisor.lifecycle.core import Lifecycle

#: Exit code recorded for a container that was running when the daemon died (as docker).
ORPHAN_EXIT_CODE = 255


async def load_and_reconcile(core: Lifecycle) -> None:
    """Load every record into ``core.containers`` and reconcile each (module docstring)."""
    records, broken = core.store.load_all()
    leftovers = [folder.name for folder, _ in broken]  # a record's folder is named by its id
    for folder, reason in broken:
        core.log.warning("unreadable container record, left alone", path=str(folder), reason=reason)
    for record in records:
        try:
            container = Container.from_record(record)
        except (KeyError, ValueError, TypeError, DockyardError) as exc:
            core.log.warning("invalid container record, left alone", id=record.get("id"), reason=str(exc))
            if isinstance(record.get("id"), str):
                leftovers.append(record["id"])
            continue
        core.containers[container.id] = container
        core.forget_user_stop_at_daemon_start(container)
        if container.status is Status.RUNNING:
            if container.id in core.held:
                core.restoring.append(container)
                continue
            await reconcile_orphan(core, container)
            continue
        if container.status is Status.REMOVING:
            container.status = Status.DEAD  # the removal was interrupted
            core.save(container)
        leftovers.append(container.id)
    restoring = {container.id for container in core.restoring}
    leftovers += [container_id for container_id in core.held if container_id not in restoring
                  and container_id not in leftovers]  # a start the last daemon did not record
    await remove_cgroups(core, leftovers)


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
