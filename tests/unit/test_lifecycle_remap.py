"""supervisor/lifecycle/remap.py: which containers get the daemon's mapping, and the refusal
to start one under another mapping than at create."""

from __future__ import annotations

import types

import pytest

from supervisor.errors import StartError
from supervisor.lifecycle import remap
from supervisor.spec import ContainerSpec
from supervisor.userns import IdMapping

MAPPING = IdMapping("nobody", "nogroup", ((0, 300000, 65536),), ((0, 300000, 65536),))


def container(userns_mode: str = "", id_mapping=None):
    return types.SimpleNamespace(spec=ContainerSpec(image="base", userns_mode=userns_mode), id_mapping=id_mapping,
                                 name="web", id="a" * 64)


def test_userns_host_opts_out_of_the_daemons_mapping() -> None:
    daemon = remap.Remap(MAPPING, "idmapped mounts")
    assert daemon.for_spec(container().spec) == MAPPING
    assert daemon.for_spec(container("host").spec) is None
    assert remap.Remap().for_spec(container().spec) is None
    assert remap.Remap().info() is None
    assert daemon.info()["root"] == "300000:300000"


def test_a_start_under_another_mapping_is_refused() -> None:
    created_mapped = container(id_mapping=MAPPING.to_map())
    assert remap.container_mapping(remap.Remap(MAPPING, "idmapped mounts"), created_mapped) == MAPPING
    with pytest.raises(StartError, match="created with --userns-remap nobody:nogroup .* now gives no user namespace"):
        remap.container_mapping(remap.Remap(), created_mapped)
    with pytest.raises(StartError, match="created with no user namespace"):
        remap.container_mapping(remap.Remap(MAPPING, "idmapped mounts"), container())
    assert remap.launch_fields(remap.Remap(), container(), ("/init", "/layer"), "/etc-dir") == {}
