"""An image as the rest of dockyard sees it (:class:`Image`), and one being added to the
store (:class:`NewImage`).

Apart from :mod:`~supervisor.images.store` because they are plain records that the
handlers, the archive and the registry client pass around and shape for ``inspect``,
without the store's files or lock.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from supervisor.images.layout import Layer


@dataclass(frozen=True)
class Image:
    """An image as the rest of dockyard sees it.

    Attributes:
        id: 64 hex digits, the sha256 of the config blob.
        repo_tags: ``"name:tag"`` references, oldest first; empty for a dangling image.
        created: RFC 3339 UTC time (the config's, else when the store first had it).
        size: bytes of the uncompressed layer tars.
        config: the container config (docker's names: Env, Cmd, Entrypoint, WorkingDir,
            User, ...); a copy, free to change.
        layers: absolute paths of the read-only layer directories, top first (the order of
            overlay's ``lowerdir``).
        diff_ids: ``"sha256:<hex>"`` of each layer tar, bottom first (OCI ``rootfs.diff_ids``).
        manifest: digest of the image's manifest in the store.
        repo_digests: ``"name@sha256:<hex>"``: the manifest digest a registry knows the image
            by, recorded at pull and push (``inspect``'s RepoDigests).
        document: the whole config document (history, author, architecture, ...).
    """

    id: str
    repo_tags: tuple[str, ...]
    created: str
    size: int
    config: dict[str, Any]
    layers: tuple[str, ...]
    diff_ids: tuple[str, ...] = field(default=())
    manifest: str = ""
    repo_digests: tuple[str, ...] = ()
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_inspect(self) -> dict[str, Any]:
        """The image as ``docker image inspect`` shapes it."""
        return {
            "Id": f"sha256:{self.id}",
            "RepoTags": list(self.repo_tags),
            "RepoDigests": list(self.repo_digests),
            "Parent": "",
            "Comment": _last_comment(self.document),
            "Created": self.created,
            "Author": self.document.get("author", ""),
            "Architecture": self.document.get("architecture", ""),
            "Os": self.document.get("os", "linux"),
            **({"Variant": self.document["variant"]} if self.document.get("variant") else {}),
            "Size": self.size,
            "Config": copy.deepcopy(self.config),
            "RootFS": {"Type": "layers", "Layers": list(self.diff_ids)},
            "GraphDriver": {"Name": "overlay", "Data": {"LowerDir": ":".join(self.layers)}},
            "Metadata": {"ManifestDigest": self.manifest},
        }


@dataclass(frozen=True)
class NewImage:
    """An image prepared in a stage, for :meth:`ImageStore.commit`.

    Attributes:
        config: the config blob's exact bytes.
        layers: the image's layers, bottom first (from :meth:`Stage.add_layer`).
        tags: references to point at it (``name:tag``, parsed), moved from other images.
    """

    config: bytes
    layers: tuple[Layer, ...]
    tags: tuple[str, ...] = ()


def rfc3339(timestamp: float) -> str:
    """A Unix time as the RFC 3339 UTC text the store and OCI configs carry."""
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _last_comment(document: dict[str, Any]) -> str:
    history = document.get("history") or []
    return (history[-1].get("comment") or "") if history and isinstance(history[-1], dict) else ""
