"""Links, addresses and routes through pyroute2 (netlink; no ``ip`` command): the
daemon's bridge, and each container's veth pair. Blocking calls: the manager runs them
in a worker thread. Imported by the daemon only (pyroute2 costs ~0.3 s to import).

The container's end is configured through a netlink socket opened inside its network
namespace: the worker thread setns(2)es into ``/proc/PID/ns/net``, opens the socket (a
socket stays in the namespace it was created in), and setns(2)es back at once. That is
~1 ms where pyroute2's NetNS forks a helper (~20 ms).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import ipaddress
import os
import threading
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from supervisor.errors import DockyardError

CLONE_NEWNET = 0x40000000
HOST_PREFIX = "dy"  # host ends of our veth pairs: dy + 11 hex of the container id
PEER_PREFIX = "dz"  # the container's end until it is renamed eth0 in its namespace
ENDPOINT_PREFIX = "dv"  # host ends on user networks: dv + 7 hex of the container + 6 of the network
ENDPOINT_PEER_PREFIX = "dw"
IFA_F_NODAD = 0x02  # no duplicate address detection: an IPv6 address usable at once, not "tentative"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_local = threading.local()


class NetworkError(DockyardError):
    code = "network"


def host_name(container_id: str) -> str:
    return HOST_PREFIX + container_id[:11]


def _ipr() -> IPRoute:
    """The host-namespace netlink socket of the current :func:`_netlink` call."""
    return _local.ipr


def _netlink(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``function`` with a host netlink socket of its own, closed after it (one per
    outermost call: a socket left to the garbage collector is a ResourceWarning)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if getattr(_local, "ipr", None) is not None:
            return function(*args, **kwargs)
        _local.ipr = IPRoute()
        try:
            return function(*args, **kwargs)
        finally:
            _local.ipr.close()
            _local.ipr = None

    return wrapper


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))


@_netlink
def ensure_bridge(name: str, subnet: str) -> int:
    """Create the bridge ``name`` with the subnet's first address, up; reuse it if it
    exists (with that address added if missing). Returns its index."""
    network = ipaddress.IPv4Network(subnet, strict=False)
    return _ensure_bridge(name, subnet, [(str(network.network_address + 1), network.prefixlen)])


def _ensure_bridge(name: str, shown: str, addresses: list[tuple[str, int]]) -> int:
    """The bridge ``name``, made if missing, with each (address, prefix length) (IPv6 ones
    without DAD), up; its index."""
    ipr = _ipr()
    try:
        found = ipr.link_lookup(ifname=name)
        if not found:
            ipr.link("add", ifname=name, kind="bridge")
            found = ipr.link_lookup(ifname=name)
        index = found[0]
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for family in (2, 10)
                for a in ipr.get_addr(index=index, family=family)}
        for address, prefixlen in addresses:
            if (address, prefixlen) not in have:
                flags = {"flags": IFA_F_NODAD} if ":" in address else {}
                ipr.addr("add", index=index, address=address, prefixlen=prefixlen, **flags)
        ipr.link("set", index=index, state="up")
    except NetlinkError as exc:
        raise NetworkError(f"cannot set up the bridge {name} ({shown}): {os.strerror(exc.code)}") from exc
    return index


@_netlink
def remove_bridge(name: str) -> None:
    _delete(name)


@_netlink
def stale_veths(bridge: str, keep: set[str]) -> list[str]:
    """Host ends of our veths (``dy*``) on ``bridge`` whose name is not in ``keep``."""
    ipr = _ipr()
    found = ipr.link_lookup(ifname=bridge)
    if not found:
        return []
    names = []
    for link in ipr.get_links():
        name = link.get_attr("IFLA_IFNAME") or ""
        if name.startswith(HOST_PREFIX) and link.get_attr("IFLA_MASTER") == found[0] and name not in keep:
            names.append(name)
    return names


@_netlink
def delete_link(name: str) -> bool:
    """Delete the link ``name`` if it exists; True if it did."""
    return _delete(name)


def _delete(name: str) -> bool:
    ipr = _ipr()
    for index in ipr.link_lookup(ifname=name):
        try:
            ipr.link("del", index=index)
            return True
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise
    return False


@_netlink
def attach(container_id: str, pid: int, bridge: str, address: str, prefixlen: int, gateway: str, mac: str) -> None:
    """Give the network namespace of ``pid`` an ``eth0`` on ``bridge``: a veth pair, the
    host end enslaved to the bridge and up, the peer moved in, renamed, addressed, up,
    with ``lo`` up and the default route through ``gateway``.

    Raises:
        NetworkError: a step failed (the host end is deleted again).
    """
    _connect(pid, host_name(container_id), PEER_PREFIX + container_id[:11], bridge, "eth0", mac,
             (address, prefixlen, gateway), None, f"container {container_id[:12]}")


def _connect(pid: int, host: str, peer: str, bridge: str, ifname: str, mac: str, v4: tuple[str, int, str],
             v6: tuple[str, int, str] | None, what: str) -> None:
    """A veth pair from ``bridge`` (the host end ``host``, up) into the namespace of ``pid``,
    where ``peer`` becomes ``ifname`` with ``mac`` and the (address, prefix length, gateway)
    of each family given; a default route for each gateway that is not empty; ``lo`` up.
    A failure deletes the host end again and raises NetworkError naming ``what`` and the step."""
    ipr = _ipr()
    step = "create the veth pair"
    try:
        bridge_index = ipr.link_lookup(ifname=bridge)[0]
        ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer, "net_ns_pid": pid})
        step = "attach the host end to the bridge"
        ipr.link("set", index=ipr.link_lookup(ifname=host)[0], master=bridge_index, state="up")
        step = "open the container's network namespace"
        inside = _open_in_namespace(pid)
        try:
            step = f"configure {ifname}"
            index = inside.link_lookup(ifname=peer)[0]
            inside.link("set", index=index, ifname=ifname, address=mac)
            inside.addr("add", index=index, address=v4[0], prefixlen=v4[1])
            if v6 and v6[0]:
                inside.addr("add", index=index, address=v6[0], prefixlen=v6[1], flags=IFA_F_NODAD)
            inside.link("set", index=index, state="up")
            lo = inside.link_lookup(ifname="lo")
            if lo:
                inside.link("set", index=lo[0], state="up")
            step = "add the default route"
            if v4[2]:
                inside.route("add", dst="0.0.0.0/0", gateway=v4[2])
            if v6 and v6[2]:
                inside.route("add", dst="::/0", gateway=v6[2], family=10)
        finally:
            inside.close()
    except (NetlinkError, OSError, IndexError) as exc:
        try:
            _delete(host)
        except (NetlinkError, OSError):
            pass
        reason = os.strerror(exc.code) if isinstance(exc, NetlinkError) else str(exc) or type(exc).__name__
        raise NetworkError(f"cannot connect {what} to {bridge}: {step}: {reason}") from exc


def _made_in_namespace(pid: int, make: Callable[[], Any]) -> Any:
    """``make()`` called inside the network namespace of ``pid``, this thread back in its
    own one afterwards: what it makes (a netlink or other socket) stays in the namespace it
    was made in."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                return make()
            finally:
                _setns(own)  # a worker thread must never stay in a container's namespace
        finally:
            os.close(target)
    finally:
        os.close(own)


