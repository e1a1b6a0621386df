"""``--userns-remap`` in the lifecycle: the daemon's mapping and how its layers are seen,
decided once at start (:func:`setup`), and what a remapped container's create and start
add (its directories owned by the mapped root, the launch config's maps and layers).

A container records the mapping it was created with (``Container.id_mapping``): its upper
dir belongs to that mapping's root, so a start under another mapping (the daemon restarted
with another ``--userns-remap``, or without) is refused, naming both, rather than giving the
container a root filesystem its root does not own. ``--userns host`` opts a container out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor import userns
from supervisor.errors import StartError
from supervisor.userns import IdMapping


@dataclass
class Remap:
    """The daemon's mapping (None: no ``--userns-remap``) and how image layers are given
    under it: ``layers`` is :data:`userns.IDMAPPED` or :data:`userns.CHOWNED_COPIES`
    (``reason`` says why idmapped mounts are not used), ``cache`` holds the copies."""

    mapping: IdMapping | None = None
    layers: str = ""
    reason: str = ""
    cache: Path | None = None

    def for_spec(self, spec: Any) -> IdMapping | None:
        """The mapping of a new container of ``spec`` (None with ``--userns host``)."""
        return None if self.mapping is None or spec.userns_mode == "host" else self.mapping

    def info(self) -> dict[str, Any] | None:
        """``dockyard info``'s ``userns`` map."""
        if self.mapping is None:
            return None
        return {"user": self.mapping.user, "group": self.mapping.group,
                "uid_map": [list(entry) for entry in self.mapping.uid_map],
                "gid_map": [list(entry) for entry in self.mapping.gid_map],
                "root": f"{self.mapping.root_uid}:{self.mapping.root_gid}",
                "layers": self.layers, "idmap_unavailable": self.reason or None}


def setup(value: str, root: Path, subuid_file: str, subgid_file: str, layers: str = "auto") -> Remap:
    """The daemon's :class:`Remap` (blocking: run it in a thread); ``layers`` is
    ``Config.userns_layers``. The state root is opened to
    the mapped root (o+x, as dockerd's 0711: pid 1 reaches its root filesystem, /etc files and
    volumes by their paths), the idmapped-overlay probe decides how layers are given.

    Raises:
        userns.RemapError: the mapping cannot be resolved, or a directory above the state
            root keeps the mapped root out.
    """
    if not value:
        return Remap()
    mapping = userns.resolve(value, subuid_file, subgid_file)
    for directory in (root, root / "containers", root / "volumes"):
        directory.mkdir(parents=True, exist_ok=True)
        userns.open_directory(directory)
    blocked = userns.reachable_by(root / "containers", mapping.root_uid, mapping.root_gid)
    if blocked is not None:
        raise userns.RemapError(
            f"--userns-remap {value}: the containers' root (uid {mapping.root_uid}) cannot pass through "
            f"{blocked} (mode {blocked.stat().st_mode & 0o7777:04o}); give it o+x or choose another --root")
    cache = root / "userns" / mapping.key / "layers"
    if layers == "copy":
        return Remap(mapping, userns.CHOWNED_COPIES, "--userns-layers copy", cache)
    works, reason = userns.probe_idmapped_overlay(root / "userns" / "probe", mapping)
    if not works and layers == "idmapped":
        raise userns.RemapError(f"--userns-layers idmapped: this kernel or filesystem refuses an idmapped layer "
                                f"under overlay: {reason}")
    return Remap(mapping, userns.IDMAPPED if works else userns.CHOWNED_COPIES, reason, cache)


async def start(config: Any, log: Any) -> Remap:
    """:func:`setup` for the daemon's config (``Config``), in a thread; a failure as a
    DockyardError, the fall-back from idmapped layers to chowned copies logged."""
    import trio

    from supervisor.errors import DockyardError

    try:
        remap = await trio.to_thread.run_sync(setup, config.userns_remap, config.root, config.subuid_file,
                                              config.subgid_file, config.userns_layers)
    except (userns.RemapError, OSError) as exc:
        raise DockyardError(f"cannot set up user namespaces: {exc}") from exc
    if remap.reason:
        log.warning("idmapped mounts are not available: image layers get a chowned copy per mapping",
                    reason=remap.reason)
    return remap


