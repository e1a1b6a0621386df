"""Manifests, indexes and descriptors: media types, parsing with validation, and the choice
of this machine's entry from a multi-platform index. Pure: bytes in, frozen objects out.

Accepted (the ``Accept`` header of a manifest GET lists them in this order):

    application/vnd.oci.image.index.v1+json                      index   (multi-platform)
    application/vnd.docker.distribution.manifest.list.v2+json    index   (docker's manifest list)
    application/vnd.oci.image.manifest.v1+json                   manifest
    application/vnd.docker.distribution.manifest.v2+json         manifest (docker schema 2)

Docker schema 1 (signed, deprecated since 2017) is refused with a clear error.
"""

from __future__ import annotations

import hashlib
import json
import platform as _platform
from dataclasses import dataclass, field
from typing import Any

from supervisor.registry.errors import ProtocolError, ReferenceError
from supervisor.registry.reference import check_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES))

#: docker's foreign layers (Windows base layers): never on a registry we talk to; refused.
FOREIGN_LAYER_TYPES = (
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
)

#: Manifests bigger than this are refused before they are read in full (docker: 4 MiB).
MANIFEST_LIMIT = 4 * 1024 * 1024


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/amd64``, ``linux/arm64/v8``, ``linux/arm/v7``."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: want OS/ARCH[/VARIANT]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
             "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
             "riscv64": "riscv64"}
_VARIANTS = {"armv7l": "v7", "armv6l": "v6", "aarch64": "v8"}


def host_platform() -> Platform:
    machine = _platform.machine()
    return Platform("linux", _MACHINES.get(machine, machine), _VARIANTS.get(machine))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            document["platform"] = {"os": self.platform.os, "architecture": self.platform.architecture}
            if self.platform.variant:
                document["platform"]["variant"] = self.platform.variant
        if self.annotations:
            document["annotations"] = dict(self.annotations)
        return document


@dataclass(frozen=True)
class Manifest:
    """An image manifest (OCI or docker schema 2): one config and its layers."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        return (self.config, *self.layers)


@dataclass(frozen=True)
class Index:
    """A multi-platform index (OCI index or docker manifest list)."""

    media_type: str
    manifests: tuple[Descriptor, ...]


def _descriptor(item: Any, where: str, object: str) -> Descriptor:
    if not isinstance(item, dict):
        raise ProtocolError(f"{object}: {where} is not an object", object=object)
    media_type, digest, size = item.get("mediaType"), item.get("digest"), item.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ProtocolError(f"{object}: {where} has no mediaType", object=object)
    try:
        check_digest(digest, f"digest of {where}")
    except ReferenceError as exc:
        raise ProtocolError(f"{object}: {exc}", object=object) from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(f"{object}: {where} has an invalid size {size!r}", object=object)
    platform = None
    if isinstance(item.get("platform"), dict):
        p = item["platform"]
        if isinstance(p.get("os"), str) and isinstance(p.get("architecture"), str):
            platform = Platform(p["os"], p["architecture"], p.get("variant") if isinstance(p.get("variant"), str) else None)
    annotations = item.get("annotations") if isinstance(item.get("annotations"), dict) else {}
    return Descriptor(media_type, digest, size, platform, annotations)


def parse(data: bytes, content_type: str | None, object: str) -> Manifest | Index:
    """Parse a manifest or index. ``content_type`` is the registry's Content-Type header
    (or a descriptor's mediaType); the document's own ``mediaType`` wins when present.

    Raises:
        ProtocolError: not JSON, schema 1, an unknown media type or a malformed field.
    """
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{object}: the manifest is not valid JSON ({exc})", object=object) from None
    if not isinstance(document, dict):
        raise ProtocolError(f"{object}: the manifest is not a JSON object", object=object)
    content_type = (content_type or "").split(";")[0].strip()
    media_type = document.get("mediaType") or content_type
    if document.get("schemaVersion") == 1 or media_type in DOCKER_SCHEMA1:
        raise ProtocolError(f"{object}: docker schema 1 manifests are not supported (push it again with a current client)", object=object)
    if document.get("schemaVersion") != 2:
        raise ProtocolError(f"{object}: unsupported schemaVersion {document.get('schemaVersion')!r}", object=object)
    if not media_type:
        # OCI allows mediaType to be absent: tell by shape.
        media_type = OCI_INDEX if "manifests" in document else OCI_MANIFEST
    if media_type in INDEX_TYPES:
        items = document.get("manifests")
        if not isinstance(items, list):
            raise ProtocolError(f"{object}: the index has no manifests list", object=object)
        return Index(media_type, tuple(_descriptor(m, f"manifests[{i}]", object) for i, m in enumerate(items)))
    if media_type in MANIFEST_TYPES:
        layers = document.get("layers")
        if not isinstance(layers, list):
            raise ProtocolError(f"{object}: the manifest has no layers list", object=object)
        parsed = tuple(_descriptor(layer, f"layers[{i}]", object) for i, layer in enumerate(layers))
        for layer in parsed:
            if layer.media_type in FOREIGN_LAYER_TYPES:
                raise ProtocolError(f"{object}: layer {layer.digest} is a foreign (non-distributable) layer", object=object)
        return Manifest(media_type, _descriptor(document.get("config"), "config", object), parsed)
    raise ProtocolError(f"{object}: unsupported manifest media type {media_type!r}", object=object)


def select_platform(index: Index, want: Platform, object: str) -> Descriptor:
    """The index entry for ``want``, as containerd matches: os and architecture equal; a
    variant, when both name one, equal (an entry without a variant matches any). Entries
    that are not image manifests (attestations, ``unknown/unknown``) never match.

    Raises:
        ProtocolError: no entry fits; the message lists the platforms the index has.
    """
    candidates = [d for d in index.manifests if d.media_type in MANIFEST_TYPES and d.platform is not None]
    exact = [d for d in candidates if d.platform.os == want.os and d.platform.architecture == want.architecture]
    if want.variant:
        same_variant = [d for d in exact if d.platform.variant == want.variant]
        loose = [d for d in exact if d.platform.variant is None]
        exact = same_variant or loose
    if exact:
        return exact[0]
    have = ", ".join(sorted({str(d.platform) for d in candidates})) or "none"
    raise ProtocolError(f"{object}: no image for platform {want} in the index (it has: {have})", object=object)
