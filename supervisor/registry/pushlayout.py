"""What a push sends: the image with its layers compressed (gzip, or zstd when asked), and the
records that make a second push cheap.

The store keeps layers unpacked and regenerates their exact uncompressed tars on demand
(docs/images.md); registries and docker expect them compressed (a Debian image: 531 MB of tars, 192 MB gzip). A push
compresses each layer while it uploads it (:meth:`PushLayout.streamed`, :class:`GzipStream`:
1 MiB blocks deflated at level 1, or stored when they do not compress, :class:`Deflater`; the
output is a function of the input alone, so the same layer always has the same compressed
digest), then builds an OCI layout of its own in the store's ``tmp/``: the config and a
manifest whose layers are ``tar+gzip`` with the digests just recorded.

``push --compression-format zstd`` (podman's flag) compresses with zstd instead
(:data:`ZSTD`: one frame at level 3, :class:`~supervisor.images.zstd.ZstdCompressor`, the
same determinism) and names the layers ``tar+zstd``; each format keeps its own records, so
pushing one image both ways compresses each layer once per format. A layer is always
compressed from its uncompressed tar, never from another compressed form.

:class:`BlobRecords` (``<root>/registry-blobs.json``, beside ``auth.json``, not in the image
store) remembers, per diff id, the compressed digest and size; and, per registry, which
repositories hold each blob. With those, a second push of a layer names its compressed
digest without compressing anything: the registry's HEAD finds the blob, or a
cross-repository mount (``POST .../blobs/uploads/?mount=<digest>&from=<repo>``) makes it
present, and only when both fail is the layer compressed again (:meth:`PushLayout.materialise`)
and uploaded.

A pulled layer keeps the digest, size and media type of the blob the registry sent (the
store's ``layer.json``): pushed to a registry where the records say a repository holds that
blob, the manifest names it as it is (``HEAD`` finds it or a mount brings it: nothing is
compressed nor sent), whatever its compression; so is a layer pushed to that registry before
in the other format (its record). Unless the format was asked for (``forced``, as podman's
``--compression-format`` implies ``--force-compression``): then only a blob of that format
is named as it is. Elsewhere the layer is compressed here, as above (a different digest
from the registry's: the original compressed bytes are not kept).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, BinaryIO

from logs.atomic import write_atomic
from supervisor.images import zstd
from supervisor.registry.layout import LayoutImage, StreamedImage, blob_path, init_layout
from supervisor.registry.manifest import OCI_MANIFEST, Descriptor, digest_of

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
GZIP_LEVEL = 1
#: docker's name of a gzip layer to OCI's, for a pulled blob named in the OCI manifest a push sends
DOCKER_TO_OCI = {"application/vnd.docker.image.rootfs.diff.tar.gzip": OCI_LAYER_GZIP}
CHUNK = 1 << 20
RECORDS_FILE = "registry-blobs.json"
#: The compressor a record's digest came from (:class:`Deflater`; records without it were
#: made by one zlib stream per layer, and are ignored).
GZIP_FORMAT = "blocks-1m-v1"

_records_lock = threading.Lock()  # every BlobRecords of the process: requests run in threads


class BlobRecords:
    """``{"compressed": {diff_id: {"digest", "size", "gzip"}}, "compressed-zstd": {diff_id:
    {"digest", "size", "zstd"}}, "sources": {registry: {digest: [repo]}}}`` in a JSON file,
    rewritten atomically under a lock (the ``gzip``/``zstd`` field names the compressor that
    gave the digest). A missing or unreadable file is an empty record (the records are a
    cache: losing them costs one compression)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {"compressed": {}, "sources": {}}
        if not isinstance(document, dict):
            return {"compressed": {}, "sources": {}}
        document.setdefault("compressed", {})
        document.setdefault("sources", {})
        return document

    def _write(self, document: dict[str, Any]) -> None:
        write_atomic(self.path, json.dumps(document, separators=(",", ":")).encode(), durable=False, mode=0o600)

    def compressed(self, diff_id: str, compression: str = "gzip") -> tuple[str, int] | None:
        """The digest and size of the layer ``diff_id`` compressed with ``compression``
        (a name of :data:`COMPRESSIONS`) by today's compressor, or None."""
        method = COMPRESSIONS[compression]
        entries = self._read().get(method.records_key)
        entry = entries.get(diff_id) if isinstance(entries, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str) or not isinstance(entry.get("size"), int):
            return None
        if entry.get(method.name) != method.format:  # made by an earlier compressor: compressed again
            return None
        return entry["digest"], entry["size"]

    def set_compressed(self, diff_id: str, digest: str, size: int, compression: str = "gzip") -> None:
        method = COMPRESSIONS[compression]
        with _records_lock:
            document = self._read()
            entries = document.get(method.records_key)
            if not isinstance(entries, dict):
                entries = document[method.records_key] = {}
            entries[diff_id] = {"digest": digest, "size": size, method.name: method.format}
            self._write(document)

    def sources(self, registry: str, digest: str) -> list[str]:
        """Repositories of ``registry`` known to hold the blob ``digest``."""
        repos = self._read()["sources"].get(registry, {}).get(digest, [])
        return [repo for repo in repos if isinstance(repo, str)]

    def drop_sources(self, registry: str, digest: str) -> None:
        """Forget where ``registry`` holds ``digest`` (it turned out not to)."""
        with _records_lock:
            document = self._read()
            document["sources"].get(registry, {}).pop(digest, None)
            self._write(document)

    def add_sources(self, registry: str, repository: str, digests: list[str]) -> None:
        with _records_lock:
            document = self._read()
            known = document["sources"].setdefault(registry, {})
            for digest in digests:
                repos = known.setdefault(digest, [])
                if repository not in repos:
                    repos.append(repository)
            self._write(document)


