import signal

import pytest

from supervisor.errors import InvalidArgument
from supervisor.spec import ContainerSpec, merge_env, parse_signal


def test_round_trip_through_a_map():
    spec = ContainerSpec(image="base", cmd=("sh", "-c", "echo hi"), env=("A=1",), name="web", user="1000:1000")
    assert ContainerSpec.from_map(spec.to_map()) == spec


@pytest.mark.parametrize(
    "fields, field_named",
    [
        ({"image": ""}, "spec.image"),
        ({"image": "base", "env": ["NOEQUALS"]}, "spec.env"),
        ({"image": "base", "env": ["=x"]}, "spec.env"),
        ({"image": "base", "workdir": "relative"}, "spec.workdir"),
        ({"image": "base", "user": "root;rm"}, "spec.user"),
        ({"image": "base", "hostname": "-bad"}, "spec.hostname"),
        ({"image": "base", "name": "a"}, "spec.name"),
        ({"image": "base", "name": "has space"}, "spec.name"),
        ({"image": "base", "cmd": "not a list"}, "spec.cmd"),
        ({"image": "base", "cmd": ["a\x00b"]}, "spec.cmd"),
        ({"image": "base", "stop_timeout": -1}, "spec.stop_timeout"),
        ({"image": "base", "auto_remove": "yes"}, "spec.auto_remove"),
        ({"image": "base", "surprise": 1}, "unknown field"),
        ({"image": 5}, "spec.image"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(fields, field_named):
    with pytest.raises(InvalidArgument, match=field_named):
        ContainerSpec.from_map(fields)


def test_signals_by_name_and_number():
    assert parse_signal("KILL") == parse_signal("SIGKILL") == parse_signal("9") == parse_signal(9) == signal.SIGKILL
    assert parse_signal("term") == signal.SIGTERM
    for bad in ("NOPE", "0", "999", -1):
        with pytest.raises(InvalidArgument, match="invalid signal"):
            parse_signal(bad)


def test_later_environment_wins_and_order_is_kept():
    assert merge_env(["PATH=/bin", "A=1"], ["A=2", "B=3"]) == ["PATH=/bin", "A=2", "B=3"]
