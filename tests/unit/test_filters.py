"""supervisor/filters.py: the ``--filter`` of ps, images and volume ls, with docker's semantics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from supervisor import filters
from supervisor.errors import InvalidArgument


def subject(**values: Any) -> dict[str, Any]:
    """A container as ``Container.filter_subject()`` describes it."""
    return {"id": "ab" * 32, "name": "web", "labels": {}, "state": "running", "started": True, "exit_code": 0,
            "image_id": "i" * 64, "created": "2026-01-01T10:00:00.000000Z", "volumes": set(), "networks": ["bridge"],
            "health": "", **values}


def query(*entries: str, created: dict[str, str] | None = None, ancestors: dict[str, set[str]] | None = None):
    return filters.container_query(entries, lambda ref: (created or {})[ref],
                                   lambda ref: (ancestors or {}).get(ref, set()))


def test_parse_groups_values_by_key_and_names_an_unknown_key() -> None:
    parsed = filters.Filters.parse("ps", ["name=a", "label=x", "name=b"], filters.CONTAINER_KEYS)
    assert parsed.values == {"name": ["a", "b"], "label": ["x"]}
    with pytest.raises(InvalidArgument) as refused:
        filters.Filters.parse("ps", ["colour=red"], filters.CONTAINER_KEYS)
    assert refused.value.message.startswith("invalid filter 'colour': ps takes id, name, label, status")
    with pytest.raises(InvalidArgument, match="invalid filter 'nokey': use KEY=VALUE"):
        filters.Filters.parse("ps", ["nokey"], filters.CONTAINER_KEYS)


def test_one_keys_values_are_ored_and_different_keys_anded() -> None:
    web = subject(name="web", labels={"tier": "web"})
    assert query("name=web", "name=db").matches(web)
    assert not query("name=web", "label=tier=db").matches(web)
    assert query("name=web", "label=tier=web").matches(web)


def test_every_label_filter_must_hold_as_dockers_match_kv_list() -> None:
    labelled = subject(labels={"tier": "web", "team": "a", "empty": ""})
    assert query("label=tier", "label=team=a").matches(labelled)
    assert not query("label=tier=web", "label=team=b").matches(labelled)
    assert query("label=empty=").matches(labelled) and not query("label=missing").matches(labelled)


def test_names_and_ids_match_as_dockers_patterns() -> None:
    web = subject(name="web-1")
    assert query("name=web").matches(web)  # a part
    assert query("name=^web-1$").matches(web) and query("name=^/web").matches(web)  # docker's /name too
    assert not query("name=^eb").matches(web)
    assert query("name=[").matches(subject(name="a[b"))  # a pattern that does not compile: as text
    assert query("id=abab").matches(web) and not query("id=cd").matches(web)


def test_status_exited_and_health() -> None:
    exited = subject(state="exited", exit_code=3)
    assert query("status=exited").matches(exited) and not query("status=running").matches(exited)
    assert query("exited=3").matches(exited) and not query("exited=0").matches(exited)
    assert not query("exited=0").matches(subject(state="created", started=False))
    assert not query("exited=0").matches(subject(state="running"))
    assert query("status=restarting").matches(subject(state="restarting"))
    assert query("health=none").matches(subject()) and query("health=healthy").matches(subject(health="healthy"))
    for bad, message in (("status=asleep", "invalid filter 'status=asleep': use created, restarting"),
                         ("health=ok", "invalid filter 'health=ok': use starting, healthy, unhealthy, none"),
                         ("exited=x", "invalid filter 'exited=x': an exit code is a whole number")):
        with pytest.raises(InvalidArgument, match=message):
            query(bad)


def test_stopped_ones_are_listed_for_a_status_before_or_since_filter() -> None:
    assert not query("label=x").includes_stopped
    assert query("status=exited").includes_stopped
    assert query("before=a", created={"a": "2026-01-01T10:00:00Z"}).includes_stopped


def test_before_and_since_compare_creation_times() -> None:
    created = {"first": "2026-01-01T09:00:00.000000Z", "last": "2026-01-01T11:00:00.000000Z"}
    middle = subject(created="2026-01-01T10:00:00.000000Z")
    assert query("since=first", "before=last", created=created).matches(middle)
    assert not query("since=last", created=created).matches(middle)
    assert not query("before=first", created=created).matches(middle)
    with pytest.raises(KeyError):
        query("since=unknown", created=created)  # the caller's lookup raises (NotFound in the core)


def test_ancestor_volume_and_network() -> None:
    web = subject(image_id="child", volumes={"data", "/srv", "/host/dir"}, networks=["none"])
    assert query("ancestor=base", ancestors={"base": {"base", "child"}}).matches(web)
    assert not query("ancestor=other", ancestors={"other": {"other"}}).matches(web)
    assert not query("ancestor=missing").matches(web)  # an unknown image: nothing, no error (docker)
    assert query("volume=data").matches(web) and query("volume=/srv").matches(web)
    assert not query("volume=/data").matches(web)
    assert query("network=none").matches(web) and not query("network=bridge").matches(web)


@dataclass
class Image:
    id: str
    diff_ids: tuple[str, ...] = ()
    repo_tags: tuple[str, ...] = ()
    created: str = "2026-01-01T10:00:00Z"
    config: dict[str, Any] = field(default_factory=dict)


def test_descendants_have_more_layers_starting_with_the_ancestors() -> None:
    base = Image("base", ("l1",))
    same_layers = Image("relabelled", ("l1",))
    child = Image("child", ("l1", "l2"))
    other = Image("other", ("l0", "l1"))
    assert filters.descendants(base, [base, same_layers, child, other]) == {"base", "child"}
    assert filters.descendants(Image("empty"), [base, child]) == {"empty"}


def test_image_filters_reference_globs_keep_the_matching_tags() -> None:
    image = Image("x", repo_tags=("base:latest", "registry.local:5000/team/base:2"),
                  config={"Labels": {"a": "1"}})
    query = filters.image_query(["reference=base"], lambda ref: "")
    assert query.tags(image) == ["base:latest"]
    assert filters.image_query(["reference=*/base"], lambda ref: "").tags(image) is None  # * never crosses a /
    assert filters.image_query(["reference=*/*/base:?"], lambda ref: "").tags(image) == \
        ["registry.local:5000/team/base:2"]
    assert filters.image_query(["reference=b[a-c]se:*"], lambda ref: "").tags(image) == ["base:latest"]
    assert filters.image_query(["label=a=1"], lambda ref: "").tags(image) == list(image.repo_tags)
    assert filters.image_query(["label=a=2"], lambda ref: "").tags(image) is None


def test_image_filters_dangling_and_times() -> None:
    dangling, tagged = Image("d"), Image("t", repo_tags=("t:1",))
    assert filters.image_query(["dangling=true"], lambda ref: "").tags(dangling) == []
    assert filters.image_query(["dangling=true"], lambda ref: "").tags(tagged) is None
    assert filters.image_query(["dangling=false"], lambda ref: "").tags(tagged) == ["t:1"]
    with pytest.raises(InvalidArgument, match="invalid filter 'dangling=maybe': use true or false"):
        filters.image_query(["dangling=maybe"], lambda ref: "")
    query = filters.image_query(["since=old"], lambda ref: "2025-01-01T00:00:00Z")
    assert query.tags(tagged) == ["t:1"]
    with pytest.raises(InvalidArgument, match="invalid filter 'colour': images takes reference, label, dangling"):
        filters.image_query(["colour=red"], lambda ref: "")


def test_volume_filters() -> None:
    wanted = filters.Filters.parse("volume ls", ["name=^pg", "dangling=true", "label=team"], filters.VOLUME_KEYS)
    assert filters.volume_matches(wanted, "pgdata", {"team": "db"}, lambda: False)
    assert not filters.volume_matches(wanted, "pgdata", {"team": "db"}, lambda: True)
    assert not filters.volume_matches(wanted, "data-pg", {"team": "db"}, lambda: False)
    assert not filters.volume_matches(wanted, "pgdata", {}, lambda: False)
