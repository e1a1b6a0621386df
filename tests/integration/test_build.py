"""`dockyard build` end to end through the real CLI and kernel: the instructions, the image's
config, the cache, multi-stage builds and hostile contexts (supervisor/build/)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DOCKERFILE = """\
# a comment
ARG GREETING=hello
FROM base
ARG GREETING
ARG WHO=world
ENV APP=/app \\
    MODE="two words"
WORKDIR $APP
COPY data.txt ./
RUN echo "$GREETING $WHO" > greeting && chown 1000:1000 greeting && mkdir /var/vol
LABEL org.example.name=demo version="1.0"
EXPOSE 8080 53/udp
VOLUME /var/vol
USER 1000:1000
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/greeting /app/data.txt; id -u; pwd"]
COPY --chown=1000:1000 --chmod=600 last.txt ./
"""


def write_context(directory: Path, dockerfile: str = DOCKERFILE, **files: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_text(dockerfile)
    (directory / "data.txt").write_text("data\n")
    (directory / "last.txt").write_text("last\n")
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def steps(output: str) -> list[tuple[str, bool]]:
    """(instruction, used the cache?) for each `Step N/M` of a build's output."""
    blocks = re.split(r"^Step \d+/\d+ : ", output, flags=re.M)[1:]
    return [(block.splitlines()[0], " ---> Using cache" in block) for block in blocks]


def test_a_dockerfile_builds_an_image_that_runs_with_its_config(daemon, tmp_path):
    context = write_context(tmp_path / "ctx")
    out = daemon.out("build", "-t", "demo:1", "--build-arg", "WHO=dockyard", "--iidfile", str(tmp_path / "iid"),
                     str(context), timeout=180)
    assert "Step 1/14 : FROM base" in out and "Successfully tagged demo:1" in out, out
    image_id = (tmp_path / "iid").read_text()
    assert re.search(rf"Successfully built {image_id[7:19]}", out)
    run = daemon.out("run", "--rm", "demo:1")
    assert run.split("\n") == ["hello dockyard", "data", "1000", "/app", ""]
    config = json.loads(daemon.out("inspect", "demo:1"))[0]["Config"]
    assert config["Env"][-2:] == ["APP=/app", "MODE=two words"]
    assert config["WorkingDir"] == "/app" and config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["/bin/sh", "-c"]
    assert config["Cmd"] == ["cat /app/greeting /app/data.txt; id -u; pwd"]
    assert config["Labels"] == {"org.example.name": "demo", "version": "1.0"}
    assert set(config["ExposedPorts"]) == {"8080/tcp", "53/udp"} and set(config["Volumes"]) == {"/var/vol"}
    mode = daemon.out("run", "--rm", "--entrypoint", "stat", "demo:1", "-c", "%a %u %g", "/app/last.txt")
    assert mode.strip() == "600 1000 1000"
    assert daemon.out("ps", "-aq").strip() == "", "a build container was left behind"


def test_images_hides_the_steps_images_and_images_a_lists_them(daemon, tmp_path):
    context = write_context(tmp_path / "steps", "FROM base\nENV STEP=1\nRUN touch /one\nLABEL step=3\n")
    built = daemon.out("build", "-q", "-t", "steps:1", str(context), timeout=180).strip()
    listed = set(daemon.out("images", "-q", "--no-trunc").split())
    everything = set(daemon.out("images", "-a", "-q", "--no-trunc").split())
    steps_images = everything - listed
    assert built in listed and len(steps_images) >= 2, (listed, everything)  # ENV's and RUN's images
    rows = json.loads(daemon.out("inspect", *[image[7:] for image in steps_images]))
    assert all(row["RepoTags"] == [] for row in rows)
    # rmi deletes the untagged parents it leaves with no child with it, as docker's does; a
    # parent another image still extends stays.
    sibling = write_context(tmp_path / "sibling", "FROM base\nENV STEP=1\nRUN touch /one\nLABEL step=other\n")
    daemon.out("build", "-q", "-t", "steps:2", str(sibling), timeout=180)
    kept = daemon.out("rmi", "steps:1")
    assert f"Deleted: {built}" in kept and not any(f"Deleted: {image}" in kept for image in steps_images), kept
    assert daemon.out("run", "--rm", "steps:2", "ls", "/one") == "/one\n"
    removed = daemon.out("rmi", "steps:2")
    assert all(f"Deleted: {image}" in removed for image in steps_images), removed
    assert not steps_images & set(daemon.out("images", "-a", "-q", "--no-trunc").split())
    assert daemon.out("images", "-q", "--filter", "reference=base")  # the base (tagged) stays


