"""A container's start and every way it can fail (supervisor/lifecycle/start.py), with the
kernel faked (tests/fakes.py): whatever fails, nothing of the start is left (no cgroup, no
lease), the container is exited with the right code and reason, ``die`` says so, and a
``--rm`` container is removed."""

from __future__ import annotations

import errno
import json
from typing import Any

import pytest
import trio

from supervisor.errors import InvalidArgument, StartError
from supervisor.lifecycle.start import CANCELLED_REASON
from supervisor.spec import ContainerSpec
from supervisor.state import Status
from tests.fakes import Fakes, NetworkRefused, launch_error


def _record(fakes: Fakes, container_id: str) -> dict[str, Any]:
    return json.loads((fakes.store.path(container_id) / "container.json").read_text())


async def test_a_started_container_holds_its_cgroup_and_lease_until_its_exit(fakes: Fakes) -> None:
    container = await fakes.core.create(ContainerSpec(image="base", name="web"))
    await fakes.core.start("web")
    assert container.status is Status.RUNNING and _record(fakes, container.id)["status"] == "running"
    assert fakes.cgroups.existing == {container.id} and fakes.network.leases == {container.id}
    assert fakes.network.served == [container.id]
    fakes.launcher.processes[0].exit(3)
    assert await fakes.core.wait_for(container) == 3
    assert container.status is Status.EXITED and _record(fakes, container.id)["exit_code"] == 3
    assert fakes.cgroups.existing == set() and fakes.network.leases == set()
    assert fakes.actions(container.id) == ["create", "start", "die"]
    assert fakes.event(container.id, "die")["exitCode"] == 3


FAILURES = {
    "cgroup apply (OSError)": ("cgroups", "apply_error", OSError(errno.EINVAL, "Invalid argument"), 125,
                               "Invalid argument"),
    "cgroup apply (a limit)": ("cgroups", "apply_error", InvalidArgument("no memory controller"), 125,
                               "no memory controller"),
    "network prepare (refused)": ("network", "prepare_error", NetworkRefused("no address left"), 125,
                                  "no address left"),
    "network prepare (/etc files)": ("network", "prepare_error", OSError(errno.ENOSPC, "No space left on device"),
                                     125, "set up the network: [Errno 28] No space left on device"),
    "launch (command not found)": ("launcher", "error", launch_error("exec: nope: not found", 127), 127,
                                   "exec: nope: not found"),
    "launch (runtime)": ("launcher", "error", launch_error("pivot_root failed"), 125, "pivot_root failed"),
    "network connect": ("network", "connect_error", NetworkRefused("cannot move the veth"), 125,
                        "cannot move the veth"),
}


@pytest.mark.parametrize("where", FAILURES)
async def test_a_failed_start_leaves_nothing_and_records_why(fakes: Fakes, where: str) -> None:
    part, attribute, error, exit_code, reason = FAILURES[where]
    setattr(getattr(fakes, part), attribute, error)
    container = await fakes.core.create(ContainerSpec(image="base", name="web"))
    with pytest.raises(StartError) as failed:
        await fakes.core.start("web")
    assert failed.value.exit_code == exit_code
    assert failed.value.message == f"cannot start container web: {reason}"
    assert fakes.cgroups.existing == set() and fakes.network.leases == set()
    assert container.status is Status.EXITED and (container.exit_code, container.error) == (exit_code, reason)
    assert _record(fakes, container.id)["status"] == "exited"
    assert fakes.actions(container.id) == ["create", "die"]
    assert fakes.event(container.id, "die") == {"name": "web", "image": "base", "exitCode": exit_code,
                                                "error": reason}
    # The container can be started again once the cause is gone.
    setattr(getattr(fakes, part), attribute, None)
    await fakes.core.start("web")
    assert container.status is Status.RUNNING and container.error == ""


@pytest.mark.parametrize("where", FAILURES)
async def test_a_failed_start_of_a_rm_container_removes_it(fakes: Fakes, where: str) -> None:
    part, attribute, error, exit_code, _ = FAILURES[where]
    setattr(getattr(fakes, part), attribute, error)
    container = await fakes.core.create(ContainerSpec(image="base", name="web", auto_remove=True))
    with pytest.raises(StartError):
        await fakes.core.start("web")
    await fakes.wait_for_event(container.id, "destroy")
    assert fakes.actions(container.id) == ["create", "die", "destroy"]
    assert "web" not in {c.name for c in fakes.core.list(all=True)} and not container.directory.exists()
    assert fakes.cgroups.existing == set() and fakes.network.leases == set()


@pytest.mark.parametrize("auto_remove", [False, True])
async def test_a_start_cancelled_mid_launch_leaves_nothing_and_records_it(fakes: Fakes, auto_remove: bool) -> None:
    fakes.launcher.gate = trio.Event()  # never set: the launch hangs until cancelled
    container = await fakes.core.create(ContainerSpec(image="base", name="web", auto_remove=auto_remove))
    async with trio.open_nursery() as starters:
        starters.start_soon(fakes.core.start, "web")
        await fakes.launcher.entered.wait()
        assert fakes.cgroups.existing == {container.id} and fakes.network.leases == {container.id}
        starters.cancel_scope.cancel()
    assert fakes.cgroups.existing == set() and fakes.network.leases == set()
    assert container.status is Status.EXITED
    assert (container.exit_code, container.error) == (125, CANCELLED_REASON)
    assert fakes.event(container.id, "die")["error"] == CANCELLED_REASON
    if auto_remove:
        await fakes.wait_for_event(container.id, "destroy")
        assert not container.directory.exists()
    else:
        assert _record(fakes, container.id)["error"] == CANCELLED_REASON
        assert not container.lock.locked()


async def test_joining_the_network_of_a_container_that_is_not_running_is_a_failed_start(fakes: Fakes) -> None:
    await fakes.core.create(ContainerSpec(image="base", name="db"))
    container = await fakes.core.create(ContainerSpec(image="base", name="web", network="container:db"))
    with pytest.raises(StartError) as failed:
        await fakes.core.start("web")
    assert "cannot join the network of container db: it is not running" in failed.value.message
    assert container.status is Status.EXITED and fakes.cgroups.existing == set()


def test_attributes_are_typed_in_one_place() -> None:
    from supervisor.lifecycle.events import typed

    given = {"name": "web", "exitCode": "-9", "delay": "0.100", "read/write": "false", "signal": 15,
             "restartCount": "not a number"}
    assert typed(dict(given)) == {"name": "web", "exitCode": -9, "delay": 0.1, "read/write": False, "signal": 15,
                                  "restartCount": "not a number"}