def _open_in_namespace(pid: int) -> IPRoute:
    return _made_in_namespace(pid, IPRoute)


# --- user-defined networks (supervisor/network/user.py) -------------------------------------


def endpoint_name(container_id: str, network_id: str, prefix: str = ENDPOINT_PREFIX) -> str:
    return prefix + container_id[:7] + network_id[:6]


@_netlink
def set_hairpin(name: str) -> None:
    """Hairpin mode on a bridge port (``IFLA_BRPORT_MODE``): the bridge may send a frame
    back out of the port it came in by (a container reaching its own published port). By
    netlink, not sysfs: /sys shows the links of the namespace it was mounted in, which is
    not the daemon's when it runs in a namespace of its own."""
    ipr = _ipr()
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise NetworkError(f"cannot set hairpin mode on {name}: no such link")
    try:
        ipr.brport("set", index=found[0], mode=1)
    except NetlinkError as exc:
        raise NetworkError(f"cannot set hairpin mode on {name}: {os.strerror(exc.code)}") from exc


@_netlink
def ensure_user_bridge(name: str, gateway: str, prefixlen: int, gateway6: str = "", prefixlen6: int = 0) -> int:
    """:func:`ensure_bridge` for a user network: its gateway addresses (IPv6 without DAD)."""
    return _ensure_bridge(name, f"{gateway}/{prefixlen}",
                          [(gateway, prefixlen)] + ([(gateway6, prefixlen6)] if gateway6 else []))


