"""``save`` and ``load``: image archives that podman, docker and skopeo read and write.

What ``save`` writes (one tar, the shape of ``docker save`` since docker 25)::

    oci-layout                 {"imageLayoutVersion": "1.0.0"}
    index.json                 an OCI index: one manifest per saved tag (or image), annotated
                               with io.containerd.image.name (the full reference) and
                               org.opencontainers.image.ref.name (the same, name:tag)
    blobs/sha256/<hex>         manifests, configs and layers (uncompressed tars)
    manifest.json              docker's: [{"Config", "RepoTags", "Layers"}], paths into blobs/

so it is at once an ``oci-archive`` (skopeo, podman) and a ``docker-archive`` (docker load,
podman load).

What ``load`` reads: a docker-archive (``manifest.json``, from ``docker save``, ``podman
save``, ``skopeo copy ... docker-archive:``; old ``<id>/layer.tar`` or new ``blobs/`` paths)
or an oci-archive (``index.json``, from ``podman save --format oci-archive`` or skopeo),
whole-archive gzip, bzip2, xz, zstd or none, layers compressed (gzip or zstd: ``skopeo copy
--dest-compress-format zstd ... oci-archive:``) or not. Every blob is
checked against its digest and size, every layer against its config's diff id; names are
only looked up, never extracted, so a hostile member name cannot write anywhere. Layers
are unpacked by :mod:`supervisor.images.tarsafe` into a stage; the store takes everything
in one commit, or nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logs.atomic import atomic_file
from supervisor.errors import ImageError, InvalidArgument
from supervisor.images.layout import CHUNK, DIGEST, Stage, canonical_json, chain_ids
from supervisor.images.oci import (
    CONTAINERD_NAME,
    INDEX_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
    host_architecture,
    parse_config,
    parse_manifest,
)
from supervisor.images.store import Image, ImageStore, NewImage, parse_reference
from supervisor.images.tarsafe import decompressed

MAX_DOCUMENT = 16 << 20  # a manifest, config or index larger than this is refused


# --- save -----------------------------------------------------------------------------------


def save(store: ImageStore, refs: list[str], output: Path) -> list[str]:
    """Write the images ``refs`` to the archive ``output`` (replaced atomically).

    A reference by tag saves that tag; by id, the image without a tag (as docker).

    Returns:
        The saved tags and ids.
    """
    if not refs:
        raise InvalidArgument("save: name at least one image")
    chosen: list[tuple[Image, str | None]] = []
    for ref in refs:
        image = store.resolve(ref)
        tag = None
        try:
            parsed = parse_reference(ref)
            tag = parsed if parsed in image.repo_tags else None
        except InvalidArgument:
            pass
        if all(not (image.id == other.id and tag == other_tag) for other, other_tag in chosen):
            chosen.append((image, tag))
    try:
        with atomic_file(output, durable=False, mode=0o644) as stream, \
                tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            written: set[str] = set()
            index_manifests, docker_manifest = [], []
            for image, tag in chosen:
                manifest_bytes = store.read_blob(image.manifest)
                manifest = json.loads(manifest_bytes)
                for digest in [image.manifest, manifest["config"]["digest"]]:
                    if digest not in written:
                        _add_file(tar, f"blobs/sha256/{digest.removeprefix('sha256:')}", store.blob_path(digest))
                        written.add(digest)
                # Layers are regenerated from the unpacked files (the store keeps no layer tar).
                for layer, chain in zip(manifest["layers"], chain_ids(list(image.diff_ids))):
                    if layer["digest"] not in written:
                        with store.open_layer(chain) as stream:
                            _add_stream(tar, f"blobs/sha256/{layer['digest'].removeprefix('sha256:')}",
                                        layer["size"], stream)
                        written.add(layer["digest"])
                descriptor: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": image.manifest,
                                              "size": len(manifest_bytes)}
                if tag:
                    descriptor["annotations"] = {CONTAINERD_NAME: tag, REF_NAME: tag}
                index_manifests.append(descriptor)
                docker_manifest.append({
                    "Config": f"blobs/sha256/{image.id}",
                    "RepoTags": [tag] if tag else None,
                    "Layers": [f"blobs/sha256/{l['digest'].removeprefix('sha256:')}" for l in manifest["layers"]],
                })
            _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            _add_bytes(tar, "index.json", canonical_json(
                {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index_manifests}))
            _add_bytes(tar, "manifest.json", json.dumps(docker_manifest).encode())
    except OSError as exc:
        if exc.filename != str(output):  # the store, not the output
            raise
        raise InvalidArgument(f"cannot save to {output}: {exc.strerror}", path=str(output)) from None
    return [tag or f"sha256:{image.id}" for image, tag in chosen]


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    info = tarfile.TarInfo(name)
    info.mode = 0o444
    with open(path, "rb") as source:
        info.size = os.fstat(source.fileno()).st_size
        tar.addfile(info, source)


def _add_stream(tar: tarfile.TarFile, name: str, size: int, stream: Any) -> None:
    info = tarfile.TarInfo(name)
    info.mode = 0o444
    info.size = size
    tar.addfile(info, stream)
    if stream.read(1):  # also runs the stream's final check (its digest) once all is read
        raise ImageError(f"cannot save {name}: the layer is longer than its recorded {size} bytes", reason="size")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.mode = 0o444
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


# --- load -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedImage:
    """An image a load stored, and the tags its archive named: what ``docker load`` reports
    (``image.repo_tags`` also has the tags the image already had in the store)."""

    image: Image
    tags: tuple[str, ...]


def load(store: ImageStore, source: Path) -> list[LoadedImage]:
    """Load every image of the archive at ``source`` into the store, all or nothing.

    Returns:
        The loaded images, each with the tags the archive gave it.

    Raises:
        ImageError: the archive is not an image archive, or is corrupt, truncated, hostile
            or does not match its digests; the store is unchanged.
    """
    what = f"archive {source}"
    with store.stage() as stage:
        plain = _plain_archive(source, stage, what)
        try:
            tar = tarfile.open(plain, "r:", encoding="utf-8", errors="surrogateescape")
        except (tarfile.TarError, OSError) as exc:
            raise ImageError(f"cannot load {what}: not a tar archive ({exc})", reason="format") from exc
        with tar:
            members = _members(tar, what)
            if "manifest.json" in members:
                images = _load_docker(tar, members, stage, what)
            elif "index.json" in members:
                images = _load_oci(tar, members, stage, what)
            else:
                raise ImageError(f"cannot load {what}: it has neither manifest.json (docker-archive) nor "
                                 "index.json (oci-archive)", reason="format")
            if not images:
                raise ImageError(f"cannot load {what}: it holds no image", reason="format")
            return [LoadedImage(image, new.tags) for image, new in zip(store.commit(stage, images), images)]


def _plain_archive(source: Path, stage: Stage, what: str) -> Path:
    """The archive as an uncompressed tar file that can be read at random."""
    try:
        stream = open(source, "rb")
    except OSError as exc:
        raise InvalidArgument(f"cannot load {source}: {exc.strerror}", path=str(source)) from exc
    with stream:
        magic = stream.read(6)
        stream.seek(0)
        if not magic.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")):
            return source
        plain = stage.dir / "archive.tar"
        reader = decompressed(stream, **stage.bomb)
        try:
            with open(plain, "wb") as target:
                while chunk := reader.read(CHUNK):
                    target.write(chunk)
        except ImageError as exc:
            raise ImageError(f"cannot load {what}: {exc.details.get('reason', exc.message)}",
                             reason=exc.details.get("reason", "")) from exc
        except OSError as exc:
            raise ImageError(f"cannot load {what}: {exc.strerror or exc}", reason=str(exc)) from exc
    return plain


def _members(tar: tarfile.TarFile, what: str) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    try:
        for member in tar:
            name = posixpath.normpath(member.name.lstrip("/"))
            if member.isreg() or member.islnk():
                members[name] = member
    except tarfile.TarError as exc:
        raise ImageError(f"cannot load {what}: {exc} (truncated or corrupt)", reason="corrupt") from exc
    return members


class _Member:
    """A member's content as a stream; a read past the archive's end is an ImageError."""

    def __init__(self, tar: tarfile.TarFile, member: tarfile.TarInfo, what: str):
        try:
            self._stream = tar.extractfile(member)
        except (tarfile.TarError, KeyError) as exc:
            raise ImageError(f"cannot load {what}: member {member.name!r}: {exc}", member=member.name,
                             reason=str(exc)) from exc
        self._member = member
        self._what = what

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            assert self._stream is not None
            return self._stream.read(size)
        except (tarfile.TarError, OSError) as exc:
            raise ImageError(f"cannot load {self._what}: member {self._member.name!r} is truncated ({exc})",
                             member=self._member.name, reason="truncated") from exc


def _document(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str, what: str,
              digest: str | None = None, size: int | None = None) -> bytes:
    member = members.get(posixpath.normpath(name.lstrip("/")))
    if member is None:
        raise ImageError(f"cannot load {what}: {name} is missing from the archive", member=name, reason="missing")
    if member.size > MAX_DOCUMENT:
        raise ImageError(f"cannot load {what}: {name} is too large for a JSON document", member=name, reason="size")
    data = _Member(tar, member, what).read()
    if size is not None and len(data) != size:
        raise ImageError(f"cannot load {what}: {name} has {len(data)} bytes, its descriptor says {size}",
                         member=name, reason="size")
    if digest is not None:
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise ImageError(f"cannot load {what}: {name} has digest {actual}, not {digest}", member=name,
                             reason="digest")
    return data


def _digest_of_path(name: str) -> str | None:
    """``blobs/sha256/<hex>`` or ``<hex>.json`` names carry the content's digest."""
    base = posixpath.basename(name)
    candidate = "sha256:" + base.removesuffix(".json")
    if DIGEST.match(candidate) and (name.startswith("blobs/sha256/") or base.endswith(".json")):
        return candidate
    return None


