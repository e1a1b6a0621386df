"""The pure half of supervisor/network: modes, -p, --add-host, --dns, leases, /etc files."""

from __future__ import annotations

import json

import pytest

from supervisor.errors import InvalidArgument
from supervisor.network import (
    Leases,
    PortMapping,
    exposed_ports,
    mac_address,
    parse_add_host,
    parse_dns,
    parse_mode,
    render_hosts,
    render_resolv_conf,
)
from supervisor.spec import ContainerSpec


@pytest.mark.parametrize(
    "text, expected",
    [
        ("80", PortMapping(80, "tcp", "0.0.0.0", 0)),
        ("8080:80", PortMapping(80, "tcp", "0.0.0.0", 8080)),
        ("127.0.0.1:8080:80/udp", PortMapping(80, "udp", "127.0.0.1", 8080)),
        ("127.0.0.1::80", PortMapping(80, "tcp", "127.0.0.1", 0)),
        ("[::1]:8080:80", PortMapping(80, "tcp", "::1", 8080)),
        ("[::]::53/udp", PortMapping(53, "udp", "::", 0)),
        ("[fd00:0::1]:8080:80", PortMapping(80, "tcp", "fd00::1", 8080)),
    ],
)
def test_publish_specs_as_docker(text, expected):
    mapping = PortMapping.parse(text)
    assert mapping == expected
    assert mapping.any_family is (text.count(":") < 2)  # no address given: both families on an IPv6 network
    assert mapping.host(8080) == ("[::1]:8080" if mapping.host_ip == "::1" else mapping.host(8080))


def test_an_ipv6_host_address_goes_in_brackets():
    with pytest.raises(InvalidArgument, match=r"goes in brackets \(\[::1\]:\.\.\.\)"):
        PortMapping.parse("::1:80:80")
    with pytest.raises(InvalidArgument, match="only an IPv6 address goes in brackets"):
        PortMapping.parse("[127.0.0.1]:80:80")
    assert PortMapping.parse("[::1]:8080:80").host(8080) == "[::1]:8080"
    assert PortMapping.parse("127.0.0.1:8080:80").host(8080) == "127.0.0.1:8080"


@pytest.mark.parametrize("text", ["", "http", "80/sctp", "70000", "8080:0", "1.2.3:80:80", "::1:80:80", "a:b:c:d",
                                  "[::1:80:80", "[zz::1]:80:80"])
def test_bad_publish_specs_name_the_spec(text):
    with pytest.raises(InvalidArgument, match="invalid publish spec"):
        PortMapping.parse(text)


def test_modes_and_host_entries():
    assert [parse_mode(m) for m in ("bridge", "none", "host", "container:web")] == ["bridge", "none", "host", "container:web"]
    assert parse_mode("app") == "app"  # a user-defined network's name (docs/network.md)
    for bad in ("container:", "-app", "a b", ""):
        with pytest.raises(InvalidArgument, match="invalid network mode"):
            parse_mode(bad)
    assert parse_add_host("db.test:10.1.2.3") == ("db.test", "10.1.2.3")
    with pytest.raises(InvalidArgument, match="--add-host"):
        parse_add_host("db.test")
    assert parse_dns("10.0.0.2") == "10.0.0.2"
    with pytest.raises(InvalidArgument, match="--dns"):
        parse_dns("resolver")


def test_spec_refuses_ports_without_the_bridge_and_bad_entries():
    assert ContainerSpec(image="x", publish=("80",)).network == "bridge"
    with pytest.raises(InvalidArgument, match="need the bridge network"):
        ContainerSpec(image="x", network="none", publish=("80",))
    with pytest.raises(InvalidArgument, match="shares that container's network"):
        ContainerSpec(image="x", network="container:web", dns=("10.0.0.2",))
    with pytest.raises(InvalidArgument, match="--add-host"):
        ContainerSpec.from_map({"image": "x", "add_host": ["nocolon"]})
    spec = ContainerSpec.from_map({"image": "x", "publish": ["127.0.0.1:80:80"], "dns": ["10.0.0.2"]})
    assert ContainerSpec.from_map(spec.to_map()) == spec


def test_exposed_ports_and_mac():
    assert exposed_ports({"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "x/tcp": {}}}) == [
        PortMapping(53, "udp"), PortMapping(80, "tcp")
    ]
    assert mac_address("172.31.0.2") == "02:42:ac:1f:00:02"


def test_generated_files():
    hosts = render_hosts("web", "10.213.0.2", [("db.test", "10.1.2.3")])
    assert hosts.splitlines()[0] == "127.0.0.1\tlocalhost" and "10.213.0.2\tweb" in hosts and "10.1.2.3\tdb.test" in hosts
    host = "search example.org\nnameserver 127.0.0.53\nnameserver 10.0.0.1\n"
    assert render_resolv_conf(host, []) == "search example.org\nnameserver 10.0.0.1\n"
    assert render_resolv_conf(host, ["10.9.9.9"]) == "nameserver 10.9.9.9\n"


def test_leases_persist_never_hand_out_an_address_twice_and_skip_the_gateway(tmp_path):
    path = str(tmp_path / "network" / "leases.json")
    leases = Leases(path, "10.213.5.0/29")  # hosts .1 (gateway) to .6
    assert leases.gateway == "10.213.5.1"
    first = [leases.allocate(f"c{i}") for i in range(5)]
    assert first == [f"10.213.5.{n}" for n in range(2, 7)]
    assert leases.allocate("c0") == "10.213.5.2"  # the same container keeps its address
    with pytest.raises(InvalidArgument, match="no free address"):
        leases.allocate("c5")
    reloaded = Leases(path, "10.213.5.0/29")  # a daemon restart
    assert reloaded.leases == leases.leases
    assert reloaded.release("c2") == ["10.213.5.4"]
    assert reloaded.allocate("c6") == "10.213.5.4"
    assert reloaded.keep_only({"c6"}) == sorted(a for a, o in leases.leases.items() if o != "c6" and o != "c2")
    assert json.loads((tmp_path / "network" / "leases.json").read_text())["leases"] == {"10.213.5.4": "c6"}
    assert not (tmp_path / "network" / "leases.json.tmp").exists()


def test_a_lease_file_of_another_subnet_is_not_used(tmp_path):
    path = str(tmp_path / "leases.json")
    Leases(path, "10.213.5.0/24").allocate("a")
    assert Leases(path, "10.213.6.0/24").leases == {}
