"""supervisor/runtime/protocol.py: the launch config, the status pipe's and the fork server's
messages, sans-IO. What the lean side writes (``init_stage.status_pid``/``status_error``)
is decoded here, so the two sides cannot drift."""

from __future__ import annotations

import json

import pytest

from supervisor.errors import InvalidArgument, StartError
from supervisor.runtime import init_stage
from supervisor.runtime.protocol import (
    DEFAULT_CAPABILITIES,
    MASKED_PATHS,
    MAX_STATUS_BYTES,
    NEED_DATA,
    READONLY_PATHS,
    LaunchConfig,
    LaunchError,
    ServerReply,
    StatusDecoder,
    decode_server_reply,
    launch_error,
)
from tests.runtime_helpers import ID, make_config


def test_the_pid_line_then_eof() -> None:
    decoder = StatusDecoder("web")
    assert decoder.next_message() is NEED_DATA
    decoder.feed(init_stage.status_pid(4242))
    assert decoder.next_message() == {"pid": 4242}
    assert decoder.next_message() is NEED_DATA
    decoder.feed(b"")  # EOF: the payload's execve closed the pipe
    assert decoder.next_message() is None
    assert decoder.next_message() is None


def test_a_line_in_pieces_and_two_lines_in_one_read() -> None:
    decoder = StatusDecoder("web")
    line = init_stage.status_pid(7)
    decoder.feed(line[:3])
    assert decoder.next_message() is NEED_DATA
    decoder.feed(line[3:] + init_stage.status_error("exec: \"x\": not found", 127))
    assert decoder.next_message() == {"pid": 7}
    assert decoder.next_message() == {"error": 'exec: "x": not found', "exit_code": 127}


def test_a_last_line_without_its_newline_is_read_at_eof() -> None:
    decoder = StatusDecoder("web")
    decoder.feed(b'{"pid": 9}')
    assert decoder.next_message() is NEED_DATA
    decoder.feed(b"")
    assert decoder.next_message() == {"pid": 9}
    assert decoder.next_message() is None


@pytest.mark.parametrize("line", [b"hello there\n", b"[1, 2]\n", b'"pid"\n'])
def test_garbage_is_a_launch_error_that_quotes_it(line: bytes) -> None:
    decoder = StatusDecoder("web")
    decoder.feed(line)
    with pytest.raises(LaunchError, match="cannot start container web: malformed status from the init stage") as caught:
        decoder.next_message()
    assert repr(line.rstrip(b"\n")) in caught.value.message
    assert caught.value.exit_code == 125


def test_more_status_than_any_honest_stage_sends() -> None:
    decoder = StatusDecoder("web")
    decoder.feed(b"x" * MAX_STATUS_BYTES)
    with pytest.raises(LaunchError, match=f"more than {MAX_STATUS_BYTES} bytes"):
        decoder.feed(b"x")


def test_pending_pid_never_raises() -> None:
    decoder = StatusDecoder("web")
    assert decoder.pending_pid(b"") is None
    assert decoder.pending_pid(b'{"pi') is None
    assert decoder.pending_pid(b'd": 31}\n{"error"') == 31
    assert StatusDecoder("web").pending_pid(b"garbage\n") is None
    assert StatusDecoder("web").pending_pid(b"[1]\n") is None


def test_the_stage_error_line_becomes_a_launch_error() -> None:
    decoder = StatusDecoder("web")
    decoder.feed(init_stage.status_error('mount overlay on "/m": no such file or directory', 125))
    error = launch_error("web", ID, decoder.next_message())
    assert isinstance(error, StartError)
    assert error.message == 'cannot start container web: mount overlay on "/m": no such file or directory'
    assert error.exit_code == 125
    assert error.details == {"exit_code": 125, "container": ID, "reason": 'mount overlay on "/m": no such file or directory'}


@pytest.mark.parametrize(("exit_code", "expected"), [(126, 126), (127, 127), (1, 125), ("127", 125), (None, 125)])
def test_only_docker_s_exit_codes_pass(exit_code: object, expected: int) -> None:
    assert launch_error("web", ID, {"error": "x", "exit_code": exit_code}).exit_code == expected


def test_an_error_line_is_cut_and_quoted_as_json() -> None:
    decoder = StatusDecoder("web")
    decoder.feed(init_stage.status_error('a "quoted"\nline é' + "x" * 5000, 126))
    message = decoder.next_message()
    assert message["error"].startswith('a "quoted"\nline é') and len(message["error"]) == 3000
    assert message["exit_code"] == 126


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (b'{"pid": 12}', ServerReply(pid=12)),
        (b'{"exit": 0}', ServerReply(exit=0)),
        (b'{"exit": 137}', ServerReply(exit=137)),
        (b'{"pid": "12"}', ServerReply()),  # not an int: nothing is held
    ],
)
def test_fork_server_replies(data: bytes, reply: ServerReply) -> None:
    assert decode_server_reply("web", data) == reply


