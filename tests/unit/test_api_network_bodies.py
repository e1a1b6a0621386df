"""docker's network JSON to dockyard's and back (workers/api/networks.py, the networks of
container create in specs.py, and NetworkSettings.Networks of supervisor/container.py): pure."""

from __future__ import annotations

import pytest

from supervisor.container import configured_networks
from supervisor.network.networks import CreateRequest, plan
from supervisor.spec import ContainerSpec
from workers.api import networks, specs
from workers.api.containers import container_document
from workers.api.http import ApiError


def test_a_create_body_with_ipam_labels_and_options_becomes_the_operation_s_arguments():
    body = {"Name": "app", "Driver": "bridge", "CheckDuplicate": True, "Internal": True, "EnableIPv6": False,
            "Labels": {"team": "web"}, "Options": {"com.docker.network.bridge.name": "brapp"},
            "IPAM": {"Driver": "default", "Options": None, "Config": [
                {"Subnet": "172.28.0.0/16", "IPRange": "172.28.5.0/24", "Gateway": "172.28.5.254",
                 "AuxiliaryAddresses": {"a": "172.28.1.5"}},
                {"Subnet": "fd00:1::/64", "Gateway": "fd00:1::1"}]}}
    args = networks.create_args(body)
    assert args == {"name": "app", "internal": True, "ipv6": True, "labels": {"team": "web"},
                    "options": {"com.docker.network.bridge.name": "brapp"}, "subnet": "172.28.0.0/16",
                    "gateway": "172.28.5.254", "ip_range": "172.28.5.0/24", "subnet6": "fd00:1::/64",
                    "gateway6": "fd00:1::1", "aux_addresses": {"a": "172.28.1.5"}}
    record = plan(CreateRequest(**{key: value for key, value in args.items()}), [], set())
    ipam = record.inspect()["IPAM"]
    assert ipam["Options"] is None  # docker's: docker-py's test pops it and expects None
    assert ipam["Config"][0] == {"Subnet": "172.28.0.0/16", "IPRange": "172.28.5.0/24", "Gateway": "172.28.5.254",
                                 "AuxiliaryAddresses": {"a": "172.28.1.5"}}


@pytest.mark.parametrize("body,status,message", [
    ({}, 400, "Name is required"),
    ({"Name": "x", "Driver": "host"}, 403, 'only one instance of "host" network'),
    ({"Name": "x", "Driver": "overlay"}, 404, 'plugin "overlay" not found'),
    ({"Name": "x", "Ingress": True}, 400, "Ingress is a swarm feature"),
    ({"Name": "x", "Scope": "swarm"}, 400, "scope swarm needs swarm mode"),
    ({"Name": "x", "IPAM": {"Driver": "dhcp"}}, 404, 'plugin "dhcp" not found'),
    ({"Name": "x", "IPAM": {"Config": [{"Subnet": "nonsense"}]}}, 400, "invalid subnet 'nonsense'"),
    ({"Name": "x", "IPAM": {"Config": [{"Subnet": "10.1.0.0/24"}, {"Subnet": "10.2.0.0/24"}]}}, 400,
     "one IPv4 pool per network"),
])
def test_what_a_network_create_cannot_have_is_refused_by_name(body, status, message):
    with pytest.raises(ApiError) as caught:
        networks.create_args(body)
    assert caught.value.status == status and message in caught.value.message


def test_an_auxiliary_address_outside_the_subnets_is_refused():
    from supervisor.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="auxiliary address a=10.9.9.9 is not in 10.1.0.0/24"):
        plan(CreateRequest("x", subnet="10.1.0.0/24", aux_addresses={"a": "10.9.9.9"}), [], set())


def test_endpoint_configs_become_spec_endpoints_and_what_dockyard_lacks_is_refused():
    assert networks.endpoint_config("app", {"Aliases": ["db", "db"], "IPAMConfig": {"IPv4Address": "10.1.0.9"},
                                            "Links": None, "NetworkID": "x"}) == {"aliases": ["db"], "ipv4": "10.1.0.9"}
    assert networks.endpoint_config("app", None) == {}
    for config in ({"MacAddress": "02:42:ac:11:00:02"}, {"DriverOpts": {"a": "b"}},
                   {"IPAMConfig": {"LinkLocalIPs": ["169.254.8.8"]}}):
        with pytest.raises(ApiError, match="not supported by dockyard"):
            networks.endpoint_config("app", config)


