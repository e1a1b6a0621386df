"""zstd layers (``application/vnd.oci.image.layer.v1.tar+zstd``) end to end, through the
real CLI, docker-registry on 127.0.0.1, skopeo and podman: ``push --compression-format
zstd`` that podman runs and skopeo reads; images skopeo and podman pushed with zstd that
dockyard pulls, loads and runs; hostile zstd layers refused with the layer named."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import urllib.request

import pytest
import zstandard

from supervisor.images.layout import chain_ids
from tests.registry_server import Registry, sha256
from tests.rootfs import snapshot
from tests.tools import require

pytestmark = pytest.mark.integration

ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@pytest.fixture
def registry(tmp_path):
    registry = Registry(tmp_path / "registry")
    registry.directory.mkdir()
    registry.start()
    yield registry
    registry.stop()


def http(registry: Registry, method: str, path: str, data: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[bytes, dict[str, str]]:
    url = path if path.startswith("http") else f"http://{registry.host}{path}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=60) as response:  # loopback only
        return response.read(), dict(response.headers)


def manifest_of(registry: Registry, repository: str, tag: str) -> dict:
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    return json.loads(http(registry, "GET", f"/v2/{repository}/manifests/{tag}", headers={"Accept": accept})[0])


def blob_of(registry: Registry, repository: str, digest: str) -> bytes:
    return http(registry, "GET", f"/v2/{repository}/blobs/{digest}")[0]


def inspect(daemon, ref: str) -> dict:
    return json.loads(daemon.out("inspect", "--type", "image", ref))[0]


def layer_record(daemon, chain_id: str) -> dict:
    path = daemon.root / "images" / "layers" / chain_id.removeprefix("sha256:") / "layer.json"
    return json.loads(path.read_bytes())


def skopeo(*args: str) -> str:
    require("skopeo")
    result = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"skopeo {' '.join(args)}: {result.stderr}"
    return result.stdout


def test_push_zstd_then_podman_runs_it_skopeo_reads_it_and_a_pull_gives_it_back(daemon, registry, tmp_path,
                                                                                podman_dir):
    from tests.integration.test_images import podman, podman_run

    daemon.out("run", "--name", "maker", "base", "sh", "-c", "echo made with zstd > /motd; seq 1 50000 > /numbers")
    daemon.out("commit", "maker", "zstd:1")
    daemon.out("rm", "maker")
    diff_ids = inspect(daemon, "zstd:1")["RootFS"]["Layers"]
    ref = f"{registry.host}/team/zstd:1"
    daemon.out("tag", "zstd:1", ref)
    refused = daemon.cli("push", "--compression-format", "brotli", ref)
    assert refused.returncode == 2 and "invalid choice: 'brotli'" in refused.stderr.decode()

    digest = daemon.out("push", "--compression-format", "zstd", ref).split()[2]
    manifest = manifest_of(registry, "team/zstd", "1")
    assert [layer["mediaType"] for layer in manifest["layers"]] == [ZSTD_LAYER] * 2
    for layer, diff_id in zip(manifest["layers"], diff_ids):
        blob = blob_of(registry, "team/zstd", layer["digest"])
        assert blob.startswith(ZSTD_MAGIC) and sha256(blob) == layer["digest"]
        assert sha256(zstandard.ZstdDecompressor().decompressobj().decompress(blob)) == diff_id
    assert inspect(daemon, ref)["RepoDigests"] == [f"{registry.host}/team/zstd@{digest}"]
    assert daemon.out("push", "--compression-format", "zstd", ref).split()[2] == digest  # deterministic

    # skopeo inspects and copies it (checking each blob's digest; skopeo 1.9 cannot decompress
    # zstd for a copy: podman below unpacks it)
    assert json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}"))["Digest"] == digest
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{tmp_path / 'copied'}:1")
    index = json.loads((tmp_path / "copied" / "index.json").read_bytes())
    copied = tmp_path / "copied" / "blobs" / "sha256" / index["manifests"][0]["digest"].removeprefix("sha256:")
    assert json.loads(copied.read_bytes())["layers"] == manifest["layers"]
    # podman pulls and runs it
    podman(podman_dir, "pull", "--tls-verify=false", ref)
    podman_layers = json.loads(podman(podman_dir, "image", "inspect", ref).stdout)[0]["RootFS"]["Layers"]
    assert podman_layers == diff_ids
    assert podman_run(podman_dir, ref, "cat", "/motd") == "made with zstd\n"

    # pulled back (the base layer is still here, for the image base): the registry's zstd blob
    # of the other layer recorded, the content runs
    daemon.out("rmi", ref)
    daemon.out("rmi", "zstd:1")
    daemon.out("pull", ref)
    assert inspect(daemon, ref)["RootFS"]["Layers"] == diff_ids
    layer = manifest["layers"][1]
    assert layer_record(daemon, chain_ids(diff_ids)[1])["compressed"] == {
        "digest": layer["digest"], "size": layer["size"], "mediaType": ZSTD_LAYER}
    assert daemon.out("run", "--rm", ref, "sh", "-c", "cat /motd; wc -l < /numbers") == "made with zstd\n50000\n"

    # pushed to another repository without the flag: the registry's zstd blobs are mounted
    # as they are (podman's default); --compression-format gzip sends gzip
    other = f"{registry.host}/other/zstd:1"
    daemon.out("tag", ref, other)
    assert daemon.out("push", other).split()[2] == digest
    gzipped = f"{registry.host}/other/gzip:1"
    daemon.out("tag", ref, gzipped)
    daemon.out("push", "--compression-format", "gzip", gzipped)
    assert {layer["mediaType"] for layer in manifest_of(registry, "other/gzip", "1")["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+gzip"}


def test_skopeo_zstd_images_pull_load_and_run(daemon, registry, tmp_path):
    daemon.out("save", "-o", str(tmp_path / "base.tar"), "base")
    diff_ids = inspect(daemon, "base")["RootFS"]["Layers"]
    ref = f"{registry.host}/skopeo/zstd:1"
    skopeo("copy", "--dest-tls-verify=false", "--dest-compress-format", "zstd",
           f"docker-archive:{tmp_path / 'base.tar'}", f"docker://{ref}")
    manifest = manifest_of(registry, "skopeo/zstd", "1")
    assert {layer["mediaType"] for layer in manifest["layers"]} == {ZSTD_LAYER}
    skopeo("copy", "--dest-compress-format", "zstd", f"docker-archive:{tmp_path / 'base.tar'}",
           f"oci-archive:{tmp_path / 'zstd-oci.tar'}:zstd/loaded:1")

    daemon.out("rmi", "base")
    daemon.out("pull", ref)
    assert inspect(daemon, ref)["RootFS"]["Layers"] == diff_ids
    assert daemon.out("run", "--rm", ref, "echo", "pulled zstd") == "pulled zstd\n"
    daemon.out("rmi", ref)

    loaded = daemon.out("load", "-i", str(tmp_path / "zstd-oci.tar"))
    assert "zstd/loaded:1" in loaded, loaded
    assert inspect(daemon, "zstd/loaded:1")["RootFS"]["Layers"] == diff_ids
    assert daemon.out("run", "--rm", "zstd/loaded:1", "echo", "loaded zstd") == "loaded zstd\n"


def test_podman_pushed_zstd_image_pulls_and_runs(daemon, registry, tmp_path, podman_dir):
    from tests.integration.test_images import podman

    daemon.out("run", "--name", "maker", "base", "sh", "-c", "echo from podman > /motd")
    daemon.out("commit", "maker", "podmanmade:1")
    daemon.out("rm", "maker")
    diff_ids = inspect(daemon, "podmanmade:1")["RootFS"]["Layers"]
    daemon.out("save", "-o", str(tmp_path / "made.tar"), "podmanmade:1")
    podman(podman_dir, "load", "-i", str(tmp_path / "made.tar"))
    ref = f"{registry.host}/podman/zstd:1"
    podman(podman_dir, "push", "--tls-verify=false", "--compression-format", "zstd", "podmanmade:1", ref)
    assert {layer["mediaType"] for layer in manifest_of(registry, "podman/zstd", "1")["layers"]} == {ZSTD_LAYER}

    daemon.out("rmi", "podmanmade:1")
    daemon.out("pull", ref)
    assert inspect(daemon, ref)["RootFS"]["Layers"] == diff_ids
    assert daemon.out("run", "--rm", ref, "cat", "/motd") == "from podman\n"


def upload(registry: Registry, repository: str, data: bytes) -> dict:
    """A blob put on the registry by hand (POST, then PUT with its digest), so it may hold
    anything."""
    _, headers = http(registry, "POST", f"/v2/{repository}/blobs/uploads/", data=b"")
    location = headers["Location"]
    separator = "&" if "?" in location else "?"
    http(registry, "PUT", f"{location}{separator}digest={sha256(data)}", data=data,
         headers={"Content-Type": "application/octet-stream"})
    return {"digest": sha256(data), "size": len(data)}


def zstd_tar(files: dict[str, bytes]) -> tuple[bytes, bytes]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(payload), 0o644
            tar.addfile(info, io.BytesIO(payload))
    plain = buffer.getvalue()
    return plain, zstandard.ZstdCompressor(level=3, write_checksum=True).compress(plain)


def hostile_layers() -> dict[str, tuple[bytes, bytes, str]]:
    """case -> (the tar its config claims, the blob served, what the error says)."""
    plain, packed = zstd_tar({"etc/motd": os.urandom(2000) + b"hostile\n" * 1000})
    corrupt = bytearray(packed)
    corrupt[len(corrupt) // 2] ^= 0x55
    zeros = b"\0" * (64 << 20)
    bomb_plain, bomb = zstd_tar({"zeros": zeros})
    return {
        "corrupt": (plain, bytes(corrupt), "corrupt zstd stream"),
        "truncated": (plain, packed[:-7], "truncated zstd stream"),
        "garbage-after": (plain, packed + b"not zstd", "after the last zstd frame"),
        "bomb": (bomb_plain, bomb, "decompression bomb"),
    }


def test_hostile_zstd_layers_are_refused_naming_the_layer_and_change_nothing(daemon, registry):
    store = daemon.root / "images"
    before = snapshot(store)
    images = daemon.out("images", "-q")
    for case, (plain, blob, message) in hostile_layers().items():
        repository = f"hostile/{case}"
        layer = upload(registry, repository, blob)
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                             "rootfs": {"type": "layers", "diff_ids": [sha256(plain)]}}).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **upload(registry, repository, config)},
            "layers": [{"mediaType": ZSTD_LAYER, **layer}],
        }).encode()
        http(registry, "PUT", f"/v2/{repository}/manifests/1", data=manifest,
             headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        pulled = daemon.cli("pull", f"{registry.host}/{repository}:1")
        error = pulled.stderr.decode()
        assert pulled.returncode == 1, (case, error)
        assert message in error and f"layer {layer['digest']}" in error, (case, error)
        assert snapshot(store) == before, case
        assert daemon.out("images", "-q") == images
    assert daemon.out("run", "--rm", "base", "echo", "still up") == "still up\n"
