"""The image index's parent walk (supervisor/images/index.py), for rmi."""

from __future__ import annotations

from supervisor.images.index import orphaned_parents

HISTORIES = {
    "base": ["ADD"], "env": ["ADD", "ENV"], "run": ["ADD", "ENV", "RUN"],
    "app": ["ADD", "ENV", "RUN", "CMD"], "other": ["ADD", "ENV", "RUN", "LABEL"],
}


def index(*ids: str, tags: dict[str, str] | None = None) -> dict:
    return {"images": {image_id: {} for image_id in ids}, "tags": tags or {}, "digests": {}}


def test_the_walk_deletes_untagged_parents_up_to_a_tag() -> None:
    remaining = index("base", "env", "run", tags={"base:latest": "base"})  # "app" was deleted
    assert orphaned_parents(remaining, "app", HISTORIES.__getitem__, lambda _: []) == ["run", "env"]


def test_the_walk_stops_at_another_child_or_a_container() -> None:
    remaining = index("base", "env", "run", "other", tags={"base:latest": "base", "other:1": "other"})
    assert orphaned_parents(remaining, "app", HISTORIES.__getitem__, lambda _: []) == []
    used = index("env", "run")
    assert orphaned_parents(used, "app", HISTORIES.__getitem__, lambda i: [("c", False)] if i == "env" else []) == ["run"]