def _json(data: bytes, name: str, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ImageError(f"cannot load {what}: {name} is not JSON: {exc}", member=name, reason="json") from None


def _tags(names: list[str], what: str) -> tuple[str, ...]:
    tags = []
    for name in names:
        try:
            tags.append(parse_reference(name))
        except InvalidArgument as exc:
            raise ImageError(f"cannot load {what}: {exc.message}", reason="reference") from exc
    return tuple(tags)


def _layers(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], stage: Stage, what: str,
            diff_ids: list[str], paths: list[str], descriptors: list[dict[str, Any]] | None) -> tuple:
    if len(paths) != len(diff_ids):
        raise ImageError(f"cannot load {what}: {len(paths)} layers, but the config names {len(diff_ids)}",
                         reason="layers")
    layers = []
    parent = None
    for position, (path, diff_id) in enumerate(zip(paths, diff_ids)):
        chain = chain_ids([parent, diff_id])[-1] if parent else diff_id
        member = members.get(posixpath.normpath(path.lstrip("/")))
        descriptor = descriptors[position] if descriptors else {}
        if member is None:
            layer = stage.find_layer(chain)  # docker save leaves out nothing, but tolerate it
            if layer is None:
                raise ImageError(f"cannot load {what}: layer {path} is missing from the archive", member=path,
                                 reason="missing")
        else:
            layer = stage.add_layer(
                _Member(tar, member, what), parent=parent, diff_id=diff_id,
                digest=descriptor.get("digest") or _digest_of_path(path), size=descriptor.get("size"),
                what=f"{what}: layer {path}",
            )
        layers.append(layer)
        parent = layer.chain_id
    return tuple(layers)