#: Input bytes per independently compressed block of a layer's gzip stream.
BLOCK = 1 << 20
#: The sample of a block compressed first: a block whose sample does not shrink by 2% is
#: stored (level 0, ten times faster than level 1 on random data, for the same size).
SAMPLE = 16 << 10
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03"  # deflate, no name, mtime 0, fastest, unix


class Deflater:
    """A gzip member written as pigz does: the input cut into :data:`BLOCK`-byte blocks,
    each deflated on its own (level :data:`GZIP_LEVEL`, or stored when a sample shows it does
    not compress) and ended by a sync flush, so blocks join into one deflate stream. The
    output is a function of the input alone (not of how it is fed), any gzip reader reads
    it, and incompressible layers cost little CPU."""

    def __init__(self) -> None:
        self.pending = b""
        self.crc = 0
        self.length = 0
        self.started = False

    def _block(self, block: bytes) -> bytes:
        level = GZIP_LEVEL
        if len(block) > SAMPLE:
            probe = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
            if len(probe.compress(block[:SAMPLE]) + probe.flush()) >= SAMPLE * 0.98:
                level = 0
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
        return compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)

    def feed(self, data: bytes) -> bytes:
        out = [b"" if self.started else GZIP_HEADER]
        self.started = True
        self.crc = zlib.crc32(data, self.crc)
        self.length += len(data)
        self.pending += data
        while len(self.pending) >= BLOCK:
            block, self.pending = self.pending[:BLOCK], self.pending[BLOCK:]
            out.append(self._block(block))
        return b"".join(out)

    def finish(self) -> bytes:
        out = self.feed(b"")
        if self.pending:
            out += self._block(self.pending)
            self.pending = b""
        final = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15).flush()  # an empty final block
        return out + final + struct.pack("<II", self.crc & 0xFFFFFFFF, self.length & 0xFFFFFFFF)


@dataclass(frozen=True)
class Compression:
    """A layer compression a push offers (podman's ``--compression-format``).

    Attributes:
        name: ``gzip`` or ``zstd``, as the flag spells it.
        media_type: the layer's in the manifest.
        records_key: where :class:`BlobRecords` keeps the digests it gives.
        format: the compressor's version: a record made by another is ignored.
        compressor: a new compressor (``feed(bytes) -> bytes``, ``finish() -> bytes``).
    """

    name: str
    media_type: str
    records_key: str
    format: str
    compressor: Callable[[], Any]


