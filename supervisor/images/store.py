"""The image store: layered, content-addressed images in an OCI image layout.

Layout (``<root>/images``, an OCI image layout plus dockyard's unpacked layers)::

    oci-layout                  {"imageLayoutVersion": "1.0.0"}
    index.json                  OCI image index: one manifest descriptor per tag, annotated
                                with org.opencontainers.image.ref.name = "name:tag" and
                                org.opencontainers.image.created; a dangling image has one
                                descriptor without a ref name. The single commit point
                                (read and written by supervisor/images/index.py).
    blobs/sha256/<hex>          manifests and configs (the manifests name each layer by its
                                uncompressed digest, the diff id; no layer blob is kept)
    layers/<chain-hex>/diff/    a layer unpacked once, in overlay notation (whiteouts are
                                0/0 devices, opaque dirs carry trusted.overlay.opaque=y),
                                shared read-only as an overlay lower dir by every container
                                of every image that has it: the only copy of its files
    layers/<chain-hex>/tar-split.gz  the layer tar's bytes around its files' content, from
                                which :meth:`ImageStore.open_layer` regenerates the exact tar
                                (supervisor/images/layerfiles.py, tarsplit.py)
    layers/<chain-hex>/layer.json  {"diff_id", "parent", "size", "tar_split", "compressed"?}
    tmp/                        stages of imports, loads and commits; layers being deleted

Tools that read OCI layouts (skopeo ``oci:<root>/images:name:tag``, umoci) read the index,
manifests and configs; the layer blobs are not there (``save`` or ``push`` regenerates
them). A store of an older dockyard (layer tars kept as blobs too) is migrated when it is
opened: each layer gets its tar-split records, checked, and its blob is deleted.

Ids
    An image's id is the sha256 of its config blob (docker's rule). ``import`` writes a
    config without a time, so importing the same tar with the same changes gives the same
    image; ``commit`` and ``load`` configs carry their own ``created``.

Atomicity
    Everything new is prepared in a :class:`~supervisor.images.layout.Stage` under ``tmp/``
    (blobs verified, layers unpacked, outside the lock). :meth:`ImageStore.commit` then,
    under the lock, renames into place what the store lacks, and replaces ``index.json``:
    an image exists when the index names it. A failure before that undoes the renames.
    After a crash, what the index does not reference (stages, blobs, layers) is removed
    when the store is next opened. One process per store; threads are safe.

References
    ``name[:tag]`` with docker's grammar (default tag ``latest``); :meth:`resolve` also
    takes a full id, ``sha256:<id>`` or a unique id prefix; as in docker, a tag wins over
    an id prefix. The grammar and the lookup are pure, in :mod:`~supervisor.images.references`;
    the records the store hands out (:class:`Image`, :class:`NewImage`) are in
    :mod:`~supervisor.images.image`. Both are re-exported here, where they lived before.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from logs.atomic import fsync_directory, write_atomic
from supervisor.errors import Conflict, DockyardError, ImageError, NotFound
from supervisor.images import index as index_file
from supervisor.images.fdwalk import WalkWarnings
from supervisor.images.image import Image, NewImage, rfc3339
from supervisor.images.layerfiles import migrate_layers, open_stream, read_meta
from supervisor.images.layout import Layer, Stage, chain_ids, remove_path
from supervisor.images.oci import CONFIG_KEYS, container_config, image_config, manifest
from supervisor.images.references import (  # noqa: F401 (re-exported: their home was here)
    MIN_ID_PREFIX,
    NAME,
    TAG,
    find_image,
    parse_digest_reference,
    parse_reference,
)
from supervisor.images.tarstream import BOMB_FLOOR, BOMB_RATIO
from supervisor.images.tarwrite import write_layer

__all__ = ["Image", "ImageStore", "NewImage", "parse_reference", "container_config", "image_config", "chain_ids",
           "CONFIG_KEYS"]


class ImageStore:
    """Images under ``root/images``; see the module docstring for layout and guarantees."""

    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time, bomb_ratio: int = BOMB_RATIO,
                 bomb_floor: int = BOMB_FLOOR, log: Any = None):
        self.dir = Path(root).absolute() / "images"
        self.blobs_dir = self.dir / "blobs" / "sha256"
        self.layers_dir = self.dir / "layers"
        self.tmp_dir = self.dir / "tmp"
        self._index_path = self.dir / "index.json"
        for directory in (self.blobs_dir, self.layers_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "oci-layout").exists():
            write_atomic(self.dir / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}', durable=True, mode=0o644)
        self._clock = clock
        self._bomb = {"bomb_ratio": bomb_ratio, "bomb_floor": bomb_floor}
        self._lock = threading.Lock()
        self._json_cache: dict[str, dict[str, Any]] = {}
        with self._lock:
            self._collect_garbage(self._read_index(), sweep_tmp=True)
            self.migration = migrate_layers(self.layers_dir, self.blob_path)
        if log is not None and (self.migration.migrated or self.migration.kept):
            log.info("image store: layers migrated to one copy on disk (their tar blobs deleted)",
                     migrated=self.migration.migrated, freed_bytes=self.migration.freed,
                     kept_blob=self.migration.kept)

    # --- queries --------------------------------------------------------------------

    def list(self) -> list[Image]:
        """All images, newest first (dangling ones included, with no repo tags)."""
        with self._lock:
            index = self._read_index()
            images = [self._image(index, image_id) for image_id in index["images"]]
        return sorted(images, key=lambda image: (image.created, image.id), reverse=True)

    def resolve(self, ref: str) -> Image:
        """An image by ``name[:tag]``, full id, ``sha256:<id>`` or unique id prefix.

        Raises:
            NotFound: no image matches (``no such image: <ref>``).
            Conflict: an id prefix matches several images.
            InvalidArgument: ``ref`` is neither a reference nor an id.
        """
        with self._lock:
            index = self._read_index()
            image_id, _ = find_image(index, ref)
            return self._image(index, image_id)

    def history(self, ref: str) -> list[dict[str, Any]]:
        """``docker history`` rows, newest first: {id, created, created_by, size, comment}.
        The row of the image's top layer carries the image id; the others ``<missing>``."""
        image = self.resolve(ref)
        history = [entry for entry in image.document.get("history") or [] if isinstance(entry, dict)]
        sizes = [self._layer_size(chain) for chain in chain_ids(list(image.diff_ids))]
        missing = len(sizes) - sum(1 for entry in history if not entry.get("empty_layer"))
        if missing > 0:  # e.g. imported layers, which have no history entry
            history = [{"created_by": ""} for _ in range(missing)] + history
        rows, layer = [], 0
        for entry in history:
            size = 0
            if not entry.get("empty_layer") and layer < len(sizes):
                size = sizes[layer]
                layer += 1
            rows.append({
                "id": "<missing>",
                "created": entry.get("created") or image.created,
                "created_by": entry.get("created_by", ""),
                "size": size,
                "comment": entry.get("comment", ""),
            })
        rows.reverse()
        if rows:
            rows[0]["id"] = image.id
        return rows

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / digest.removeprefix("sha256:")

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def layer_dir(self, chain_id: str) -> Path:
        return self.layers_dir / chain_id.removeprefix("sha256:") / "diff"

    def open_layer(self, chain_id: str) -> BinaryIO:
        """The exact uncompressed tar of a stored layer (its sha256 is the diff id), as a
        file object to read and close; regenerated from the unpacked files as it is read.

        Raises:
            NotFound: no such layer.
            ImageError: (while reading) its files were changed since it was stored.
        """
        directory = self.layers_dir / chain_id.removeprefix("sha256:")
        try:
            meta = read_meta(directory)
        except (OSError, ValueError):
            raise NotFound(f"no such layer: {chain_id}", layer=chain_id) from None
        return open_stream(directory, meta, self.blob_path(meta["diff_id"]))

    def layer_compressed(self, chain_id: str) -> dict[str, Any] | None:
        """The blob a registry had for a pulled layer, ``{"digest", "size", "mediaType"}``,
        or None (a layer imported, loaded uncompressed or committed)."""
        try:
            meta = read_meta(self.layers_dir / chain_id.removeprefix("sha256:"))
        except (OSError, ValueError):
            return None
        compressed = meta.get("compressed")
        return compressed if isinstance(compressed, dict) else None

    # --- staging and commit (the ingest API) --------------------------------------------

    def stage(self) -> Stage:
        """A new stage under tmp/: write blobs and unpack layers into it, then
        :meth:`commit` it (or close it to discard everything)."""
        return Stage(self.tmp_dir, self._find_layer, **self._bomb)

    def commit(self, stage: Stage, images: Iterable[NewImage]) -> list[Image]:
        """Make the staged images part of the store, all or nothing.

        Writes each image's manifest into the stage, then, under the lock, renames the
        blobs and layer directories the store lacks into place and replaces the index.

        Raises:
            ImageError: a layer is neither staged nor in the store.
        """
        prepared = []
        images = list(images)
        for new in images:
            config_blob = stage.write_bytes(new.config)
            manifest_blob = stage.write_bytes(
                manifest(config_blob.digest, config_blob.size, [(layer.diff_id, self._staged_size(stage, layer))
                                                                 for layer in new.layers])
            )
            prepared.append((config_blob.digest.removeprefix("sha256:"), manifest_blob, new.tags))
        with self._lock:
            # Checked under the lock: an rmi may have removed a layer the stage relied on.
            for new in images:
                for layer in new.layers:
                    if layer.chain_id not in stage.layers and self._find_layer(layer.chain_id) is None:
                        raise ImageError(f"cannot commit: layer {layer.chain_id} is neither staged nor in the store "
                                         "(removed meanwhile?); try again", reason="layer")
            index = self._read_index()
            moved: list[tuple[Path, Path]] = []
            try:
                for source in sorted(stage.blobs_dir.iterdir()):
                    target = self.blobs_dir / source.name
                    if not target.exists():
                        os.rename(source, target)
                        moved.append((target, source))
                for source in sorted(stage.layers_dir.iterdir()):
                    target = self.layers_dir / source.name
                    if not target.exists():
                        os.rename(source, target)
                        moved.append((target, source))
                fsync_directory(self.blobs_dir)
                fsync_directory(self.layers_dir)
                updated = copy.deepcopy(index)
                now = rfc3339(self._clock())
                for image_id, manifest_blob, tags in prepared:
                    entry = updated["images"].setdefault(image_id, {"manifest": manifest_blob.digest, "created": now})
                    entry["manifest"] = manifest_blob.digest
                    for tag in tags:
                        updated["tags"].pop(tag, None)
                        updated["tags"][tag] = image_id
                self._write_index(updated)  # the commit
            except BaseException:
                for target, source in reversed(moved):
                    os.rename(target, source)
                raise
            return [self._image(updated, image_id) for image_id, _, _ in prepared]

    # --- changes --------------------------------------------------------------------

    def import_tar(self, fileobj: BinaryIO, reference: str, *, changes: dict[str, Any] | None = None,
                   message: str = "") -> Image:
        """Import a root filesystem tar (plain, gzip, bzip2 or xz; a stream is fine) as a
        single-layer image tagged ``reference``. Blocking: the daemon runs it in a thread.

        As ``docker import``, the config and the layer's history entry carry the time of the
        import (so each import is a new image, sharing the layer), no command, and the
        comment ``message`` or ``Imported from -`` (docker's for a file or standard input).

        Raises:
            InvalidArgument: a bad reference or change (checked before reading the tar).
            ImageError: the tar is hostile, truncated or corrupt; the store is unchanged.
        """
        tag = parse_reference(reference)
        config = container_config(changes)
        with self.stage() as stage:
            layer = stage.add_layer(fileobj, parent=None, what=f"the import of {reference}")
            # The entry needs a time: OCI tools (umoci stat) fail on a history entry without one.
            now = rfc3339(self._clock())
            entry = {"created": now, "created_by": "", "comment": message or "Imported from -"}
            config_bytes = image_config([layer.diff_id], config, history=[entry], created=now)
            return self.commit(stage, [NewImage(config_bytes, (layer,), (tag,))])[0]

    def commit_container(self, upper: str, base_ref: str, *, reference: str | None = None,
                         config: dict[str, Any] | None = None, created_by: str = "", comment: str = "",
                         author: str = "", warnings: WalkWarnings | None = None,
                         owners: Any = None) -> Image:
        """A new image: the image ``base_ref`` plus the upper dir ``upper`` as a new layer.

        Args:
            config: the new image's container config (docker's names); default the base's.
            reference: ``name[:tag]`` to tag it with; none gives a dangling image.
            warnings: receives what changed in ``upper`` while it was read (a running container).
            owners: a remapped container's host ids to the layer's (``tarwrite.write_layer``).
        """
        tag = parse_reference(reference) if reference else None
        base = self.resolve(base_ref)
        with self.stage() as stage:
            tar_path = stage.dir / "commit.tar"
            with open(tar_path, "wb") as output:
                write_layer(upper, output, warnings, owners)
            parent = chain_ids(list(base.diff_ids))[-1] if base.diff_ids else None
            with open(tar_path, "rb") as source:
                layer = stage.add_layer(source, parent=parent, what=f"the commit of {upper}")
            tar_path.unlink()
            layers = tuple(self._find_layer(chain) for chain in chain_ids(list(base.diff_ids)))
            now = rfc3339(self._clock())
            entry = {"created": now, "created_by": created_by}
            if author:
                entry["author"] = author
            if comment:
                entry["comment"] = comment
            history = [*(base.document.get("history") or []), entry]
            config_bytes = image_config(
                [*base.diff_ids, layer.diff_id],
                config if config is not None else base.config,
                base=base.document,
                history=history,
                created=now,
                author=author,
            )
            return self.commit(stage, [NewImage(config_bytes, (*layers, layer), (tag,) if tag else ())])[0]

    def tag(self, ref: str, new_reference: str) -> Image:
        """Tag the image ``ref`` as ``new_reference``, moving the tag if another image had it."""
        tag = parse_reference(new_reference)
        with self._lock:
            index = self._read_index()
            image_id, _ = find_image(index, ref)
            updated = copy.deepcopy(index)
            updated["tags"].pop(tag, None)
            updated["tags"][tag] = image_id
            self._write_index(updated)
            return self._image(updated, image_id)

    def add_repo_digest(self, ref: str, repo_digest: str) -> Image:
        """Record that a registry knows the image ``ref`` as ``repo_digest``
        (``name@sha256:<hex>``, the manifest digest of a pull or a push); it then shows in
        ``inspect``'s RepoDigests and ``name@sha256:<hex>`` finds it. One image per digest."""
        digest_ref = parse_digest_reference(repo_digest)
        with self._lock:
            index = self._read_index()
            image_id, _ = find_image(index, ref)
            updated = copy.deepcopy(index)
            updated.setdefault("digests", {})
            updated["digests"].pop(digest_ref, None)
            updated["digests"][digest_ref] = image_id
            self._write_index(updated)
            return self._image(updated, image_id)

    def remove(self, ref: str, *, force: bool = False,
               users: Callable[[str], list[tuple[str, bool]]] = lambda image_id: [],
               prune: bool = True) -> list[dict[str, str]]:
        """``docker rmi``: untag, and delete the image once no tag is left, and with it (``prune``)
        each untagged parent it leaves with no child (:func:`~supervisor.images.index.orphaned_parents`).

        Args:
            force: remove every tag of an image named by id; untag an image that stopped
                containers use (it stays, dangling, while they need its layers).
            users: ``(container name, running)`` of the containers made from an image id.

        Returns:
            docker's report: ``[{"Untagged": "name:tag"}, ..., {"Deleted": "sha256:<id>"}]``.

        Raises:
            Conflict: ``ref`` is an id and the image has several tags (without force), or a
                container uses the image (a running one even with force).
        """
        with self._lock:
            index = self._read_index()
            image_id, via_tag = find_image(index, ref)
            tags = [tag for tag, target in index["tags"].items() if target == image_id]
            updated = copy.deepcopy(index)
            if via_tag is not None and len(tags) > 1:
                del updated["tags"][via_tag]
                self._write_index(updated)
                return [{"Untagged": via_tag}]
            if via_tag is None and len(tags) > 1 and not force:
                raise Conflict(
                    f"cannot remove image {ref}: it is referenced by several tags ({', '.join(tags)}); "
                    "use --force to remove them all",
                    image=image_id,
                )
            containers = users(image_id)
            running = [name for name, is_running in containers if is_running]
            if running or (containers and not force):
                names = ", ".join(name for name, _ in containers)
                why = "running container" if running else "container"
                hint = "" if running else "; stop and remove it first, or use --force"
                raise Conflict(
                    f"cannot remove image {ref}: it is used by {why} {names}{hint}", image=image_id,
                )
            for tag in tags:
                del updated["tags"][tag]
            report = [{"Untagged": tag} for tag in tags]
            if not containers:
                del updated["images"][image_id]
                updated["digests"] = {ref: target for ref, target in updated.get("digests", {}).items()
                                      if target != image_id}
                report.append({"Deleted": f"sha256:{image_id}"})
                for parent in index_file.orphaned_parents(updated, image_id, self._history, users) if prune else ():
                    del updated["images"][parent]
                    report.append({"Deleted": f"sha256:{parent}"})
            self._write_index(updated)
            self._collect_garbage(updated, sweep_tmp=False)
            return report

    # --- internals ----------------------------------------------------------------------

    def _history(self, image_id: str) -> list[Any]:
        return self._json(image_id).get("history") or []

    def _find_layer(self, chain_id: str) -> Layer | None:
        path = self.layers_dir / chain_id.removeprefix("sha256:") / "layer.json"
        try:
            meta = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        return Layer(meta["diff_id"], meta["size"], chain_id)

    def _layer_size(self, chain_id: str) -> int:
        layer = self._find_layer(chain_id)
        return layer.size if layer is not None else 0

    @staticmethod
    def _staged_size(stage: Stage, layer: Layer) -> int:
        return stage.layers[layer.chain_id].size if layer.chain_id in stage.layers else layer.size

    def _image(self, index: dict[str, Any], image_id: str) -> Image:
        document = self._json(image_id)
        diff_ids = list(document["rootfs"]["diff_ids"])
        chains = chain_ids(diff_ids)
        entry = index["images"][image_id]
        return Image(
            id=image_id,
            repo_tags=tuple(tag for tag, target in index["tags"].items() if target == image_id),
            repo_digests=tuple(ref for ref, target in index.get("digests", {}).items() if target == image_id),
            created=document.get("created") or entry["created"],
            size=sum(self._layer_size(chain) for chain in chains),
            config=copy.deepcopy(document.get("config") or {}),
            layers=tuple(str(self.layer_dir(chain)) for chain in reversed(chains)),
            diff_ids=tuple(diff_ids),
            manifest=entry["manifest"],
            document=copy.deepcopy(document),
        )

    def _json(self, digest: str) -> dict[str, Any]:
        digest = digest.removeprefix("sha256:")
        cached = self._json_cache.get(digest)
        if cached is None:
            path = self.blob_path(digest)
            try:
                cached = json.loads(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise DockyardError(f"image store: cannot read blob {digest}: {exc}") from exc
            self._json_cache[digest] = cached
        return cached

    def _read_index(self) -> dict[str, Any]:
        return index_file.read(self._index_path, self._json)

    def _write_index(self, index: dict[str, Any]) -> None:
        index_file.write(self._index_path, index, lambda digest: self.blob_path(digest).stat().st_size)

    def _collect_garbage(self, index: dict[str, Any], *, sweep_tmp: bool) -> None:
        """Remove blobs and layers the index does not reference (and, on open, tmp/)."""
        if sweep_tmp:
            for entry in self.tmp_dir.iterdir():
                remove_path(entry)
        live_blobs: set[str] = set()
        live_layers: set[str] = set()
        for image_id, entry in index["images"].items():
            document = self._json(entry["manifest"])
            live_blobs.add(entry["manifest"].removeprefix("sha256:"))
            live_blobs.add(image_id)
            live_blobs.update(layer["digest"].removeprefix("sha256:") for layer in document["layers"])
            diff_ids = self._json(image_id)["rootfs"]["diff_ids"]
            live_layers.update(chain.removeprefix("sha256:") for chain in chain_ids(diff_ids))
        for path in self.blobs_dir.iterdir():
            if path.name not in live_blobs:
                self._json_cache.pop(path.name, None)
                remove_path(path)
        for path in self.layers_dir.iterdir():
            if path.name not in live_layers:
                # Renamed away first, so a half-deleted layer is never under layers/. A
                # failure here leaves garbage for the next open, never a broken image.
                doomed = self.tmp_dir / f"delete-{uuid.uuid4().hex}"
                try:
                    os.rename(path, doomed)
                except OSError:
                    continue
                remove_path(doomed)
