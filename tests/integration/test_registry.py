"""The registry client against a real registry (Debian's docker-registry on 127.0.0.1),
open, with htpasswd basic auth and with token auth, and against skopeo and podman; and
against a misbehaving server for the broken cases. Only loopback is ever contacted."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from supervisor.registry import layout
from supervisor.registry.auth import Credentials, CredentialStore
from supervisor.registry.errors import (
    AuthError,
    NotFoundError,
    ProtocolError,
    RegistryUnavailable,
    VerificationError,
)
from supervisor.registry.manifest import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Platform
from supervisor.registry.options import Options
from supervisor.registry.transfer import login, logout, pull, push
from tests.registry_server import Layer, Misbehaving, OCIImage, Registry, respond, sha256, tar_of, tar_of_directory
from tests.rootfs import build_rootfs
from tests.tools import require

pytestmark = pytest.mark.integration

USERS = {"alice": "wonder-land", "bob": "builder"}
ALICE = Credentials("alice", "wonder-land")


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory):
    registry = Registry(tmp_path_factory.mktemp("registry-open")).start()
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory):
    registry = Registry(tmp_path_factory.mktemp("registry-basic"), auth="htpasswd", users=USERS).start()
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    registry = Registry(tmp_path_factory.mktemp("registry-token"), auth="token", users=USERS).start()
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def busybox_layer(tmp_path_factory) -> Layer:
    return Layer(tar_of_directory(build_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")))


@pytest.fixture
def image(tmp_path, busybox_layer) -> OCIImage:
    """busybox-static plus a small layer with /etc/motd, as an OCI layout tagged ``1``."""
    built = OCIImage(tmp_path / "source")
    motd = Layer(tar_of({"etc/motd": b"hello from the registry\n"}))
    built.write(built.manifest([busybox_layer, motd], cmd=["cat", "/etc/motd"]), "1")
    return built


def blobs_in(root: Path) -> dict[str, int]:
    """Every blob file under an OCI layout, checked against its own name."""
    found = {}
    for path in (root / "blobs" / "sha256").iterdir():
        assert not path.name.startswith("."), f"temporary file left: {path}"
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == path.name
        found["sha256:" + path.name] = len(data)
    return found


def skopeo(*args: str) -> str:
    require("skopeo")
    result = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- open registry ----------------------------------------------------------------------------


async def test_push_then_skopeo_inspects_it(open_registry, image):
    ref = f"{open_registry.host}/dockyard/busybox:1"
    result = await push(layout.find_image(image.root), ref)
    manifest_digest = layout.find_image(image.root).descriptor.digest
    assert result.digest == manifest_digest
    assert len(result.uploaded) == 3 and result.existed == ()
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}"))
    assert inspected["Digest"] == manifest_digest
    manifest = json.loads(image.blobs[manifest_digest])
    assert inspected["Layers"] == [layer["digest"] for layer in manifest["layers"]]
    assert inspected["Architecture"] == "amd64"
    # a second push finds every blob there
    again = await push(layout.find_image(image.root), ref)
    assert again.uploaded == () and len(again.existed) == 3


async def test_chunked_push_then_pull_gives_the_same_blobs(open_registry, image, tmp_path):
    ref = f"{open_registry.host}/dockyard/chunked:1"
    result = await push(layout.find_image(image.root), ref, options=Options(chunk_size=256 * 1024))
    assert result.bytes_uploaded == sum(len(data) for digest, data in image.blobs.items()
                                        if digest != result.digest)
    pulled = await pull(ref, tmp_path / "pulled")
    assert pulled.repo_digest == result.digest
    assert blobs_in(tmp_path / "pulled") == {digest: len(data) for digest, data in image.blobs.items()}
    index = json.loads((tmp_path / "pulled" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == result.digest
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "1"
    # skopeo reads the layout the pull wrote
    assert json.loads(skopeo("inspect", f"oci:{tmp_path / 'pulled'}:1"))["Digest"] == result.digest


async def test_skopeo_copy_then_pull_docker_schema2_by_tag_and_digest(open_registry, image, tmp_path):
    ref = f"{open_registry.host}/dockyard/copied:latest"
    skopeo("copy", "--dest-tls-verify=false", "--format", "v2s2", f"oci:{image.root}:1", f"docker://{ref}")
    digest = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}"))["Digest"]
    pulled = await pull(f"{open_registry.host}/dockyard/copied", tmp_path / "by-tag")  # :latest implied
    assert pulled.manifest.media_type == DOCKER_MANIFEST
    assert pulled.repo_digest == digest
    fetched = blobs_in(tmp_path / "by-tag")
    assert set(fetched) == {digest, pulled.config.digest, *(layer.digest for layer in pulled.layers)}
    by_digest = await pull(f"{open_registry.host}/dockyard/copied@{digest}", tmp_path / "by-digest")
    assert by_digest.manifest.digest == digest and by_digest.reference.tag is None
    assert blobs_in(tmp_path / "by-digest") == fetched


async def test_layers_the_store_has_are_never_fetched(open_registry, image, tmp_path):
    ref = f"{open_registry.host}/dockyard/again:1"
    await push(layout.find_image(image.root), ref)
    first = await pull(ref, tmp_path / "first")
    assert first.chain_ids[0] == first.diff_ids[0] and len(first.chain_ids) == 2
    # a store that keeps layers by chain id (dockyard's), and one that keeps registry blobs
    second = await pull(ref, tmp_path / "second", has_layer=set(first.chain_ids).__contains__)
    assert second.fetched == (first.config.digest,) and second.bytes_fetched == first.config.size  # no layer
    assert set(second.skipped) == {layer.digest for layer in first.layers}
    assert set(blobs_in(tmp_path / "second")) == {second.manifest.digest, second.config.digest}
    third = await pull(ref, tmp_path / "third", has_blob=set(blobs_in(tmp_path / "first")).__contains__)
    assert third.skipped == second.skipped and third.bytes_fetched == first.config.size
    # only the top layer missing: only it is fetched
    fourth = await pull(ref, tmp_path / "fourth", has_layer={first.chain_ids[0]}.__contains__)
    assert fourth.fetched == (first.config.digest, first.layers[1].digest)


async def test_multi_platform_index_gives_each_machine_its_image(open_registry, tmp_path, busybox_layer):
    built = OCIImage(tmp_path / "multi")
    amd64 = built.manifest([busybox_layer], architecture="amd64")
    arm64 = built.manifest([Layer(tar_of({"arm": b"64"}))], architecture="arm64")
    index = built.index([amd64, arm64])
    built.write(index, "multi")
    ref = f"{open_registry.host}/dockyard/multi:1"
    result = await push(layout.find_image(built.root), ref)
    assert result.digest == index["digest"] and len(result.manifests) == 3
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}"))
    assert raw["mediaType"] == OCI_INDEX and len(raw["manifests"]) == 2
    arm = await pull(ref, tmp_path / "arm", platform=Platform("linux", "arm64"))
    assert arm.repo_digest == index["digest"] and arm.manifest.digest == arm64["digest"]
    config = json.loads((tmp_path / "arm" / "blobs" / "sha256" / arm.config.digest[7:]).read_bytes())
    assert config["architecture"] == "arm64"
    here = await pull(ref, tmp_path / "here", platform=Platform("linux", "amd64"))
    assert here.manifest.digest == amd64["digest"]
    with pytest.raises(ProtocolError) as caught:
        await pull(ref, tmp_path / "none", platform=Platform("linux", "s390x"))
    assert open_registry.host in caught.value.message and "linux/arm64" in caught.value.message
    assert not (tmp_path / "none" / "index.json").exists()


async def test_cross_repository_mount(open_registry, image):
    await push(layout.find_image(image.root), f"{open_registry.host}/team/one:1")
    result = await push(layout.find_image(image.root), f"{open_registry.host}/team/two:1",
                        mount_from=lambda digest: ["team/one"])
    assert len(result.mounted) == 3 and result.uploaded == ()
    skopeo("inspect", "--tls-verify=false", f"docker://{open_registry.host}/team/two:1")


async def test_unknown_tag_and_repository_are_not_found(open_registry, tmp_path):
    with pytest.raises(NotFoundError) as caught:
        await pull(f"{open_registry.host}/nobody/here:1", tmp_path / "out")
    assert open_registry.host in caught.value.message and "nobody/here:1" in caught.value.message
    assert caught.value.code == "not_found"


async def test_podman_pulls_what_dockyard_pushed(open_registry, image, tmp_path):
    require("podman")
    ref = f"{open_registry.host}/dockyard/forpodman:1"
    result = await push(layout.find_image(image.root), ref)
    import tempfile

    runroot = tempfile.mkdtemp(prefix="dy-podman-")  # podman wants a runroot under 50 characters
    storage = ["--root", str(tmp_path / "podman-root"), "--runroot", runroot, "--storage-driver", "vfs",
               "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    try:
        done = subprocess.run(["podman", *storage, "pull", "--tls-verify=false", ref],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        digests = subprocess.run(["podman", *storage, "image", "inspect", "--format", "{{.Digest}}", ref],
                                 capture_output=True, text=True, timeout=60)
        assert digests.stdout.strip() == result.digest
    finally:
        subprocess.run(["podman", *storage, "rmi", "-a", "-f"], capture_output=True, timeout=60)
        shutil.rmtree(runroot, ignore_errors=True)


# --- basic auth -------------------------------------------------------------------------------


async def test_basic_auth_login_push_pull_logout(basic_registry, image, tmp_path):
    store = CredentialStore(tmp_path / "root" / "auth.json")
    ref = f"{basic_registry.host}/private/app:1"
    with pytest.raises(AuthError) as caught:
        await push(layout.find_image(image.root), ref, credentials=store)
    assert basic_registry.host in caught.value.message and "dockyard login" in caught.value.message
    with pytest.raises(AuthError):
        await login(basic_registry.host, Credentials("alice", "wrong"), store)
    assert not store.path.exists()  # a refused login saves nothing
    assert await login(f"http://{basic_registry.host}/", ALICE, store) is True
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    await push(layout.find_image(image.root), ref, credentials=store)
    pulled = await pull(ref, tmp_path / "out", credentials=store)
    assert set(blobs_in(tmp_path / "out")) == set(image.blobs)
    assert pulled.bytes_fetched > 0
    assert logout(basic_registry.host, store) is True
    with pytest.raises(AuthError):
        await pull(ref, tmp_path / "again", credentials=store)
    assert not (tmp_path / "again" / "index.json").exists()


# --- token auth -------------------------------------------------------------------------------


async def test_token_auth_push_and_pull_with_scopes(token_registry, image, tmp_path):
    ref = f"{token_registry.host}/team/app:1"
    result = await push(layout.find_image(image.root), ref, credentials=ALICE)
    asked = token_registry.issuer.requests
    assert {"user": "alice", "scope": ["repository:team/app:pull,push"],
            "service": ["dockyard-test-registry"]} in asked
    pulled = await pull(ref, tmp_path / "out", credentials=Credentials("bob", "builder"))
    assert pulled.repo_digest == result.digest
    assert asked[-1]["scope"] == ["repository:team/app:pull"]
    assert set(blobs_in(tmp_path / "out")) == set(image.blobs)


async def test_token_auth_refusals_name_the_registry(token_registry, image, tmp_path):
    await push(layout.find_image(image.root), f"{token_registry.host}/team/secret:1", credentials=ALICE)
    # anonymous: the issuer grants nothing on team/, so the registry answers 401 again
    with pytest.raises(AuthError) as caught:
        await pull(f"{token_registry.host}/team/secret:1", tmp_path / "anon")
    assert token_registry.host in caught.value.message and "team/secret" in caught.value.message
    # wrong password: the token server itself refuses
    with pytest.raises(AuthError) as caught:
        await pull(f"{token_registry.host}/team/secret:1", tmp_path / "bad", credentials=Credentials("alice", "no"))
    assert "token server" in caught.value.message and "as alice" in caught.value.message
    store = CredentialStore(tmp_path / "auth.json")
    assert await login(token_registry.host, ALICE, store) is True
    with pytest.raises(AuthError):
        await login(token_registry.host, Credentials("bob", "wrong"), store)
    assert store.registries() == [token_registry.host]


# --- a misbehaving registry -------------------------------------------------------------------


@pytest.fixture
def impostor():
    server = Misbehaving()
    yield server
    server.close()


def serve_image(server: Misbehaving, repository: str = "bad/app", tag: str = "1",
                layer: bytes = b"layer-bytes" * 1000, diff_ids: list[str] | None = None) -> dict:
    diff_ids = [sha256(layer)] if diff_ids is None else diff_ids
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": len(layer)}],
    }).encode()
    headers = {"Content-Type": OCI_MANIFEST}
    server.routes[("GET", f"/v2/{repository}/manifests/{tag}")] = respond(200, manifest, headers)
    server.routes[("GET", f"/v2/{repository}/blobs/{sha256(config)}")] = respond(200, config)
    server.routes[("GET", f"/v2/{repository}/blobs/{sha256(layer)}")] = respond(200, layer)
    return {"manifest": manifest, "config": sha256(config), "layer": sha256(layer), "layer_bytes": layer}


def assert_nothing_half_done(dest: Path, *absent: str) -> None:
    assert not (dest / "index.json").exists()
    names = [p.name for p in (dest / "blobs" / "sha256").iterdir()] if (dest / "blobs" / "sha256").exists() else []
    assert not [n for n in names if n.startswith(".")], names
    for digest in absent:
        assert digest[7:] not in names


async def test_blob_with_the_wrong_digest(impostor, tmp_path):
    served = serve_image(impostor)
    wrong = b"X" * len(served["layer_bytes"])  # same size, other content
    impostor.routes[("GET", f"/v2/bad/app/blobs/{served['layer']}")] = respond(200, wrong)
    with pytest.raises(VerificationError) as caught:
        await pull(f"{impostor.host}/bad/app:1", tmp_path / "out")
    assert impostor.host in caught.value.message and served["layer"] in caught.value.message
    assert "digest" in caught.value.message
    assert_nothing_half_done(tmp_path / "out", served["layer"])


@pytest.mark.parametrize("extra", [100, -100])
async def test_blob_with_the_wrong_size(impostor, tmp_path, extra):
    served = serve_image(impostor)
    body = served["layer_bytes"] + b"Y" * extra if extra > 0 else served["layer_bytes"][:extra]
    impostor.routes[("GET", f"/v2/bad/app/blobs/{served['layer']}")] = respond(200, body)
    with pytest.raises(VerificationError) as caught:
        await pull(f"{impostor.host}/bad/app:1", tmp_path / "out")
    assert impostor.host in caught.value.message and served["layer"] in caught.value.message
    assert "bytes" in caught.value.message
    assert_nothing_half_done(tmp_path / "out", served["layer"])


async def test_blob_that_lies_about_its_length_is_cut_at_the_manifest_size(impostor, tmp_path):
    served = serve_image(impostor)
    endless = served["layer_bytes"] + b"Z" * 1_000_000
    # no Content-Length to check up front: the client must stop reading at the size
    impostor.routes[("GET", f"/v2/bad/app/blobs/{served['layer']}")] = respond(
        200, endless, content_length=len(endless))
    with pytest.raises(VerificationError):
        await pull(f"{impostor.host}/bad/app:1", tmp_path / "out")
    assert_nothing_half_done(tmp_path / "out", served["layer"])


async def test_connection_dropped_mid_blob(impostor, tmp_path):
    served = serve_image(impostor)
    size = len(served["layer_bytes"])
    impostor.routes[("GET", f"/v2/bad/app/blobs/{served['layer']}")] = respond(
        200, served["layer_bytes"], close_after=size // 2)
    with pytest.raises(RegistryUnavailable) as caught:
        await pull(f"{impostor.host}/bad/app:1", tmp_path / "out")
    message = caught.value.message
    assert impostor.host in message and served["layer"] in message and "dropped" in message
    assert f"of {size} bytes" in message
    assert_nothing_half_done(tmp_path / "out", served["layer"])


async def test_manifest_over_the_size_limit(impostor, tmp_path):
    serve_image(impostor)
    impostor.routes[("GET", "/v2/bad/app/manifests/huge")] = respond(200, b"{" + b" " * 5000 + b"}",
                                                                     {"Content-Type": OCI_MANIFEST})
    with pytest.raises(ProtocolError) as caught:
        await pull(f"{impostor.host}/bad/app:huge", tmp_path / "out", options=Options(manifest_limit=4096))
    assert impostor.host in caught.value.message and "bad/app:huge" in caught.value.message
    assert "4096-byte manifest limit" in caught.value.message
    assert_nothing_half_done(tmp_path / "out")


async def test_redirect_loop(impostor, tmp_path):
    serve_image(impostor)
    impostor.routes[("GET", "/v2/bad/app/manifests/loop")] = respond(302, b"", {"Location": "/v2/bad/app/manifests/loop2"})
    impostor.routes[("GET", "/v2/bad/app/manifests/loop2")] = respond(302, b"", {"Location": "/v2/bad/app/manifests/loop"})
    with pytest.raises(ProtocolError) as caught:
        await pull(f"{impostor.host}/bad/app:loop", tmp_path / "out", options=Options(max_redirects=5))
    assert impostor.host in caught.value.message and "redirect loop" in caught.value.message
    assert "bad/app:loop" in caught.value.message
    assert len([hit for hit in impostor.hits if "loop" in hit[1]]) == 6  # the first request and 5 redirects


async def test_401_without_a_challenge(impostor, tmp_path):
    serve_image(impostor)
    impostor.routes[("GET", "/v2/")] = respond(401, b"")
    with pytest.raises(AuthError) as caught:
        await pull(f"{impostor.host}/bad/app:1", tmp_path / "out")
    assert impostor.host in caught.value.message and "no WWW-Authenticate challenge" in caught.value.message
    assert_nothing_half_done(tmp_path / "out")


async def test_manifest_that_is_not_the_digest_asked_for(impostor, tmp_path):
    served = serve_image(impostor)
    claimed = "sha256:" + "e" * 64
    impostor.routes[("GET", f"/v2/bad/app/manifests/{claimed}")] = respond(200, served["manifest"], {"Content-Type": OCI_MANIFEST})
    with pytest.raises(VerificationError) as caught:
        await pull(f"{impostor.host}/bad/app@{claimed}", tmp_path / "out")
    assert impostor.host in caught.value.message and claimed in caught.value.message
    assert_nothing_half_done(tmp_path / "out")


async def test_nothing_listening(tmp_path):
    from tests.registry_server import free_port

    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryUnavailable) as caught:
        await pull(f"{host}/app:1", tmp_path / "out")
    assert host in caught.value.message


async def test_a_good_pull_from_the_impostor_for_contrast(impostor, tmp_path):
    served = serve_image(impostor)
    pulled = await pull(f"{impostor.host}/bad/app:1", tmp_path / "out")
    assert set(pulled.fetched) == {served["config"], served["layer"]}
    assert (tmp_path / "out" / "index.json").exists()


async def test_config_that_does_not_match_the_manifest(impostor, tmp_path):
    served = serve_image(impostor, diff_ids=[])
    with pytest.raises(ProtocolError) as caught:
        await pull(f"{impostor.host}/bad/app:1", tmp_path / "out")
    assert impostor.host in caught.value.message and served["config"] in caught.value.message
    assert "names 0 layers" in caught.value.message
    assert_nothing_half_done(tmp_path / "out", served["layer"])
