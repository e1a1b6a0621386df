"""A container's mounts: resolved once at create, handed to the init stage at each start.

At create (:func:`resolve`) the -v, --mount and --tmpfs flags (parsed by supervisor/mounts.py),
the image's ``VOLUME`` entries and ``--volumes-from`` become a list of resolved mounts kept
in the container's record:

- a bind's source is made canonical on the host (``realpath``), made as a directory when
  ``-v`` names a missing one (docker), refused when ``--mount`` does (docker);
- a named volume is created on first use, an anonymous one (``-v /path``, an image VOLUME not
  covered by another mount) gets a random 64-hex name and is removed by ``rm -v``.

At start (:func:`stage_entries`) each becomes one line of the launch config's ``mounts``; the
init stage opens a bind source with ``RESOLVE_NO_SYMLINKS`` (a source swapped for a symlink
since create is refused, never followed) and copies the image's content into an empty volume
first unless ``nocopy`` (supervisor/runtime/rootfs.py: mount_volumes).
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from supervisor.errors import InvalidArgument
from supervisor.mounts import Mount, check_target, parse_volumes_from


def resolve(spec: Any, image: Any, volumes: Any, others: Any, emit: Any) -> list[dict[str, Any]]:
    """The container's mounts, as its record keeps them (volumes created here).

    Args:
        spec: the ContainerSpec.
        image: its image (``config["Volumes"]``: the image's VOLUME entries).
        volumes: the VolumeStore (None: volumes refused).
        others: ``others(ref)`` -> the container named by ``--volumes-from``.
        emit: ``emit(action, volume_name, attributes)``: a volume event.

    Raises:
        InvalidArgument: a bind source --mount names does not exist; no volume store.
        NotFound: a --volumes-from container does not exist.
    """
    parsed: list[Mount] = spec.parsed_mounts()
    # Everything that can fail is looked up before the first volume is made: a refused create
    # leaves no volume behind.
    inherited = [(parse_volumes_from(entry)[1], others(parse_volumes_from(entry)[0])) for entry in spec.volumes_from]
    if volumes is None and (any(mount.type == "volume" for mount in parsed) or (image.config or {}).get("Volumes")):
        raise InvalidArgument("volumes are not available in this supervisor", flag="--volume")
    binds = {id(mount): _bind(mount) for mount in parsed if mount.type == "bind"}
    resolved: list[dict[str, Any]] = []
    for mount in parsed:
        if mount.type == "bind":
            resolved.append(binds[id(mount)])
        elif mount.type == "volume":
            resolved.append(_volume(mount, volumes, emit))
        else:
            resolved.append(_record(mount, "", ""))
    targets = {entry["target"] for entry in resolved}
    for mode, other in inherited:
        for mount in other.mounts:
            if mount["type"] == "tmpfs" or mount["target"] in targets:
                continue
            copy = {**mount, "origin": "--volumes-from", "anonymous": False}
            if mode:
                copy["readonly"] = mode == "ro"
            resolved.append(copy)
            targets.add(copy["target"])
    for path in sorted((image.config or {}).get("Volumes") or {}):
        try:
            target = check_target("volume", path, "VOLUME")
        except ValueError:
            continue  # an image's odd VOLUME over /proc and the like: docker would fail; skip it
        if target not in targets:
            resolved.append(_volume(Mount("volume", "", target, origin="image"), volumes, emit))
            targets.add(target)
    return resolved


def _record(mount: Mount, source: str, name: str, anonymous: bool = False) -> dict[str, Any]:
    return {"type": mount.type, "name": name, "source": source, "target": mount.target,
            "readonly": mount.readonly, "propagation": mount.propagation, "nocopy": mount.nocopy,
            "options": mount.options, "origin": mount.origin, "mode": mount.mode, "anonymous": anonymous}


def _bind(mount: Mount) -> dict[str, Any]:
    source = mount.source
    if not os.path.lexists(source):
        if not mount.create_source:
            raise InvalidArgument(f'invalid mount config for type "bind": bind source path does not exist: {source}',
                                  flag="--mount", path=source)
        try:
            os.makedirs(source, 0o755, exist_ok=True)  # docker: -v makes a missing host path a directory
        except OSError as exc:
            raise InvalidArgument(f'error while creating mount source path \'{source}\': mkdir {source}: '
                                  f"{exc.strerror}", flag="--volume", path=source) from None
    canonical = os.path.realpath(source)
    if not os.path.exists(canonical):
        raise InvalidArgument(f'invalid mount config for type "bind": bind source path does not exist: {source}',
                              flag="--volume", path=source)
    return _record(mount, canonical, "")


def _volume(mount: Mount, volumes: Any, emit: Any) -> dict[str, Any]:
    anonymous = not mount.source
    name = mount.source or secrets.token_hex(32)
    volume, made = volumes.create(name, anonymous=anonymous)
    if made:
        emit("create", name, {"driver": "local"})
    return _record(mount, os.path.realpath(volume.mountpoint), name, anonymous)


def stage_entries(mounts: list[dict[str, Any]]) -> tuple[str, ...]:
    """The launch config's ``mounts`` (supervisor/runtime/protocol.py): one tab-separated line
    each, ``TYPE<TAB>SOURCE<TAB>TARGET<TAB>FLAGS<TAB>DATA``: FLAGS comma-separated (``ro``,
    ``nocopy``, a propagation), DATA a tmpfs's mount options."""
    entries = []
    for mount in mounts:
        flags = (["ro"] if mount["readonly"] else []) + ([mount["propagation"]] if mount["propagation"] else [])
        flags += ["nocopy"] if mount["nocopy"] else []
        kind = "tmpfs" if mount["type"] == "tmpfs" else "bind" if mount["type"] == "bind" else "volume"
        entries.append("\t".join((kind, mount["source"], mount["target"], ",".join(flags), mount["options"])))
    return tuple(entries)


def volume_names(mounts: list[dict[str, Any]]) -> list[str]:
    """The names of the volumes among a container's mounts."""
    return [mount["name"] for mount in mounts if mount["type"] == "volume" and mount.get("name")]


def volume_users(containers: Any, name: str) -> list[str]:
    """The containers (any state) whose mounts use the volume ``name``, as ``name (short id)``."""
    return [container.name for container in containers
            if any(mount.get("name") == name for mount in container.mounts)]