def test_a_container_create_on_a_user_network_keeps_its_endpoint_config():
    body = {"Image": "base", "HostConfig": {"NetworkMode": "app"}, "NetworkingConfig": {"EndpointsConfig": {
        "app": {"Aliases": ["web"], "IPAMConfig": {"IPv4Address": "10.1.0.9"}}}}}
    spec = specs.spec_from_create(body, None)
    assert spec["network"] == "app" and spec["endpoints"] == {"app": {"aliases": ["web"], "ipv4": "10.1.0.9"}}
    parsed = ContainerSpec.from_map(spec)
    assert parsed.endpoints == {"app": {"aliases": ["web"], "ipv4": "10.1.0.9", "ipv6": ""}}
    other = specs.spec_from_create({"Image": "base", "HostConfig": {"NetworkMode": "app"},
                                    "NetworkingConfig": {"EndpointsConfig": {"bar": {"Aliases": ["x"]}}}}, None)
    assert "endpoints" not in other  # an entry for another network than NetworkMode is not used


def test_a_stopped_container_shows_the_networks_it_is_on():
    spec = ContainerSpec.from_map({"image": "base", "network": "app",
                                   "endpoints": {"app": {"aliases": ["web"], "ipv4": "10.1.0.9"}, "back": {}}})
    shown = configured_networks(spec, {})
    assert list(shown) == ["app", "back"]
    assert shown["app"]["Aliases"] == ["web"] and shown["app"]["IPAMConfig"] == {"IPv4Address": "10.1.0.9"}
    assert shown["app"]["IPAddress"] == "" and shown["back"]["IPAMConfig"] is None
    assert list(configured_networks(ContainerSpec.from_map({"image": "base"}), {})) == ["bridge"]
    assert configured_networks(ContainerSpec.from_map({"image": "base", "network": "container:db"}), {}) == {}
    attached = {"app": {"IPAddress": "10.1.0.3", "Aliases": ["web"], "IPAMConfig": None}}
    assert configured_networks(spec, attached)["app"]["IPAddress"] == "10.1.0.3"


def test_the_api_shows_the_short_id_among_a_user_network_s_aliases():
    document = {"Id": "a" * 64, "Config": {}, "HostConfig": {"NetworkMode": "app"},
                "NetworkSettings": {"Networks": {"app": {"Aliases": ["web"]}, "bridge": {"Aliases": None}}}}
    shown = container_document(document)["NetworkSettings"]["Networks"]
    assert shown["app"]["Aliases"] == ["web", "a" * 12] and shown["app"]["DriverOpts"] is None
    assert shown["bridge"]["Aliases"] is None


def test_dockyard_s_own_bridge_name_is_left_out_of_the_options():
    record = plan(CreateRequest("x", subnet="10.1.0.0/24"), [], set())
    assert networks.network_view(record.inspect())["Options"] == {}
    named = plan(CreateRequest("y", subnet="10.2.0.0/24", options={"com.docker.network.bridge.name": "bry"}), [], set())
    assert networks.network_view(named.inspect())["Options"] == {"com.docker.network.bridge.name": "bry"}


def test_a_built_in_network_has_a_creation_time_the_cli_parses():
    from supervisor.network.networks import builtin_inspect

    assert networks.network_view(builtin_inspect("host"))["Created"] == "0001-01-01T00:00:00Z"


def test_network_list_filters():
    assert networks.list_filters({"name": ["a"], "scope": ["local"]}) == (["name=a"], False)
    assert networks.list_filters({"scope": ["swarm"]}) == ([], True)
    with pytest.raises(ApiError, match="invalid filter 'colour'"):
        networks.list_filters({"colour": ["red"]})