def prepare_create(remap: Remap, container: Any) -> None:
    """At create: record the mapping; the container's directory passable, its upper and work
    dirs the mapped root's (its / belongs to its root, as under docker)."""
    mapping = remap.for_spec(container.spec)
    container.id_mapping = mapping.to_map() if mapping is not None else None
    if mapping is None:
        return
    userns.open_directory(container.directory)
    for folder in (container.upper, container.work):
        userns.chown_tree_root(folder, mapping)


def container_mapping(remap: Remap, container: Any) -> IdMapping | None:
    """The mapping of a start, which must be the one the container was created with.

    Raises:
        StartError(125): it was created under another mapping (or none).
    """
    wanted = IdMapping.from_map(container.id_mapping) if container.id_mapping else None
    current = remap.for_spec(container.spec)
    if wanted != current:
        def describe(mapping: IdMapping | None) -> str:
            return f"--userns-remap {mapping.user}:{mapping.group} (root {mapping.key})" if mapping else "no user namespace"
        reason = (f"it was created with {describe(wanted)} and the daemon now gives {describe(current)}: "
                  "its files belong to the other; remove and create it again")
        raise StartError(f"cannot start container {container.name}: {reason}", 125, container=container.id,
                         reason=reason)
    return current


def launch_fields(remap: Remap, container: Any, lower: tuple[str, ...], etc_dir: str) -> dict[str, Any]:
    """The LaunchConfig fields of a remapped start (blocking: a first start under chowned
    copies copies the layers): the maps, the lower dirs (idmapped by the stage, or the
    copies), and the files pid 1 writes as the mapped root (the /etc files, the volumes'
    top directories) handed to it. {} for a container without a user namespace.

    Raises:
        StartError(125): another mapping than at create, or a file could not be given or copied.
    """
    mapping = container_mapping(remap, container)
    if mapping is None:
        return {}
    try:
        return _mapped_fields(remap, mapping, container, lower, etc_dir)
    except (OSError, userns.RemapError) as exc:
        reason = f"prepare its files for the user namespace: {exc}"
        raise StartError(f"cannot start container {container.name}: {reason}", 125, container=container.id,
                         reason=reason) from exc


def _mapped_fields(remap: Remap, mapping: IdMapping, container: Any, lower: tuple[str, ...],
                   etc_dir: str) -> dict[str, Any]:
    own_etc = etc_dir and Path(etc_dir).parent == Path(container.directory)
    if own_etc:  # not another container's (--network container:), which is that one's to own
        userns.open_directory(Path(etc_dir))
        for name in os.listdir(etc_dir):
            os.chown(os.path.join(etc_dir, name), mapping.root_uid, mapping.root_gid)
    for mount in container.mounts:
        if mount.get("type") == "volume":
            give_volume(Path(mount["source"]), mapping)
    fields: dict[str, Any] = {**mapping.launch_maps()}
    if remap.layers == userns.IDMAPPED:
        fields["idmap_layers"] = True
        return fields
    init_layer, *image_layers = lower
    if os.stat(init_layer).st_uid != mapping.root_uid:  # the container's own: shifted in place, once
        userns.shift_tree(Path(init_layer), mapping)
    assert remap.cache is not None
    fields["lower"] = (init_layer, *(userns.layer_copy(layer, mapping, remap.cache) for layer in image_layers))
    return fields


def give_volume(data: Path, mapping: IdMapping) -> None:
    """A named volume's top directory, still the host root's (made by the daemon), given to
    the mapped root, as docker makes its volumes under remap; what is in it is left alone."""
    try:
        info = data.stat()
    except FileNotFoundError:
        return
    if info.st_uid == 0 and info.st_gid == 0:
        os.chown(data, mapping.root_uid, mapping.root_gid)
