"""bus/filters.py: docker's event filter semantics, the subscription topic that carries a
filter, and the set the publisher keeps."""

from __future__ import annotations

import pytest

from bus import filters
from bus.filters import FilterError, FilterSet


def event(kind: str, action: str, actor: str = "", **attributes: str) -> dict:
    return {"type": kind, "action": action, "id": actor, "attributes": attributes, "time": 1.0}


DIE_WEB = event("container", "die", "abc123", name="web", image="base", exitCode="0", app="web")
START_DB = event("container", "start", "def456", name="db", image="postgres", app="db")
PULL = event("image", "pull", "base:latest", name="base:latest")
MOUNT = event("volume", "mount", "data", container="abc123", destination="/data")
CONNECT = event("network", "connect", "n1d2", name="app", container="abc123")


def passing(items: list[str]) -> list[dict]:
    wanted = filters.parse(items)
    return [e for e in (DIE_WEB, START_DB, PULL, MOUNT, CONNECT) if filters.matches(wanted, e)]


def test_values_of_one_key_are_alternatives_and_keys_all_hold() -> None:
    assert passing(["event=die", "event=start"]) == [DIE_WEB, START_DB]
    assert passing(["event=die", "event=start", "label=app=db"]) == [START_DB]
    assert passing(["type=container", "image=base"]) == [DIE_WEB]


def test_each_key() -> None:
    assert passing(["type=image"]) == [PULL]
    assert passing(["action=pull"]) == [PULL]  # docker's other name for event
    assert passing(["container=web"]) == [DIE_WEB]  # by name: other types name it by id
    assert passing(["container=abc"]) == [DIE_WEB, MOUNT, CONNECT]  # its own events, and those naming it
    assert passing(["container=def456"]) == [START_DB]
    assert passing(["image=base:latest"]) == [PULL]
    assert passing(["label=app"]) == [DIE_WEB, START_DB]
    assert passing(["label=app=web"]) == [DIE_WEB]
    assert passing(["network=app"]) == [CONNECT]
    assert passing(["volume=data"]) == [MOUNT]
    assert passing(["event=oom"]) == []


def test_an_empty_filter_passes_everything_but_non_maps() -> None:
    assert filters.matches({}, DIE_WEB)
    assert not filters.matches({}, "not a map")
    assert filters.matches({"type": ["container"]}, {"type": "container", "attributes": "junk"})


@pytest.mark.parametrize("items, message", [
    (["nokey"], "expected KEY=VALUE"),
    (["colour=red"], "invalid filter key 'colour'"),
])
def test_bad_filters_name_the_cause(items: list[str], message: str) -> None:
    with pytest.raises(FilterError, match=message):
        filters.parse(items)


def test_normalize_accepts_dockers_map_form_and_refuses_junk() -> None:
    assert filters.normalize({"event": {"die": True, "start": False}, "action": ["oom"]}) == {"event": ["die", "oom"]}
    with pytest.raises(FilterError, match="values must be text"):
        filters.normalize({"event": [1]})
    with pytest.raises(FilterError, match="map of key to values"):
        filters.normalize(["event=die"])  # type: ignore[arg-type]
    with pytest.raises(FilterError, match="at most"):
        filters.normalize({"label": ["x"] * (filters.MAX_VALUES + 1)})


def test_topic_round_trip_is_canonical() -> None:
    one = filters.topic_of({"event": ["start", "die"], "type": ["container"]})
    two = filters.topic_of({"type": "container", "action": ["die", "start", "die"]})
    assert one == two and one.startswith("filter.") and one.endswith(".")
    assert "." not in one[len("filter."):-1]  # no filter topic is a prefix of another
    assert filters.from_topic(one) == {"event": ["die", "start"], "type": ["container"]}


@pytest.mark.parametrize("topic", ["filter.", "filter.!!!.", "filter.gqJ4eQ.", "container.", "filter.abc"])
def test_from_topic_refuses_what_is_not_a_filter(topic: str) -> None:
    with pytest.raises(FilterError):
        filters.from_topic(topic)