@_netlink
def routes() -> list[tuple[str, str]]:
    """The host's routes to subnets (main table, both families, default routes left out) as
    (CIDR, device name): what a new network's subnet must not overlap."""
    ipr = _ipr()
    names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
    found = []
    for family in (2, 10):
        for route in ipr.get_routes(family=family, table=254):
            destination, length = route.get_attr("RTA_DST"), route["dst_len"]
            if destination and length and not destination.startswith("fe80:"):
                found.append((f"{destination}/{length}", names.get(route.get_attr("RTA_OIF"), "?")))
    return found


@_netlink
def link_names() -> set[str]:
    return {link.get_attr("IFLA_IFNAME") for link in _ipr().get_links()}


@_netlink
def stale_endpoints(bridges: list[str], keep: set[str]) -> list[str]:
    """Host ends of user-network veths (``dv*``) on any of ``bridges`` not named in ``keep``."""
    ipr = _ipr()
    indexes = {found[0] for name in bridges for found in [ipr.link_lookup(ifname=name)] if found}
    return [name for link in ipr.get_links() for name in [link.get_attr("IFLA_IFNAME") or ""]
            if name.startswith(ENDPOINT_PREFIX) and link.get_attr("IFLA_MASTER") in indexes and name not in keep]


@_netlink
def attach_endpoint(pid: int, host: str, bridge: str, ifname: str, mac: str, address: str, prefixlen: int,
                    gateway: str = "", address6: str = "", prefixlen6: int = 0, gateway6: str = "") -> None:
    """A veth from ``bridge`` into the namespace of ``pid`` as ``ifname`` with its addresses;
    default routes through the gateways given (none for an internal network, or when the
    container has one already: its first network's).

    Raises:
        NetworkError: a step failed (the host end is deleted again).
    """
    _connect(pid, host, ENDPOINT_PEER_PREFIX + host[len(ENDPOINT_PREFIX):], bridge, ifname, mac,
             (address, prefixlen, gateway), (address6, prefixlen6, gateway6),
             f"{ifname} (veth {host}) of process {pid}")


@_netlink
def endpoint_ifnames(pid: int, hosts: list[str]) -> dict[str, str]:
    """The interface name inside the namespace of ``pid`` of each veth whose host end is in
    ``hosts`` (live restore: a running container's endpoints, found again); a host end that
    is gone is left out.

    Raises:
        OSError: the namespace cannot be entered (the process is gone).
    """
    ipr = _ipr()
    peers: dict[int, str] = {}  # the peer's index in the container's namespace -> its host end
    for host in hosts:
        for index in ipr.link_lookup(ifname=host):
            for link in ipr.get_links(index):
                peer = link.get_attr("IFLA_LINK")
                if peer:
                    peers[peer] = host
    if not peers:
        return {}
    inside = _open_in_namespace(pid)
    try:
        return {peers[link["index"]]: link.get_attr("IFLA_IFNAME") for link in inside.get_links()
                if link["index"] in peers}
    finally:
        inside.close()


def open_in_namespace(pid: int, family: int, kind: int, address: tuple[str, int]) -> Any:
    """A socket of ``family``/``kind`` created inside the network namespace of ``pid`` and
    bound to ``address`` there (a socket stays in the namespace it was made in): the
    embedded DNS server's. A listening TCP socket is listening when returned."""
    import socket

    sock = _made_in_namespace(pid, lambda: socket.socket(family, kind))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        if kind == socket.SOCK_STREAM:
            sock.listen(16)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
