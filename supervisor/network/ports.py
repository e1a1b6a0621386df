"""``-p`` with port ranges, as docker's: one ``--publish`` may name many ports.

Pure (no I/O): the spec, inspect and the daemon share it. A spec without a range is
:meth:`PortMapping.parse` unchanged; a range is cut into one :class:`PortMapping` per port,
each parsed by that same function (so what it accepts, an address family for example, a
range accepts too):

=============================  ===============================================================
``-p 8000-8010:80-90``         80 on 8000, 81 on 8001, ... (the two ranges have one length)
``-p 80-90``                   each of 80..90 on a free host port of its own
``-p 8000-8010:80``            80 on the first free port of 8000..8010 (``host_port_end``)
``-p 127.0.0.1::80``           80 on a free port of 127.0.0.1 (no range needed)
=============================  ===============================================================
"""

from __future__ import annotations

import dataclasses

from supervisor.errors import InvalidArgument
from supervisor.network import PortMapping

MAX_PORTS = 1024  # ports one --publish may name: a typo like 1-65535 is refused, not 65535 sockets


def parse_publish(text: str) -> list[PortMapping]:
    """Every mapping of one ``-p [HOSTIP:][HOSTPORT[-END]:]CONTAINERPORT[-END][/PROTO]``.

    Raises:
        InvalidArgument: a bad spec, naming it and the flag.
    """
    if not isinstance(text, str):
        raise InvalidArgument(f"invalid publish spec {text!r}: not a string", flag="-p")
    ports, slash, protocol = text.partition("/")
    head, _, container = ports.rpartition(":")
    address, colon, host = head.rpartition(":") if head else ("", "", "")
    if not colon:  # "HOSTPORT:CONTAINERPORT" or "CONTAINERPORT"
        address, host = "", head
    if "-" not in container and "-" not in host:
        return [PortMapping.parse(text)]
    prefix = (address + ":") if colon else ""
    suffix = slash + protocol
    container_ports = _range(text, container)
    host_ports = _range(text, host) if host else []
    if host_ports and len(container_ports) == 1 and len(host_ports) > 1:
        mapping = PortMapping.parse(f"{prefix}{host_ports[0]}:{container_ports[0]}{suffix}")
        return [dataclasses.replace(mapping, host_port_end=host_ports[-1])]
    if host_ports and len(host_ports) != len(container_ports):
        raise InvalidArgument(
            f"invalid publish spec {text!r}: the host range has {len(host_ports)} ports and the container "
            f"range {len(container_ports)}", flag="-p")
    mappings = []
    for index, container_port in enumerate(container_ports):
        host_port = str(host_ports[index]) if host_ports else ""
        mappings.append(PortMapping.parse(f"{prefix}{host_port}:{container_port}{suffix}" if (prefix or host_port)
                                          else f"{container_port}{suffix}"))
    return mappings


def _range(text: str, part: str) -> list[int]:
    first, dash, last = part.partition("-")
    if not (first.isdigit() and (not dash or last.isdigit())):
        raise InvalidArgument(
            f"invalid publish spec {text!r}: use [HOSTIP:][HOSTPORT[-END]:]CONTAINERPORT[-END][/tcp|/udp]", flag="-p")
    start, end = int(first), int(last) if dash else int(first)
    if end < start:
        raise InvalidArgument(f"invalid publish spec {text!r}: the range {part} ends before it starts", flag="-p")
    if end - start + 1 > MAX_PORTS:
        raise InvalidArgument(f"invalid publish spec {text!r}: the range {part} names more than {MAX_PORTS} ports",
                              flag="-p")
    return list(range(start, end + 1))