GZIP = Compression("gzip", OCI_LAYER_GZIP, "compressed", GZIP_FORMAT, Deflater)
ZSTD = Compression("zstd", OCI_LAYER_ZSTD, "compressed-zstd", zstd.FORMAT, zstd.ZstdCompressor)
COMPRESSIONS = {method.name: method for method in (GZIP, ZSTD)}
DEFAULT_COMPRESSION = "gzip"  # as docker and podman: every registry takes it


def compression_of(media_type: str) -> str | None:
    """The compression a layer media type names (docker's and OCI's), or None (a plain tar)."""
    if media_type.endswith(("+gzip", ".tar.gzip")):
        return "gzip"
    if media_type.endswith("+zstd"):
        return "zstd"
    return None


def gzip_file(source: Path | BinaryIO, target: Path) -> tuple[str, int]:
    """Compress ``source`` (a path or a stream to read to its end) into ``target``
    (:class:`Deflater`: the same input always gives the same bytes). Returns (digest, size)."""
    return compress_file(source, target, Deflater())


def compress_file(source: Path | BinaryIO, target: Path, compressor: Any) -> tuple[str, int]:
    """Compress ``source`` into ``target`` with ``compressor`` (a :class:`Deflater` or a
    :class:`~supervisor.images.zstd.ZstdCompressor`). Returns (digest, size)."""
    hasher = hashlib.sha256()
    size = 0
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        reader = open(source, "rb") if isinstance(source, Path) else source
        with reader, open(partial, "wb") as writer:
            while chunk := reader.read(CHUNK):
                data = compressor.feed(chunk)
                hasher.update(data)
                writer.write(data)
                size += len(data)
            data = compressor.finish()
            hasher.update(data)
            writer.write(data)
            size += len(data)
        digest = f"sha256:{hasher.hexdigest()}"
        os.replace(partial, target)
        return digest, size
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


class CompressedStream:
    """The compressed form of one layer, made as it is read (a streamed upload): the same
    bytes as :func:`compress_file` gives with the same compressor (default gzip's
    :class:`Deflater`). :meth:`read` blocks (tar regeneration and zlib or libzstd, which
    release the GIL): call it in a thread. After the last piece, :attr:`digest` and
    :attr:`size` are set and ``on_done(digest, size)`` has been called (the push records them)."""

    def __init__(self, source: BinaryIO, on_done: Callable[[str, int], None] = lambda digest, size: None,
                 compressor: Any = None):
        self.source = source
        self.on_done = on_done
        self.compressor = compressor if compressor is not None else Deflater()
        self.hasher = hashlib.sha256()
        self.size = 0
        self.digest: str | None = None

    def read(self, at_least: int = CHUNK) -> bytes:
        """The next compressed piece of at least ``at_least`` bytes (less only at the end);
        b"" once everything was read."""
        pieces: list[bytes] = []
        count = 0
        while count < at_least and self.digest is None:
            chunk = self.source.read(CHUNK)
            data = self.compressor.feed(chunk) if chunk else self.compressor.finish()
            self.hasher.update(data)
            self.size += len(data)
            pieces.append(data)
            count += len(data)
            if not chunk:
                self.source.close()
                self.digest = f"sha256:{self.hasher.hexdigest()}"
                self.on_done(self.digest, self.size)
        return b"".join(pieces)

    def close(self) -> None:
        self.source.close()


GzipStream = CompressedStream  # its name when gzip was the only one


