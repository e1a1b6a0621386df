"""Digest references and RepoDigests through the real CLI, against docker-registry on
127.0.0.1: ``run``/``create``/``inspect``/``tag``/``rmi``/``pull`` with ``name@sha256:...``."""

from __future__ import annotations

import json

import pytest

from tests.registry_server import Registry

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
