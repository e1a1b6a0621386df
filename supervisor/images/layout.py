"""Files of the image store: atomic writes, content-addressed blobs, and the staging area
where blobs and layers are prepared before the store takes them in one step.

Blob ingest (also the entry point for a registry client)::

    with store.staging() as stage:
        config = stage.write_blob(stream, digest="sha256:...", size=1234)   # verified
        layer = stage.add_layer(gz_stream, parent=None, diff_id="sha256:...",
                                digest="sha256:...", size=5678)            # verified, unpacked
        store.commit(stage, [...])                                          # all or nothing

A blob is streamed into a temporary file under the stage while its sha256 and length are
taken; only when both match what was expected is it renamed to ``blobs/sha256/<hex>``
inside the stage. Nothing of a stage is visible in the store until
:meth:`~supervisor.images.store.ImageStore.commit` moves it in under the store's lock and
replaces ``index.json`` (the single commit point). A stage that is closed without a
commit is deleted whole.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from logs.atomic import write_atomic
from supervisor.errors import ImageError
from supervisor.images.tarsafe import BOMB_FLOOR, BOMB_RATIO, extract
from supervisor.images.tarsplit import TarSplitWriter

CHUNK = 1 << 20
TAR_SPLIT = "tar-split.gz"  # a layer's records, beside diff/ (supervisor/images/tarsplit.py)
KEPT = "kept"  # a layer's files that a later member of its tar replaced, by ordinal
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")


def check_digest(digest: Any, what: str) -> str:
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise ImageError(f"{what}: invalid digest {digest!r} (only sha256:<64 hex> is supported)", reason="digest")
    return digest


def canonical_json(document: Any) -> bytes:
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


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


@dataclass(frozen=True)
class Layer:
    """A layer unpacked in a stage (or found in the store).

    Attributes:
        diff_id: sha256 of the uncompressed tar (regenerated from the unpacked files).
        size: length of the uncompressed tar.
        chain_id: names the unpacked directory, ``layers/<hex>/diff``.
    """

    diff_id: str
    size: int
    chain_id: str


class _Hashing:
    """A read-only stream that hashes and counts what passes through."""

    def __init__(self, fileobj: BinaryIO):
        self._fileobj = fileobj
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._fileobj.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256.hexdigest()}"


class Stage:
    """A private directory under the store's ``tmp/``: ``blobs/sha256/`` and ``layers/``.

    Args:
        tmp_dir: the store's tmp dir (same filesystem as the store: renames are atomic).
        find_layer: the store's layer of a chain id, or None (a layer the store has is not
            unpacked again).
    """

    def __init__(self, tmp_dir: Path, find_layer: Any = lambda chain_id: None, *, bomb_ratio: int = BOMB_RATIO,
                 bomb_floor: int = BOMB_FLOOR):
        self.dir = Path(tempfile.mkdtemp(prefix="stage-", dir=tmp_dir))
        self.blobs_dir = self.dir / "blobs" / "sha256"
        self.layers_dir = self.dir / "layers"
        self.blobs_dir.mkdir(parents=True)
        self.layers_dir.mkdir()
        self._find_layer = find_layer
        self.bomb = {"bomb_ratio": bomb_ratio, "bomb_floor": bomb_floor}
        self.layers: dict[str, Layer] = {}  # chain id -> layer, unpacked here

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / digest.removeprefix("sha256:")

    def find_layer(self, chain_id: str) -> Layer | None:
        """The layer of a chain id, unpacked in this stage or in the store, or None."""
        return self.layers.get(chain_id) or self._find_layer(chain_id)

    # --- blobs ------------------------------------------------------------------------

    def write_bytes(self, data: bytes) -> Blob:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            write_atomic(path, data, durable=False, mode=0o644)
        return Blob(digest, len(data))

    def write_blob(self, source: BinaryIO, *, digest: str | None = None, size: int | None = None,
                   what: str = "blob") -> Blob:
        """Stream ``source`` into a blob; verify ``digest`` and ``size`` when given.

        Raises:
            ImageError: the content does not match (``bogus digest``/``size``); nothing kept.
        """
        if digest is not None:
            check_digest(digest, what)
        temporary = self.dir / f"incoming-{uuid.uuid4().hex}"
        hashing = _Hashing(source)
        try:
            with open(temporary, "wb") as target:
                while chunk := _read(hashing, CHUNK, what):
                    target.write(chunk)
                    if size is not None and hashing.size > size:
                        break
            _verify(what, hashing.digest, hashing.size, digest, size)
            os.rename(temporary, self.blob_path(hashing.digest))
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return Blob(hashing.digest, hashing.size)

    # --- layers -----------------------------------------------------------------------

    def add_layer(self, source: BinaryIO, *, parent: str | None, diff_id: str | None = None,
                  digest: str | None = None, size: int | None = None, media_type: str | None = None,
                  what: str = "layer") -> Layer:
        """Unpack a layer tar (plain, gzip, bzip2, xz or zstd) on top of the chain ``parent``.

        No blob is kept: the tar's bytes around the files' content are recorded in the
        layer's ``tar-split.gz`` (:mod:`~supervisor.images.layerfiles`), from which the
        exact tar is regenerated for save and push. When ``diff_id`` is known and the store
        (or this stage) already has the layer, the source is not read at all.

        Args:
            parent: chain id of the layer below, None for the bottom one.
            diff_id: the expected sha256 of the uncompressed tar (an image config's).
            digest, size: the expected sha256 and length of ``source`` as given (a
                manifest's descriptor, possibly of the compressed blob).
            media_type: the descriptor's; with ``digest`` and ``size`` of a compressed
                source, recorded as the layer's compressed form (a push names it to a
                registry that has it).

        Raises:
            ImageError: hostile or corrupt content, or a digest or size that does not match.
        """
        if diff_id is not None:
            check_digest(diff_id, what)
            chain_id = chain_ids([parent, diff_id])[-1] if parent else diff_id
            if chain_id in self.layers:
                return self.layers[chain_id]
            found = self._find_layer(chain_id)
            if found is not None:
                return found
        if digest is not None:
            check_digest(digest, what)
        work = Path(tempfile.mkdtemp(prefix="unpack-", dir=self.dir))
        (work / "diff").mkdir()
        (work / "diff").chmod(0o755)
        (work / KEPT).mkdir()
        hashing = _Hashing(source)
        kept_fd = os.open(work / KEPT, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with open(work / TAR_SPLIT, "wb") as records:
                split = TarSplitWriter(records, kept_dir_fd=kept_fd)
                try:
                    report = extract(hashing, work / "diff", whiteouts=True, split=split, **self.bomb)
                except ImageError as exc:  # name the layer (and its archive) as well as the member
                    raise ImageError(f"{what}: {exc.message}", **exc.details) from exc
                except OSError as exc:
                    raise ImageError(f"cannot unpack {what}: {exc.strerror or exc}", reason=str(exc)) from exc
                while _read(hashing, CHUNK, what):  # the compressed stream's own trailer
                    pass
                split.close()
            _verify(what, hashing.digest, hashing.size, digest, size)
            if diff_id is not None and report.diff_id != diff_id:
                raise ImageError(
                    f"{what}: its content has diff id {report.diff_id}, not {diff_id} as the image config says",
                    reason="diff_id",
                )
            chain_id = chain_ids([parent, report.diff_id])[-1] if parent else report.diff_id
            layer = Layer(report.diff_id, report.size, chain_id)
            if chain_id in self.layers:
                return self.layers[chain_id]
            if self._find_layer(chain_id) is not None:
                return layer
            meta: dict[str, Any] = {"diff_id": report.diff_id, "parent": parent, "size": report.size,
                                    "tar_split": TAR_SPLIT}
            if split.kept:
                meta["kept"] = sorted(split.kept)
            else:
                os.rmdir(work / KEPT)
            if digest is not None and size is not None and digest != report.diff_id:
                meta["compressed"] = {"digest": digest, "size": size, "mediaType": media_type or OCI_LAYER_GZIP}
            write_json_atomic(work / "layer.json", meta)
            sync_filesystem(work)
            os.rename(work, self.layers_dir / chain_id.removeprefix("sha256:"))
            self.layers[chain_id] = layer
            return layer
        finally:
            os.close(kept_fd)
            shutil.rmtree(work, ignore_errors=True)


def _read(stream: Any, size: int, what: str) -> bytes:
    try:
        return stream.read(size)
    except OSError as exc:
        raise ImageError(f"cannot read {what}: {exc.strerror or exc}", reason=str(exc)) from exc


def _verify(what: str, digest: str, size: int, expected_digest: str | None, expected_size: int | None) -> None:
    if expected_size is not None and size != expected_size:
        raise ImageError(f"{what}: size {size} does not match the expected {expected_size} (truncated or bogus)",
                         reason="size")
    if expected_digest is not None and digest != expected_digest:
        raise ImageError(f"{what}: content has digest {digest}, not the expected {expected_digest}", reason="digest")


# --- atomic files ---------------------------------------------------------------------------


def json_bytes(data: Any) -> bytes:
    return json.dumps(data, indent=1).encode() + b"\n"


def write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, json_bytes(data), durable=True, mode=0o644)


def sync_filesystem(path: Path) -> None:
    """Flush a layer's files before the index names it (syncfs(2), else sync(2)), so a
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


def remove_path(path: Path) -> None:
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
