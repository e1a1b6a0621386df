"""supervisor/registry/pushlayout.py: the gzip layout a push reads, and the records that let
a second push name a compressed layer without compressing it."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from supervisor.registry.layout import blob_path
from supervisor.registry.pushlayout import OCI_LAYER_GZIP, BlobRecords, PushLayout


def put(store: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (store / digest.removeprefix("sha256:")).write_bytes(data)
    return digest


@pytest.fixture
def store(tmp_path):
    blobs = tmp_path / "store"
    blobs.mkdir()
    layer = b"a tar, very compressible " * 4096
    diff_id = put(blobs, layer)
    config = put(blobs, json.dumps({"rootfs": {"diff_ids": [diff_id]}}).encode())
    manifest = put(blobs, json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff_id, "size": len(layer)}],
    }).encode())
    return blobs, manifest, diff_id, layer


def test_layers_are_gzip_deterministic_and_recorded_so_a_second_push_compresses_nothing(store, tmp_path):
    blobs, manifest_digest, diff_id, layer = store
    records = BlobRecords(tmp_path / "records.json")
    lookup = lambda digest: blobs / digest.removeprefix("sha256:")  # noqa: E731

    first = PushLayout(tmp_path / "one", records, lookup).build(manifest_digest)
    manifest = json.loads(first.blob_path(first.descriptor.digest).read_bytes())
    (entry,) = manifest["layers"]
    assert entry["mediaType"] == OCI_LAYER_GZIP and entry["size"] < len(layer) // 20
    compressed = first.blob_path(entry["digest"]).read_bytes()
    assert gzip.decompress(compressed) == layer and len(compressed) == entry["size"]
    assert "sha256:" + hashlib.sha256(compressed).hexdigest() == entry["digest"]
    assert records.compressed(diff_id) == (entry["digest"], entry["size"])

    second = PushLayout(tmp_path / "two", records, lookup).build(manifest_digest)
    assert second.descriptor == first.descriptor  # the same manifest
    assert not blob_path(second.root, entry["digest"]).exists()  # named from the records, not compressed
    second.materialise(entry["digest"])  # the registry lacks it after all
    assert blob_path(second.root, entry["digest"]).read_bytes() == compressed


def test_records_survive_a_damaged_file_and_list_sources_per_registry(tmp_path):
    path = tmp_path / "records.json"
    path.write_text("{not json")
    records = BlobRecords(path)
    assert records.compressed("sha256:x") is None and records.sources("r:5000", "sha256:x") == []
    records.add_sources("r:5000", "first", ["sha256:x", "sha256:y"])
    records.add_sources("r:5000", "second", ["sha256:x"])
    records.add_sources("r:5000", "first", ["sha256:x"])
    assert records.sources("r:5000", "sha256:x") == ["first", "second"]
    assert records.sources("other:5000", "sha256:x") == []


def test_a_record_that_no_longer_matches_is_refused_then_corrected(store, tmp_path):
    blobs, manifest_digest, diff_id, layer = store
    records = BlobRecords(tmp_path / "records.json")
    records.set_compressed(diff_id, "sha256:" + "f" * 64, 10)  # as if another zlib had made it
    lookup = lambda digest: blobs / digest.removeprefix("sha256:")  # noqa: E731
    stale = PushLayout(tmp_path / "one", records, lookup).build(manifest_digest)
    with pytest.raises(OSError, match="push again"):
        stale.materialise("sha256:" + "f" * 64)
    fresh = PushLayout(tmp_path / "two", records, lookup).build(manifest_digest)
    (entry,) = json.loads(fresh.blob_path(fresh.descriptor.digest).read_bytes())["layers"]
    assert entry["digest"] != "sha256:" + "f" * 64
    fresh.materialise(entry["digest"])
    assert gzip.decompress(fresh.blob_path(entry["digest"]).read_bytes()) == layer


def test_a_pulled_layer_is_named_as_the_registry_has_it_where_the_records_say_it_is(store, tmp_path):
    blobs, manifest_digest, diff_id, layer = store
    records = BlobRecords(tmp_path / "records.json")
    lookup = lambda digest: blobs / digest.removeprefix("sha256:")  # noqa: E731
    pulled_digest = "sha256:" + "c" * 64
    pulled = {"digest": pulled_digest, "size": 1234, "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip"}
    records.add_sources("r:5000", "library/base", [pulled_digest])
    opened = []

    def open_layer(digest):
        opened.append(digest)
        return open(lookup(digest), "rb")

    same = PushLayout(tmp_path / "one", records, lookup, open_layer=open_layer, pulled=lambda d: pulled,
                      registry="r:5000").build(manifest_digest)
    (entry,) = json.loads(same.blob_path(same.descriptor.digest).read_bytes())["layers"]
    assert (entry["digest"], entry["size"], entry["mediaType"]) == (pulled_digest, 1234, OCI_LAYER_GZIP)
    assert opened == []  # nothing regenerated nor compressed
    with pytest.raises(OSError, match="neither its blob .* push again"):
        same.materialise(pulled_digest)  # the registry lost it: the record goes
    assert records.sources("r:5000", pulled_digest) == []

    elsewhere = PushLayout(tmp_path / "two", records, lookup, open_layer=open_layer, pulled=lambda d: pulled,
                           registry="other:5000").build(manifest_digest)
    (entry,) = json.loads(elsewhere.blob_path(elsewhere.descriptor.digest).read_bytes())["layers"]
    assert entry["digest"] != pulled_digest and opened == [diff_id]
    assert gzip.decompress(elsewhere.blob_path(entry["digest"]).read_bytes()) == layer


def test_the_gzip_stream_depends_on_the_input_alone_and_stores_what_does_not_compress():
    import os

    from supervisor.registry.pushlayout import BLOCK, Deflater

    text = b"a line of a text file\n" * 200_000  # several blocks
    noise = os.urandom(2 * BLOCK + 123)
    for data in (b"", text, noise, noise + text):
        whole = Deflater()
        at_once = whole.feed(data) + whole.finish()
        fed = Deflater()
        in_pieces = b"".join(fed.feed(data[i:i + 65_537]) for i in range(0, len(data), 65_537)) + fed.finish()
        assert at_once == in_pieces and gzip.decompress(at_once) == data
    squeezed = Deflater()
    assert len(squeezed.feed(text) + squeezed.finish()) < len(text) // 20
    stored = Deflater()
    assert len(stored.feed(noise) + stored.finish()) < len(noise) * 1.001  # stored: 5 bytes per 64 KiB


def test_a_record_of_an_earlier_compressor_is_ignored(tmp_path):
    path = tmp_path / "records.json"
    path.write_text(json.dumps({"compressed": {"sha256:" + "1" * 64: {"digest": "sha256:" + "2" * 64, "size": 5}},
                                "sources": {}}))
    records = BlobRecords(path)
    assert records.compressed("sha256:" + "1" * 64) is None
    records.set_compressed("sha256:" + "1" * 64, "sha256:" + "3" * 64, 7)
    assert records.compressed("sha256:" + "1" * 64) == ("sha256:" + "3" * 64, 7)


def test_zstd_layers_have_their_own_media_type_and_records(store, tmp_path):
    import zstandard

    from supervisor.registry.pushlayout import OCI_LAYER_ZSTD

    blobs, manifest_digest, diff_id, layer = store
    records = BlobRecords(tmp_path / "records.json")
    lookup = lambda digest: blobs / digest.removeprefix("sha256:")  # noqa: E731
    gzipped = PushLayout(tmp_path / "gzip", records, lookup).build(manifest_digest)
    (gzip_entry,) = json.loads(gzipped.blob_path(gzipped.descriptor.digest).read_bytes())["layers"]

    first = PushLayout(tmp_path / "one", records, lookup, compression="zstd", forced=True).build(manifest_digest)
    (entry,) = json.loads(first.blob_path(first.descriptor.digest).read_bytes())["layers"]
    assert entry["mediaType"] == OCI_LAYER_ZSTD and entry["size"] < len(layer) // 20
    compressed = first.blob_path(entry["digest"]).read_bytes()
    assert compressed.startswith(b"\x28\xb5\x2f\xfd") and len(compressed) == entry["size"]
    assert zstandard.ZstdDecompressor().decompressobj().decompress(compressed) == layer
    assert records.compressed(diff_id, "zstd") == (entry["digest"], entry["size"])
    assert records.compressed(diff_id) == (gzip_entry["digest"], gzip_entry["size"])  # gzip's kept beside

    opened = []
    second = PushLayout(tmp_path / "two", records, lookup, open_layer=lambda d: opened.append(d),
                        compression="zstd", forced=True).build(manifest_digest)
    assert second.descriptor == first.descriptor and opened == []  # named from the records
    assert second.descriptor != gzipped.descriptor


@pytest.mark.parametrize("pulled_type, compression, forced, named", [
    ("application/vnd.oci.image.layer.v1.tar+zstd", "gzip", False, True),  # the default keeps any
    ("application/vnd.oci.image.layer.v1.tar+zstd", "gzip", True, False),  # --compression-format gzip
    ("application/vnd.oci.image.layer.v1.tar+zstd", "zstd", True, True),
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", "zstd", True, False),  # --compression-format zstd
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", "gzip", True, True),
])
def test_a_pulled_blob_is_named_unless_another_compression_was_asked_for(store, tmp_path, pulled_type, compression,
                                                                        forced, named):
    from supervisor.registry.pushlayout import COMPRESSIONS

    blobs, manifest_digest, diff_id, layer = store
    records = BlobRecords(tmp_path / "records.json")
    pulled_digest = "sha256:" + "c" * 64
    records.add_sources("r:5000", "library/base", [pulled_digest])
    layout = PushLayout(tmp_path / "one", records, lambda d: blobs / d.removeprefix("sha256:"),
                        pulled=lambda d: {"digest": pulled_digest, "size": 1234, "mediaType": pulled_type},
                        registry="r:5000", compression=compression, forced=forced).build(manifest_digest)
    (entry,) = json.loads(layout.blob_path(layout.descriptor.digest).read_bytes())["layers"]
    if named:  # as the registry has it (docker's gzip type spelt as OCI's in an OCI manifest)
        assert entry["digest"] == pulled_digest
        assert entry["mediaType"] == pulled_type.replace("docker.image.rootfs.diff.tar.gzip", "oci.image.layer.v1.tar+gzip")
    else:
        assert entry["digest"] != pulled_digest and entry["mediaType"] == COMPRESSIONS[compression].media_type
        assert layout.blob_path(entry["digest"]).exists()


def test_a_layer_pushed_in_the_other_format_is_named_unless_a_format_was_asked_for(store, tmp_path):
    from supervisor.registry.pushlayout import OCI_LAYER_ZSTD

    blobs, manifest_digest, diff_id, layer = store
    records = BlobRecords(tmp_path / "records.json")
    lookup = lambda digest: blobs / digest.removeprefix("sha256:")  # noqa: E731
    zstd = PushLayout(tmp_path / "zstd", records, lookup, registry="r:5000", compression="zstd",
                      forced=True).build(manifest_digest)
    (zstd_entry,) = json.loads(zstd.blob_path(zstd.descriptor.digest).read_bytes())["layers"]
    assert zstd_entry["mediaType"] == OCI_LAYER_ZSTD
    default = PushLayout(tmp_path / "before", records, lookup, registry="r:5000").build(manifest_digest)
    (entry,) = json.loads(default.blob_path(default.descriptor.digest).read_bytes())["layers"]
    assert entry["mediaType"] == OCI_LAYER_GZIP  # the registry is not known to hold the zstd blob yet

    records.add_sources("r:5000", "team/app", [zstd_entry["digest"]])  # as the zstd push records it
    default = PushLayout(tmp_path / "default", records, lookup, registry="r:5000").build(manifest_digest)
    assert default.descriptor == zstd.descriptor  # the same manifest: the zstd blob named, nothing compressed
    asked = PushLayout(tmp_path / "asked", records, lookup, registry="r:5000", compression="gzip",
                       forced=True).build(manifest_digest)
    (entry,) = json.loads(asked.blob_path(asked.descriptor.digest).read_bytes())["layers"]
    assert entry["mediaType"] == OCI_LAYER_GZIP
