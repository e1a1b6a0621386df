"""save and load: archives round-trip, and every hostile or bogus archive changes nothing."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from supervisor.errors import ImageError
from supervisor.images import archive
from supervisor.images.store import ImageStore, NewImage
from tests.rootfs import snapshot, tar_bytes


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_member(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = 1_600_000_000
    return info, data


def layer(*members) -> bytes:
    return tar_bytes(list(members))


def archive_bytes(files: dict[str, bytes]) -> bytes:
    return tar_bytes([file_member(name, data) for name, data in files.items()])


def docker_archive(layers: list[bytes], tags=("app:v1",), config_name=None, diff_ids=None, layer_data=None) -> bytes:
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/app"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids or [sha(data) for data in layers]},
    }).encode()
    name = config_name or f"{hashlib.sha256(config).hexdigest()}.json"
    files = {name: config}
    paths = []
    for position, data in enumerate(layer_data or layers):
        path = f"layer{position}/layer.tar"
        files[path] = data
        paths.append(path)
    files["manifest.json"] = json.dumps([{"Config": name, "RepoTags": list(tags), "Layers": paths}]).encode()
    return archive_bytes(files)


def oci_archive(layers: list[bytes], tag="app:v1", tamper=None, compress=gzip.compress,
                media_type="application/vnd.oci.image.layer.v1.tar+gzip") -> bytes:
    compressed = [compress(data) for data in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [sha(d) for d in layers]}}).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config),
                           "size": len(config)},
                "layers": [{"mediaType": media_type, "digest": sha(c), "size": len(c)} for c in compressed]}
    if tamper:
        tamper(manifest)
    manifest_bytes = json.dumps(manifest).encode()
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                "digest": sha(manifest_bytes), "size": len(manifest_bytes),
                                                "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": json.dumps(index).encode()}
    for blob in [config, manifest_bytes, *compressed]:
        files[f"blobs/sha256/{sha(blob)[7:]}"] = blob
    return archive_bytes(files)


@pytest.fixture
def store(tmp_path) -> ImageStore:
    return ImageStore(tmp_path / "root", bomb_floor=1 << 20)


BASE = layer(file_member("bin/app", b"#!/bin/sh\necho app\n", 0o755), file_member("etc/conf", b"a=1\n"))
TOP = layer(file_member("etc/conf", b"a=2\n"), file_member("srv/data", b"data"))


def load_bytes(store: ImageStore, data: bytes, tmp_path: Path, name: str = "in.tar"):
    path = tmp_path / name
    path.write_bytes(data)
    return [loaded.image for loaded in archive.load(store, path)]


def test_docker_archive_loads_with_its_layers_and_tags(store, tmp_path):
    [image] = load_bytes(store, docker_archive([BASE, TOP]), tmp_path)
    assert image.repo_tags == ("app:v1",)
    assert image.config == {"Cmd": ["/bin/app"]}
    top, base = (Path(p) for p in image.layers)
    assert (base / "etc" / "conf").read_text() == "a=1\n" and (top / "etc" / "conf").read_text() == "a=2\n"
    assert store.resolve("app:v1") == image


def test_oci_archive_with_gzip_layers_loads_and_saves_back_identically(store, tmp_path):
    [image] = load_bytes(store, gzip.compress(oci_archive([BASE, TOP])), tmp_path)
    saved = tmp_path / "saved.tar"
    assert archive.save(store, ["app:v1"], saved) == ["app:v1"]
    with tarfile.open(saved) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())
        index = json.loads(tar.extractfile("index.json").read())
        for name in names:
            if name.startswith("blobs/sha256/"):
                assert sha(tar.extractfile(name).read()) == "sha256:" + name.rsplit("/", 1)[1]
    assert {"oci-layout", "index.json", "manifest.json"} <= names
    assert manifest == [{"Config": f"blobs/sha256/{image.id}", "RepoTags": ["app:v1"],
                         "Layers": [f"blobs/sha256/{d[7:]}" for d in image.diff_ids]}]
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "app:v1"

    other = ImageStore(tmp_path / "other")
    [again] = [loaded.image for loaded in archive.load(other, saved)]
    assert (again.id, again.repo_tags, again.diff_ids) == (image.id, image.repo_tags, image.diff_ids)


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)


def test_oci_archive_with_zstd_layers_loads_whole_archive_zstd_too(store, tmp_path):
    """As ``skopeo copy --dest-compress-format zstd ... oci-archive:`` writes it; and the whole
    archive compressed with zstd, as docker load takes it."""
    made = oci_archive([BASE, TOP], compress=zstd, media_type="application/vnd.oci.image.layer.v1.tar+zstd")
    [image] = load_bytes(store, made, tmp_path)
    top, base = (Path(p) for p in image.layers)
    assert (base / "bin" / "app").read_bytes() == b"#!/bin/sh\necho app\n" and (top / "srv" / "data").read_bytes() == b"data"
    assert image.diff_ids == (sha(BASE), sha(TOP))
    other = ImageStore(tmp_path / "other")
    [again] = load_bytes(other, zstd(made), tmp_path, "whole.tar.zst")
    assert again.id == image.id


def test_a_load_reports_only_the_tags_the_archive_named(store, tmp_path):
    [first] = load_bytes(store, docker_archive([BASE], tags=("one:1",)), tmp_path, "a.tar")
    store.tag("one:1", "extra:2")
    path = tmp_path / "b.tar"
    path.write_bytes(docker_archive([BASE], tags=("two:1",)))
    [loaded] = archive.load(store, path)
    assert loaded.image.id == first.id and loaded.tags == ("two:1",)
    assert set(loaded.image.repo_tags) == {"one:1", "extra:2", "two:1"}
    path.write_bytes(docker_archive([BASE], tags=()))
    [untagged] = archive.load(store, path)
    assert untagged.image.id == first.id and untagged.tags == ()


def test_a_loaded_layer_shared_with_an_existing_image_is_unpacked_once(store, tmp_path):
    [first] = load_bytes(store, docker_archive([BASE], tags=("one:1",)), tmp_path, "a.tar")
    [second] = load_bytes(store, docker_archive([BASE, TOP], tags=("two:1",)), tmp_path, "b.tar")
    assert second.layers[1] == first.layers[0]
    assert len(os.listdir(store.layers_dir)) == 2


def bad_archives() -> dict[str, bytes]:
    # Layers the store does not have yet (it would not read a layer it has, as docker).
    good_config = json.dumps({"os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(TOP)]}}).encode()
    escaping = layer(file_member("../../../../escaped", b"pwned"))
    bomb = bz2.compress(b"\0" * (8 << 20)) * 4  # multi-stream: 32 MiB of zeros from a few hundred bytes
    return {
        "bogus-config-digest": docker_archive([BASE], config_name="0" * 64 + ".json"),
        "diff-id-mismatch": docker_archive([BASE], diff_ids=[sha(TOP)]),
        "oci-layer-digest": oci_archive([TOP], tamper=lambda m: m["layers"][0].update(digest=sha(b"other"))),
        "oci-layer-size": oci_archive([TOP], tamper=lambda m: m["layers"][0].update(size=5)),
        "missing-layer": archive_bytes({"c.json": good_config, "manifest.json": json.dumps(
            [{"Config": "c.json", "RepoTags": ["app:v1"], "Layers": ["nope/layer.tar"]}]).encode()}),
        "layer-count": docker_archive([BASE, TOP], diff_ids=[sha(BASE)]),
        "escaping-layer": docker_archive([escaping]),
        "truncated": docker_archive([BASE, TOP])[:3000],
        "not-an-image": archive_bytes({"hello.txt": b"hi"}),
        "bad-tag": docker_archive([BASE], tags=("UPPER:case",)),
        "decompression-bomb": bomb,
        "zstd-bomb": zstd(bytes(64 << 20)),  # 64 MiB of zeros in a few kB: the whole archive
        "zstd-layer-bomb": oci_archive([tar_bytes([file_member("zeros", bytes(64 << 20))])], compress=zstd,
                                       media_type="application/vnd.oci.image.layer.v1.tar+zstd"),
        "zstd-layer-truncated": oci_archive([TOP], compress=lambda data: zstd(data)[:-5]),
        "zstd-layer-corrupt": oci_archive([TOP], compress=lambda data: (lambda z: z[:30] + bytes([z[30] ^ 0x55])
                                                                        + z[31:])(zstd(data))),
    }


@pytest.mark.parametrize("case", sorted(bad_archives()))
def test_bad_archive_is_refused_and_changes_nothing(store, tmp_path, case):
    [kept] = load_bytes(store, docker_archive([BASE], tags=("app:v1",)), tmp_path, "good.tar")
    (tmp_path / "outside").mkdir()
    before = snapshot(tmp_path, exclude=tmp_path / "in.tar")
    with pytest.raises(ImageError) as caught:
        load_bytes(store, bad_archives()[case], tmp_path)
    assert "archive" in caught.value.message
    after = snapshot(tmp_path, exclude=tmp_path / "in.tar")
    assert after == before
    assert store.list() == [kept]
    assert os.listdir(store.tmp_dir) == []


def test_escaping_layer_names_the_member(store, tmp_path):
    with pytest.raises(ImageError, match="escaped"):
        load_bytes(store, bad_archives()["escaping-layer"], tmp_path)


def test_blob_ingest_verifies_digest_and_size_and_keeps_nothing_half_written(store):
    data = b"a blob a registry client streams in"
    with store.stage() as stage:
        with pytest.raises(ImageError, match="not the expected"):
            stage.write_blob(io.BytesIO(data), digest=sha(b"something else"))
        with pytest.raises(ImageError, match="size"):
            stage.write_blob(io.BytesIO(data), digest=sha(data), size=len(data) - 1)
        with pytest.raises(ImageError, match="invalid digest"):
            stage.write_blob(io.BytesIO(data), digest="md5:abc")
        assert sorted(p.name for p in stage.dir.iterdir()) == ["blobs", "layers"]
        assert list(stage.blobs_dir.iterdir()) == []
        blob = stage.write_blob(io.BytesIO(data), digest=sha(data), size=len(data))
        assert stage.blob_path(blob.digest).read_bytes() == data
        # A gzip layer checked against its descriptor and its diff id, then committed.
        packed = gzip.compress(BASE)
        layer = stage.add_layer(io.BytesIO(packed), parent=None, diff_id=sha(BASE), digest=sha(packed),
                                size=len(packed))
        config = json.dumps({"os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(BASE)]}}).encode()
        [image] = store.commit(stage, [NewImage(config, (layer,), ("pulled:1",))])
    assert store.resolve("pulled:1") == image
    assert not store.blob_path(sha(BASE)).exists()  # no layer blob: one copy, unpacked
    with store.open_layer(layer.chain_id) as stream:
        assert stream.read() == BASE  # regenerated byte for byte
    assert store.layer_compressed(layer.chain_id) == {
        "digest": sha(packed), "size": len(packed), "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}
    assert os.listdir(store.tmp_dir) == []