class PushLayout:
    """The OCI layout in ``directory`` that a push of one image reads (:meth:`image`)."""

    def __init__(self, directory: Path, records: BlobRecords, store_blob: Any, *,
                 open_layer: Callable[[str], BinaryIO] | None = None,
                 pulled: Callable[[str], dict[str, Any] | None] = lambda diff_id: None, registry: str = "",
                 compression: str = DEFAULT_COMPRESSION, forced: bool = False):
        """
        Args:
            store_blob: ``store_blob(digest)``, the path of a blob of the image store (the
                config and the manifest).
            open_layer: ``open_layer(diff_id)``, the uncompressed tar of a layer, to read
                (the store regenerates it); default: the blob ``store_blob(diff_id)``.
            pulled: ``pulled(diff_id)``, the blob a registry had for a pulled layer
                (``{"digest", "size", "mediaType"}``) or None.
            registry: where the push goes: a pulled layer's blob is named as it is when the
                records say a repository of this registry holds it (``HEAD`` or a mount
                then finds it); otherwise the layer is compressed here.
            compression: a name of :data:`COMPRESSIONS`: how layers are compressed here.
            forced: the compression was asked for: a pulled blob of another compression
                is not named, the layer is compressed as asked.
        """
        self.dir = Path(directory)
        self.records = records
        self.store_blob = store_blob
        self.open_layer = open_layer or (lambda diff_id: open(self.store_blob(diff_id), "rb"))
        self.pulled = pulled
        self.registry = registry
        self.compression = COMPRESSIONS[compression]
        self.forced = forced
        self.uncompressed: dict[str, str] = {}  # compressed digest -> diff id
        self.foreign: dict[str, str] = {}  # a registry's compressed digest (pulled, other format) -> diff id
        init_layout(self.dir)

    def _registry_blob(self, diff_id: str) -> dict[str, Any] | None:
        """A compressed form of a layer that this registry is known to hold, not of the
        compression this push makes (that one is named from the records): the pulled blob,
        or, unless the compression was asked for, the other format's record (pushed before
        with ``--compression-format``)."""
        if not self.registry:
            return None
        own = self._recorded(diff_id)
        if own is not None and self.records.sources(self.registry, own[0]):
            return None
        blob = self.pulled(diff_id)
        candidates = [blob] if blob else []
        if not self.forced:
            for method in COMPRESSIONS.values():
                recorded = self.records.compressed(diff_id, method.name) if method is not self.compression else None
                if recorded is not None:
                    candidates.append({"digest": recorded[0], "size": recorded[1], "mediaType": method.media_type})
        for candidate in candidates:
            if self.forced and compression_of(candidate["mediaType"]) != self.compression.name:
                continue
            if self.records.sources(self.registry, candidate["digest"]):
                return candidate
        return None

    def _recorded(self, diff_id: str) -> tuple[str, int] | None:
        return self.records.compressed(diff_id, self.compression.name)

    def _unknown(self, layer: dict[str, Any]) -> bool:
        return (layer.get("mediaType") == OCI_LAYER and self._recorded(layer["digest"]) is None
                and self._registry_blob(layer["digest"]) is None)

    def streamed(self, manifest_digest: str) -> StreamedImage:
        """The push of the store's manifest ``manifest_digest`` with the layers whose
        compressed digest is unknown compressed while they are uploaded (:class:`CompressedStream`,
        recorded as each ends); the others as :meth:`build` names them."""
        document = json.loads(Path(self.store_blob(manifest_digest)).read_bytes())
        pending: list[str] = []
        known = [document["config"]["digest"]]
        for layer in document["layers"]:
            diff_id = layer["digest"]
            if self._unknown(layer):
                if diff_id not in pending:
                    pending.append(diff_id)
            elif layer.get("mediaType") != OCI_LAYER:
                known.append(diff_id)
            else:
                blob = self._registry_blob(diff_id)
                known.append(blob["digest"] if blob else self._recorded(diff_id)[0])  # type: ignore[index]
        return StreamedImage(self.dir, tuple(pending), tuple(known), self.stream, lambda: self.build(manifest_digest))

    def stream(self, diff_id: str) -> CompressedStream:
        def record(digest: str, size: int) -> None:
            self.records.set_compressed(diff_id, digest, size, self.compression.name)

        return CompressedStream(self.open_layer(diff_id), record, self.compression.compressor())

    def build(self, manifest_digest: str) -> LayoutImage:
        """The store's manifest ``manifest_digest`` with each uncompressed layer replaced by
        its compressed form (compressed now unless the records know its digest)."""
        document = json.loads(Path(self.store_blob(manifest_digest)).read_bytes())
        config = document["config"]["digest"]
        self._copy(config)
        # Layers the records do not know are compressed now, in parallel (zlib and libzstd release the GIL).
        unknown = {layer["digest"] for layer in document["layers"] if self._unknown(layer)}
        with ThreadPoolExecutor(max_workers=min(len(unknown), os.cpu_count() or 1) or 1) as pool:
            compressed = dict(zip(unknown, pool.map(self._compress, unknown)))
        layers = []
        for layer in document["layers"]:
            if layer.get("mediaType") != OCI_LAYER:
                layers.append(layer)  # already compressed (or foreign): pushed as it is
                self._copy(layer["digest"])
                continue
            diff_id = layer["digest"]
            registry_blob = self._registry_blob(diff_id)
            if registry_blob is not None:  # the registry's own blob: HEAD or a mount finds it
                self.foreign[registry_blob["digest"]] = diff_id
                media_type = DOCKER_TO_OCI.get(registry_blob["mediaType"], registry_blob["mediaType"])
                layers.append({**layer, "mediaType": media_type, "digest": registry_blob["digest"],
                               "size": registry_blob["size"]})
                continue
            known = compressed.get(diff_id) or self._recorded(diff_id) or self._compress(diff_id)
            digest, size = known
            self.uncompressed[digest] = diff_id
            layers.append({**layer, "mediaType": self.compression.media_type, "digest": digest, "size": size})
        document["layers"] = layers
        data = json.dumps(document, separators=(",", ":")).encode()
        digest = digest_of(data)
        write_atomic(blob_path(self.dir, digest), data, durable=False, mode=0o644)
        return LayoutImage(self.dir, Descriptor(document.get("mediaType", OCI_MANIFEST), digest, len(data)),
                           materialise=self.materialise, stream=self.stream_recorded)

    def stream_recorded(self, digest: str) -> CompressedStream | None:
        """A layer named from the records that the registry lacks, compressed as it is
        uploaded (the upload checks it still gives ``digest``); None for others."""
        if digest in self.foreign or digest not in self.uncompressed or blob_path(self.dir, digest).exists():
            return None
        return self.stream(self.uncompressed[digest])

    def materialise(self, digest: str) -> None:
        """Make the blob ``digest`` present in the layout (a layer whose compressed digest came
        from the records and that the registry turned out not to have). Raises OSError if
        compressing it again does not give that digest (another zlib or libzstd since): the record now
        holds the new digest, so the next push succeeds."""
        if digest in self.foreign and not blob_path(self.dir, digest).exists():
            self.records.drop_sources(self.registry, digest)
            raise OSError(f"layer {self.foreign[digest]}: the registry has neither its blob {digest} (as recorded) "
                          "nor lets it be mounted from the repositories recorded (the record is dropped: push "
                          "again, and the layer is compressed here)")
        if blob_path(self.dir, digest).exists() or digest not in self.uncompressed:
            return
        diff_id = self.uncompressed[digest]
        actual, _ = self._compress(diff_id)
        if actual != digest:
            raise OSError(f"layer {diff_id} compresses to {actual} now, not to the recorded {digest} "
                          "(the record is updated: push again)")

    def _compress(self, diff_id: str) -> tuple[str, int]:
        staging = self.dir / "blobs" / "sha256" / f"{self.compression.name}-{uuid.uuid4().hex}"
        digest, size = compress_file(self.open_layer(diff_id), staging, self.compression.compressor())
        os.replace(staging, blob_path(self.dir, digest))
        self.records.set_compressed(diff_id, digest, size, self.compression.name)
        return digest, size

    def _copy(self, digest: str) -> None:
        target = blob_path(self.dir, digest)
        if not target.exists():
            try:
                os.link(self.store_blob(digest), target)
            except OSError:
                write_atomic(target, Path(self.store_blob(digest)).read_bytes(), durable=False, mode=0o644)