def test_filter_set_numbers_matches_per_filter_and_is_bounded() -> None:
    dies, starts = filters.topic_of({"event": ["die"]}), filters.topic_of({"event": ["start"]})
    wanted = FilterSet(limit=2)
    assert wanted.add(dies) and wanted.add(dies) and wanted.add(starts)
    assert not wanted.add(filters.topic_of({"event": ["oom"]}))  # full
    assert not FilterSet().add("filter.junk!.")
    assert wanted.topics_for(DIE_WEB) == [f"{dies}1".encode()]
    assert wanted.topics_for(DIE_WEB) == [f"{dies}2".encode()]
    assert wanted.topics_for(START_DB) == [f"{starts}1".encode()]
    assert wanted.topics_for(PULL) == []
    wanted.remove(dies)
    assert wanted.topics_for(DIE_WEB) == [] and len(wanted) == 1


@pytest.mark.parametrize("items", [
    [], ["event=die"], ["event=die", "event=start"], ["type=container"], ["type=container", "event=die"],
    ["event=die", "label=app=web"], ["type=image", "image=base:latest"], ["container=abc"], ["label=app"],
    ["type=volume", "event=mount", "container=abc"],
])
def test_the_compiled_predicate_agrees_with_matches(items: list[str]) -> None:
    """The publisher runs compile_filter's predicate on every event (issue 22: the filter
    must not cost the daemon): it must pass exactly what matches() passes."""
    from types import MappingProxyType

    wanted = filters.parse(items)
    accept = filters.compile_filter(wanted)
    odd = [{"type": "container", "action": ["die"]}, {"type": 7, "action": "die"}, "not a map", None,
           MappingProxyType(DIE_WEB), {"attributes": None}]
    for data in (DIE_WEB, START_DB, PULL, MOUNT, CONNECT, *odd):
        assert accept(data) == filters.matches(wanted, data), (items, data)


FILTER_MIX = [["event=die", "event=oom"], ["event=die", "label=app=web"], ["type=image"], ["label=app=db"],
              ["type=volume", "event=mount", "container=abc123"], ["event=start", "type=image"], []]


def test_the_filter_sets_index_passes_exactly_what_matches_passes() -> None:
    """The index (FilterSet's doc) leads an event to some filters and checks the rest of
    them: together, exactly the filters matches() passes, each once, whatever keys they use."""
    from types import MappingProxyType

    wanted = FilterSet()
    prefixes = {filters.topic_of(filters.parse(items)): filters.parse(items) for items in FILTER_MIX}
    for prefix in prefixes:
        assert wanted.add(prefix)
    assert {field for field, _ in wanted.indexes} == {"action", "type"} and len(wanted.unindexed) == 2
    odd = [{"type": "container", "action": ["die"]}, {"type": 7, "action": "die"}, "not a map", None,
           MappingProxyType(DIE_WEB), {"attributes": None}, {"type": "image", "action": "start"}]
    for data in (DIE_WEB, START_DB, PULL, MOUNT, CONNECT, *odd):
        passed = sorted(topic.decode().rpartition(".")[0] + "." for topic in wanted.topics_for(data))
        assert passed == sorted(p for p, f in prefixes.items() if filters.matches(f, data)), data


def test_an_event_no_indexed_filter_names_reaches_no_predicate() -> None:
    """A thousand filters on actions and types: an event of another action and type is
    checked by none of them (one lookup per indexed field, not a call per filter)."""
    wanted = FilterSet()
    for n in range(500):
        assert wanted.add(filters.topic_of({"event": [f"action{n}"]}))
        assert wanted.add(filters.topic_of({"type": [f"type{n}"], "label": ["app=web"]}))
    assert wanted.candidates(DIE_WEB) == []
    assert wanted.route is None  # two indexed fields: the publisher asks candidates()
    assert [prefix for _, prefix, _ in wanted.candidates(event("type7", "action3"))] == \
        [filters.topic_of({"event": ["action3"]}), filters.topic_of({"type": ["type7"], "label": ["app=web"]})]


def test_one_indexed_field_is_the_publishers_route() -> None:
    wanted = FilterSet()
    dies = filters.topic_of({"event": ["die", "oom"]})
    wanted.add(dies)
    field, table = wanted.route
    assert field == "action" and set(table) == {"die", "oom"} and table["die"] == [(None, dies, [0])]
    wanted.add(filters.topic_of({"label": ["app"]}))  # unindexed: every event asks it
    assert wanted.route is None
    wanted.remove(filters.topic_of({"label": ["app"]}))
    assert wanted.route is not None
    wanted.remove(dies)
    assert not wanted.active and wanted.route is None and wanted.candidates(DIE_WEB) == []
