"""User-defined networks without the kernel: the checks of ``network create``, the address
pools, the DNS answers, the isolation rules, resolv.conf, the spec's endpoints, the CLI's
flags, and the service over a fake kernel (supervisor/network/networks.py, ipam.py, dns.py,
isolation.py, user.py; supervisor/services/networks.py)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import struct
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest
import trio

from supervisor.cli.common import UsageError
from supervisor.cli.specs import network_spec
from supervisor.errors import Conflict, InvalidArgument, NotFound
from supervisor.network import check_endpoints
from supervisor.network.dns import RATE, Names, Server, Stats, answer, upstreams
from supervisor.network.ipam import Pools
from supervisor.network.isolation import Bridge, filter_rules, masquerade_rules
from supervisor.network.networks import CreateRequest, NetworkStore, builtin_inspect, matches, plan
from supervisor.network.user import resolv_conf
from supervisor.services.networks import Networks
from supervisor.spec import ContainerSpec
from tests.fakes import FakeAttachment, make_lifecycle

TAKEN = [("172.31.0.0/16", "the default bridge dy0"), ("10.1.0.0/16", "a route of the host via eth0")]


def test_create_picks_a_free_subnet_and_the_first_address_as_gateway():
    network = plan(CreateRequest("app"), TAKEN, set())
    assert network.subnet == "172.18.0.0/16" and network.gateway == "172.18.0.1"
    assert network.bridge == f"br-{network.id[:12]}" and len(network.id) == 64
    second = plan(CreateRequest("other"), TAKEN + [(network.subnet, "network app")], set())
    assert second.subnet == "172.19.0.0/16"
    named = plan(CreateRequest("x1", "10.9.0.0/24", "10.9.0.254", "10.9.0.128/25",
                               options={"com.docker.network.bridge.name": "mybr0", "mtu": "1400"}), TAKEN, set())
    assert (named.gateway, named.ip_range, named.bridge, named.options) == ("10.9.0.254", "10.9.0.128/25", "mybr0",
                                                                            {"mtu": "1400"})
    dual = plan(CreateRequest("six", ipv6=True), TAKEN, set())
    assert ipaddress.ip_network(dual.subnet6).prefixlen == 64 and dual.subnet6.startswith("fd")
    assert dual.gateway6 == str(ipaddress.ip_network(dual.subnet6).network_address + 1)


@pytest.mark.parametrize(("request_", "message"), [
    (CreateRequest("b", "10.1.2.0/24"), "subnet 10.1.2.0/24 overlaps 10.1.0.0/16 (a route of the host via eth0)"),
    (CreateRequest("b", "172.0.0.0/8"), "overlaps 172.31.0.0/16 (the default bridge dy0)"),
    (CreateRequest("b", "10.9.0.0/24", "10.9.0.0"), "is not a host address"),
    (CreateRequest("b", "10.9.0.0/24", ip_range="10.8.0.0/28"), "is not inside"),
    (CreateRequest("b", "10.9.0.0/31"), "too small"),
    (CreateRequest("b", "nonsense"), "not a CIDR"),
    (CreateRequest("bridge"), "pre-defined network"),
    (CreateRequest("-b"), "invalid name"),
    (CreateRequest("b", subnet6="fd00::/64"), "needs --ipv6"),
    (CreateRequest("b", ipv6=True, subnet6="10.9.0.0/24"), "is not an IPv6 subnet"),
    (CreateRequest("b", options={"com.docker.network.bridge.name": "way-too-long-a-name"}), "invalid bridge name"),
    (CreateRequest("b", options={"com.docker.network.bridge.name": "eth0"}), "a link named eth0 exists"),
])
def test_create_refuses_bad_flags_and_overlaps(request_, message):
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan(request_, TAKEN, {"eth0"})


def test_the_store_keeps_networks_across_a_restart(tmp_path: Path):
    store = NetworkStore(str(tmp_path))
    network = plan(CreateRequest("app", labels={"a": "1"}), TAKEN, set())
    store.add(network)
    with pytest.raises(Conflict, match="exists already"):
        store.add(plan(CreateRequest("app"), TAKEN, set()))
    again = NetworkStore(str(tmp_path))
    again.load()
    assert again.get("app") == network and again.get(network.id[:5]) == network
    with pytest.raises(NotFound, match="network nope not found"):
        again.get("nope")
    again.remove(network.id)
    assert json.loads((tmp_path / "networks.json").read_text()) == {"networks": []}


def test_pools_lease_round_the_range_honour_wanted_addresses_and_persist(tmp_path: Path):
    network = plan(CreateRequest("app", "10.9.0.0/29", ip_range="10.9.0.4/30", ipv6=True, subnet6="fd00:9::/64"),
                   TAKEN, set())
    path = str(tmp_path / "leases.json")
    pools = Pools(path, network)
    assert [pools.allocate(c) for c in ("a", "b")] == ["10.9.0.5", "10.9.0.6"]  # round from the range's start
    assert pools.allocate("a") == "10.9.0.5"  # its lease again
    assert pools.allocate("c") == "10.9.0.4"  # .7 is the subnet's broadcast
    with pytest.raises(Conflict, match="no free address left on network app"):
        pools.allocate("d")
    pools.release("b")
    with pytest.raises(Conflict, match="already in use"):
        pools.allocate("e", wanted="10.9.0.5")
    with pytest.raises(InvalidArgument, match="not a free host address"):
        pools.allocate("e", wanted="10.9.0.1")  # the gateway
    assert pools.allocate("e", wanted="10.9.0.2") == "10.9.0.2"  # --ip: anywhere in the subnet
    assert pools.allocate("a", "v6") == "fd00:9::2"
    reloaded = Pools(path, network)
    assert reloaded.leases == pools.leases
    assert sorted(reloaded.keep_only({"a"})) == ["10.9.0.2", "10.9.0.4"]
    assert reloaded.leases == {"v4": {"10.9.0.5": "a"}, "v6": {"fd00:9::2": "a"}}


def _query(name: str, kind: str = "A") -> bytes:
    return dns.message.make_query(name, kind).to_wire()


def test_dns_answers_names_of_the_askers_networks_only_and_forwards_the_rest():
    names = Names()
    names.add("n1", "app", "db-id", ["db", "db-id-short", "database"], "10.0.0.2", "fd00::2")
    names.add("n1", "app", "web-id", ["web"], "10.0.0.3")
    names.add("n2", "other", "lone-id", ["lone"], "10.1.0.2")
    reply, forward = answer(names, "web-id", _query("DATABASE."))
    message = dns.message.from_wire(reply)
    assert forward is None and [r.to_text() for r in message.answer[0]] == ["10.0.0.2"]
    assert message.answer[0].ttl == 600
    reply, _ = answer(names, "web-id", _query("db.app", "AAAA"))
    assert [r.to_text() for r in dns.message.from_wire(reply).answer[0]] == ["fd00::2"]
    reply, _ = answer(names, "db-id", _query("web", "AAAA"))  # ours, without IPv6: empty, not forwarded
    message = dns.message.from_wire(reply)
    assert message.rcode() == dns.rcode.NOERROR and message.answer == []
    assert answer(names, "web-id", _query("lone"))[0] is None  # another network's: not ours to answer
    assert answer(names, "web-id", _query("example.org"))[1] is not None  # forwarded
    garbage = answer(names, "web-id", b"\x12\x34garbage")[0]
    assert garbage[:2] == b"\x12\x34" and garbage[3] & 0x0F == 1  # FORMERR with the query's id
    names.remove("n1", "db-id")
    assert answer(names, "web-id", _query("db"))[0] is None


def test_upstreams_are_the_host_resolv_confs_name_servers():
    assert upstreams("search x\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\n") == ["10.0.0.53", "fe80::1"]
    assert upstreams("") == []


def test_isolation_rules_drop_between_bridges_and_out_of_internal_ones():
    bridges = [Bridge("dy0", "172.31.0.0/16"), Bridge("br-a", "10.1.0.0/24", masquerade=True),
               Bridge("br-i", "10.2.0.0/24", internal=True, ipv6=True, masquerade=True)]
    rules = filter_rules("ISO1", "ISO2", bridges, ipv6=False)
    assert ["-A", "ISO1", "-i", "br-a", "!", "-o", "br-a", "-j", "ISO2"] in rules
    assert ["-A", "ISO1", "-i", "br-i", "!", "-o", "br-i", "-j", "DROP"] in rules
    assert ["-A", "ISO1", "-o", "br-i", "!", "-i", "br-i", "-j", "DROP"] in rules
    assert [rule[3] for rule in rules if rule[1] == "ISO2"] == ["dy0", "br-a", "br-i"]
    assert [rule[3] for rule in filter_rules("ISO1", "ISO2", bridges, ipv6=True) if rule[1] == "ISO2"] == ["br-i"]
    assert masquerade_rules("M", bridges) == [["-A", "M", "-s", "10.1.0.0/24", "!", "-o", "br-a", "-j", "MASQUERADE"]]


def test_resolv_conf_on_a_user_network_and_the_dns_flags():
    host = "nameserver 127.0.0.53\nnameserver 10.0.0.53\nsearch corp.test\noptions edns0\n"
    assert resolv_conf(host, [], [], [], embedded=True) == "nameserver 127.0.0.11\nsearch corp.test\noptions edns0\n"
    assert resolv_conf("nameserver 10.0.0.53\n", [], [], [], embedded=True) == \
        "nameserver 127.0.0.11\noptions ndots:0\n"
    assert resolv_conf(host, ["9.9.9.9"], ["a.test", "b.test"], ["ndots:3"], embedded=False) == \
        "nameserver 9.9.9.9\nsearch a.test b.test\noptions ndots:3\n"
    assert resolv_conf(host, [], ["."], [], embedded=False) == "nameserver 10.0.0.53\noptions edns0\n"


def test_a_specs_endpoints_start_with_its_network_and_are_checked():
    spec = ContainerSpec(image="base", network="app", endpoints={"back": {"aliases": ["api"], "ipv4": "10.0.0.9"}})
    assert list(spec.endpoints) == ["app", "back"]
    assert spec.endpoints["back"] == {"aliases": ["api"], "ipv4": "10.0.0.9", "ipv6": ""}
    assert ContainerSpec.from_map(spec.to_map()) == spec and hash(spec) == hash(ContainerSpec.from_map(spec.to_map()))
    assert ContainerSpec(image="base", network="app", publish=("80",)).publish == ("80",)
    for mode, endpoints, message in (
        ("host", {"app": {}}, "cannot be combined"),
        ("app", {"app": {"ipv4": "fd00::1"}}, "not an IPv4 address"),
        ("app", {"app": {"aliases": ["bad alias"]}}, "--network-alias"),
        ("app", {"app": {"mac": "x"}}, "unknown field"),
        ("bridge", {"host": {}}, "not a user-defined network"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            check_endpoints(mode, endpoints)


def _cli(**flags: object) -> dict:
    args = argparse.Namespace(network=None, network_alias=[], ip=None, ip6=None, publish=[], add_host=[], dns=[],
                              dns_search=[], dns_option=[], publish_all=False)
    for key, value in flags.items():
        setattr(args, key, value)
    spec: dict = {}
    network_spec(args, spec)
    return spec


def test_the_run_flags_of_networks():
    assert _cli(network=["app"]) == {"network": "app"}
    assert _cli(network=["app", "back"], network_alias=["db"], ip="10.0.0.5") == {
        "network": "app", "endpoints": {"app": {"aliases": ["db"], "ipv4": "10.0.0.5"}, "back": {}}}
    assert _cli(network=["bridge", "back"]) == {"network": "bridge", "endpoints": {"back": {}}}
    assert _cli(dns_search=["x.test"], dns_option=["ndots:2"]) == {"dns_search": ["x.test"], "dns_option": ["ndots:2"]}
    with pytest.raises(UsageError, match="need a user-defined network"):
        _cli(network=["bridge"], network_alias=["db"])


async def test_the_service_connects_and_disconnects_and_publishes(tmp_path: Path, nursery: trio.Nursery):
    fakes = make_lifecycle(tmp_path)
    fakes.core.nursery = nursery
    service = Networks(fakes.core)
    await fakes.network.user.start(set())
    network = await service.create(CreateRequest("app", "10.9.0.0/24"))
    assert fakes.network.user.kernel.bridges == {network.bridge}
    container = await fakes.core.create(ContainerSpec(image="base", name="web"))
    await service.connect("app", "web", ["www"], "", "")
    assert container.spec.endpoints == {"app": {"aliases": ["www"], "ipv4": "", "ipv6": ""}}
    assert fakes.store.load_all()[0][0]["spec"]["endpoints"] == container.spec.endpoints  # persisted
    with pytest.raises(Conflict, match="already connected"):
        await service.connect("app", "web", [], "", "")
    with pytest.raises(InvalidArgument, match="only user-defined networks"):
        await service.connect("bridge", "web", [], "", "")
    # A running container: live, an interface after the default bridge's eth0.
    container.network = FakeAttachment(container.id, "", "", pid=1)
    container.status = type(container.status)("running")
    await service.disconnect("app", "web")
    await service.connect("app", "web", [], "10.9.0.77", "")
    assert [(e.ifname, e.address) for e in container.network.endpoints] == [("eth1", "10.9.0.77")]
    assert json.loads(json.dumps(service.inspect("app")))["Containers"][container.id]["IPv4Address"] == "10.9.0.77/24"
    with pytest.raises(Conflict, match=r"active endpoints \(web\)"):
        await service.remove("app")
    assert await service.prune() == []
    await service.disconnect("app", "web")
    assert container.network.endpoints == [] and container.spec.endpoints == {}
    with pytest.raises(NotFound, match="not connected"):
        await service.disconnect("app", "web")
    with pytest.raises(InvalidArgument, match="pre-defined network"):
        await service.remove("bridge")
    assert [d["Name"] for d in service.list(["type=custom"])] == ["app"]
    assert await service.prune() == ["app"] and fakes.network.user.kernel.bridges == set()
    actions = [(data["action"], data["attributes"].get("container", "")) for topic, data in fakes.events
               if topic.startswith("network.")]
    assert actions == [("create", ""), ("connect", container.id), ("disconnect", container.id),
                       ("connect", container.id), ("disconnect", container.id), ("destroy", "")]


def test_network_ls_filters():
    document = builtin_inspect("bridge", "dy0", "172.31.0.0/16", "172.31.0.1")
    assert matches(document, {"type": ["builtin"], "name": ["bri"]}, used=False)
    assert not matches(document, {"dangling": ["false"]}, used=False)
    assert not matches(document, {"label": ["a"]}, used=False)


async def _server_on_loopback(names: Names) -> tuple[Server, tuple[str, int], tuple[str, int]]:
    """A container's DNS server whose sockets are on this namespace's loopback (the daemon
    opens them in the container's; the serving is the same)."""
    server = Server(names, "web-id", [], Stats())
    server.udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await server.udp.bind(("127.0.0.1", 0))
    server.tcp = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await server.tcp.bind(("127.0.0.1", 0))
    server.tcp.listen(4)
    return server, server.udp.getsockname(), server.tcp.getsockname()


async def test_the_dns_server_answers_over_udp_and_tcp_and_bounds_the_rate(nursery: trio.Nursery):
    names = Names()
    names.add("n1", "app", "web-id", ["web"], "10.0.0.3")
    names.add("n1", "app", "db-id", ["db"], "10.0.0.2")
    server, udp_address, tcp_address = await _server_on_loopback(names)
    nursery.start_soon(server.serve)
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        await client.sendto(_query("db"), udp_address)
        assert [r.to_text() for r in dns.message.from_wire(await client.recv(512)).answer[0]] == ["10.0.0.2"]
        await client.sendto(_query("example.org"), udp_address)  # no upstream here: SERVFAIL, not silence
        assert dns.message.from_wire(await client.recv(512)).rcode() == dns.rcode.SERVFAIL
    with trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
        await client.connect(tcp_address)
        wire = _query("db", "A")
        await client.send(struct.pack("!H", len(wire)) + wire)
        size = struct.unpack("!H", await client.recv(2))[0]
        data = b""
        while len(data) < size:
            data += await client.recv(size - len(data))
        assert [r.to_text() for r in dns.message.from_wire(data).answer[0]] == ["10.0.0.2"]
    # The bucket: BURST queries at once, the rest dropped (and counted) until it refills.
    server.limiter.tokens = -RATE  # a second's worth in debt
    server.limiter.stamp = trio.current_time()
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        before = server.stats.dropped, server.stats.answered
        await client.sendto(_query("db"), udp_address)
        with trio.fail_after(5):
            while server.stats.dropped == before[0]:
                await trio.sleep(0)  # the server task runs: waits on the count itself
        assert (server.stats.dropped, server.stats.answered) == (before[0] + 1, before[1])
    server.close()


async def test_a_udp_answer_too_long_for_the_asker_is_truncated(nursery: trio.Nursery):
    names = Names()
    names.add("n1", "app", "web-id", ["web"], "10.0.0.3")
    for index in range(60):  # 60 replicas behind one alias: 60 A records, more than 512 bytes
        names.add("n1", "app", f"r{index}", ["api"], f"10.0.1.{index + 1}")
    server, udp_address, _ = await _server_on_loopback(names)
    nursery.start_soon(server.serve)
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        await client.sendto(_query("api"), udp_address)
        short = dns.message.from_wire(await client.recv(65535))
        assert short.flags & dns.flags.TC and short.answer == []
        await client.sendto(dns.message.make_query("api", "A", use_edns=0, payload=4096).to_wire(), udp_address)
        full = dns.message.from_wire(await client.recv(65535))
        assert not full.flags & dns.flags.TC and len(full.answer[0]) == 60
    server.close()


def test_an_ipv6_subnet_alone_through_the_api_is_the_networks_ipv6_one():
    network = plan(CreateRequest("six", "fd00:7::/64", "fd00:7::fe", ipv6=True), TAKEN, set())
    assert (network.subnet6, network.gateway6, network.subnet) == ("fd00:7::/64", "fd00:7::fe", "172.18.0.0/16")


async def test_create_refuses_a_network_that_does_not_exist(tmp_path: Path):
    fakes = make_lifecycle(tmp_path)
    with pytest.raises(NotFound, match="network nope not found"):
        await fakes.core.create(ContainerSpec(image="base", name="web", network="nope"))
    assert fakes.core.containers == {}
