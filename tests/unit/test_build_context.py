"""The build context: .dockerignore, sources kept inside the context, the files' checksum,
and the cache index (supervisor/build/ignore.py, context.py, cache.py)."""

from __future__ import annotations

import os

import pytest

from supervisor.build.cache import BuildCache
from supervisor.build.context import BuildError, expand_sources, tree_checksum
from supervisor.build.files import destination
from supervisor.build.ignore import ignored, parse_dockerignore


@pytest.mark.parametrize("path, expected", [
    ("secret.txt", True), ("sub/secret.txt", False), ("a.log", True), ("deep/er/b.log", True),
    ("keep.log", False), ("build", True), ("build/x/y", True), ("src/main.py", False),
])
def test_dockerignore_patterns_as_docker(path, expected):
    patterns = parse_dockerignore("# comment\nsecret*\n**/*.log\n!keep.log\n/build\n\n")
    assert ignored(path, patterns) is expected


@pytest.fixture
def context(tmp_path):
    root = tmp_path / "ctx"
    (root / "dir").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "b.txt").write_text("b")
    (root / "dir" / "c.txt").write_text("c")
    os.symlink("/etc", root / "out")
    os.symlink("dir", root / "in")
    return root


def test_sources_are_found_and_globs_expand_sorted(context):
    assert expand_sources(context, ["*.txt", "dir"], "COPY") == [context / "a.txt", context / "b.txt", context / "dir"]
    assert expand_sources(context, ["in/c.txt"], "COPY") == [context / "in/c.txt"]
    assert expand_sources(context, ["./dir/../a.txt"], "COPY") == [context / "a.txt"]


@pytest.mark.parametrize("source, message", [
    ("../x", "outside the build context (`..` climbs"),
    ("dir/../../x", "outside the build context (`..` climbs"),
    ("out/passwd", "outside the build context (a symlink leads"),
    ("out", "outside the build context (a symlink leads"),
    ("missing", "`missing` not found in the build context"),
    ("*.none", "matches nothing"),
    ("http://host/x", "remote sources are not supported"),
])
def test_sources_outside_the_context_or_missing_are_refused(context, source, message):
    with pytest.raises(BuildError, match=message.replace("(", r"\(").replace("*", r"\*")):
        expand_sources(context, [source], "COPY")


def test_the_checksum_follows_content_mode_and_owner_not_times(context):
    before = tree_checksum(context)
    os.utime(context / "a.txt", (1, 1))
    assert tree_checksum(context) == before
    os.chmod(context / "a.txt", 0o600)
    assert tree_checksum(context) != before
    changed = tree_checksum(context)
    (context / "b.txt").write_text("B")
    assert tree_checksum(context) != changed


@pytest.mark.parametrize("dest, workdir, expected", [
    ("/x", "/", "/x"), ("x", "/app", "/app/x"), ("./", "/app", "/app/"), (".", "/app", "/app/"),
    ("sub/", "/app", "/app/sub/"), ("/a/../b", "/", "/b"),
])
def test_destinations_are_relative_to_workdir(dest, workdir, expected):
    assert destination(dest, workdir) == expected


def test_the_cache_records_and_survives_damage(tmp_path):
    path = tmp_path / "build-cache.json"
    cache = BuildCache(path)
    assert cache.lookup("p", "RUN x") is None
    cache.record("p", "RUN x", "", "i1")
    cache.record("p", "COPY", "sha256:1", "i2")
    assert (cache.lookup("p", "RUN x"), cache.lookup("p", "COPY", "sha256:1")) == ("i1", "i2")
    assert cache.lookup("p", "COPY", "sha256:2") is None and cache.lookup("q", "RUN x") is None
    path.write_text("{not json")
    assert BuildCache(path).lookup("p", "RUN x") is None


def test_dockerignore_and_the_dockerfile_are_dropped_only_when_excluded(tmp_path):
    from supervisor.build.context import drop_excluded_build_files

    (tmp_path / "sub").mkdir()
    for name in ("Dockerfile", "sub/Dockerfile.dev", "app.py"):
        (tmp_path / name).write_text("x")
    assert drop_excluded_build_files(tmp_path, "Dockerfile") == []  # no .dockerignore: nothing goes
    (tmp_path / ".dockerignore").write_text("sub/Dockerfile.*\n.dockerignore\napp.py\n")
    assert drop_excluded_build_files(tmp_path, "./sub/Dockerfile.dev") == [".dockerignore", "sub/Dockerfile.dev"]
    # app.py is the CLI's business (it never sent it); the Dockerfile not named stays
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["Dockerfile", "app.py", "sub"]


def test_dropping_build_files_never_leaves_the_context(tmp_path):
    from supervisor.build.context import drop_excluded_build_files

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "Dockerfile").write_text("keep me")
    context = tmp_path / "context"
    context.mkdir()
    (context / "link").symlink_to(outside)
    (context / ".dockerignore").write_text("**\n")
    assert drop_excluded_build_files(context, "link/Dockerfile") == [".dockerignore"]
    (context / ".dockerignore").write_text("**\n../outside/Dockerfile\n")
    assert drop_excluded_build_files(context, "../outside/Dockerfile") == [".dockerignore"]
    assert (outside / "Dockerfile").read_text() == "keep me"
