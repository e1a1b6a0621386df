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
    ipr = _ipr()
    network = ipaddress.IPv4Network(subnet, strict=False)
    gateway = str(network.network_address + 1)
    found = ipr.link_lookup(ifname=name)
    try:
        if not found:
            ipr.link("add", ifname=name, kind="bridge")
            found = ipr.link_lookup(ifname=name)
        index = found[0]
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index, family=2)}
        if (gateway, network.prefixlen) not in have:
            ipr.addr("add", index=index, address=gateway, prefixlen=network.prefixlen)
        ipr.link("set", index=index, state="up")
    except NetlinkError as exc:
        raise NetworkError(f"cannot set up the bridge {name} ({subnet}): {os.strerror(exc.code)}") from exc
    return index


@_netlink
def remove_bridge(name: str) -> None:
    ipr = _ipr()
    for index in ipr.link_lookup(ifname=name):
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise


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
    ipr = _ipr()
    host = host_name(container_id)
    peer = PEER_PREFIX + container_id[:11]
    step = "create the veth pair"
    try:
        bridge_index = ipr.link_lookup(ifname=bridge)[0]
        ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer, "net_ns_pid": pid})
        step = "attach the host end to the bridge"
        host_index = ipr.link_lookup(ifname=host)[0]
        ipr.link("set", index=host_index, master=bridge_index, state="up")
        step = "open the container's network namespace"
        inside = _open_in_namespace(pid)
        try:
            step = "configure eth0"
            index = inside.link_lookup(ifname=peer)[0]
            inside.link("set", index=index, ifname="eth0", address=mac)
            inside.addr("add", index=index, address=address, prefixlen=prefixlen)
            inside.link("set", index=index, state="up")
            lo = inside.link_lookup(ifname="lo")
            if lo:
                inside.link("set", index=lo[0], state="up")
            step = "add the default route"
            inside.route("add", dst="0.0.0.0/0", gateway=gateway)
        finally:
            inside.close()
    except (NetlinkError, OSError, IndexError) as exc:
        try:
            delete_link(host)
        except (NetlinkError, OSError):
            pass
        reason = os.strerror(exc.code) if isinstance(exc, NetlinkError) else str(exc) or type(exc).__name__
        raise NetworkError(f"cannot connect container {container_id[:12]} to {bridge}: {step}: {reason}") from exc


def _open_in_namespace(pid: int) -> IPRoute:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                return IPRoute()
            finally:
                _setns(own)  # a worker thread must never stay in a container's namespace
        finally:
            os.close(target)
    finally:
        os.close(own)
