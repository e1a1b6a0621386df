"""The records at daemon start (supervisor/lifecycle/reconcile.py), with fake cgroups: a
container left running is exited with 255 and its cgroup removed; every other container's
cgroup is a leftover and removed; an interrupted removal leaves the container dead; an
unreadable record is left alone with its cgroup, and reported."""

from __future__ import annotations

from pathlib import Path

from supervisor.lifecycle.reconcile import ORPHAN_EXIT_CODE, load_and_reconcile
from supervisor.spec import ContainerSpec
from supervisor.state import Status
from tests.fakes import make_lifecycle


async def test_reconcile_at_daemon_start(tmp_path: Path) -> None:
    before = make_lifecycle(tmp_path)
    ids = {}
    for name, status in (("left", Status.RUNNING), ("done", Status.EXITED), ("new", Status.CREATED),
                         ("going", Status.REMOVING)):
        container = await before.core.create(ContainerSpec(image="base", name=name))
        container.status = status
        container.pid = 0  # no process of it is left (a pid would be killed if its start time matched)
        before.core.save(container)
        ids[name] = container.id
    broken = before.store.path("f" * 64)
    broken.mkdir()  # a folder without a readable record: left alone with its cgroup, and reported
    after = make_lifecycle(tmp_path)
    after.cgroups.existing = set(ids.values()) | {"f" * 64}

    await load_and_reconcile(after.core)

    assert after.cgroups.existing == {"f" * 64}
    assert "its record is unreadable" in after.core.not_adopted["f" * 64]
    containers = {name: after.core.get(name) for name in ids}
    left = containers["left"]
    assert left.status is Status.EXITED and left.exit_code == ORPHAN_EXIT_CODE
    assert left.error == "the daemon stopped while the container was running"
    assert after.event(ids["left"], "die") == {"name": "left", "image": "base", "exitCode": 255,
                                               "reason": "daemon restart"}
    assert containers["done"].status is Status.EXITED and containers["new"].status is Status.CREATED
    assert containers["going"].status is Status.DEAD
    assert [data["action"] for _, data in after.events] == ["die"]  # only the orphan's
    reloaded = make_lifecycle(tmp_path)
    await load_and_reconcile(reloaded.core)  # what was decided is saved
    assert {name: reloaded.core.get(name).status for name in ids} == {
        "left": Status.EXITED, "done": Status.EXITED, "new": Status.CREATED, "going": Status.DEAD}
    assert any(event == "a container record this daemon cannot read is left alone"
               for _, event, _ in after.log.records)


async def test_unless_stopped_keeps_a_user_stop_and_always_forgets_it(tmp_path: Path) -> None:
    before = make_lifecycle(tmp_path)
    for name, policy in (("aa", "always"), ("uu", "unless-stopped")):
        container = await before.core.create(ContainerSpec(image="base", name=name, restart=policy))
        container.status, container.user_stopped = Status.EXITED, True
        before.core.save(container)
    after = make_lifecycle(tmp_path)
    await load_and_reconcile(after.core)
    assert not after.core.get("aa").user_stopped and after.core.get("uu").user_stopped


async def test_a_record_of_a_later_format_is_left_alone_running_with_its_cgroup(tmp_path: Path) -> None:
    import json

    from supervisor.store import RECORD

    before = make_lifecycle(tmp_path)
    ids = {}
    for name in ("newer", "orphan"):
        container = await before.core.create(ContainerSpec(image="base", name=name))
        container.status, container.pid = Status.RUNNING, 0
        before.core.save(container)
        ids[name] = container.id
    path = before.store.path(ids["newer"]) / RECORD
    record = json.loads(path.read_bytes())
    assert record["version"] == 1
    path.write_text(json.dumps({**record, "version": 99}))  # a later dockyard wrote it (then a downgrade)
    after = make_lifecycle(tmp_path)
    after.cgroups.existing = set(ids.values())

    await load_and_reconcile(after.core)

    assert after.cgroups.existing == {ids["newer"]}  # not killed: only the orphan's cgroup is removed
    assert [container.name for container in after.core.containers.values()] == ["orphan"]
    assert after.core.left_alone == {ids["newer"]: "newer"}
    assert after.core.not_adopted[ids["newer"]].startswith("its record is of format 99, this dockyard reads up to 1")
    assert json.loads(path.read_bytes())["version"] == 99  # untouched, for the dockyard that wrote it
    assert [data["action"] for _, data in after.events] == ["die"]  # only the orphan's
    assert any(event == "a container record of another dockyard version is left alone"
               for _, event, _ in after.log.records)
