"""supervisor/images/oci.py: Dockerfile-style changes (``--change``) to a container config."""

from __future__ import annotations

import pytest

from supervisor.errors import InvalidArgument
from supervisor.images.oci import container_config, parse_changes


def test_dockerfile_changes():
    changes = parse_changes(
        ['CMD ["sh", "-c", "echo hi"]', "ENTRYPOINT /init --flag", "ENV A=1 B='two words'", "ENV C 3",
         "WORKDIR /srv", "USER app:app"],
        env=["PATH=/bin", "A=0"],
    )
    assert changes == {
        "Cmd": ["sh", "-c", "echo hi"],
        "Entrypoint": ["/bin/sh", "-c", "/init --flag"],
        "Env": ["PATH=/bin", "A=1", "B=two words", "C=3"],
        "WorkingDir": "/srv",
        "User": "app:app",
    }
    assert container_config(changes)["Cmd"] == ["sh", "-c", "echo hi"]


@pytest.mark.parametrize("change", ["RUN make", "CMD", "CMD [1, 2]", "CMD [nope", "ENV", "ENV =x", "WORKDIR"])
def test_bad_dockerfile_changes_are_refused(change):
    with pytest.raises(InvalidArgument, match="change"):
        parse_changes([change])


def test_workdir_change_must_be_absolute():
    with pytest.raises(InvalidArgument, match="absolute"):
        container_config(parse_changes(["WORKDIR srv"]))


def test_volume_changes_add_the_images_volumes():
    assert parse_changes(['VOLUME ["/a", "/b"]', "VOLUME /c"]) == {"Volumes": {"/a": {}, "/b": {}, "/c": {}}}
    config = container_config({"Volumes": {"/c": {}}}, base={"Volumes": {"/a": {}}})
    assert config["Volumes"] == {"/a": {}, "/c": {}}
    for bad in ("VOLUME", "VOLUME relative", 'VOLUME ["/a", 1]'):
        with pytest.raises(InvalidArgument, match="VOLUME needs absolute paths"):
            parse_changes([bad])


def test_label_changes_merge_into_the_images_labels() -> None:
    changes = parse_changes(['LABEL a=1 "b=two words"', "LABEL a=3 c="])
    assert changes == {"Labels": {"a": "3", "b": "two words", "c": ""}}
    config = container_config(changes, base={"Labels": {"base": "x", "a": "0"}})
    assert config["Labels"] == {"base": "x", "a": "3", "b": "two words", "c": ""}
    with pytest.raises(InvalidArgument, match="'novalue' is not KEY=VALUE"):
        parse_changes(["LABEL novalue"])
    with pytest.raises(InvalidArgument, match="LABEL needs KEY=VALUE"):
        parse_changes(["LABEL"])
