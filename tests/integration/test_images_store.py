"""The image store keeps each layer once: a store of an older dockyard (layer tars kept as
blobs beside the unpacked layers) is migrated when the daemon starts, said in its log, and
images saved afterwards have the same digests."""

from __future__ import annotations

import json
import tarfile

import pytest

from supervisor.images.store import ImageStore

pytestmark = pytest.mark.integration


def saved_blobs(daemon, tmp_path, name: str, image: str) -> dict[str, bytes]:
    """The blobs of ``dockyard save IMAGE`` (digest -> content)."""
    archive = tmp_path / name
    daemon.out("save", "-o", str(archive), image)
    blobs = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.name.startswith("blobs/sha256/"):
                blobs["sha256:" + member.name.rsplit("/", 1)[1]] = tar.extractfile(member).read()
    return blobs


def test_a_store_with_layer_blobs_is_migrated_at_start_and_saves_the_same_digests(daemon, tmp_path):
    daemon.out("run", "--name", "maker", "base", "sh", "-c", "echo new > /new && rm /bin/true && mkdir -p /d/e")
    daemon.out("commit", "maker", "two:1")
    daemon.out("rm", "maker")
    before = saved_blobs(daemon, tmp_path, "before.tar", "two:1")
    daemon.stop()

    # Rewrite the store as an older dockyard left it: each layer's tar as a blob too.
    store = ImageStore(daemon.root)
    images = store.dir
    layers = sorted(p for p in (images / "layers").iterdir())
    assert len(layers) == 2
    for layer in layers:
        meta = json.loads((layer / "layer.json").read_bytes())
        with store.open_layer("sha256:" + layer.name) as stream:
            store.blob_path(meta["diff_id"]).write_bytes(stream.read())
        (layer / "tar-split.gz").unlink()
        meta = {key: meta[key] for key in ("diff_id", "parent", "size")}
        (layer / "layer.json").write_text(json.dumps(meta))
    blob_bytes = sum(store.blob_path(json.loads((l / "layer.json").read_bytes())["diff_id"]).stat().st_size
                     for l in layers)

    daemon.start()
    line = next(line for line in daemon.log().splitlines() if "layers migrated to one copy on disk" in line)
    assert "migrated=2" in line and f"freed_bytes={blob_bytes}" in line, line
    for layer in layers:
        meta = json.loads((layer / "layer.json").read_bytes())
        assert meta["tar_split"] == "tar-split.gz" and not store.blob_path(meta["diff_id"]).exists()
    assert saved_blobs(daemon, tmp_path, "after.tar", "two:1") == before
    assert daemon.out("run", "--rm", "two:1", "cat", "/new") == "new\n"
