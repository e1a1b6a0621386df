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
