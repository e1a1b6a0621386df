"""The image store's ``index.json``, its single commit point: an OCI image index with one
manifest descriptor per tag (``org.opencontainers.image.ref.name``), the image's creation
time and its repo digests as annotations, and one descriptor without a ref name for a
dangling image. In memory it is ``{"images": {id: {manifest, created}}, "tags": {tag: id},
"digests": {repo@digest: id}}``: :func:`read` and :func:`write` convert between the two;
:func:`orphaned_parents` walks an image's parents in it, for ``rmi``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from logs.atomic import write_atomic
from supervisor.errors import DockyardError
from supervisor.images.layout import json_bytes
from supervisor.images.oci import CREATED, OCI_INDEX, OCI_MANIFEST, REF_NAME, REPO_DIGESTS


def read(path: Path, read_json: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """The index at ``path`` in memory (empty when there is none); ``read_json(digest)``
    gives a manifest or config blob.

    Raises:
        DockyardError: the file cannot be read, is not an OCI image index, or is in the
            single-layer format of an older dockyard.
    """
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {"images": {}, "tags": {}, "digests": {}}
    except (OSError, ValueError) as exc:
        raise DockyardError(f"image store: cannot read {path}: {exc}") from exc
    if isinstance(data, dict) and data.get("version") == 1 and "images" in data:
        raise DockyardError(
            f"image store: {path} is in the single-layer format of an older dockyard, which "
            f"kept no layer blobs to convert: move {path.parent} aside and import the images again"
        )
    if not isinstance(data, dict) or data.get("schemaVersion") != 2 or not isinstance(data.get("manifests"), list):
        raise DockyardError(f"image store: {path} is not an OCI image index")
    images: dict[str, dict[str, str]] = {}
    tags: dict[str, str] = {}
    digests: dict[str, str] = {}
    for descriptor in data["manifests"]:
        document = read_json(descriptor["digest"])
        image_id = document["config"]["digest"].removeprefix("sha256:")
        annotations = descriptor.get("annotations") or {}
        images.setdefault(image_id, {"manifest": descriptor["digest"], "created": annotations.get(CREATED, "")})
        if REF_NAME in annotations:
            tags[annotations[REF_NAME]] = image_id
        for digest_ref in annotations.get(REPO_DIGESTS, "").split():
            digests[digest_ref] = image_id
    return {"images": images, "tags": tags, "digests": digests}


def write(path: Path, index: dict[str, Any], blob_size: Callable[[str], int]) -> None:
    """Replace the index at ``path`` (durably) with ``index``; ``blob_size(digest)`` gives a
    manifest's size for its descriptor."""
    manifests = []
    for image_id, entry in index["images"].items():
        tags = [tag for tag, target in index["tags"].items() if target == image_id] or [None]
        size = blob_size(entry["manifest"])
        repo_digests = " ".join(ref for ref, target in index.get("digests", {}).items() if target == image_id)
        for tag in tags:
            annotations = {CREATED: entry["created"]}
            if repo_digests:
                annotations[REPO_DIGESTS] = repo_digests
            if tag is not None:
                annotations[REF_NAME] = tag
            manifests.append({"mediaType": OCI_MANIFEST, "digest": entry["manifest"], "size": size,
                              "annotations": annotations})
    # Tags in the order they were given: sort descriptors by the tag order.
    order = {tag: position for position, tag in enumerate(index["tags"])}
    manifests.sort(key=lambda d: order.get(d["annotations"].get(REF_NAME), len(order)))
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    write_atomic(path, json_bytes(document), durable=True, mode=0o644)


def orphaned_parents(index: dict[str, Any], image_id: str, history: Callable[[str], list[Any]],
                     users: Callable[[str], list[Any]]) -> list[str]:
    """The untagged parents the deleted image ``image_id`` leaves with no child, nearest first,
    as ``docker rmi`` deletes them with it: a build's step images. A parent is the image of
    ``index`` whose ``history(id)`` is the longest proper prefix of its child's; the walk stops
    at a parent with a tag, a repo digest, a container (``users``) or another child."""
    tagged = set(index["tags"].values()) | set(index.get("digests", {}).values())
    orphaned: list[str] = []
    child = history(image_id)
    while True:
        candidates = [(len(history(other)), other) for other in index["images"] if other not in orphaned
                      and 0 < len(history(other)) < len(child) and child[:len(history(other))] == history(other)]
        if not candidates:
            return orphaned
        length, parent = max(candidates)
        others = [other for other in index["images"] if other != parent and other not in orphaned
                  and len(history(other)) > length and history(other)[:length] == history(parent)]
        if parent in tagged or others or users(parent):
            return orphaned
        orphaned.append(parent)
        child = history(parent)