@pytest.mark.parametrize("data", [b"ready", b"{}", b'{"exit": "0"}', b"[12]"])
def test_a_fork_server_reply_of_another_shape_is_a_launch_error(data: bytes) -> None:
    with pytest.raises(LaunchError, match="cannot start container web: malformed reply from the fork server"):
        decode_server_reply("web", data)


def test_the_protocol_imports_no_io_library() -> None:
    """Sans-IO: importing it brings neither trio nor the bus, and no launcher."""
    import subprocess
    import sys

    code = "import sys, supervisor.runtime.protocol; print(' '.join(sorted(sys.modules)))"
    modules = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert not modules & {"trio", "zmq", "structlog", "httpx", "supervisor.runtime.spawn", "supervisor.runtime.stdio"}


# --- the launch config ------------------------------------------------------------------------


def test_launch_config_json_round_trip() -> None:
    config = make_config(user="app:wheel", hostname="web", cwd="/srv", cgroup_procs=["/sys/fs/cgroup/pids/d/x/cgroup.procs"])
    document = json.loads(config.to_json())
    assert document["id"] == ID
    assert "container_id" not in document
    assert document["lower"] == ["/l/top", "/l/base"]
    assert document["capabilities"] == list(DEFAULT_CAPABILITIES)
    assert document["masked_paths"] == list(MASKED_PATHS)
    assert document["readonly_paths"] == list(READONLY_PATHS)
    assert LaunchConfig.from_json(config.to_json()) == config
    assert config.cgroup_procs == ("/sys/fs/cgroup/pids/d/x/cgroup.procs",)  # list stored as tuple
    assert init_stage.loads(config.to_json().decode()) == document  # what the init stage reads


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"container_id": "abc"}, "container_id"),
        ({"lower": ()}, "lower"),
        ({"lower": "/l/top"}, "lower"),
        ({"lower": ("relative",)}, "lower"),
        ({"lower": ("/a,b",)}, "lower"),
        ({"upper": "/a:b"}, "upper"),
        ({"work": ["/w"]}, "work"),
        ({"rootfs": "merged"}, "rootfs"),
        ({"argv": ()}, "argv"),
        ({"argv": ("a\x00b",)}, "argv"),
        ({"env": ("NOEQUALS",)}, "env"),
        ({"cwd": "srv"}, "cwd"),
        ({"user": "a b"}, "user"),
        ({"hostname": "-bad"}, "hostname"),
        ({"capabilities": ("CAP_NOPE",)}, "capabilities"),
        ({"masked_paths": ("proc/kcore",)}, "masked_paths"),
    ],
)
def test_launch_config_refuses_bad_values(overrides: dict, field: str) -> None:
    with pytest.raises(InvalidArgument, match=f"launch config.{field}"):
        make_config(**overrides)


def test_launch_config_from_json_refuses_unknown_fields() -> None:
    document = json.loads(make_config().to_json())
    document["privileged"] = True
    with pytest.raises(InvalidArgument, match="privileged"):
        LaunchConfig.from_json(json.dumps(document))


@pytest.mark.parametrize("entries", [("memory",), ("memory\trelative",), ("../x\t/h",), ("cgroup2", "memory\t/h")])
def test_cgroupfs_entries_are_checked(entries: tuple) -> None:
    with pytest.raises(InvalidArgument, match="cgroupfs"):
        make_config(cgroupfs=entries)


def test_terminal_and_cgroupfs_reach_the_stage() -> None:
    config = make_config(terminal=True, cgroupfs=("cpu,cpuacct\t/sys/fs/cgroup/cpu,cpuacct/dy/x",))
    stage = init_stage.loads(config.to_json().decode())
    assert stage["terminal"] is True and stage["cgroupfs"] == ["cpu,cpuacct\t/sys/fs/cgroup/cpu,cpuacct/dy/x"]
    assert make_config(cgroupfs=("cgroup2",)).cgroupfs == ("cgroup2",)


def test_the_id_maps_of_a_user_namespace_round_trip_and_are_checked() -> None:
    config = make_config(uid_map=("0 100000 65536",), gid_map=("0 100000 65536",), idmap_layers=True)
    assert LaunchConfig.from_json(config.to_json()) == config
    for bad in ({"uid_map": ("0 100000",), "gid_map": ("0 100000 65536",)},
                {"uid_map": ("0 100000 0",), "gid_map": ("0 100000 65536",)},
                {"uid_map": ("0 100000 65536",)},
                {"idmap_layers": True}):
        with pytest.raises(InvalidArgument, match="uid_map|gid_map|idmap_layers"):
            make_config(**bad)