def test_a_rebuild_hits_the_cache_and_a_changed_file_misses_from_its_step(daemon, tmp_path):
    context = write_context(tmp_path / "ctx")
    first = daemon.out("build", "-q", str(context), timeout=180).strip()
    again = daemon.out("build", str(context), timeout=180)
    assert all(cached for instruction, cached in steps(again) if not instruction.startswith("FROM")), again
    assert f"Successfully built {first[7:19]}" in again
    (context / "last.txt").write_text("changed\n")
    changed = daemon.out("build", str(context), timeout=180)
    hits = [cached for instruction, cached in steps(changed) if not instruction.startswith("FROM")]
    assert hits == [True] * (len(hits) - 1) + [False], changed
    assert daemon.out("run", "--rm", "--entrypoint", "cat", daemon.out("build", "-q", str(context)).strip()[7:],
                      "/app/last.txt") == "changed\n"
    uncached = daemon.out("build", "--no-cache", str(context), timeout=180)
    assert not any(cached for _, cached in steps(uncached)), uncached


def test_a_multi_stage_build_copies_from_an_earlier_stage(daemon, tmp_path):
    context = write_context(tmp_path / "ctx", dockerfile=(
        "FROM base AS builder\nRUN mkdir /out && echo built > /out/artifact\n"
        "FROM base AS unused\nRUN false\n"
        "FROM base\nCOPY --from=builder /out/artifact /artifact\nCMD [\"cat\", \"/artifact\"]\n"))
    out = daemon.cli("build", "-t", "multi", str(context), timeout=180)
    assert out.returncode != 0 and b"returned a non-zero code: 1" in out.stderr + out.stdout
    built = daemon.out("build", "-t", "multi", "--target", "builder", str(context), timeout=180)
    assert "RUN false" not in built
    (context / "Dockerfile").write_text(
        "FROM base AS builder\nRUN mkdir /out && echo built > /out/artifact\n"
        "FROM base\nCOPY --from=builder /out/artifact /artifact\nCMD [\"cat\", \"/artifact\"]\n")
    daemon.out("build", "-t", "multi", str(context), timeout=180)
    assert daemon.out("run", "--rm", "multi") == "built\n"


@pytest.mark.parametrize("dockerfile, message", [
    ("FROM base\nCOPY ../outside /x\n", "outside the build context"),
    ("FROM base\nCOPY link/passwd /x\n", "outside the build context"),
    ("FROM base\nADD http://example.com/x /x\n", "remote sources are not supported"),
    ("FROM base\nFROBNICATE\n", "line 2: unknown instruction"),
])
def test_a_hostile_or_bad_context_is_refused(daemon, tmp_path, dockerfile, message):
    context = write_context(tmp_path / "ctx", dockerfile=dockerfile)
    os.symlink("/etc", context / "link")
    images_before = daemon.out("images", "-q")
    result = daemon.cli("build", "-t", "hostile", str(context), timeout=120)
    assert result.returncode != 0 and message in result.stderr.decode(), result.stderr.decode()
    assert daemon.out("images", "-q") == images_before


def test_dockerignore_leaves_files_out(daemon, tmp_path):
    context = write_context(tmp_path / "ctx", dockerfile="FROM base\nCOPY . /ctx/\n",
                            **{".dockerignore": "secret*\n**/*.log\n!keep.log\n", "secret.txt": "s",
                               "sub/a.log": "a", "keep.log": "k"})
    daemon.out("build", "-t", "ign", str(context), timeout=120)
    listing = daemon.out("run", "--rm", "ign", "find", "/ctx", "-type", "f").split()
    assert sorted(listing) == ["/ctx/.dockerignore", "/ctx/Dockerfile", "/ctx/data.txt", "/ctx/keep.log",
                               "/ctx/last.txt"]


