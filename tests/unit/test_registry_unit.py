"""The registry client's pure parts: references, manifests and platforms, challenges, the
credentials file, the plain-HTTP rule, progress. No network, no root."""

from __future__ import annotations

import io
import json
import stat
import sys

import pytest

from supervisor.registry import layout
from supervisor.registry.auth import Challenge, Credentials, CredentialStore, parse_challenges, repository_scope
from supervisor.registry.errors import AuthError, NotFoundError, ProtocolError, ReferenceError
from supervisor.registry.manifest import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    Platform,
    digest_of,
    parse,
    select_platform,
)
from supervisor.registry.options import Options, is_loopback
from supervisor.registry.progress import Meter, Progress, TerminalProgress
from supervisor.registry.reference import normalise_registry
from supervisor.registry.reference import parse as parse_reference

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


@pytest.mark.parametrize("text, full, familiar", [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("user/app:1", "docker.io/user/app:1", "user/app:1"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("localhost:5000/app", "localhost:5000/app:latest", "localhost:5000/app:latest"),
    ("127.0.0.1:5000/base:1", "127.0.0.1:5000/base:1", "127.0.0.1:5000/base:1"),
    ("quay.io/org/sub/app:v2", "quay.io/org/sub/app:v2", "quay.io/org/sub/app:v2"),
    ("Registry/app", "Registry/app:latest", "Registry/app:latest"),  # upper case: a host
    ("app@" + D1, "docker.io/library/app@" + D1, "app@" + D1),
    ("host:5000/app:1@" + D1, "host:5000/app:1@" + D1, "host:5000/app:1@" + D1),
])
def test_references_normalise_as_docker_does(text, full, familiar):
    ref = parse_reference(text)
    assert str(ref) == full
    assert ref.familiar() == familiar


def test_reference_parts_and_api_host():
    ref = parse_reference("busybox")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == ("docker.io", "library/busybox", "latest", None)
    assert ref.api_host == "registry-1.docker.io"
    assert parse_reference("127.0.0.1:5000/a/b").api_host == "127.0.0.1:5000"
    by_digest = parse_reference(f"127.0.0.1:5000/a:1@{D1}")
    assert by_digest.target == D1  # the digest wins over the tag


@pytest.mark.parametrize("text, cause", [
    ("", "empty"),
    ("UPPER", "lowercase"),
    ("docker.io/Library/busybox", "lowercase"),
    ("app:", "tag"),
    ("app:-x", "tag"),
    ("app@sha256:abc", "digest"),
    ("app@md5:" + "0" * 32, "digest"),
    ("a b", "white space"),
    ("host:5000/", "name component"),
    ("a//b", "name component"),
    ("-host.io/app", "registry host"),
])
def test_bad_references_are_refused_with_the_cause(text, cause):
    with pytest.raises(ReferenceError) as caught:
        parse_reference(text)
    assert cause in caught.value.message
    assert caught.value.code == "invalid_argument"


def test_registry_names_for_login():
    assert normalise_registry("https://127.0.0.1:5000/") == "127.0.0.1:5000"
    assert normalise_registry("index.docker.io") == "docker.io"
    assert normalise_registry("registry-1.docker.io") == "docker.io"
    for bad in ("", "a/b", "https://"):
        with pytest.raises(ReferenceError):
            normalise_registry(bad)


# --- manifests ------------------------------------------------------------------------------


def manifest_bytes(media_type: str | None = OCI_MANIFEST, **changes) -> bytes:
    document = {
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": 10},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 20}],
    }
    if media_type:
        document["mediaType"] = media_type
    document.update(changes)
    return json.dumps(document).encode()


def index_bytes(platforms: list[tuple[str, str, str | None]], media_type: str = OCI_INDEX) -> bytes:
    manifests = []
    for number, (os_name, arch, variant) in enumerate(platforms):
        platform = {"os": os_name, "architecture": arch, **({"variant": variant} if variant else {})}
        manifests.append({"mediaType": OCI_MANIFEST, "digest": "sha256:" + f"{number:x}" * 64, "size": 100,
                          "platform": platform})
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}).encode()


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_manifests_parse_into_config_and_layers(media_type):
    parsed = parse(manifest_bytes(media_type), media_type, "m")
    assert isinstance(parsed, Manifest)
    assert parsed.config.digest == D1 and parsed.config.size == 10
    assert [layer.digest for layer in parsed.layers] == [D2]
    assert parsed.blobs == (parsed.config, *parsed.layers)


