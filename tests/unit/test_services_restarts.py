"""Restart scheduling (supervisor/services/restarts.py) with the kernel faked: which requests
are refused, what a scheduled restart does, what cancels it, and the race of a forced
remove with a restart policy's start under way."""

from __future__ import annotations

import signal

import pytest
import trio
import trio.testing

from supervisor.container import Container
from supervisor.errors import Conflict, InvalidArgument, InvalidState
from supervisor.services.restarts import Restarts
from supervisor.spec import ContainerSpec
from supervisor.state import Status
from tests.fakes import Fakes


async def _exited(fakes: Fakes, restart: str = "always", code: int = 1) -> Container:
    container = await fakes.core.create(ContainerSpec(image="base", name="web", restart=restart))
    await fakes.core.start("web")
    fakes.launcher.processes[-1].exit(code)
    await fakes.core.wait_for(container)
    return container


async def test_a_scheduled_restart_starts_the_container_after_its_delay(fakes: Fakes) -> None:
    container = await _exited(fakes)
    await Restarts(fakes.core).schedule("web", container.finished_at, attempt=2, delay=0)
    assert container.restart_count == 1 and container.restart_attempt == 2
    assert fakes.event(container.id, "restart") == {
        "name": "web", "image": "base", "attempt": 2, "delay": 0.0, "exitCode": 1, "restartCount": 1,
        "policy": "always"}
    with trio.fail_after(10):
        while fakes.actions(container.id).count("start") < 2:
            await fakes.published[0].wait()
    assert container.status is Status.RUNNING and container.pending_restart is None


@pytest.mark.parametrize("attempt, delay, says", [
    (0, 1.0, "argument 'attempt' must be a whole number >= 1"),
    (True, 1.0, "argument 'attempt' must be a whole number >= 1"),
    (1, -1.0, "argument 'delay' must be 0..3600 seconds"),
    (1, 3601.0, "argument 'delay' must be 0..3600 seconds"),
])
async def test_bad_arguments_are_refused(fakes: Fakes, attempt: int, delay: float, says: str) -> None:
    container = await _exited(fakes)
    with pytest.raises(InvalidArgument, match=says):
        await Restarts(fakes.core).schedule("web", container.finished_at, attempt, delay)


async def test_one_exit_is_answered_once(fakes: Fakes) -> None:
    container = await _exited(fakes)
    restarts = Restarts(fakes.core)
    await restarts.schedule("web", container.finished_at, 1, 3600)
    with pytest.raises(Conflict, match="a restart is already scheduled"):
        await restarts.schedule("web", container.finished_at, 1, 3600)


async def test_an_exit_that_is_not_the_last_is_refused(fakes: Fakes) -> None:
    await _exited(fakes)
    with pytest.raises(Conflict, match="its last exit is at"):
        await Restarts(fakes.core).schedule("web", "2000-01-01T00:00:00Z", 1, 0)


async def test_a_running_or_never_started_container_is_refused(fakes: Fakes) -> None:
    await fakes.core.create(ContainerSpec(image="base", name="new", restart="always"))
    with pytest.raises(InvalidState, match="cannot restart container new: it is created"):
        await Restarts(fakes.core).schedule("new", "x", 1, 0)
    container = await _exited(fakes)
    await fakes.core.start("web")
    with pytest.raises(Conflict, match="it is running"):
        await Restarts(fakes.core).schedule("web", container.finished_at, 1, 0)


async def test_policy_no_is_refused(fakes: Fakes) -> None:
    container = await _exited(fakes, restart="no")
    with pytest.raises(InvalidState, match="its restart policy is no"):
        await Restarts(fakes.core).schedule("web", container.finished_at, 1, 0)


async def test_a_user_stop_and_a_stopping_daemon_are_refused(fakes: Fakes) -> None:
    container = await fakes.core.create(ContainerSpec(image="base", name="web", restart="always"))
    await fakes.core.start("web")
    await fakes.core.stop("web")
    with pytest.raises(Conflict, match="the user stopped it"):
        await Restarts(fakes.core).schedule("web", container.finished_at, 1, 0)
    container.user_stopped = False
    fakes.core.shutting_down = True
    with pytest.raises(Conflict, match="the daemon is shutting down"):
        await Restarts(fakes.core).schedule("web", container.finished_at, 1, 0)


@pytest.mark.parametrize("operation", ["stop", "kill"])
async def test_a_user_stop_or_kill_cancels_a_waiting_restart(fakes: Fakes, operation: str) -> None:
    container = await _exited(fakes)
    await Restarts(fakes.core).schedule("web", container.finished_at, 1, 3600)
    assert fakes.core.list() == [container]  # a container waiting for its restart is listed
    await getattr(fakes.core, operation)("web")
    assert container.pending_restart is None and container.user_stopped
    await trio.testing.wait_all_tasks_blocked()
    assert len(fakes.launcher.processes) == 1 and container.status is Status.EXITED


async def test_a_forced_remove_during_a_restart_policy_start_waits_for_it_then_removes(fakes: Fakes) -> None:
    """The start holds the container's lock: the remove waits, then kills and removes what
    the start made; nothing is left and the supervisor's nursery carries on."""
    container = await _exited(fakes)
    fakes.launcher.gate = trio.Event()
    fakes.launcher.entered = trio.Event()
    await Restarts(fakes.core).schedule("web", container.finished_at, 1, 0)
    await fakes.launcher.entered.wait()  # the policy's start is in the launch
    removed = trio.Event()

    async def remove() -> None:
        await fakes.core.remove("web", force=True)
        removed.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(remove)
        await trio.testing.wait_all_tasks_blocked()
        assert not removed.is_set() and container.status is Status.EXITED  # waiting for the start
        fakes.launcher.gate.set()
        with trio.fail_after(10):
            await removed.wait()
    assert fakes.launcher.processes[-1].signals == [signal.SIGKILL]
    assert fakes.actions(container.id)[-4:] == ["start", "kill", "die", "destroy"]
    assert fakes.core.list(all=True) == [] and not container.directory.exists()
    assert fakes.cgroups.existing == set() and fakes.network.leases == set()
    # The supervisor goes on: another container starts and runs.
    other = await fakes.core.create(ContainerSpec(image="base", name="other"))
    await fakes.core.start("other")
    assert other.status is Status.RUNNING
