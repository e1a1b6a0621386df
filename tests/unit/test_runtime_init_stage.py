"""supervisor/runtime/init_stage.py without root: PATH lookup, exec errors, the JSON it reads
and writes without the json package, what it imports, and a bad config reported on the
status pipe by the stage run as the fork server runs it."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.runtime import init_stage
from supervisor.runtime.init_stage import look_path
from supervisor.runtime.libc import InitError
from tests.runtime_helpers import RUNTIME_DIR

def test_look_path(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for directory in (first, second):
        directory.mkdir()
    (first / "tool").write_text("not executable")
    (first / "dir").mkdir()
    (second / "tool").write_text("#!/bin/sh\n")
    (second / "tool").chmod(0o755)
    path_value = f"{first}:{second}"
    assert look_path("tool", path_value) == f"{second}/tool"
    assert look_path("./relative", path_value) == "./relative"
    for name in ("dir", "missing"):
        with pytest.raises(InitError) as caught:
            look_path(name, path_value)
        assert caught.value.exit_code == 127
        assert caught.value.message == f'exec: "{name}": executable file not found in $PATH'


@pytest.mark.parametrize(
    ("number", "code", "text"),
    [
        (errno.ENOENT, 127, "no such file or directory"),
        (errno.ENOTDIR, 127, "not a directory"),
        (errno.EACCES, 126, "permission denied"),
        (errno.ENOEXEC, 126, "exec format error"),
        (errno.EISDIR, 126, "is a directory"),
    ],
)
def test_exec_error(number: int, code: int, text: str) -> None:
    error = init_stage.exec_error("/etc", OSError(number, os.strerror(number)))
    assert (error.exit_code, error.message) == (code, f'exec: "/etc": {text}')


@pytest.mark.parametrize("document", ['{"a": [1, 2.5, "\\u00e9", null, true, false, {}]}', ' [] ', '"x"', "-0.5e3"])
def test_loads_matches_json(document: str) -> None:
    assert init_stage.loads(document) == json.loads(document)


@pytest.mark.parametrize("document", ["", "{", '{"a": 1} x', "nope"])
def test_loads_refuses_what_json_refuses(document: str) -> None:
    with pytest.raises(ValueError):
        json.loads(document)
    with pytest.raises(ValueError):
        init_stage.loads(document)


def test_quote_matches_json() -> None:
    text = 'a "quoted" \\ line\nwith é and \x00'
    assert json.loads(init_stage.quote(text)) == text


# The init stage as the fork server runs it (its modules imported by path), in a fresh process.
INIT_STAGE = f"import sys; sys.path.insert(0, {RUNTIME_DIR!r}); import init_stage, nsenter; init_stage.run_init_stage(nsenter.run)"
#: The stage's own modules, top-level beside forkserver.py.
STAGE_MODULES = {"ctypes_lite", "init_stage", "libc", "namespaces", "rootfs", "security"}


def test_init_stage_imports_only_the_standard_library() -> None:
    """Start-up time: no trio, zmq, our package, nor the re/enum-importing modules."""
    code = f"import sys; sys.path.insert(0, {RUNTIME_DIR!r}); import init_stage; print(' '.join(sorted(sys.modules)))"
    modules = set(subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert STAGE_MODULES | {"_ctypes"} <= modules
    assert not modules & {"trio", "zmq", "structlog", "msgpack", "supervisor", "re", "enum", "json", "socket", "signal",
                          "dataclasses", "protocol", "ctypes"}


def test_init_stage_reports_a_bad_config_on_the_status_pipe() -> None:
    config_read, config_write = os.pipe()
    status_read, status_write = os.pipe()
    os.write(config_write, b"not json")
    os.close(config_write)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5) for fd in (config_read, status_write)]  # clear of 3 and 4
    pid = os.posix_spawn(
        sys.executable, [sys.executable, "-I", "-S", "-c", INIT_STAGE], {},
        file_actions=[(os.POSIX_SPAWN_DUP2, high[0], 3), (os.POSIX_SPAWN_DUP2, high[1], 4)],
    )
    for fd in (config_read, status_write, *high):
        os.close(fd)
    with os.fdopen(status_read, "rb") as status:
        report = json.loads(status.read())
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 125
    assert report["exit_code"] == 125
    assert report["error"].startswith("read the config: invalid JSON")