def test_media_type_from_header_or_shape_when_the_document_has_none():
    assert parse(manifest_bytes(None), DOCKER_MANIFEST, "m").media_type == DOCKER_MANIFEST
    assert parse(manifest_bytes(None), "", "m").media_type == OCI_MANIFEST
    assert isinstance(parse(index_bytes([("linux", "amd64", None)], DOCKER_LIST), None, "m"), Index)


@pytest.mark.parametrize("data, cause", [
    (b"not json", "not valid JSON"),
    (b"[]", "not a JSON object"),
    (json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), "schema 1"),
    (manifest_bytes("application/vnd.example+json"), "unsupported manifest media type"),
    (manifest_bytes(layers=[{"mediaType": "x", "digest": "sha256:zz", "size": 1}]), "digest"),
    (manifest_bytes(layers=[{"mediaType": "x", "digest": D2, "size": -1}]), "invalid size"),
    (manifest_bytes(layers=[{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                             "digest": D2, "size": 1}]), "foreign"),
    (manifest_bytes(config=None), "config is not an object"),
])
def test_malformed_manifests_are_refused(data, cause):
    with pytest.raises(ProtocolError) as caught:
        parse(data, OCI_MANIFEST, "registry r: manifest app:1")
    assert cause in caught.value.message
    assert "manifest app:1" in caught.value.message


def test_platform_choice_from_an_index():
    index = parse(index_bytes([("linux", "arm", "v6"), ("linux", "arm", "v7"), ("linux", "amd64", None),
                               ("linux", "arm64", None)]), None, "i")
    assert select_platform(index, Platform("linux", "amd64"), "i").platform == Platform("linux", "amd64")
    assert select_platform(index, Platform("linux", "arm", "v7"), "i").platform.variant == "v7"
    # an entry without a variant fits a machine with one
    assert select_platform(index, Platform("linux", "arm64", "v8"), "i").platform.architecture == "arm64"
    with pytest.raises(ProtocolError) as caught:
        select_platform(index, Platform("linux", "s390x"), "registry r: index app:1")
    assert "linux/s390x" in caught.value.message and "linux/amd64" in caught.value.message


def test_platform_text():
    assert Platform.parse("linux/arm/v7") == Platform("linux", "arm", "v7")
    assert str(Platform("linux", "amd64")) == "linux/amd64"
    with pytest.raises(ValueError):
        Platform.parse("linux")


# --- auth -----------------------------------------------------------------------------------


def test_bearer_challenge_with_quoted_commas():
    header = 'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'
    assert parse_challenges(header) == [Challenge("bearer", {
        "realm": "https://auth.example/token", "service": "registry.example", "scope": "repository:a/b:pull,push"})]


def test_several_challenges_and_unquoted_values():
    challenges = parse_challenges('Basic realm="r\\"x", Bearer realm=https://t/token, service=s')
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[0].realm == 'r"x'
    assert challenges[1].params == {"realm": "https://t/token", "service": "s"}
    assert parse_challenges("") == []
    assert parse_challenges("Negotiate") == [Challenge("negotiate", {})]


def test_scope_text():
    assert repository_scope("library/busybox", ("pull", "push")) == "repository:library/busybox:pull,push"


def test_credentials_file_is_private_and_round_trips(tmp_path):
    store = CredentialStore(tmp_path / "root" / "auth.json")
    assert store.get("127.0.0.1:5000") is None
    store.save("127.0.0.1:5000", Credentials("alice", "pa:ss"))
    store.save("quay.io", Credentials("bob", "x"))
    assert stat.S_IMODE((tmp_path / "root" / "auth.json").stat().st_mode) == 0o600
    assert store.get("127.0.0.1:5000") == Credentials("alice", "pa:ss")  # a colon in the password survives
    assert store.registries() == ["127.0.0.1:5000", "quay.io"]
    document = json.loads((tmp_path / "root" / "auth.json").read_text())
    assert set(document["auths"]["quay.io"]) == {"auth"}  # docker's config.json shape
    assert store.remove("quay.io") and not store.remove("quay.io")
    assert store.registries() == ["127.0.0.1:5000"]
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["auth.json"]  # no temporary left


def test_a_corrupt_credentials_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "auth.json").write_text("{not json")
    with pytest.raises(AuthError) as caught:
        CredentialStore(tmp_path / "auth.json").get("x")
    assert str(tmp_path / "auth.json") in caught.value.message


def test_basic_header():
    assert Credentials("a", "b").basic_header() == "Basic YTpi"


# --- plain HTTP rule, progress, layout ---------------------------------------------------------


@pytest.mark.parametrize("registry, loopback", [
    ("localhost", True), ("localhost:5000", True), ("127.0.0.1:5000", True), ("127.1.2.3", True),
    ("[::1]:5000", True), ("10.0.0.1:5000", False), ("quay.io", False), ("localhost.example", False),
])
def test_loopback_registries(registry, loopback):
    assert is_loopback(registry) is loopback


