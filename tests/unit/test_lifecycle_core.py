"""The lifecycle core's rules (supervisor/lifecycle/core.py) with the kernel faked: what
stop, kill and remove do in each state, and who ended a run (the restart policy's input)."""

from __future__ import annotations

import signal

import pytest
import trio

from supervisor.errors import InvalidArgument, InvalidState
from supervisor.spec import ContainerSpec
from supervisor.state import Status
from tests.fakes import Fakes


async def _running(fakes: Fakes, name: str = "web", **spec: object) -> object:
    container = await fakes.core.create(ContainerSpec(image="base", name=name, **spec))  # type: ignore[arg-type]
    await fakes.core.start(name)
    return container


async def test_stop_signals_the_stop_signal_and_records_a_user_stop(fakes: Fakes) -> None:
    container = await _running(fakes)
    await fakes.core.stop("web")
    process = fakes.launcher.processes[0]
    assert process.signals == [signal.SIGTERM]
    assert container.status is Status.EXITED and container.exit_code == 128 + signal.SIGTERM
    assert container.user_stopped
    assert fakes.actions(container.id)[-3:] == ["kill", "die", "stop"]
    assert fakes.cgroups.existing == set() and fakes.network.leases == set()


async def test_stop_kills_after_the_grace_period(fakes: Fakes, autojump_clock: trio.abc.Clock) -> None:
    container = await _running(fakes, stop_signal=int(signal.SIGUSR1))  # the fake ignores it
    await fakes.core.stop("web", timeout=5)
    assert fakes.launcher.processes[0].signals == [signal.SIGUSR1, signal.SIGKILL]
    assert container.exit_code == 128 + signal.SIGKILL


async def test_stopping_a_container_that_is_not_running_does_nothing(fakes: Fakes) -> None:
    container = await fakes.core.create(ContainerSpec(image="base", name="web"))
    await fakes.core.stop("web")
    assert container.status is Status.CREATED and fakes.actions(container.id) == ["create"]


async def test_kill_refuses_a_container_that_is_not_running(fakes: Fakes) -> None:
    await fakes.core.create(ContainerSpec(image="base", name="web"))
    with pytest.raises(InvalidState) as refused:
        await fakes.core.kill("web")
    assert refused.value.message == "cannot kill container web: it is not running"


async def test_a_signal_other_than_stop_or_kill_is_not_a_user_stop(fakes: Fakes) -> None:
    container = await _running(fakes)
    await fakes.core.kill("web", signal.SIGHUP)
    assert container.status is Status.RUNNING and not container.user_stopped
    assert fakes.event(container.id, "kill")["signal"] == int(signal.SIGHUP)
    await fakes.core.kill("web")
    await fakes.core.wait_for(container)
    assert container.user_stopped and container.exit_code == 128 + signal.SIGKILL


async def test_a_start_of_a_running_container_is_refused(fakes: Fakes) -> None:
    await _running(fakes)
    with pytest.raises(InvalidState) as refused:
        await fakes.core.start("web")
    assert refused.value.message == "cannot start container web: it is running"


async def test_a_user_start_forgets_the_last_user_stop_and_the_restart_count(fakes: Fakes) -> None:
    container = await _running(fakes)
    await fakes.core.stop("web")
    container.restart_count = 3
    await fakes.core.start("web")
    assert not container.user_stopped and container.restart_count == 0


async def test_remove_refuses_a_running_container_without_force(fakes: Fakes) -> None:
    container = await _running(fakes)
    with pytest.raises(InvalidState) as refused:
        await fakes.core.remove("web")
    assert "it is running: stop it first, or use --force" in refused.value.message
    assert container.status is Status.RUNNING and container.directory.exists()


async def test_remove_with_force_kills_then_removes(fakes: Fakes) -> None:
    container = await _running(fakes)
    await fakes.core.remove("web", force=True)
    assert fakes.launcher.processes[0].signals == [signal.SIGKILL]
    assert fakes.actions(container.id)[-3:] == ["kill", "die", "destroy"]
    assert container.status is Status.REMOVING and not container.directory.exists()
    assert fakes.core.list(all=True) == [] and fakes.cgroups.existing == set() and fakes.network.leases == set()


