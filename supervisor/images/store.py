"""The minimal image store: single-layer images imported from a root filesystem tar.

``dockyard import TARBALL|- NAME[:TAG]`` lands in :meth:`ImageStore.import_tar`;
``dockyard images`` is :meth:`ImageStore.list`. A later store (OCI image layout, many
layers per image) replaces this one behind the same :class:`Image` shape, so the on-disk
layout already follows it::

    <root>/images/
        index.json                 {"version": 1, "images": {id: {created, size}}, "tags": {"name:tag": id}}
        configs/<id>.json          the image config; id = sha256 of these exact bytes
        layers/<chain-hex>/diff/   an unpacked layer, an overlay lower dir (read-only use)
        layers/<chain-hex>/layer.json  {"diff_id", "parent", "size"}
        tmp/                       imports in progress and layers being deleted

Ids
    The config is OCI-shaped: ``{"architecture", "os", "config": {Env, Cmd, Entrypoint,
    WorkingDir, User}, "rootfs": {"type": "layers", "diff_ids": [...]}}``, serialised
    canonically (sorted keys, no spaces). It has **no** ``created`` field: docker puts the
    import time in the config, so the same tar imported twice gets two ids, or one id if
    both imports fall in the same second. We keep ids a function of content (config and
    diff ids) instead: importing the same tar with the same changes gives the same image,
    which gains the new tag and keeps its first creation time (kept in the index).
    Layers live under their chain id (for one layer, its diff id), so images that differ
    only in config share one unpacked layer.

Atomicity
    The tar is extracted into ``tmp/import-*/layer/diff`` outside the lock (it is slow),
    its metadata is written, and the filesystem is synced. Then, under the store's lock,
    the layer is renamed into ``layers/`` (unless an identical one is there already), the
    config is written, and ``index.json`` is replaced. The index is the single commit
    point: an image exists when the index names it. Every JSON file is written to a
    temporary name, fsynced and renamed. Any failure before the index is replaced undoes
    the renames and removes the temporary directory, so the store is exactly as it was.
    After a crash, files the index does not reference (temporary dirs, orphan layers and
    configs) are removed when the store is next opened. The lock makes concurrent imports
    in one process safe; two processes must not share a store.

References
    ``name[:tag]`` with docker's grammar: lowercase path components separated by ``/``,
    optionally behind a registry host (``localhost:5000/app``); the tag defaults to
    ``latest``. Digests (``name@sha256:...``) are not supported yet. :meth:`resolve` also
    takes a full id, ``sha256:<id>`` or a unique id prefix of at least
    :data:`MIN_ID_PREFIX` characters; as in docker, a tag wins over an id prefix.
"""

from __future__ import annotations

import copy
import ctypes
import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable

from supervisor.errors import Conflict, DockyardError, ImageError, InvalidArgument, NotFound
from supervisor.images.tarsafe import extract

