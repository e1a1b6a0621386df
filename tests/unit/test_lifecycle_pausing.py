"""Pause and unpause (supervisor/lifecycle/pausing.py) with the kernel faked: the fake
cgroup's freezer holds a signal until the thaw, as the kernel's does."""

from __future__ import annotations

import signal

import pytest

from supervisor.errors import DockyardError, InvalidState
from supervisor.spec import ContainerSpec
from supervisor.state import Status
from tests.fakes import Fakes


async def _paused(fakes: Fakes, name: str = "web", **spec: object) -> object:
    container = await fakes.core.create(ContainerSpec(image="base", name=name, **spec))  # type: ignore[arg-type]
    await fakes.core.start(name)
    await fakes.core.pause(name)
    return container


def _record(fakes: Fakes, container_id: str) -> dict:
    records, _ = fakes.store.load_all()
    return next(record for record in records if record["id"] == container_id)


async def test_pause_freezes_and_unpause_thaws_with_their_events(fakes: Fakes) -> None:
    container = await _paused(fakes)
    assert container.status is Status.PAUSED and fakes.cgroups.frozen[container.id] is True
    assert _record(fakes, container.id)["status"] == "paused"
    await fakes.core.unpause("web")
    assert container.status is Status.RUNNING and fakes.cgroups.frozen[container.id] is False
    assert fakes.actions(container.id)[-2:] == ["pause", "unpause"]


async def test_pause_and_unpause_refuse_the_wrong_states(fakes: Fakes) -> None:
    await fakes.core.create(ContainerSpec(image="base", name="made"))
    with pytest.raises(InvalidState, match="cannot pause container made: it is not running"):
        await fakes.core.pause("made")
    container = await _paused(fakes)
    with pytest.raises(InvalidState, match="cannot pause container web: it is already paused"):
        await fakes.core.pause("web")
    await fakes.core.unpause("web")
    with pytest.raises(InvalidState, match="cannot unpause container web: it is not paused"):
        await fakes.core.unpause("web")
    assert fakes.actions(container.id)[-2:] == ["pause", "unpause"]


async def test_a_freezer_that_fails_leaves_the_container_running(fakes: Fakes) -> None:
    container = await fakes.core.create(ContainerSpec(image="base", name="web"))
    await fakes.core.start("web")
    fakes.cgroups.freeze_error = OSError(2, "the freezer controller is not mounted")
    with pytest.raises(DockyardError, match="cannot pause container web: the freezer controller is not mounted"):
        await fakes.core.pause("web")
    assert container.status is Status.RUNNING and "pause" not in fakes.actions(container.id)


async def test_stop_of_a_paused_container_signals_then_thaws_it(fakes: Fakes) -> None:
    container = await _paused(fakes)
    await fakes.core.stop("web")
    assert fakes.launcher.processes[0].signals == [signal.SIGTERM]
    assert container.status is Status.EXITED and container.exit_code == 128 + signal.SIGTERM
    assert fakes.actions(container.id)[-5:] == ["pause", "kill", "unpause", "die", "stop"]
    assert fakes.cgroups.existing == set()


async def test_kill_of_a_paused_container_thaws_it_only_for_an_ending_signal(fakes: Fakes) -> None:
    container = await _paused(fakes)
    await fakes.core.kill("web", signal.SIGHUP)
    assert container.status is Status.PAUSED and fakes.launcher.processes[0].held_signals == [signal.SIGHUP]
    await fakes.core.kill("web")
    await fakes.core.wait_for(container)
    assert container.exit_code == 128 + signal.SIGKILL and container.user_stopped
    assert fakes.actions(container.id)[-4:] == ["kill", "kill", "unpause", "die"]


async def test_remove_of_a_paused_container_needs_force_and_then_thaws_it(fakes: Fakes) -> None:
    container = await _paused(fakes)
    with pytest.raises(InvalidState, match="it is paused: stop it first, or use --force"):
        await fakes.core.remove("web")
    await fakes.core.remove("web", force=True)
    assert container.status is Status.REMOVING and not container.directory.exists()
    assert fakes.actions(container.id)[-3:] == ["unpause", "die", "destroy"]


async def test_exec_in_a_paused_container_is_refused(fakes: Fakes) -> None:
    from supervisor.exec import ExecSpec
    from supervisor.services.execs import Execs

    await _paused(fakes)
    with pytest.raises(InvalidState, match="cannot exec in container web: it is paused: unpause it first"):
        await Execs(fakes.core).start("web", ExecSpec(cmd=("true",)))
