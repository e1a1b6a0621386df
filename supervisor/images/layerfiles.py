"""A stored layer's files, and its tar stream regenerated from them.

A layer of the store is one directory, ``layers/<chain-hex>/``::

    diff/            the layer unpacked (the overlay lower dir): the only copy of its files
    tar-split.gz     the tar stream's bytes around the files' content (tarsplit.py)
    kept/<ordinal>   files of the tar that a later member replaced (rare; usually absent)
    layer.json       {"diff_id", "parent", "size", "tar_split": "tar-split.gz", "kept": [...],
                      "compressed": {"digest", "size", "mediaType"}}   (the last for a pulled
                      layer: its blob as the registry has it)

:func:`open_stream` gives the exact uncompressed tar (sha256 = the diff id, checked while
it streams). A store written by an older dockyard kept each layer's tar as a blob too;
:func:`migrate` builds the layer's tar-split from that blob, checks that the records and
the unpacked files give the blob's diff id back, and only then lets the store drop the
blob. A layer whose files no longer match its blob (changed by hand) keeps its blob, and
:func:`open_stream` reads that.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from logs.atomic import write_atomic
from supervisor.errors import ImageError
from supervisor.images.fdwalk import UnsafeMember
from supervisor.images.layout import KEPT, TAR_SPLIT, json_bytes
from supervisor.images.tarsafe import member_path
from supervisor.images.tarsplit import FileReference, StreamReader, TarSplitWriter, regenerate
from supervisor.images.whiteouts import OPAQUE_MARKER, WHITEOUT_PREFIX

CHUNK = 1 << 20


def read_meta(layer_dir: Path) -> dict[str, Any]:
    return json.loads((layer_dir / "layer.json").read_bytes())


def open_stream(layer_dir: Path, meta: dict[str, Any], blob: Path | None = None) -> BinaryIO:
    """The layer's uncompressed tar, as a file object to read (and close).

    From the tar-split records when the layer has them, else from ``blob`` (a layer an
    older dockyard stored, not migrated).

    Raises:
        ImageError: the layer has neither, or its files changed (while reading).
    """
    diff_id = meta["diff_id"]
    what = f"layer {diff_id} of the image store"
    if meta.get("tar_split"):
        return StreamReader(_chunks(layer_dir, meta, what))
    if blob is not None:
        try:
            return open(blob, "rb")
        except OSError as exc:
            raise ImageError(f"cannot read {what}: its blob {blob} cannot be opened ({exc.strerror})",
                             reason="layer_changed") from None
    raise ImageError(f"cannot read {what}: it has neither tar-split records nor a blob", reason="layer_changed")


def _chunks(layer_dir: Path, meta: dict[str, Any], what: str) -> Any:
    kept = set(meta.get("kept") or ())
    diff = os.fsencode(layer_dir / "diff")
    kept_dir = layer_dir / KEPT

    def open_file(reference: FileReference) -> BinaryIO:
        if reference.ordinal in kept:
            path = os.fsencode(kept_dir / str(reference.ordinal))
        else:
            path = diff + b"/" + reference.path
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return os.fdopen(fd, "rb", buffering=0)

    try:
        records = open(layer_dir / meta["tar_split"], "rb")
    except OSError as exc:
        raise ImageError(f"cannot read {what}: its tar-split records cannot be opened ({exc.strerror})",
                         reason="layer_changed") from None
    with records:
        yield from regenerate(records, open_file, diff_id=meta["diff_id"], size=meta["size"], what=what)


# --- migration from the two-copy layout -----------------------------------------------------


@dataclass(frozen=True)
class Migration:
    """What :func:`migrate_layers` did: layers given records, bytes of blobs deleted, and
    layers that keep their blob (their files do not give it back)."""

    migrated: int = 0
    freed: int = 0
    kept: tuple[str, ...] = ()


def migrate_layers(layers_dir: Path, blob_path: Callable[[str], Path]) -> Migration:
    """Migrate every layer of ``layers_dir`` that still has a blob (``blob_path(diff_id)``),
    then delete the blobs no unmigrated layer needs. A store without such layers costs one
    read of each ``layer.json``."""
    migrated, kept_ids, done_ids = 0, set(), set()
    for layer_dir in sorted(layers_dir.iterdir()):
        try:
            meta = read_meta(layer_dir)
        except (OSError, ValueError):
            continue  # not a layer (garbage collection removes it)
        if meta.get("tar_split") or meta.get("blob_kept"):
            continue
        outcome = migrate(layer_dir, blob_path(meta["diff_id"]))
        if outcome == "migrated":
            migrated += 1
            done_ids.add(meta["diff_id"])
        elif outcome == "kept":
            kept_ids.add(meta["diff_id"])
    freed = 0
    for diff_id in done_ids - kept_ids:
        blob = blob_path(diff_id)
        try:
            freed += blob.stat().st_size
            blob.unlink()
        except OSError:
            pass
    return Migration(migrated, freed, tuple(sorted(kept_ids)))


def migrate(layer_dir: Path, blob: Path) -> str:
    """Give a layer stored with its blob (an older dockyard's) tar-split records instead.

    Returns:
        ``"migrated"`` (the records are written and checked: the caller may delete the
        blob), ``"kept"`` (the unpacked files do not give the blob back: the blob stays,
        is read for save and push, and ``layer.json`` says ``"blob_kept": true``), or ``"missing"`` (no blob: nothing to do).
    """
    meta = read_meta(layer_dir)
    if meta.get("tar_split"):
        return "migrated"
    if not blob.exists():
        return "missing"
    partial = layer_dir / f".{TAR_SPLIT}.partial"
    try:
        with open(partial, "wb") as records:
            _split_blob(blob, records)
        candidate = {**meta, "tar_split": partial.name}
        with open_stream(layer_dir, candidate) as stream:
            while stream.read(CHUNK):  # checks every file's length and the whole's sha256
                pass
    except (ImageError, OSError, tarfile.TarError, ValueError):
        partial.unlink(missing_ok=True)
        # Not tried again at the next start; save and push read the blob.
        write_atomic(layer_dir / "layer.json", json_bytes({**meta, "blob_kept": True}), durable=True, mode=0o644)
        return "kept"
    os.replace(partial, layer_dir / TAR_SPLIT)
    write_atomic(layer_dir / "layer.json", json_bytes({**meta, "tar_split": TAR_SPLIT}), durable=True, mode=0o644)
    return "migrated"


def _split_blob(blob: Path, records: BinaryIO) -> None:
    """Records for the tar ``blob`` whose members are unpacked in the layer's diff/: each
    regular file still on disk (no later member replaced or removed it, as the extractor
    does: tarsafe.py) is referenced; the rest is raw. What this gets wrong the caller's
    check finds."""
    with tarfile.open(blob, mode="r:", encoding="utf-8", errors="surrogateescape") as tar:
        members = tar.getmembers()
    replaced: set[tuple[str, ...]] = set()   # paths a later member takes
    removed: set[tuple[str, ...]] = set()    # paths whose whole subtree a later member removes
    references = []
    for member in reversed(members):  # later members first: their effects are known
        try:
            parts = member_path(member.name)
        except UnsafeMember:
            continue
        if not parts or member.ischr() or member.isblk():
            continue  # devices are skipped by the extractor: they remove nothing
        name = parts[-1]
        if name.startswith(WHITEOUT_PREFIX):
            if name != OPAQUE_MARKER:
                target = parts[:-1] + (name[len(WHITEOUT_PREFIX):],)
                replaced.add(target)
                removed.add(target)
            continue
        gone = parts in replaced or any(parts[:depth] in removed for depth in range(1, len(parts) + 1))
        if member.isreg() and not member.issparse() and member.size > 0 and not gone:
            references.append((member.offset_data, member.size, parts))
        replaced.add(parts)
        if not member.isdir():
            removed.add(parts)
    references.sort()
    writer = TarSplitWriter(records)
    with open(blob, "rb") as source:
        for offset, size, parts in references:
            _copy(source, writer, offset - writer.received)
            writer.content(offset, size, parts)
            source.seek(size, os.SEEK_CUR)
            writer.skipped(size)
        while chunk := source.read(CHUNK):
            writer.write(chunk)
    writer.close()


def _copy(source: BinaryIO, writer: TarSplitWriter, length: int) -> None:
    while length > 0:
        chunk = source.read(min(length, CHUNK))
        if not chunk:
            raise ValueError("the blob ends early")
        writer.write(chunk)
        length -= len(chunk)
