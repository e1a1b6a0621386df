"""Restart policies: scheduling the restart the monitor asked for.

The monitor worker decides whether and when an exited container restarts (the policy and
its backoff: :mod:`supervisor.restart`, :mod:`supervisor.backoff`); this service checks the
request against the container's state, publishes ``container.<id>.restart`` and starts the
container after the delay. A user's stop, kill, start or rm cancels a restart that waits
(the lifecycle core's ``cancel_pending_restart``).
"""

from __future__ import annotations

import dataclasses

import trio

from supervisor.container import Container
from supervisor.errors import Conflict, DockyardError, InvalidArgument, InvalidState, StartError
from supervisor.lifecycle.core import Lifecycle
from supervisor.state import Status


@dataclasses.dataclass(eq=False)
class PendingRestart:
    """A policy restart waiting for its delay (:meth:`Restarts.schedule`)."""

    exit_id: str
    attempt: int
    delay: float
    scope: trio.CancelScope = dataclasses.field(default_factory=trio.CancelScope)


class Restarts:
    def __init__(self, core: Lifecycle):
        self.core = core

    async def schedule(self, ref: str, exit_id: str, attempt: int, delay: float) -> Container:
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
        container = self.core.get(ref)
        if type(attempt) is not int or attempt < 1:
            raise InvalidArgument(f"argument 'attempt' must be a whole number >= 1, not {attempt!r}")
        if not 0 <= delay <= 3600:
            raise InvalidArgument(f"argument 'delay' must be 0..3600 seconds, not {delay!r}")
        refused = f"cannot restart container {container.name} for its exit at {exit_id}"
        if self.core.shutting_down:
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
        self.core.save(container)
        self.core.events.container(
            container, "restart", attempt=str(attempt), delay=f"{delay:.3f}", exitCode=str(container.exit_code),
            restartCount=str(container.restart_count), policy=container.spec.restart,
        )
        assert self.core.nursery is not None
        self.core.nursery.start_soon(self._restart_after, container, pending)
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
                    await self.core.launch(container, None)
                except StartError as exc:  # its die event is out: the monitor decides again
                    self.core.log.warning("restart failed", container=container.id, error=exc.message)
                except DockyardError as exc:  # a background task: a refusal must not end the daemon
                    self.core.log.error("restart refused", container=container.id, error=exc.message)
