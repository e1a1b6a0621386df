"""Labels and ``--init`` in the lifecycle core (supervisor/lifecycle/core.py, initbinary.py),
with the kernel faked: the image's labels merged under the container's, labels in every
event, ``ps --filter`` evaluated by the core, the init decided at create and given to the
launch."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio

from supervisor.errors import InvalidArgument, NotFound
from supervisor.lifecycle import initbinary
from supervisor.spec import ContainerSpec
from tests.fakes import Fakes, make_lifecycle


@pytest.fixture
def fakes(tmp_path: Path, nursery: trio.Nursery) -> Fakes:
    made = make_lifecycle(tmp_path)
    made.core.nursery = nursery
    made.core.images.image.config = {"Cmd": ["true"], "Labels": {"a": "image", "b": "image"}}
    return made


@pytest.fixture
def tini(tmp_path: Path) -> str:
    path = tmp_path / "bin" / "tini"
    path.parent.mkdir()
    path.write_bytes(b"\x7fELF")
    path.chmod(0o755)
    return str(path)


async def test_the_containers_labels_win_over_the_images_and_are_in_every_event(fakes: Fakes) -> None:
    container = await fakes.core.create(ContainerSpec(image="base", name="web", labels=("b=mine", "c=")))
    assert container.inspect()["Config"]["Labels"] == {"a": "image", "b": "mine", "c": ""}
    await fakes.core.start("web")
    await fakes.core.kill("web")
    await fakes.wait_for_event(container.id, "die")
    for topic, data in fakes.events:
        if data.get("id") == container.id:
            assert data["attributes"]["b"] == "mine" and data["attributes"]["a"] == "image", topic
            assert data["attributes"]["name"] == "web"
    die = next(data for _, data in fakes.events if data["action"] == "die")
    assert die["attributes"]["exitCode"] == 137


async def test_an_events_own_attributes_its_name_and_image_win_over_labels(fakes: Fakes) -> None:
    spec = ContainerSpec(image="base", name="web", labels={"name": "label", "image": "label", "signal": "label",
                                                           "total": "5"})
    container = await fakes.core.create(spec)
    await fakes.core.start("web")
    await fakes.core.kill("web")
    kill = next(data for _, data in fakes.events if data["action"] == "kill")
    assert kill["attributes"]["name"] == "web" and kill["attributes"]["image"] == "base"
    assert kill["attributes"]["signal"] == 9
    assert kill["attributes"]["total"] == "5"  # a label stays text, even under a typed attribute's name
    assert container.resolved.labels["name"] == "label"


async def test_list_filters_in_the_core(fakes: Fakes) -> None:
    await fakes.core.create(ContainerSpec(image="base", name="one", labels=("tier=db",)))
    await fakes.core.create(ContainerSpec(image="base", name="two", labels=("tier=web",)))
    await fakes.core.start("two")
    assert [c.name for c in fakes.core.list(filters=["label=tier"])] == ["two"]  # running ones only
    assert [c.name for c in fakes.core.list(filters=["status=created"])] == ["one"]  # a status: every one
    assert [c.name for c in fakes.core.list(True, ["since=one"])] == ["two"]
    assert [c.name for c in fakes.core.list(True, ["ancestor=base"])] == ["two", "one"]
    with pytest.raises(NotFound):
        fakes.core.list(True, ["before=nothing"])
    with pytest.raises(InvalidArgument, match="invalid filter 'colour': ps takes id, name, label"):
        fakes.core.list(True, ["colour=red"])


async def test_init_decided_at_create_and_given_to_the_launch(fakes: Fakes, tini: str) -> None:
    container = await fakes.core.create(ContainerSpec(image="base", name="web", init=True, init_path=tini))
    assert container.spec.init is True and container.spec.init_path == tini
    assert container.inspect()["HostConfig"]["Init"] is True
    await fakes.core.start("web")
    config = fakes.launcher.configs[-1]
    assert config.argv == ("/dev/init", "--", "true")
    assert config.mounts[-1] == f"bind\t{tini}\t/dev/init\tro\t"
    assert container.resolved.argv == ["true"]  # the user's command, as inspect's Path shows it (docker)


async def test_the_daemons_default_applies_to_a_container_that_sets_none(fakes: Fakes, tini: str) -> None:
    fakes.core.default_init, fakes.core.init_path = True, tini
    default = await fakes.core.create(ContainerSpec(image="base", name="default"))
    refused = await fakes.core.create(ContainerSpec(image="base", name="without", init=False))
    assert (default.spec.init, default.spec.init_path) == (True, tini)
    assert (refused.spec.init, refused.spec.init_path) == (False, "")
    await fakes.core.start("without")
    assert fakes.launcher.configs[-1].argv == ("true",)


async def test_a_missing_init_path_is_refused_naming_it_and_nothing_is_created(fakes: Fakes, tmp_path: Path) -> None:
    missing = str(tmp_path / "none")
    with pytest.raises(InvalidArgument, match=f"invalid --init-path {missing}: No such file or directory"):
        await fakes.core.create(ContainerSpec(image="base", name="web", init=True, init_path=missing))
    assert fakes.core.containers == {} and fakes.events == []


def test_find_checks_the_file_and_makes_it_canonical(tmp_path: Path, tini: str) -> None:
    link = tmp_path / "link"
    link.symlink_to(tini)
    assert initbinary.find(str(link)) == tini  # the stage refuses symlinks: the daemon resolves them
    assert initbinary.find("", tini) == tini
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(InvalidArgument, match="not executable"):
        initbinary.find(str(plain))
    with pytest.raises(InvalidArgument, match="the daemon's --init-path .*: not a regular file"):
        initbinary.find("", str(tmp_path))


def test_find_looks_in_the_path_for_docker_init_then_tini_static(tmp_path: Path, monkeypatch) -> None:
    bin_dir = tmp_path / "path"
    bin_dir.mkdir()
    tini_static = bin_dir / "tini-static"
    tini_static.write_bytes(b"")
    tini_static.chmod(stat.S_IRWXU)
    monkeypatch.setattr(initbinary, "EXTRA_PATH", ())
    monkeypatch.setenv("PATH", str(bin_dir))
    assert initbinary.find("") == str(tini_static)
    docker_init = bin_dir / "docker-init"
    os.link(tini_static, docker_init)
    assert initbinary.find("") == str(docker_init)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(InvalidArgument, match="no init binary found: none of docker-init, tini-static"):
        initbinary.find("")