def test_insecure_registries_by_host_or_host_and_port():
    options = Options(insecure_registries=frozenset({"reg.lan:5000", "other.lan"}))
    assert options.is_insecure("reg.lan:5000") and not options.is_insecure("reg.lan:5001")
    assert options.is_insecure("other.lan:443") and options.is_insecure("other.lan")
    assert options.is_insecure("127.0.0.1:5000") and not options.is_insecure("quay.io")
    with pytest.raises(ValueError):
        Options(chunk_size=0)


def test_meter_throttles_byte_events_by_the_clock():
    now = [0.0]
    seen: list[Progress] = []
    meter = Meter(seen.append, Progress("pull", "r", D1, "layer", "downloading", 0, 300), interval=1.0,
                  clock=lambda: now[0])
    meter.advance(100)  # first: reported
    meter.advance(100)  # same instant: not
    now[0] = 1.5
    meter.advance(100)
    meter.emit("done")
    assert [(p.status, p.current) for p in seen] == [("downloading", 100), ("downloading", 300), ("done", 300)]


def test_terminal_progress_draws_lines_with_speed_on_a_terminal():
    now = [10.0]
    out = io.StringIO()
    view = TerminalProgress(out, clock=lambda: now[0], force=True)
    view(Progress("pull", "r", D1, "layer", "downloading", 0, 4_000_000))
    now[0] = 11.0
    view(Progress("pull", "r", D2, "layer", "exists", 5, 5))
    assert "/s" not in out.getvalue()  # no speed before a byte has moved
    now[0] = 12.0
    view(Progress("pull", "r", D1, "layer", "downloading", 2_000_000, 4_000_000))
    screen = out.getvalue()
    assert "111111111111: Downloading  2MB/4MB  1MB/s" in screen
    assert "222222222222: Already exists" in screen
    assert "\x1b[2F" in screen  # redrawn in place


def test_terminal_progress_labels_as_docker():
    out = io.StringIO()
    view = TerminalProgress(out, force=True)
    view(Progress("push", "r", D1, "layer", "done", 2, 2))
    view(Progress("pull", "r", D2, "layer", "complete", 2, 2))
    assert "111111111111: Pushed" in out.getvalue() and "222222222222: Pull complete" in out.getvalue()


def test_terminal_progress_counts_the_bytes_of_a_layer_compressed_as_it_is_pushed():
    out = io.StringIO()
    view = TerminalProgress(out, force=True)
    view(Progress("push", "r", D1, "layer", "uploading", 3_000_000, 0))  # no total until the end
    assert "111111111111: Pushing  3MB" in out.getvalue()


def test_terminal_progress_is_quiet_when_not_a_terminal():
    out = io.StringIO()  # isatty() is False
    view = TerminalProgress(out)
    view(Progress("pull", "r", D1, "layer", "downloading", 1, 2))
    assert out.getvalue() == ""


def test_progress_travels_as_a_dict():
    progress = Progress("push", "r", D1, "layer", "uploading", 1, 2)
    assert Progress.from_json(json.loads(json.dumps(progress.to_json()))) == progress


def test_layout_find_image_by_name(tmp_path):
    layout.init_layout(tmp_path)
    first = Descriptor(OCI_MANIFEST, D1, 1, None, {layout.REF_NAME: "1"})
    second = Descriptor(OCI_MANIFEST, D2, 2, None, {layout.IMAGE_NAME: "127.0.0.1:5000/a:2"})
    layout.write_index(tmp_path, [first, second])
    assert layout.find_image(tmp_path, "1").descriptor.digest == D1
    assert layout.find_image(tmp_path, "127.0.0.1:5000/a:2").descriptor.digest == D2
    with pytest.raises(NotFoundError):
        layout.find_image(tmp_path)  # two images, no name
    with pytest.raises(NotFoundError):
        layout.find_image(tmp_path, "3")
    assert layout.find_image(tmp_path, "1").blob_path(D1) == tmp_path / "blobs" / "sha256" / ("1" * 64)


def test_digest_of():
    assert digest_of(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_importing_the_pure_modules_does_not_import_httpx():
    import subprocess

    code = ("import sys, supervisor.registry, supervisor.registry.reference, supervisor.registry.manifest, "
            "supervisor.registry.auth, supervisor.registry.layout, supervisor.registry.progress, "
            "supervisor.registry.options, supervisor.registry.service, supervisor.registry.store_adapter, "
            "supervisor.cli, supervisor.handlers; print('httpx' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
