"""`dockyard build`'s bases through the real CLI and kernel: `FROM scratch`, `--pull` from a
local registry and `--platform` (supervisor/build/base.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.integration.test_build import tree, write_context
from tests.registry_server import Layer, OCIImage, Registry, tar_of, tar_of_directory
from tests.rootfs import build_rootfs

pytestmark = pytest.mark.integration

SCRATCH = """\
FROM scratch
COPY busybox /bin/
COPY --chmod=644 data.txt /srv/
ENV GREETING=hi
WORKDIR /srv
CMD ["/bin/busybox", "cat", "/srv/data.txt"]
"""


@pytest.fixture
def open_registry(tmp_path):
    registry = Registry(tmp_path / "open-registry")
    registry.directory.mkdir()
    registry.start()
    yield registry
    registry.stop()


def scratch_context(directory: Path, dockerfile: str = SCRATCH) -> Path:
    context = write_context(directory, dockerfile=dockerfile)
    shutil.copy2("/bin/busybox", context / "busybox")
    return context


def test_from_scratch_builds_a_copy_only_image_that_runs(daemon, tmp_path):
    context = scratch_context(tmp_path / "ctx")
    out = daemon.out("build", "-t", "tiny", str(context), timeout=120)
    assert "Step 1/6 : FROM scratch" in out and "Successfully tagged tiny\n" in out, out
    assert daemon.out("run", "--rm", "tiny") == "data\n"
    inspect = json.loads(daemon.out("inspect", "tiny"))[0]
    assert len(inspect["RootFS"]["Layers"]) == 2   # the two COPY steps, nothing from a base
    assert inspect["Config"]["WorkingDir"] == "/srv" and "GREETING=hi" in inspect["Config"]["Env"]
    assert (inspect["Os"], inspect["Architecture"]) == ("linux", "amd64")
    again = daemon.out("build", str(context), timeout=120)
    assert again.count(" ---> Using cache") == 5, again
    refused = daemon.cli("build", str(scratch_context(tmp_path / "run", "FROM scratch\nRUN true\n")))
    assert refused.returncode != 0 and "no such file" in refused.stderr.decode().lower() + refused.stdout.decode()


def test_podman_builds_the_same_image_from_scratch(daemon, tmp_path, podman_dir):
    from tests.integration.test_images import podman

    context = scratch_context(tmp_path / "ctx")
    daemon.out("build", "-t", "tiny", str(context), timeout=120)
    podman(podman_dir, "build", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--network", "none",
           "--layers", "-t", "tiny", str(context))
    daemon.out("create", "--name", "mine", "tiny")
    daemon.out("export", "-o", str(tmp_path / "mine.tar"), "mine")
    podman(podman_dir, "create", "--name", "theirs", "localhost/tiny")
    podman(podman_dir, "export", "-o", str(tmp_path / "theirs.tar"), "theirs")
    mine, theirs = tree(tmp_path / "mine.tar"), tree(tmp_path / "theirs.tar")
    differing = {name: (mine.get(name), theirs.get(name)) for name in set(mine) | set(theirs)
                 if mine.get(name) != theirs.get(name)}
    assert differing == {}
    ours = json.loads(daemon.out("inspect", "tiny"))[0]
    podmans = json.loads(podman(podman_dir, "inspect", "localhost/tiny").stdout)[0]
    podmans["Config"].get("Labels", {}).pop("io.buildah.version", None)
    for field in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels"):
        assert (field, ours["Config"].get(field) or None) == (field, podmans["Config"].get(field) or None)
    assert (ours["Os"], ours["Architecture"]) == (podmans["Os"], podmans["Architecture"])
    assert len(ours["RootFS"]["Layers"]) == len(podmans["RootFS"]["Layers"])
    podman(podman_dir, "rm", "theirs")
