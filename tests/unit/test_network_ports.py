"""``-p`` with port ranges (supervisor/network/ports.py), and the host port reserved or
bound from a range (supervisor/network/proxy.py) on loopback."""

from __future__ import annotations

import socket

import pytest
import trio

from supervisor.errors import Conflict, InvalidArgument
from supervisor.network import PortMapping, proxy
from supervisor.network.ports import parse_publish
from supervisor.spec import ContainerSpec


@pytest.mark.parametrize(
    "text, expected",
    [
        ("8080:80", [PortMapping(80, "tcp", "0.0.0.0", 8080)]),
        ("127.0.0.1::80", [PortMapping(80, "tcp", "127.0.0.1", 0)]),
        ("8000-8002:80-82", [PortMapping(80 + i, "tcp", "0.0.0.0", 8000 + i) for i in range(3)]),
        ("127.0.0.1:8000-8001:80-81/udp", [PortMapping(80, "udp", "127.0.0.1", 8000),
                                           PortMapping(81, "udp", "127.0.0.1", 8001)]),
        ("80-81", [PortMapping(80), PortMapping(81)]),
        ("127.0.0.1::80-81", [PortMapping(80, "tcp", "127.0.0.1"), PortMapping(81, "tcp", "127.0.0.1")]),
        ("8000-8010:80", [PortMapping(80, "tcp", "0.0.0.0", 8000, 8010)]),
    ],
)
def test_publish_ranges_as_docker(text, expected):
    assert parse_publish(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("8000-8002:80-81", "the host range has 3 ports and the container range 2"),
        ("90-80", "the range 90-80 ends before it starts"),
        ("1-2000", "names more than 1024 ports"),
        ("80-x", "use [HOSTIP:][HOSTPORT[-END]:]CONTAINERPORT[-END]"),
        ("0-1", "the container port cannot be 0"),
        ("65535-65536", "port 65536 is out of range"),
    ],
)
def test_bad_ranges_name_the_spec_and_the_reason(text, message):
    with pytest.raises(InvalidArgument, match="invalid publish spec") as caught:
        parse_publish(text)
    assert message in caught.value.message


def test_the_spec_and_inspect_accept_ranges():
    from supervisor.container import _port_bindings

    ContainerSpec(image="base", publish=("8000-8001:80-81", "9000-9009:90"))
    with pytest.raises(InvalidArgument, match="host range has 2 ports"):
        ContainerSpec(image="base", publish=("8000-8001:80-82",))
    assert _port_bindings(("127.0.0.1:8000-8001:80-81", "9000-9009:90")) == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8000"}],
        "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8001"}],
        "90/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9000-9009"}],
    }


async def test_a_reserved_port_is_not_listening_and_cannot_be_bound_by_another_socket():
    sock, port = await proxy.bind(PortMapping(80, "tcp", "127.0.0.1", 0), "web", listen=False)
    with sock:
        with socket.socket() as client:
            assert client.connect_ex(("127.0.0.1", port)) != 0  # nobody listens: refused
        with socket.socket() as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError):
                other.bind(("127.0.0.1", port))
        proxy.listen(sock)  # the fallback: the same socket becomes the proxy's listener
        with socket.socket() as client:
            assert client.connect_ex(("127.0.0.1", port)) == 0


async def test_a_host_range_takes_its_first_free_port_and_names_the_range_when_full():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        first = taken.getsockname()[1]
        if first >= 65535:
            pytest.skip("the kernel gave the last port")
        sock, port = await proxy.bind(PortMapping(80, "tcp", "127.0.0.1", first, first + 1), "web")
        try:
            assert port == first + 1
            with pytest.raises(Conflict, match=f"bind 127.0.0.1:{first}-{first + 1}/tcp for port 80/tcp of "
                                               "container again: port is already allocated"):
                await proxy.bind(PortMapping(80, "tcp", "127.0.0.1", first, first + 1), "again")
        finally:
            sock.close()
    await trio.lowlevel.checkpoint()


async def test_an_ipv6_host_socket_is_ipv6_only_beside_the_ipv4_one():
    """``-p P:80`` on an IPv6 network binds 0.0.0.0:P and [::]:P: the second must not claim IPv4."""
    four, port = await proxy.bind(PortMapping(80, "tcp", "0.0.0.0", 0), "web", listen=False)
    with four:
        six, same = await proxy.bind(PortMapping(80, "tcp", "::", port), "web", listen=False)
        with six:
            assert same == port and six.family == socket.AF_INET6
        with pytest.raises(Conflict, match=rf"bind \[::1\]:{port}/tcp for port 80/tcp of container again"):
            taken, _ = await proxy.bind(PortMapping(80, "tcp", "::1", port), "web", listen=False)
            with taken:
                await proxy.bind(PortMapping(80, "tcp", "::1", port), "again", listen=False)
