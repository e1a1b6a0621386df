"""The hand-rolled parser of the hot commands (supervisor/ociruntime/flags.py): exactly
argparse's result for what runc's callers send, None (argparse then) for anything else;
and the hot path's imports (no root needed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from supervisor.ociruntime.cli import build_parser, normalize
from supervisor.ociruntime.flags import parse
from supervisor.ociruntime.state import DEFAULT_ROOT, StateStore, write_small_atomic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Command lines as containerd's runc shim (go-runc), conmon/podman and the bench send them.
CALLERS = [
    # go-runc (containerd-shim-runc-v2)
    ["--root", "/run/containerd/runc/k8s.io", "--log", "/run/c/log.json", "--log-format", "json", "create",
     "--bundle", "/run/c/b", "--pid-file", "/run/c/init.pid", "--console-socket", "/tmp/pty.sock", "abc"],
    ["--root", "/run/containerd/runc/default", "--log", "/l", "--log-format", "json", "start", "abc"],
    ["--root", "/r", "--log", "/l", "--log-format", "json", "kill", "--all", "abc", "9"],
    ["--root", "/r", "--log", "/l", "--log-format", "json", "kill", "abc", "15"],
    ["--root", "/r", "--log", "/l", "--log-format", "json", "delete", "--force", "abc"],
    ["--root", "/r", "--log", "/l", "--log-format", "json", "state", "abc"],
    ["--root", "/r", "--log", "/l", "--log-format", "json", "create", "--bundle", "/b", "--pid-file", "/p",
     "--no-pivot", "--no-new-keyring", "--preserve-fds", "2", "abc"],
    # conmon (podman)
    ["--root", "/run/runc", "--systemd-cgroup", "--log", "/c/oci-log", "--log-format", "json", "create", "--bundle",
     "/c/userdata", "--pid-file", "/c/pidfile", "--no-new-keyring", "abc"],
    ["--root", "/run/runc", "--log-format=json", "--log=/c/log", "start", "abc"],
    ["--root", "/run/runc", "kill", "abc", "SIGKILL"],
    ["--root", "/run/runc", "kill", "--all", "abc", "KILL"],
    ["--root=/run/runc", "delete", "--force", "abc"],
    ["--root", "/run/runc", "delete", "abc"],
    # Go's single dash, booleans with a value, short flags
    ["-root", "/r", "-debug", "run", "-bundle=/b", "-pid-file", "p", "-d", "c1"],
    ["--rootless", "false", "run", "-b", "/b", "c1"],
    ["run", "--bundle", "/b", "c1"],
    ["run", "c1", "--bundle", "/b"],
    ["kill", "c1"],
    ["delete", "-f", "c1"],
]


@pytest.mark.parametrize("argv", CALLERS, ids=lambda argv: " ".join(argv)[:60])
def test_the_callers_command_lines_parse_as_argparse_parses_them(argv):
    fast = parse(argv, DEFAULT_ROOT)
    assert fast is not None
    assert vars(fast) == vars(build_parser().parse_args(normalize(argv)))


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["run", "--help"], ["--version"], ["exec", "c1", "true"], ["list"], ["spec"],
    ["run"], ["run", "a", "b"], ["run", "--bundle"], ["run", "--nope", "c1"], ["--log-format", "xml", "state", "c1"],
    ["run", "--preserve-fds", "x", "c1"], ["run", "--detach=maybe", "c1"], ["kill", "c1", "-9"],
    ["kill", "c1", "9", "extra"], ["--bogus", "state", "c1"], ["start", "--", "-c1", "extra"],
])
def test_anything_else_is_left_to_argparse(argv):
    assert parse(argv, DEFAULT_ROOT) is None


def test_booleans_take_go_s_explicit_value():
    """``--flag=false`` as Go's flag package (and runc) take it; argparse refused it."""
    arguments = parse(["--debug=false", "run", "--detach=true", "--no-pivot=false", "c1"], DEFAULT_ROOT)
    assert (arguments.debug, arguments.detach, arguments.no_pivot, arguments.id) == (False, True, False, "c1")


def test_double_dash_ends_the_flags():
    assert parse(["delete", "--", "-odd"], DEFAULT_ROOT).id == "-odd"


def test_the_hot_commands_import_neither_argparse_nor_json(tmp_path):
    """`delete` of a stopped container and `delete --force` of a missing one in a fresh
    interpreter: none of the modules that cost a `run` milliseconds are imported."""
    code = ("import sys\nfrom supervisor.ociruntime.cli import main\n"
            "from supervisor.ociruntime.state import StateStore\n"
            f"store = StateStore({str(tmp_path)!r})\n"
            "store.make('c1')\n"
            "store.save({'id': 'c1', 'pid': 0, 'cgroup_paths': {}, 'hooks': {'poststop': []}, 'bundle': '/b',"
            " 'annotations': {}})\n"
            f"assert main(['--root', {str(tmp_path)!r}, 'delete', 'c1']) == 0\n"
            f"assert main(['--root', {str(tmp_path)!r}, 'delete', '--force', 'gone']) == 0\n"
            "print(sorted(m for m in ('argparse', 'json', 're', 'enum', 'contextlib', 'logs.atomic', 'pathlib',"
            " 'shutil', 'typing', 'supervisor.errors') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr
    assert os.listdir(tmp_path) == []


def test_the_state_file_is_replaced_whole_and_the_directory_removed(tmp_path):
    store = StateStore(str(tmp_path))
    store.make("c1")
    store.save({"id": "c1", "pid": 1})
    store.save({"id": "c1", "pid": 2})
    assert store.load("c1")["pid"] == 2
    assert os.listdir(store.directory("c1")) == ["state.json"]
    assert oct(os.stat(os.path.join(store.directory("c1"), "state.json")).st_mode & 0o777) == "0o600"
    store.remove("c1")
    store.remove("c1")  # gone already: nothing to do
    assert not os.path.exists(store.directory("c1"))


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "pid"
    write_small_atomic(str(target), b"1", 0o644)
    os.mkdir(tmp_path / "d")
    with pytest.raises(OSError):
        write_small_atomic(str(tmp_path / "d"), b"2", 0o644)  # rename over a directory
    assert target.read_bytes() == b"1"
    assert sorted(os.listdir(tmp_path)) == ["d", "pid"]


@pytest.mark.parametrize("argv, code, out", [
    (["--version"], 0, "dockyard-runtime version"), (["--help"], 0, "usage: dockyard-runtime"),
    (["run", "--nope", "c1"], 2, ""), (["--root", "/nonexistent-dockyard", "state", "c1"], 1, ""),
])
def test_the_script_exits_with_the_command_s_code_and_its_output_flushed(argv, code, out):
    """bin/dockyard-runtime ends with os._exit: what was printed into a pipe still arrives."""
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    result = subprocess.run([sys.executable, os.path.join(REPO, "bin", "dockyard-runtime"), *argv],
                            capture_output=True, text=True, cwd=REPO, timeout=60, env=environment)
    assert result.returncode == code, result.stderr
    assert result.stdout.startswith(out)
    if code:
        assert result.stderr