def test_run_output_is_shown_and_the_build_is_an_event(daemon, tmp_path):
    import tarfile
    import time

    context = write_context(tmp_path / "ctx", dockerfile=(
        "FROM base\nRUN echo visible-output && echo on-stderr >&2\n"
        "ADD bundle.tar /unpacked/\nCOPY d*.txt l*.txt /globbed/\n"))
    with tarfile.open(context / "bundle.tar", "w") as bundle:
        bundle.add(context / "data.txt", arcname="inner/data.txt")
    out = daemon.out("build", "-t", "shown", str(context), timeout=120)
    assert "visible-output\n" in out and "on-stderr\n" in out, out
    listing = daemon.out("run", "--rm", "shown", "find", "/unpacked", "/globbed", "-type", "f").split()
    assert sorted(listing) == ["/globbed/data.txt", "/globbed/last.txt", "/unpacked/inner/data.txt"]
    image_id = json.loads(daemon.out("inspect", "shown"))[0]["Id"].removeprefix("sha256:")
    events = daemon.out("events", "--since", "0", "--until", f"{time.time():.3f}", "--format", "json",
                        "--filter", "type=image", "--filter", "event=build")
    built = [json.loads(line) for line in events.splitlines()]
    assert [(event["data"]["id"], event["data"]["attributes"]["name"]) for event in built] == [(image_id, "shown")], events


def tree(archive: Path) -> dict[str, tuple]:
    """Each entry of an exported root filesystem: type, mode, owner, link target, content digest
    (leaving out what a runtime mounts or creates at start)."""
    import hashlib
    import tarfile

    volatile = ("dev", "proc", "sys", "run", "etc/hosts", "etc/hostname", "etc/resolv.conf", "etc/mtab")
    entries = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            name = member.name.removeprefix("./").rstrip("/")
            if not name or any(name == v or name.startswith(v + "/") for v in volatile):
                continue
            content = hashlib.sha256(tar.extractfile(member).read()).hexdigest() if member.isfile() else None
            entries[name] = (member.type, oct(member.mode & 0o7777), member.uid, member.gid, member.linkname, content)
    return entries


COMPARED = """\
ARG BASE=base
FROM $BASE
ENV APP=/app
WORKDIR $APP
COPY data.txt ./
COPY --chown=1000:1000 --chmod=640 last.txt sub/
RUN echo built > stamp && chown 1000:1000 stamp && ln -s stamp link && mkdir -p /var/vol && rm /bin/vi
LABEL name=compared
EXPOSE 8080
VOLUME /var/vol
USER 1000:1000
CMD ["cat", "stamp"]
"""


def test_podman_builds_the_same_root_filesystem_and_config(daemon, tmp_path, podman_dir):
    from tests.integration.test_images import podman

    context = write_context(tmp_path / "ctx", dockerfile=COMPARED)
    daemon.out("build", "-t", "compared", str(context), timeout=180)
    daemon.out("save", "-o", str(tmp_path / "base.tar"), "base")
    podman(podman_dir, "load", "-i", str(tmp_path / "base.tar"))
    podman(podman_dir, "build", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--network", "none",
           "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "--cgroup-parent", f"/{podman_dir.name}",
           "--layers", "--build-arg", "BASE=localhost/base", "-t", "compared", str(context))
    daemon.out("create", "--name", "mine", "compared")
    daemon.out("export", "-o", str(tmp_path / "mine.tar"), "mine")
    podman(podman_dir, "create", "--name", "theirs", "localhost/compared")
    podman(podman_dir, "export", "-o", str(tmp_path / "theirs.tar"), "theirs")
    mine, theirs = tree(tmp_path / "mine.tar"), tree(tmp_path / "theirs.tar")
    differing = {name: (mine.get(name), theirs.get(name)) for name in set(mine) | set(theirs)
                 if mine.get(name) != theirs.get(name)}
    assert differing == {}
    ours = json.loads(daemon.out("inspect", "compared"))[0]["Config"]
    podmans = json.loads(podman(podman_dir, "inspect", "localhost/compared").stdout)[0]["Config"]
    podmans["Labels"].pop("io.buildah.version")   # buildah signs its images
    for field in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts", "Volumes"):
        assert (field, ours.get(field) or None) == (field, podmans.get(field) or None)
    podman(podman_dir, "rm", "theirs")


def test_a_context_tar_on_standard_input_builds(daemon, tmp_path):
    import io
    import tarfile

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM base\nCOPY note /note\nCMD [\"cat\", \"/note\"]\n"), ("note", b"hi\n")):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    daemon.out("build", "-t", "stdin", "-", input=archive.getvalue(), timeout=120)
    assert daemon.out("run", "--rm", "stdin") == "hi\n"
