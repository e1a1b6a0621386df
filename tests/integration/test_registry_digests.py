"""Digest references and RepoDigests through the real CLI, against docker-registry on
127.0.0.1: ``run``/``create``/``inspect``/``tag``/``rmi``/``pull`` with ``name@sha256:...``."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile

import pytest

from supervisor.images.layout import chain_ids
from tests.registry_server import Registry
from tests.tools import require

pytestmark = pytest.mark.integration


@pytest.fixture
def open_registry(tmp_path):
    registry = Registry(tmp_path / "open-registry")
    registry.directory.mkdir()
    registry.start()
    yield registry
    registry.stop()


def inspect(daemon, ref: str) -> dict:
    return json.loads(daemon.out("inspect", "--type", "image", ref))[0]


def test_repo_digests_after_push_and_pull_and_references_by_digest(daemon, open_registry):
    name = f"{open_registry.host}/base"
    daemon.out("tag", "base", f"{name}:1")
    assert inspect(daemon, "base")["RepoDigests"] == []
    digest = daemon.out("push", f"{name}:1").split()[2]
    assert digest.startswith("sha256:")
    assert inspect(daemon, f"{name}:1")["RepoDigests"] == [f"{name}@{digest}"]

    # run, create, inspect, tag by digest (a tag beside the digest is ignored, as docker)
    assert daemon.out("run", "--rm", f"{name}@{digest}", "echo", "by digest") == "by digest\n"
    assert daemon.out("run", "--rm", f"{name}:other@{digest}", "echo", "tag too") == "tag too\n"
    created = daemon.out("create", "--name", "made", f"{name}@{digest}", "true").strip()
    assert created
    daemon.out("rm", "made")
    assert inspect(daemon, f"{name}@{digest}")["Id"] == inspect(daemon, "base")["Id"]
    daemon.out("tag", f"{name}@{digest}", "again:1")
    assert inspect(daemon, "again:1")["Id"] == inspect(daemon, "base")["Id"]

    # a wrong digest is refused clearly, and changes nothing
    wrong = "sha256:" + "0" * 64
    refused = daemon.cli("run", "--rm", f"{name}@{wrong}", "true")
    assert refused.returncode != 0
    message = refused.stderr.decode()
    assert f"no such image: {name}@{wrong}" in message and "has the digest" in message, message
    bad = daemon.cli("run", "--rm", f"{name}@sha256:abc", "true")
    assert bad.returncode != 0 and "sha256:<64 hex digits>" in bad.stderr.decode(), bad.stderr.decode()

    # pull by digest into an empty store: RepoDigests recorded, no tag made
    for ref in (f"{name}:1", "again:1", "base"):
        daemon.out("rmi", ref)
    assert daemon.out("images", "-q").strip() == ""
    pulled = daemon.out("pull", f"{name}@{digest}")
    assert digest in pulled, pulled
    image = inspect(daemon, f"{name}@{digest}")
    assert image["RepoDigests"] == [f"{name}@{digest}"] and image["RepoTags"] == []
    assert daemon.out("run", "--rm", f"{name}@{digest}", "echo", "pulled") == "pulled\n"
    daemon.out("pull", f"{name}:1")  # and by tag: the same image, now tagged
    image = inspect(daemon, f"{name}:1")
    assert image["RepoDigests"] == [f"{name}@{digest}"] and image["RepoTags"] == [f"{name}:1"]
    # rmi by digest removes the image and its digest
    daemon.out("rmi", f"{name}@{digest}")
    assert daemon.out("images", "-q").strip() == ""
    assert daemon.cli("inspect", "--type", "image", f"{name}@{digest}").returncode != 0


class LoggingRegistry(Registry):
    """docker-registry with its access log on: every request is a line of registry.log."""

    def config(self) -> str:
        return super().config().replace("    disabled: true", "    disabled: false")

    def requests(self, method: str, path_part: str) -> list[str]:
        return [line for line in self.log().splitlines() if f'"{method} ' in line and path_part in line]


@pytest.fixture
def logging_registry(tmp_path):
    registry = LoggingRegistry(tmp_path / "logging-registry")
    registry.directory.mkdir()
    registry.start()
    yield registry
    registry.stop()


def layer_record(daemon, chain_id: str) -> dict:
    return json.loads((daemon.root / "images" / "layers" / chain_id.removeprefix("sha256:") / "layer.json").read_bytes())


def registry_manifest(registry: Registry, repository: str, tag: str) -> dict:
    import urllib.request

    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    request = urllib.request.Request(f"http://{registry.host}/v2/{repository}/manifests/{tag}",
                                     headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
        return json.loads(response.read())


def test_push_compresses_layers_and_mounts_them_into_a_second_repository(daemon, logging_registry, tmp_path):
    registry = logging_registry
    # a compressible layer of 4 MiB
    daemon.out("run", "--name", "maker", "base", "sh", "-c",
               "i=0; while [ $i -lt 65536 ]; do echo 'the same line of text, over and over again.....'; "
               "i=$((i+1)); done > /text")
    daemon.out("commit", "maker", "text:1")
    daemon.out("rm", "maker")
    diff_ids = inspect(daemon, "text:1")["RootFS"]["Layers"]
    raw_sizes = [layer_record(daemon, chain)["size"] for chain in chain_ids(diff_ids)]
    assert raw_sizes[1] > 3 << 20

    first = f"{registry.host}/first"
    daemon.out("tag", "text:1", f"{first}:1")
    digest = daemon.out("push", f"{first}:1").split()[2]
    manifest = registry_manifest(registry, "first", "1")
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"] * 2
    sizes = [layer["size"] for layer in manifest["layers"]]
    assert sizes[1] < raw_sizes[1] // 20, (sizes, raw_sizes)  # gzip of repeated text
    assert sizes[0] < raw_sizes[0]
    uploads = len(registry.requests("PUT", "/v2/first/blobs/uploads/"))
    assert uploads == 3  # the config and two layers

    # the same image to a second repository: every blob is mounted from the first, none uploaded
    second = f"{registry.host}/second"
    daemon.out("tag", "text:1", f"{second}:1")
    assert daemon.out("push", f"{second}:1").split()[2] == digest  # the same manifest: deterministic gzip
    assert registry.requests("PUT", "/v2/second/blobs/uploads/") == []
    mounts = [line for line in registry.requests("POST", "/v2/second/blobs/uploads/?") if "from=first" in line]
    assert len(mounts) == 3, registry.log()
    assert sorted(inspect(daemon, "text:1")["RepoDigests"]) == sorted([f"{first}@{digest}", f"{second}@{digest}"])

    # pushed again to the first: every blob already there (HEAD), nothing uploaded or compressed
    for path in (daemon.root / "images" / "tmp").iterdir():
        assert not path.name.startswith("push-"), "a push layout left behind"
    daemon.out("push", f"{first}:1")
    assert len(registry.requests("PUT", "/v2/first/blobs/uploads/")) == uploads

    # a pull gives back the same content; skopeo and podman read what was pushed
    daemon.out("rmi", "-f", "text:1")
    daemon.out("pull", f"{second}:1")
    assert daemon.out("run", "--rm", f"{second}:1", "sh", "-c", "wc -l < /text") == "65536\n"
    require("skopeo")
    copied = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{first}:1",
                             f"oci:{tmp_path / 'skopeo'}:copied"], capture_output=True, text=True, timeout=120)
    assert copied.returncode == 0, copied.stderr
    require("podman")
    runroot = tempfile.mkdtemp(prefix="dy-podman-")
    storage = ["--root", str(tmp_path / "podman-root"), "--runroot", runroot, "--storage-driver", "vfs",
               "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    try:
        done = subprocess.run(["podman", *storage, "pull", "--tls-verify=false", f"{second}:1"], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    finally:
        subprocess.run(["podman", *storage, "rmi", "-a", "-f"], capture_output=True, timeout=60)
        shutil.rmtree(runroot, ignore_errors=True)


def test_a_pulled_image_keeps_the_registrys_blobs_and_pushes_to_that_registry_send_nothing(daemon, logging_registry,
                                                                                            tmp_path):
    """Layers pulled compressed by another tool's gzip: the store keeps them once, unpacked,
    with the registry's digests; a push to another repository of that registry mounts them."""
    registry = logging_registry
    require("skopeo")
    daemon.out("save", "-o", str(tmp_path / "base.tar"), "base")
    source = f"{registry.host}/skopeo/base:1"
    copied = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--dest-compress-format", "gzip",
                             "--dest-compress-level", "9", f"docker-archive:{tmp_path / 'base.tar'}",
                             f"docker://{source}"], capture_output=True, text=True, timeout=120)
    assert copied.returncode == 0, copied.stderr
    pushed = registry_manifest(registry, "skopeo/base", "1")
    daemon.out("rmi", "base")
    daemon.out("pull", source)
    image = inspect(daemon, source)
    chains = chain_ids(image["RootFS"]["Layers"])
    for layer, chain in zip(pushed["layers"], chains):
        record = layer_record(daemon, chain)
        assert record["compressed"] == {"digest": layer["digest"], "size": layer["size"],
                                        "mediaType": layer["mediaType"]}
        assert not (daemon.root / "images" / "blobs" / "sha256" / record["diff_id"].removeprefix("sha256:")).exists()

    copy = f"{registry.host}/copy/base:1"
    daemon.out("tag", source, copy)
    daemon.out("push", copy)
    assert registry.requests("PUT", "/v2/copy/base/blobs/uploads/") == [], registry.log()  # all mounted
    mounts = [line for line in registry.requests("POST", "/v2/copy/base/blobs/uploads/?") if "from=skopeo" in line]
    assert len(mounts) == 1 + len(pushed["layers"]), registry.log()  # the config and each layer
    copied_manifest = registry_manifest(registry, "copy/base", "1")
    assert [layer["digest"] for layer in copied_manifest["layers"]] == [layer["digest"] for layer in pushed["layers"]]
    assert daemon.out("run", "--rm", copy, "echo", "still runs") == "still runs\n"
