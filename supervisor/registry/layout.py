"""The OCI image layout: what a pull writes and what a push reads. Plain files, no HTTP.

A pull fills a directory the caller gives it (a staging directory of the image store)::

    <dir>/oci-layout               {"imageLayoutVersion": "1.0.0"}
    <dir>/blobs/sha256/<hex>       the manifest, the config, and each layer fetched
    <dir>/index.json               one descriptor: the image manifest of this platform,
                                   annotated with its reference; written LAST

``index.json`` is the commit point: a directory without it holds no image. Every blob
is written to ``blobs/sha256/.partial-<hex>-*``, verified (digest and size), and only then
renamed to its final name, so a blob under its digest has always been verified. Layers
the store already has (``has_blob``) are not in the directory: the manifest names them,
the store holds them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

from logs.atomic import write_atomic
from supervisor.registry.errors import NotFoundError, ProtocolError
from supervisor.registry.manifest import OCI_INDEX, Descriptor, _descriptor

LAYOUT_VERSION = "1.0.0"
REF_NAME = "org.opencontainers.image.ref.name"
#: The full reference (containerd's annotation), beside OCI's ref.name which holds the tag.
IMAGE_NAME = "io.containerd.image.name"


def blob_path(root: Path, digest: str) -> Path:
    algorithm, _, hex_digest = digest.partition(":")
    return Path(root) / "blobs" / algorithm / hex_digest


def partial_path(root: Path, digest: str) -> Path:
    """A fresh, unique temporary name beside the blob's final one."""
    algorithm, _, hex_digest = digest.partition(":")
    directory = Path(root) / "blobs" / algorithm
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".partial-{hex_digest[:16]}-", dir=directory)
    os.close(fd)
    return Path(name)


def remove_partials(root: Path) -> int:
    """Delete every temporary blob file under ``root`` (after a failure); returns how many."""
    removed = 0
    for path in (Path(root) / "blobs").glob("*/.partial-*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def write_json_atomic(path: Path, document: dict) -> None:
    """Atomic (rename), not durable: a pull's layout is a staging area, and the store syncs
    what it takes from it when it commits. An fsync here would also flush every blob just
    written (ext4 commits the journal), costing a tenth of a second per pull."""
    write_atomic(path, json.dumps(document, separators=(",", ":")).encode(), durable=False, mode=0o644)


def init_layout(root: Path) -> None:
    root = Path(root)
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    if not (root / "oci-layout").exists():
        write_json_atomic(root / "oci-layout", {"imageLayoutVersion": LAYOUT_VERSION})


def write_blob_bytes(root: Path, digest: str, data: bytes) -> Path:
    """A small blob (a manifest, a config) already verified by the caller."""
    final = blob_path(root, digest)
    final.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(final, data, durable=False, mode=0o644)
    return final


def write_index(root: Path, descriptors: list[Descriptor]) -> None:
    write_json_atomic(Path(root) / "index.json", {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [d.to_json() for d in descriptors],
    })


@dataclass(frozen=True)
class LayoutImage:
    """One entry of an OCI layout's index.json: what a push sends."""

    root: Path
    descriptor: Descriptor
    #: ``materialise(digest)`` writes a blob the layout names but does not hold yet (a
    #: push's compressed layer, made only when the registry lacks it); None: all are there.
    materialise: Callable[[str], None] | None = field(default=None, compare=False)
    #: ``stream(digest)``: such a blob compressed while it is uploaded (a stream as
    #: :class:`StreamedImage` opens), or None to use :attr:`materialise`; None: never.
    stream: Callable[[str], Any] | None = field(default=None, compare=False)

    def blob_path(self, digest: str) -> Path:
        return blob_path(self.root, digest)


@dataclass(frozen=True)
class StreamedImage:
    """A push whose ``pending`` layers are compressed while they are uploaded, their
    compressed digest known only at the end: ``open(name)`` gives a stream of a pending
    layer's compressed bytes (``read()`` the next piece, b"" at the end, then ``digest`` and
    ``size``), and ``build()``, once every pending layer is sent, the :class:`LayoutImage`
    whose manifest names them. ``known``: digests of the other blobs (for auth scopes)."""

    root: Path
    pending: tuple[str, ...]
    known: tuple[str, ...]
    open: Callable[[str], Any] = field(compare=False)
    build: Callable[[], LayoutImage] = field(compare=False)


def read_index(root: Path) -> list[Descriptor]:
    root = Path(root)
    where = f"OCI layout {root}"
    try:
        document = json.loads((root / "index.json").read_bytes())
    except FileNotFoundError:
        raise NotFoundError(f"{where} has no index.json", object=str(root)) from None
    except (OSError, ValueError) as exc:
        raise ProtocolError(f"cannot read {where}/index.json: {exc}", object=str(root)) from None
    manifests = document.get("manifests") if isinstance(document, dict) else None
    if not isinstance(manifests, list):
        raise ProtocolError(f"{where}: index.json has no manifests list", object=str(root))
    return [_descriptor(item, f"index.json manifests[{i}]", where) for i, item in enumerate(manifests)]


def find_image(root: Path, name: str | None = None) -> LayoutImage:
    """The entry of ``root``'s index.json whose ref.name (or containerd image name) is
    ``name``; without a name, the only entry.

    Raises:
        NotFoundError: no such entry, or several and no name to choose.
    """
    descriptors = read_index(root)
    if name is None:
        if len(descriptors) != 1:
            raise NotFoundError(f"OCI layout {root} has {len(descriptors)} images: name one", object=str(root))
        return LayoutImage(Path(root), descriptors[0])
    for descriptor in descriptors:
        if name in (descriptor.annotations.get(REF_NAME), descriptor.annotations.get(IMAGE_NAME)):
            return LayoutImage(Path(root), descriptor)
    raise NotFoundError(f"OCI layout {root} has no image named {name!r}", object=name)
