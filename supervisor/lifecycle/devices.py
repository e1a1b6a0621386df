"""What a container's process gets, computed from its spec and image (no kernel writes):
its command and environment, the ``--device`` nodes and cgroup rules, its capabilities."""

from __future__ import annotations

import os
import stat
from typing import Any

from supervisor.container import Resolved
from supervisor.errors import InvalidArgument
from supervisor.resources import DeviceMapping, Resources, device_rule
from supervisor.runtime.spawn import DEFAULT_CAPABILITIES
from supervisor.spec import DEFAULT_PATH, ContainerSpec, merge_env

#: cgroup v2 gets no device program (BPF) from dockyard yet: without CAP_MKNOD a container
#: cannot make a node for a host device (docs/architecture.md, "Security defaults").
V2_CAPABILITIES = tuple(cap for cap in DEFAULT_CAPABILITIES if cap != "CAP_MKNOD")


def capabilities(cgroup: Any) -> tuple[str, ...]:
    """The capabilities of a process in ``cgroup`` (a container's pid 1, or an exec)."""
    return V2_CAPABILITIES if cgroup.version == 2 else DEFAULT_CAPABILITIES


def resolve(spec: ContainerSpec, image: Any, container_id: str) -> Resolved:
    """The command, environment, working dir, user and hostname: the spec's over the image's."""
    config = image.config or {}
    if spec.entrypoint is not None:  # docker: --entrypoint also drops the image's CMD
        argv = list(spec.entrypoint) + list(spec.cmd)
    else:
        argv = list(config.get("Entrypoint") or []) + list(spec.cmd or config.get("Cmd") or [])
    if not argv:
        raise InvalidArgument(f"no command specified: image {spec.image} has no default command")
    hostname = spec.hostname or (os.uname().nodename if spec.uts == "host" else container_id[:12])
    env = merge_env([f"PATH={DEFAULT_PATH}"], config.get("Env") or [], [f"HOSTNAME={hostname}"], spec.env)
    return Resolved(
        argv=argv,
        env=env,
        workdir=spec.workdir or config.get("WorkingDir") or "/",
        user=spec.user or config.get("User") or "",
        hostname=hostname,
        labels={**(config.get("Labels") or {}), **spec.label_map},
    )


def host_devices(resources: Resources) -> list[tuple[DeviceMapping, str, os.stat_result]]:
    """Each ``--device`` mapping with its host node's kind ("c" or "b") and stat.

    Raises:
        InvalidArgument: a host path that is not a device node, or a container path that is
            not under /dev.
    """
    found = []
    for text in resources.devices:
        mapping = DeviceMapping.parse(text)
        if not mapping.container.startswith("/dev/") or " " in mapping.container:
            raise InvalidArgument(
                f"invalid value {text!r} for --device: the container path must be under /dev/", flag="--device"
            )
        try:
            node = os.stat(mapping.host)
        except OSError as exc:
            raise InvalidArgument(f"invalid value {mapping.host!r} for --device: {exc.strerror}", flag="--device") from None
        if stat.S_ISCHR(node.st_mode):
            kind = "c"
        elif stat.S_ISBLK(node.st_mode):
            kind = "b"
        else:
            raise InvalidArgument(f"invalid value {mapping.host!r} for --device: not a device node", flag="--device")
        found.append((mapping, kind, node))
    return found


def device_rules(resources: Resources) -> tuple[str, ...]:
    """The devices cgroup rules of the ``--device`` mappings."""
    return tuple(
        device_rule(kind, os.major(node.st_rdev), os.minor(node.st_rdev), mapping.permissions)
        for mapping, kind, node in host_devices(resources)
    )


def device_nodes(resources: Resources) -> tuple[str, ...]:
    """The nodes the init stage makes in the container's /dev (LaunchConfig.devices), with
    the host node's numbers and permission bits."""
    return tuple(
        f"{kind} {os.major(node.st_rdev)} {os.minor(node.st_rdev)} {stat.S_IMODE(node.st_mode):o} {mapping.container}"
        for mapping, kind, node in host_devices(resources)
    )
