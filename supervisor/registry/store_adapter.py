"""The registry client's view of dockyard's layered image store (supervisor/images/).

A pull lands in a directory inside one of the store's stages; :meth:`_Receiver.ingest`
then hands its verified blobs to the stage's ``add_layer`` (which decompresses, unpacks
and checks each layer's diff id against the config) and commits the image with
``ImageStore.commit``: all or nothing. Layers the store has are found by chain id and
were never downloaded. Push reads a layout of its own in the store's ``tmp/``
(:mod:`~supervisor.registry.pushlayout`: the layers gzip-compressed), removed by
:meth:`ImageStoreAdapter.release` when the push ends.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from supervisor.errors import ImageError
from supervisor.registry.layout import LayoutImage
from supervisor.registry.manifest import OCI_MANIFEST, Descriptor


class _Receiver:
    def __init__(self, store: Any, stage: Any):
        self.store = store
        self.stage = stage
        self.dir = Path(stage.dir) / "pull"

    def ingest(self, result: Any) -> dict[str, Any]:
        from supervisor.images.oci import parse_config
        from supervisor.images.store import NewImage

        what = f"image {result.reference.familiar()} from {result.reference.registry}"
        config = result.blob_path(result.config.digest).read_bytes()
        parse_config(config, what)
        layers = []
        parent = None
        for descriptor, diff_id, chain_id in zip(result.layers, result.diff_ids, result.chain_ids):
            if descriptor.digest in result.fetched:
                with open(result.blob_path(descriptor.digest), "rb") as source:
                    layer = self.stage.add_layer(source, parent=parent, diff_id=diff_id, digest=descriptor.digest,
                                                 size=descriptor.size, what=f"{what}: layer {descriptor.digest}")
            else:
                layer = self.stage.find_layer(chain_id)
                if layer is None:  # removed since the pull looked: rare, and a new pull fixes it
                    raise ImageError(f"cannot store {what}: layer {chain_id} left the store during the pull; "
                                     "pull again", reason="layer")
            layers.append(layer)
            parent = layer.chain_id
        tags = (result.reference.familiar(),) if result.reference.tag and not result.reference.digest else ()
        image = self.store.commit(self.stage, [NewImage(config, tuple(layers), tags)])[0]
        return {"id": image.id, "repo_tags": list(image.repo_tags), "created": image.created, "size": image.size}


class ImageStoreAdapter:
    """:class:`~supervisor.registry.service.RegistryStore` over
    :class:`supervisor.images.store.ImageStore`."""

    def __init__(self, store: Any):
        if not hasattr(store, "stage"):
            raise ImageError("pull and push need the layered image store (supervisor/images with stages)")
        self.store = store

    def has_layer(self, chain_id: str) -> bool:
        return self.store.layer_dir(chain_id).is_dir()

    @contextmanager
    def receive(self) -> Iterator[_Receiver]:
        with self.store.stage() as stage:
            yield _Receiver(self.store, stage)

    def layout_image(self, reference: str) -> LayoutImage:
        image = self.store.resolve(reference)
        size = self.store.blob_path(image.manifest).stat().st_size
        return LayoutImage(Path(self.store.dir), Descriptor(OCI_MANIFEST, image.manifest, size))

    def push_layout(self, reference: str, records: Any) -> LayoutImage:
        from supervisor.registry.pushlayout import PushLayout

        image = self.store.resolve(reference)
        directory = Path(self.store.tmp_dir) / f"push-{uuid.uuid4().hex}"
        try:
            return PushLayout(directory, records, self.store.blob_path).build(image.manifest)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def release(self, source: LayoutImage) -> None:
        if Path(source.root).name.startswith("push-"):
            shutil.rmtree(source.root, ignore_errors=True)

    def add_repo_digest(self, reference: str, repo_digest: str) -> None:
        self.store.add_repo_digest(reference, repo_digest)
