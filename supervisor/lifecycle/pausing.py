"""Pause and unpause (``docker pause``): every process of a running container frozen by its
cgroup's freezer (supervisor/runtime/freezer.py), and thawed.

A paused container is still running (its pid 1 is there; ``State.Running`` and
``State.Paused`` are both true, as in docker), so the rules that take a running container
hold for it, with these differences, all docker's:

* ``stop``, ``kill`` with the stop signal or SIGKILL, and ``rm --force`` thaw it right after
  the signal is sent (the signal waits, pending, until the processes run again), with a
  ``container.<id>.unpause`` event; another signal (``kill -s HUP``) leaves it frozen, the
  signal pending.
* ``exec`` (and so a health check) is refused while it is paused; a health check starts
  again with the unpause.
* ``rm`` without ``--force`` is refused, as for a running container.

Pause and unpause hold the container's lock (a start or a remove does not run meanwhile);
stop and kill take none, so a pause that finds the container being stopped thaws it again
and says so. The freezer is written in a worker thread: it waits for the kernel to settle.
"""

from __future__ import annotations

import signal
from typing import Protocol

import trio

from supervisor.container import Container
from supervisor.errors import DockyardError, InvalidState
from supervisor.lifecycle.events import Events
from supervisor.state import Status


class Lifecycle(Protocol):
    """What a pause needs of the lifecycle core (a protocol: core.py imports this module)."""

    events: Events

    def get(self, ref: str) -> Container: ...

    def save(self, container: Container) -> None: ...


async def pause(core: Lifecycle, ref: str) -> Container:
    """Freeze the container's processes; ``container.<id>.pause`` once they are.

    Raises:
        InvalidState: it is not running, or already paused, or being stopped.
        DockyardError: the freezer could not freeze it (it is left running).
    """
    container = core.get(ref)
    async with container.lock:
        _check(container, "pause", Status.RUNNING)
        await _freeze(container, True, "pause")
        if container.stopping or not container.status.can_pause():  # stopped meanwhile (no lock)
            await _freeze(container, False, "pause")
            raise InvalidState(container.name, "pause", container.status.value, "it is being stopped")
        container.move("pause")
        core.save(container)
    core.events.container(container, "pause")
    return container


async def unpause(core: Lifecycle, ref: str) -> Container:
    """Thaw a paused container; ``container.<id>.unpause``.

    Raises:
        InvalidState: it is not paused.
        DockyardError: the freezer could not thaw it (it stays paused).
    """
    container = core.get(ref)
    async with container.lock:
        _check(container, "unpause", Status.PAUSED)
        await thaw(core, container)
    return container


async def thaw(core: Lifecycle, container: Container) -> None:
    """Thaw a paused container (unpause, and the end of a stop or kill): the freezer, the
    move, the record, the event. Nothing for a container that is not paused.

    A signal sent before the thaw may end the container as soon as it runs again: its exit
    (start.supervise) waits for :func:`thawed` first, so ``unpause`` always comes before
    ``die``."""
    if container.status is not Status.PAUSED or container.cgroup is None:  # None: it exited (its end thaws)
        return
    container.thawing = done = trio.Event()
    try:
        await _freeze(container, False, "unpause")
        if container.status is Status.PAUSED:
            container.move("unpause")
            core.save(container)
            core.events.container(container, "unpause")
    finally:
        container.thawing = None
        done.set()


async def thawed(container: Container) -> None:
    """Once no thaw of the container is under way (an exit is recorded after it)."""
    if container.thawing is not None:
        await container.thawing.wait()


def thaws_for(container: Container, sig: int) -> bool:
    """Whether a kill with ``sig`` thaws a paused container: the signals that end it (its
    stop signal, SIGKILL), as docker's kill."""
    return container.status is Status.PAUSED and sig in (signal.SIGKILL, container.spec.stop_signal)


def _check(container: Container, operation: str, wanted: Status) -> None:
    if container.status is wanted:
        return
    if container.status is Status.PAUSED:
        why = "it is already paused"
    elif container.status is Status.RUNNING:
        why = "it is not paused"
    else:
        why = "it is not running"
    raise InvalidState(container.name, operation, container.status.value, why)


async def _freeze(container: Container, frozen: bool, operation: str) -> None:
    cgroup = container.cgroup
    if cgroup is None:  # its exit is being recorded
        raise InvalidState(container.name, operation, container.status.value, "it is not running")
    try:
        await trio.to_thread.run_sync(cgroup.freeze, frozen)
    except OSError as exc:
        raise DockyardError(f"cannot {operation} container {container.name}: {exc.strerror or exc}",
                            container=container.name, operation=operation) from exc