@pytest.mark.parametrize("started", [False, True])
async def test_remove_of_a_container_that_is_not_running(fakes: Fakes, started: bool) -> None:
    container = await (_running(fakes) if started else fakes.core.create(ContainerSpec(image="base", name="web")))
    if started:
        await fakes.core.stop("web")
    await fakes.core.remove("web")
    assert fakes.actions(container.id)[-1] == "destroy" and not container.directory.exists()
    with pytest.raises(Exception, match="no such container: web"):
        fakes.core.get("web")


async def test_a_rm_container_is_removed_at_its_exit(fakes: Fakes) -> None:
    container = await _running(fakes, auto_remove=True)
    fakes.launcher.processes[0].exit(0)
    await fakes.wait_for_event(container.id, "destroy")
    assert fakes.actions(container.id) == ["create", "start", "die", "destroy"]
    assert fakes.core.list(all=True) == []


def test_the_core_imports_no_network_library() -> None:
    """The core is built in unit tests: pyroute2 (and with it root) stays behind the network."""
    import subprocess
    import sys

    code = ("import sys, supervisor.lifecycle.core, supervisor.lifecycle.start, supervisor.lifecycle.reconcile; "
            "print(sorted(m for m in ('pyroute2', 'supervisor.network.manager') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


async def test_update_writes_a_running_containers_cgroup_and_refuses_what_cannot_change(fakes: Fakes) -> None:
    container = await _running(fakes)
    await fakes.core.update("web", {"memory": "64m"})
    assert container.spec.resources.memory == 64 * 1024 * 1024
    assert container.cgroup.applied[-1].memory == 64 * 1024 * 1024
    assert fakes.actions(container.id)[-1] == "update"
    with pytest.raises(Exception, match="cannot update image"):
        await fakes.core.update("web", {"image": "other"})
    assert container.spec.resources.memory == 64 * 1024 * 1024


async def test_rename_keeps_the_container_and_refuses_a_name_in_use(fakes: Fakes) -> None:
    from supervisor.errors import Conflict, InvalidArgument

    container = await _running(fakes)
    await fakes.core.create(ContainerSpec(image="base", name="db"))
    await fakes.core.rename("web", "/frontend")
    assert fakes.core.get("frontend") is container and container.spec.name == "frontend"
    assert fakes.actions(container.id)[-1] == "rename"
    with pytest.raises(Conflict, match='"db" is already in use'):
        await fakes.core.rename("frontend", "db")
    with pytest.raises(InvalidArgument, match="invalid"):
        await fakes.core.rename("frontend", "no spaces")
    assert container.name == "frontend"


def test_default_ulimits_fill_in_the_names_a_spec_does_not_set():
    from supervisor.lifecycle.core import with_default_ulimits
    from supervisor.spec import ContainerSpec

    spec = ContainerSpec(image="base", ulimits=("nofile=10:20",))
    merged = with_default_ulimits(spec, ("nofile=1:2", "nproc=5"))
    assert merged.ulimits == ("nofile=10:20", "nproc=5")  # the container's own wins, as docker
    assert with_default_ulimits(spec, ()) is spec


async def test_update_changes_the_restart_policy_and_refuses_one_with_auto_remove(fakes: Fakes) -> None:
    container = await fakes.core.create(ContainerSpec(image="base", name="web", restart="always"))
    await fakes.core.update("web", {}, restart="on-failure:42")
    assert container.spec.restart == "on-failure:42" and fakes.actions(container.id)[-1] == "update"
    await fakes.core.create(ContainerSpec(image="base", name="gone", auto_remove=True))
    with pytest.raises(InvalidArgument, match="--restart always and --rm"):
        await fakes.core.update("gone", {}, restart="always")
