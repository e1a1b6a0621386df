import signal

import pytest

from logs.options import LogOptions
from supervisor.errors import InvalidArgument
from supervisor.resources import Resources
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


def test_what_a_python_caller_naturally_passes_is_taken_and_kept_as_the_specs_own_types():
    """Lists for the string lists, maps for env, resources and log options, a signal name:
    normalised, so the spec equals (and hashes as) the one built from the stored types."""
    spec = ContainerSpec(
        image="base", cmd=["echo", "hi"], env={"A": "1", "N": 2}, entrypoint=[], publish=["8080:80"],
        add_host=["db:10.0.0.2"], dns=["10.0.0.53"], resources={"memory": "64m", "cpus": "0.5"},
        log_options={"max-size": "10m", "max-file": "2"}, stop_signal="SIGKILL",
    )
    stored = ContainerSpec(
        image="base", cmd=("echo", "hi"), env=("A=1", "N=2"), entrypoint=(), publish=("8080:80",),
        add_host=("db:10.0.0.2",), dns=("10.0.0.53",), resources=Resources.from_map({"memory": "64m", "cpus": "0.5"}),
        log_options=LogOptions(max_size=10 << 20, max_file=2), stop_signal=int(signal.SIGKILL),
    )
    assert spec == stored and hash(spec) == hash(stored)
    assert spec.cmd == ("echo", "hi") and spec.resources.memory == 64 << 20 and spec.log_options.max_file == 2
    assert ContainerSpec.from_map(spec.to_map()) == spec


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"cmd": "echo hi"}, r"spec\.cmd: must be a list of strings, not 'echo hi' \(str\)"),
        ({"cmd": ["echo", 1]}, r"spec\.cmd: must be a list of strings, but holds 1 \(int\)"),
        ({"env": {"A": None}}, r"spec\.env: a map of environment variables takes string keys and string"),
        ({"env": "A=1"}, r"spec\.env: must be a list of strings, not 'A=1' \(str\)"),
        ({"resources": {"memory": "lots"}}, r"spec\.resources\.memory: invalid value 'lots' for --memory: use a number"),
        ({"resources": {"mem": "64m"}}, r"spec\.resources: unknown field 'mem' \(known: memory, "),
        ({"resources": 64}, r"spec\.resources: must be a map of limits .* not 64 \(int\)"),
        ({"log_options": {"max-size": "big"}}, r"spec\.log_options: invalid value 'big' for --log-opt max-size"),
        ({"log_options": "max-size=10m"}, r"spec\.log_options: must be a map of --log-opt keys"),
        ({"stop_signal": "NOPE"}, r"spec\.stop_signal: invalid signal 'NOPE'"),
        ({"image": None}, r"spec\.image: an image name is required, not None"),
    ],
)
def test_a_value_of_the_wrong_shape_is_refused_naming_the_field_and_what_it_takes(fields, message):
    with pytest.raises(InvalidArgument, match=message):
        ContainerSpec(**{"image": "base", **fields})


def test_labels_as_entries_or_a_map_round_trip() -> None:
    spec = ContainerSpec(image="base", labels={"a": "1", "b": ""})
    assert spec.labels == ("a=1", "b=") and spec.label_map == {"a": "1", "b": ""}
    assert ContainerSpec.from_map(spec.to_map()) == spec
    assert ContainerSpec.from_map({"image": "base", "labels": {"x": "y=z"}}).label_map == {"x": "y=z"}
    assert ContainerSpec(image="base", labels=["k=1", "k=2"]).label_map == {"k": "2"}  # later ones win


@pytest.mark.parametrize("fields, message", [
    ({"labels": ["novalue"]}, "spec.labels: 'novalue' is not KEY=VALUE"),
    ({"labels": ["=x"]}, "spec.labels: '=x' is not KEY=VALUE"),
    ({"labels": {"a": 1}}, "spec.labels: a map of labels takes strings"),
    ({"labels": "a=1"}, "spec.labels: must be a list of strings"),
    ({"init": "yes"}, "spec.init: must be true, false or null"),
    ({"init_path": "tini"}, "spec.init_path: 'tini' is not an absolute path"),
    ({"init_path": 5}, "spec.init_path: must be a string"),
])
def test_bad_labels_and_init_are_refused(fields, message) -> None:
    with pytest.raises(InvalidArgument) as refused:
        ContainerSpec.from_map({"image": "base", **fields})
    assert message in refused.value.message


def test_init_is_unset_until_create_decides() -> None:
    assert ContainerSpec(image="base").init is None
    spec = ContainerSpec(image="base", init=True, init_path="/usr/bin/tini-static")
    assert ContainerSpec.from_map(spec.to_map()) == spec


def test_userns_mode_is_host_or_nothing():
    assert ContainerSpec(image="base", userns_mode="host").to_map()["userns_mode"] == "host"
    assert ContainerSpec.from_map({"image": "base"}).userns_mode == ""
    with pytest.raises(InvalidArgument, match="--userns"):
        ContainerSpec(image="base", userns_mode="private")
