"""The images service's pure parts (supervisor/services/images.py)."""

from __future__ import annotations

from types import SimpleNamespace

from supervisor.services.images import intermediates


def image(image_id: str, *steps: str, tags: tuple[str, ...] = (), digests: tuple[str, ...] = ()) -> SimpleNamespace:
    return SimpleNamespace(id=image_id, repo_tags=tags, repo_digests=digests,
                           document={"history": [{"created_by": step} for step in steps]})


def test_a_step_image_another_extends_is_intermediate_and_a_leaf_is_dangling() -> None:
    base = image("base", "ADD rootfs", tags=("base:latest",))
    env = image("env", "ADD rootfs", "ENV A=1")
    run = image("run", "ADD rootfs", "ENV A=1", "RUN make")
    app = image("app", "ADD rootfs", "ENV A=1", "RUN make", "CMD app", tags=("app:1",))
    leaf = image("leaf", "ADD rootfs", "ENV A=1", "RUN other")  # untagged, nothing extends it
    assert intermediates([base, env, run, app, leaf]) == {"env", "run"}


def test_a_tagged_or_digested_parent_is_never_hidden() -> None:
    parent = image("parent", "ADD rootfs", digests=("reg/parent@sha256:1",))
    child = image("child", "ADD rootfs", "CMD x", tags=("child:1",))
    assert intermediates([parent, child]) == set()
    assert intermediates([image("same", "ADD rootfs"), image("twin", "ADD rootfs")]) == set()  # equal, not extended