MIN_ID_PREFIX = 3
DEFAULT_TAG = "latest"
INDEX_VERSION = 1
CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User")

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
NAME = re.compile(rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
TAG = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
NAME_MAX = 255
FULL_ID = re.compile(r"^[0-9a-f]{64}$")
ID_PREFIX = re.compile(r"^[0-9a-f]{1,64}$")
_GOARCH = {
    "x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x"
}


@dataclass(frozen=True)
class Image:
    """An image as the rest of dockyard sees it.

    Attributes:
        id: 64 hex digits, the sha256 of the config JSON.
        repo_tags: ``"name:tag"`` references, oldest first; empty for a dangling image.
        created: RFC 3339 UTC time of the first import.
        size: bytes of the uncompressed layer tars.
        config: ``{"Env", "Cmd", "Entrypoint", "WorkingDir", "User"}`` (docker's names); a
            copy, free to change.
        layers: absolute paths of the read-only layer directories, top first (the order of
            overlay's ``lowerdir``).
        diff_ids: ``"sha256:<hex>"`` of each layer tar, bottom first (OCI ``rootfs.diff_ids``).
    """

    id: str
    repo_tags: tuple[str, ...]
    created: str
    size: int
    config: dict[str, Any]
    layers: tuple[str, ...]
    diff_ids: tuple[str, ...] = field(default=())

    def to_inspect(self) -> dict[str, Any]:
        """The image as ``docker image inspect`` shapes it."""
        return {
            "Id": f"sha256:{self.id}",
            "RepoTags": list(self.repo_tags),
            "Created": self.created,
            "Size": self.size,
            "Config": copy.deepcopy(self.config),
            "RootFS": {"Type": "layers", "Layers": list(self.diff_ids)},
        }


# --- pure helpers -----------------------------------------------------------------------


def parse_reference(reference: str) -> str:
    """``name[:tag]`` to ``"name:tag"`` (tag ``latest`` by default), or InvalidArgument."""
    if not isinstance(reference, str) or not reference:
        raise InvalidArgument(f"invalid reference format: {reference!r}")
    if "@" in reference:
        raise InvalidArgument(f"invalid reference format: {reference!r}: digest references are not supported")
    name, tag = reference, DEFAULT_TAG
    colon = reference.rfind(":")
    if colon > reference.rfind("/"):
        name, tag = reference[:colon], reference[colon + 1 :]
        if not TAG.match(tag):
            raise InvalidArgument(f"invalid reference format: {reference!r}: bad tag {tag!r}")
    if not NAME.match(name):
        if NAME.match(name.lower()):
            raise InvalidArgument(f"invalid reference format: repository name {name!r} must be lowercase")
        raise InvalidArgument(f"invalid reference format: {reference!r}")
    if len(name) > NAME_MAX:
        raise InvalidArgument(f"invalid reference format: repository name is longer than {NAME_MAX} characters")
    if FULL_ID.match(name):
        raise InvalidArgument(
            f"invalid reference format: repository name {name!r} cannot be a 64-character hexadecimal string"
        )
    return f"{name}:{tag}"


def container_config(changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The default config of an imported image with ``changes`` applied, validated."""
    config: dict[str, Any] = {"Env": [], "Cmd": None, "Entrypoint": None, "WorkingDir": "", "User": ""}
    if changes is None:
        return config
    if not isinstance(changes, dict):
        raise InvalidArgument("import: changes must be a map")
    unknown = sorted(set(changes) - set(CONFIG_KEYS))
    if unknown:
        raise InvalidArgument(f"import: unknown config change(s) {', '.join(map(str, unknown))}")
    for key, value in changes.items():
        if key in ("Env", "Cmd", "Entrypoint"):
            nullable = key != "Env"
            if value is None and nullable:
                config[key] = None
                continue
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise InvalidArgument(f"import: change {key} must be a list of strings")
            if any("\x00" in v for v in value):
                raise InvalidArgument(f"import: change {key} contains a NUL byte")
            if key == "Env" and any(not v.partition("=")[0] or "=" not in v for v in value):
                raise InvalidArgument("import: change Env entries must be KEY=VALUE")
            config[key] = list(value)
        else:
            if not isinstance(value, str) or "\x00" in value:
                raise InvalidArgument(f"import: change {key} must be a string")
            if key == "WorkingDir" and value and not value.startswith("/"):
                raise InvalidArgument(f"import: change WorkingDir {value!r} is not an absolute path")
            config[key] = value
    return config


def image_config(diff_ids: list[str], config: dict[str, Any], architecture: str | None = None) -> bytes:
    """The canonical config JSON whose sha256 is the image id (see the module docstring)."""
    document = {
        "architecture": architecture or _GOARCH.get(platform.machine(), platform.machine()),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain ids: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    chains: list[str] = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
        else:
            chains.append("sha256:" + hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest())
    return chains


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- the store --------------------------------------------------------------------------


class ImageStore:
    """Images under ``root/images``; see the module docstring for layout and guarantees."""

    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time):
        self._dir = Path(root).absolute() / "images"
        self._configs_dir = self._dir / "configs"
        self._layers_dir = self._dir / "layers"
        self._tmp_dir = self._dir / "tmp"
        self._index_path = self._dir / "index.json"
        for directory in (self._configs_dir, self._layers_dir, self._tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._config_cache: dict[str, dict[str, Any]] = {}
        with self._lock:
            self._collect_garbage(self._read_index(), sweep_tmp=True)

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
            image_id, _ = self._find(index, ref)
            return self._image(index, image_id)

    # --- changes --------------------------------------------------------------------

    def import_tar(self, fileobj: BinaryIO, reference: str, *, changes: dict[str, Any] | None = None) -> Image:
        """Import a root filesystem tar (plain, gzip, bzip2 or xz; a stream is fine) as a
        single-layer image tagged ``reference``. Blocking: the daemon runs it in a thread.

        Args:
            fileobj: the tar stream, read once to the end.
            reference: ``name[:tag]``; the tag moves here from any image that held it.
            changes: config overrides, docker's names: Env, Cmd, Entrypoint, WorkingDir, User.

        Raises:
            InvalidArgument: a bad reference or change (checked before reading the tar).
            ImageError: the tar is hostile, truncated or corrupt; the store is unchanged.
        """
        tag = parse_reference(reference)
        config = container_config(changes)
        staging = Path(tempfile.mkdtemp(prefix="import-", dir=self._tmp_dir))
        try:
            layer = staging / "layer"
            (layer / "diff").mkdir(parents=True)
            (layer / "diff").chmod(0o755)  # the container's "/", unless the tar has "./"
            try:
                report = extract(fileobj, layer / "diff")
            except OSError as exc:  # e.g. the target disk: extract wraps member errors itself
                raise ImageError(f"cannot import {reference}: {exc}", reason=str(exc)) from exc
            config_bytes = image_config([report.diff_id], config)
            image_id = hashlib.sha256(config_bytes).hexdigest()
            _write_json_atomic(layer / "layer.json", {"diff_id": report.diff_id, "parent": None, "size": report.size})
            _sync_filesystem(layer)
            with self._lock:
                self._commit_import(staging, report.diff_id, report.size, image_id, config_bytes, tag)
                return self._image(self._read_index(), image_id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def tag(self, ref: str, new_reference: str) -> Image:
        """Tag the image ``ref`` as ``new_reference``, moving the tag if another image had it."""
        tag = parse_reference(new_reference)
        with self._lock:
            index = self._read_index()
            image_id, _ = self._find(index, ref)
            updated = copy.deepcopy(index)
            updated["tags"].pop(tag, None)
            updated["tags"][tag] = image_id
            self._write_index(updated)
            return self._image(updated, image_id)

    def remove(self, ref: str) -> list[dict[str, str]]:
        """``docker rmi`` without ``--force``: untag, and delete the image once no tag is left.

        Returns:
            docker's report: ``[{"Untagged": "name:tag"}, ..., {"Deleted": "sha256:<id>"}]``.

        Raises:
            Conflict: ``ref`` is an id and the image has several tags.
        """
        with self._lock:
            index = self._read_index()
            image_id, via_tag = self._find(index, ref)
            tags = [tag for tag, target in index["tags"].items() if target == image_id]
            updated = copy.deepcopy(index)
            if via_tag is not None and len(tags) > 1:
                del updated["tags"][via_tag]
                self._write_index(updated)
                return [{"Untagged": via_tag}]
            if via_tag is None and len(tags) > 1:
                raise Conflict(
                    f"cannot remove image {ref}: it is referenced by several tags ({', '.join(tags)})",
                    image=image_id,
                )
            for tag in tags:
                del updated["tags"][tag]
            del updated["images"][image_id]
            self._write_index(updated)
            self._collect_garbage(updated, sweep_tmp=False)
            return [{"Untagged": tag} for tag in tags] + [{"Deleted": f"sha256:{image_id}"}]

    # --- internals (called with the lock held) --------------------------------------

    def _commit_import(
        self, staging: Path, diff_id: str, size: int, image_id: str, config_bytes: bytes, tag: str
    ) -> None:
        """Move the staged layer and config into place and replace the index; undo on failure."""
        index = self._read_index()
        layer_dir = self._layer_dir(chain_ids([diff_id])[-1])
        config_path = self._configs_dir / f"{image_id}.json"
        layer_moved = config_written = False
        try:
            if not layer_dir.exists():
                os.rename(staging / "layer", layer_dir)
                layer_moved = True
            if not config_path.exists():
                _write_atomic(config_path, config_bytes)
                config_written = True
            _fsync_directory(self._layers_dir)
            updated = copy.deepcopy(index)
            if image_id not in updated["images"]:
                updated["images"][image_id] = {"created": rfc3339(self._clock()), "size": size}
            updated["tags"].pop(tag, None)
            updated["tags"][tag] = image_id
            _write_atomic(self._index_path, _json_bytes(updated), sync_directory=False)  # the commit
        except BaseException:
            if config_written:
                config_path.unlink(missing_ok=True)
            if layer_moved:
                os.rename(layer_dir, staging / "layer")  # removed with the staging dir
            raise
        _fsync_directory(self._dir)  # committed: a failure here must not undo the layer

    def _find(self, index: dict[str, Any], ref: str) -> tuple[str, str | None]:
        """The image id for ``ref`` and the tag it was found by (None for an id)."""
        if not isinstance(ref, str) or not ref:
            raise InvalidArgument(f"invalid reference format: {ref!r}")
        if ref.startswith("sha256:"):
            prefix = ref[len("sha256:") :]
            if not ID_PREFIX.match(prefix):
                raise InvalidArgument(f"invalid reference format: {ref!r}")
            return self._by_prefix(index, prefix, ref), None
        try:
            tag: str | None = parse_reference(ref)
        except InvalidArgument:
            tag = None
        if tag is not None and tag in index["tags"]:
            return index["tags"][tag], tag
        if ID_PREFIX.match(ref):
            return self._by_prefix(index, ref, ref), None
        if tag is None:
            raise InvalidArgument(f"invalid reference format: {ref!r}")
        raise NotFound(f"no such image: {ref}", image=ref)

    @staticmethod
    def _by_prefix(index: dict[str, Any], prefix: str, ref: str) -> str:
        if len(prefix) < MIN_ID_PREFIX:
            raise NotFound(f"no such image: {ref}", image=ref)
        matches = [image_id for image_id in index["images"] if image_id.startswith(prefix)]
        if not matches:
            raise NotFound(f"no such image: {ref}", image=ref)
        if len(matches) > 1:
            raise Conflict(f"image id prefix {ref} is ambiguous: it matches {len(matches)} images", image=ref)
        return matches[0]

    def _image(self, index: dict[str, Any], image_id: str) -> Image:
        document = self._config(image_id)
        diff_ids = list(document["rootfs"]["diff_ids"])
        layers = [str(self._layer_dir(chain_id) / "diff") for chain_id in chain_ids(diff_ids)]
        entry = index["images"][image_id]
        return Image(
            id=image_id,
            repo_tags=tuple(tag for tag, target in index["tags"].items() if target == image_id),
            created=entry["created"],
            size=entry["size"],
            config=copy.deepcopy(document.get("config") or {}),
            layers=tuple(reversed(layers)),
            diff_ids=tuple(diff_ids),
        )

    def _config(self, image_id: str) -> dict[str, Any]:
        cached = self._config_cache.get(image_id)
        if cached is None:
            path = self._configs_dir / f"{image_id}.json"
            try:
                cached = json.loads(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise DockyardError(f"image store: cannot read the config of image {image_id}: {exc}") from exc
            self._config_cache[image_id] = cached
        return cached

    def _layer_dir(self, chain_id: str) -> Path:
        return self._layers_dir / chain_id.removeprefix("sha256:")

    def _read_index(self) -> dict[str, Any]:
        try:
            data = json.loads(self._index_path.read_bytes())
        except FileNotFoundError:
            return {"version": INDEX_VERSION, "images": {}, "tags": {}}
        except (OSError, ValueError) as exc:
            raise DockyardError(f"image store: cannot read {self._index_path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != INDEX_VERSION:
            raise DockyardError(f"image store: {self._index_path} has an unknown format")
        return data

    def _write_index(self, index: dict[str, Any]) -> None:
        _write_json_atomic(self._index_path, index)

    def _collect_garbage(self, index: dict[str, Any], *, sweep_tmp: bool) -> None:
        """Remove configs and layers the index does not reference (and, on open, tmp/)."""
        if sweep_tmp:
            for entry in self._tmp_dir.iterdir():
                _remove(entry)
        live_layers: set[str] = set()
        for image_id in index["images"]:
            diff_ids = self._config(image_id)["rootfs"]["diff_ids"]
            live_layers.update(chain.removeprefix("sha256:") for chain in chain_ids(diff_ids))
        for path in self._configs_dir.iterdir():
            if path.name.removesuffix(".json") not in index["images"]:
                self._config_cache.pop(path.name.removesuffix(".json"), None)
                _remove(path)
        for path in self._layers_dir.iterdir():
            if path.name not in live_layers:
                # Renamed away first, so a half-deleted layer is never under layers/. A
                # failure here leaves garbage for the next open, never a broken image.
                doomed = self._tmp_dir / f"delete-{uuid.uuid4().hex}"
                try:
                    os.rename(path, doomed)
                except OSError:
                    continue
                _remove(doomed)


# --- files ------------------------------------------------------------------------------


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, indent=1).encode() + b"\n"


def _write_json_atomic(path: Path, data: Any) -> None:
    _write_atomic(path, _json_bytes(data))


def _write_atomic(path: Path, payload: bytes, *, sync_directory: bool = True) -> None:
    """Write, fsync, rename over ``path``, fsync the directory: readers see old or new, whole."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if sync_directory:
        _fsync_directory(path.parent)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_filesystem(path: Path) -> None:
    """Flush the layer's files before the index names it (syncfs(2), else sync(2)), so a
    power loss cannot leave an indexed layer with empty files."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syncfs = getattr(_LIBC, "syncfs", None) if _LIBC is not None else None
        if syncfs is None:
            os.sync()
        elif syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(path))
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Best effort: what cannot be removed now is garbage for the next open."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - no libc to load
    _LIBC = None
