"""login and logout through the real CLI and a private daemon, against docker-registry
with htpasswd basic auth on 127.0.0.1."""

from __future__ import annotations

import json
import stat

import pytest

from tests.registry_server import Registry
from tests.tools import require

pytestmark = pytest.mark.integration


@pytest.fixture
def basic_registry(tmp_path):
    registry = Registry(tmp_path / "registry", auth="htpasswd", users={"alice": "wonder-land"})
    registry.directory.mkdir()
    registry.start()
    yield registry
    registry.stop()


def test_login_checks_and_keeps_credentials_then_logout_forgets_them(daemon, basic_registry):
    auth_file = daemon.root / "auth.json"
    # usage errors and an unreachable registry change nothing
    result = daemon.cli("login", "--password-stdin", basic_registry.host, input=b"x\n")
    assert result.returncode == 2 and "needs a username" in result.stderr.decode()
    result = daemon.cli("login", "-u", "alice", basic_registry.host, input=b"")
    assert result.returncode == 2 and "a password is needed" in result.stderr.decode()
    result = daemon.cli("login", "-u", "alice", "--password-stdin", "127.0.0.1:1", input=b"pw\n")
    assert result.returncode == 1 and "cannot reach registry 127.0.0.1:1" in result.stderr.decode()
    assert not auth_file.exists()

    refused = daemon.cli("login", "-u", "alice", "--password-stdin", basic_registry.host, input=b"wrong\n")
    assert refused.returncode == 1
    message = refused.stderr.decode()
    assert basic_registry.host in message and "as alice" in message, message
    assert not auth_file.exists()

    assert daemon.out("login", "-u", "alice", "--password-stdin", basic_registry.host,
                      input=b"wonder-land\n").strip() == "Login Succeeded"
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    assert list(json.loads(auth_file.read_text())["auths"]) == [basic_registry.host]

    assert daemon.out("logout", basic_registry.host).strip() == f"Removing login credentials for {basic_registry.host}"
    assert daemon.out("logout", basic_registry.host).strip() == f"Not logged in to {basic_registry.host}"
    assert json.loads(auth_file.read_text())["auths"] == {}



def layered_store() -> bool:
    try:
        from supervisor.images.layout import Stage  # noqa: F401 - the images branch's store
    except ImportError:
        return False
    return True


needs_layered_store = pytest.mark.skipif(
    not layered_store(), reason="pull and push need the layered image store (issue 4: supervisor/images/layout.py)")


@pytest.fixture
def open_registry(tmp_path):
    registry = Registry(tmp_path / "open-registry")
    registry.directory.mkdir()
    registry.start()
    yield registry
    registry.stop()


@needs_layered_store
def test_tag_push_rmi_pull_run_and_podman_pulls_it(daemon, open_registry, tmp_path):
    ref = f"{open_registry.host}/base:1"
    daemon.out("tag", "base", ref)
    pushed = daemon.out("push", ref).strip()
    assert pushed.startswith("1: digest: sha256:"), pushed
    digest = pushed.split()[2]
    assert daemon.out("push", ref).strip() == pushed  # again: every blob is there
    daemon.out("rmi", ref)
    daemon.out("rmi", "base")
    assert daemon.out("images", "-q").strip() == ""
    pulled = daemon.out("pull", ref)
    assert f"Digest: {digest}" in pulled and f"Downloaded newer image for {ref}" in pulled
    assert pulled.strip().endswith(ref)
    again = daemon.out("pull", ref)
    assert f"Image is up to date for {ref}" in again  # no layer transferred
    group = daemon.out("run", "--rm", ref, "cat", "/etc/group")
    assert group.startswith("root:x:0:")
    events = daemon.out("events", "--since", "0", "--until", "0s", "--filter", "type=image", "--format", "json")
    actions = [(json.loads(line)["topic"]) for line in events.splitlines()]
    assert f"image.{ref}.push" in actions and f"image.{ref}.pull" in actions, actions
    import shutil
    import subprocess
    import tempfile

    require("podman")
    runroot = tempfile.mkdtemp(prefix="dy-podman-")
    storage = ["--root", str(tmp_path / "podman-root"), "--runroot", runroot, "--storage-driver", "vfs",
               "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    try:
        done = subprocess.run(["podman", *storage, "pull", "--tls-verify=false", ref], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    finally:
        subprocess.run(["podman", *storage, "rmi", "-a", "-f"], capture_output=True, timeout=60)
        shutil.rmtree(runroot, ignore_errors=True)


@needs_layered_store
def test_skopeo_copied_image_pulls_and_runs(daemon, open_registry, tmp_path):
    import subprocess

    from tests.registry_server import Layer, OCIImage, tar_of, tar_of_directory
    from tests.rootfs import build_rootfs

    require("skopeo")
    built = OCIImage(tmp_path / "source")
    busybox = Layer(tar_of_directory(build_rootfs(tmp_path / "rootfs")))
    motd = Layer(tar_of({"etc/motd": b"hello from skopeo\n"}))
    built.write(built.manifest([busybox, motd], cmd=["cat", "/etc/motd"]), "1")
    ref = f"{open_registry.host}/copied/app:2"
    copy = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--format", "v2s2",
                           f"oci:{built.root}:1", f"docker://{ref}"], capture_output=True, text=True, timeout=120)
    assert copy.returncode == 0, copy.stderr
    daemon.out("pull", "-q", ref)
    assert daemon.out("run", "--rm", ref) == "hello from skopeo\n"  # the image's own Cmd
    missing = daemon.cli("pull", f"{open_registry.host}/copied/app:nope")
    assert missing.returncode == 1
    assert f"{open_registry.host}" in missing.stderr.decode() and "copied/app:nope" in missing.stderr.decode()