def _load_docker(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], stage: Stage, what: str) -> list[NewImage]:
    entries = _json(_document(tar, members, "manifest.json", what), "manifest.json", what)
    if not isinstance(entries, list):
        raise ImageError(f"cannot load {what}: manifest.json is not a list", reason="manifest")
    images = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list) or not all(isinstance(l, str) for l in entry["Layers"]):
            raise ImageError(f"cannot load {what}: a manifest.json entry lacks Config or Layers", reason="manifest")
        config_name = entry["Config"]
        config_bytes = _document(tar, members, config_name, what, digest=_digest_of_path(config_name))
        config = parse_config(config_bytes, f"{what}: {config_name}")
        layers = _layers(tar, members, stage, what, config["rootfs"]["diff_ids"], entry["Layers"], None)
        images.append(NewImage(config_bytes, layers, _tags(entry.get("RepoTags") or [], what)))
    return images


def _load_oci(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], stage: Stage, what: str) -> list[NewImage]:
    index = _json(_document(tar, members, "index.json", what), "index.json", what)
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ImageError(f"cannot load {what}: index.json is not an OCI image index", reason="index")
    images = []
    for descriptor, names in _manifests(tar, members, index, what, depth=0):
        name = f"blobs/sha256/{descriptor['digest'].removeprefix('sha256:')}"
        manifest = parse_manifest(
            _document(tar, members, name, what, digest=descriptor["digest"], size=descriptor.get("size")),
            f"{what}: manifest {descriptor['digest']}",
        )
        config_descriptor = manifest["config"]
        config_name = f"blobs/sha256/{config_descriptor['digest'].removeprefix('sha256:')}"
        config_bytes = _document(tar, members, config_name, what, digest=config_descriptor["digest"],
                                 size=config_descriptor["size"])
        config = parse_config(config_bytes, f"{what}: config {config_descriptor['digest']}")
        paths = [f"blobs/sha256/{layer['digest'].removeprefix('sha256:')}" for layer in manifest["layers"]]
        layers = _layers(tar, members, stage, what, config["rootfs"]["diff_ids"], paths, manifest["layers"])
        images.append(NewImage(config_bytes, layers, _tags(names, what)))
    return images


def _manifests(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], index: dict[str, Any], what: str,
               depth: int) -> list[tuple[dict[str, Any], list[str]]]:
    """The image manifests an index names (nested indexes: this host's platform), with
    the references their annotations give."""
    if depth > 4:
        raise ImageError(f"cannot load {what}: image indexes nested too deep", reason="index")
    found = []
    for descriptor in index["manifests"]:
        if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str) \
                or not DIGEST.match(descriptor["digest"]):
            raise ImageError(f"cannot load {what}: index.json has an invalid descriptor", reason="index")
        platform = descriptor.get("platform") or {}
        if platform and (platform.get("os") not in (None, "linux")
                         or platform.get("architecture") not in (None, host_architecture())):
            continue
        annotations = descriptor.get("annotations") or {}
        names = []
        name = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)
        if name and (":" in name or "/" in name):  # a bare "latest" names no repository
            names.append(name)
        if descriptor.get("mediaType") in INDEX_TYPES:
            nested_name = f"blobs/sha256/{descriptor['digest'].removeprefix('sha256:')}"
            nested = _json(_document(tar, members, nested_name, what, digest=descriptor["digest"]), nested_name, what)
            for inner, inner_names in _manifests(tar, members, nested, what, depth + 1):
                found.append((inner, inner_names or names))
            continue
        found.append((descriptor, names))
    return found

