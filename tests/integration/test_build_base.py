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
    assert "Step 1/6 : FROM scratch" in out and "Successfully tagged tiny:latest\n" in out, out
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


def test_pull_always_takes_the_base_from_its_registry(daemon, open_registry, tmp_path):
    ref = f"{open_registry.host}/base:1"
    context = write_context(tmp_path / "ctx", dockerfile=(
        f"FROM {ref} AS first\nRUN echo first > /first\n"
        f"FROM {ref}\nCOPY --from=first /first /\nRUN echo built >> /marks\nCMD [\"cat\", \"/marks\"]\n"))
    missing = daemon.cli("build", str(context), timeout=120)
    assert missing.returncode != 0 and f"FROM {ref}" in missing.stderr.decode() \
        and "--pull" in missing.stderr.decode(), missing.stderr.decode()
    # the registry's base:1 has a mark the store's base:1 lacks
    marked = write_context(tmp_path / "marked", dockerfile="FROM base\nRUN echo registry > /marks\n")
    daemon.out("build", "-t", ref, str(marked), timeout=120)
    daemon.out("push", ref)
    daemon.out("tag", "base", ref)
    daemon.out("build", "-t", "local", str(context), timeout=120)
    assert daemon.out("run", "--rm", "local") == "built\n"
    out = daemon.out("build", "--pull", "-t", "pulled", str(context), timeout=120)
    assert f"Pulling {ref}\nDigest: sha256:" in out and out.count("Pulling ") == 1, out  # once for both stages
    assert daemon.out("run", "--rm", "pulled") == "registry\nbuilt\n"
    unreachable = daemon.cli("build", "--pull", str(write_context(tmp_path / "gone", dockerfile=(
        "FROM 127.0.0.1:1/base:1\n"))), timeout=120)
    assert unreachable.returncode != 0 and "127.0.0.1:1" in unreachable.stderr.decode(), unreachable.stderr.decode()


@pytest.fixture
def multi_platform(open_registry, tmp_path) -> str:
    """`REGISTRY/multi:1`: an image index with a busybox linux/amd64 image and a linux/arm64
    one (a single file: nothing here runs it)."""
    import trio

    from supervisor.registry import layout
    from supervisor.registry.transfer import push

    built = OCIImage(tmp_path / "multi")
    amd64 = built.manifest([Layer(tar_of_directory(build_rootfs(tmp_path / "rootfs")))], architecture="amd64")
    arm64 = built.manifest([Layer(tar_of({"arm64": b"not for this machine\n"}))], architecture="arm64")
    built.write(built.index([amd64, arm64]), "multi")
    ref = f"{open_registry.host}/multi:1"
    trio.run(lambda: push(layout.find_image(built.root), ref))
    return ref


def test_platform_picks_the_image_of_an_index_and_is_recorded(daemon, multi_platform, tmp_path):
    context = write_context(tmp_path / "ctx", dockerfile=f"FROM {multi_platform}\nCOPY data.txt /\n")
    daemon.out("build", "--pull", "--platform", "linux/arm64", "-t", "arm", str(context), timeout=120)
    arm = json.loads(daemon.out("inspect", "arm"))[0]
    assert (arm["Os"], arm["Architecture"], len(arm["RootFS"]["Layers"])) == ("linux", "arm64", 2)
    daemon.out("create", "--name", "arm-files", "arm")
    daemon.out("export", "-o", str(tmp_path / "arm.tar"), "arm-files")
    assert {"arm64", "data.txt"} <= set(tree(tmp_path / "arm.tar")) and "bin/busybox" not in tree(tmp_path / "arm.tar")
    daemon.out("rm", "arm-files")
    # RUN needs this machine's platform; the store's base (now the arm64 one) is refused for amd64
    run_context = write_context(tmp_path / "run", dockerfile=f"FROM {multi_platform}\nRUN true\n")
    refused = daemon.cli("build", "--platform", "linux/arm64", str(run_context), timeout=120)
    assert refused.returncode != 0 and "RUN cannot run for platform linux/arm64" in refused.stderr.decode()
    wrong = daemon.cli("build", "--platform", "linux/amd64", str(run_context), timeout=120)
    assert wrong.returncode != 0 and "is for linux/arm64, not the requested linux/amd64" in wrong.stderr.decode(), \
        wrong.stderr.decode()
    daemon.out("build", "--pull", "--platform", "linux/amd64", "-t", "here", str(run_context), timeout=120)
    here = json.loads(daemon.out("inspect", "here"))[0]
    assert (here["Os"], here["Architecture"]) == ("linux", "amd64")
    absent = daemon.cli("build", "--pull", "--platform", "linux/s390x", str(context), timeout=120)
    assert absent.returncode != 0 and "no image for platform linux/s390x" in absent.stderr.decode() \
        and "linux/arm64" in absent.stderr.decode(), absent.stderr.decode()


def test_platform_is_checked_and_recorded_without_a_registry(daemon, tmp_path):
    context = write_context(tmp_path / "ctx", dockerfile="FROM base\nCOPY data.txt /\n")
    images_before = daemon.out("images", "-q")
    for platform, message in (("linux/arm64", "the image in the store is for linux/amd64, not the requested "
                                              "linux/arm64 (--pull fetches"),
                              ("windows/amd64", "only linux images"), ("amd64", "want OS/ARCH")):
        refused = daemon.cli("build", "--platform", platform, str(context), timeout=120)
        assert refused.returncode != 0 and message in refused.stderr.decode(), refused.stderr.decode()
    assert daemon.out("images", "-q") == images_before
    daemon.out("build", "--platform", "linux/amd64", "-t", "native", str(context), timeout=120)
    assert json.loads(daemon.out("inspect", "native"))[0]["Architecture"] == "amd64"
    scratch = scratch_context(tmp_path / "scratch", "FROM scratch\nCOPY data.txt /\n")
    daemon.out("build", "--platform", "linux/arm64/v8", "-t", "foreign", str(scratch), timeout=120)
    foreign = json.loads(daemon.out("inspect", "foreign"))[0]
    assert (foreign["Architecture"], foreign.get("Variant")) == ("arm64", "v8"), foreign
