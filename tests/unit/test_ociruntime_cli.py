"""dockyard-runtime's command line (supervisor/ociruntime/cli.py, commands.py, state.py):
parsing in runc's shapes, errors in runc's shape, the state store; no root needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from supervisor.ociruntime.cli import Logger, main, normalize
from supervisor.ociruntime.commands import parse_signal
from supervisor.ociruntime.errors import RuntimeCommandError
from supervisor.ociruntime.state import StateStore, spec_state, status_of


def test_go_style_single_dash_long_options_are_accepted():
    assert normalize(["-root", "/r", "create", "-bundle=/b", "-pid-file", "p", "c1"]) == [
        "--root", "/r", "create", "--bundle=/b", "--pid-file", "p", "c1"]
    assert normalize(["exec", "c1", "--", "-debug"]) == ["exec", "c1", "--", "-debug"]
    assert normalize(["kill", "c1", "-9"]) == ["kill", "c1", "-9"]


def test_signals_by_name_number_and_realtime_offset():
    assert [parse_signal(text) for text in ("KILL", "SIGTERM", "9", "hup", "RTMIN+2")] == [9, 15, 9, 1, 36]
    with pytest.raises(RuntimeCommandError, match="invalid signal: NOPE"):
        parse_signal("NOPE")


def test_errors_are_json_lines_in_the_log_and_plain_on_stderr(tmp_path, capsys):
    log = tmp_path / "log.json"
    code = main(["--root", str(tmp_path / "state"), "--log", str(log), "--log-format", "json", "state", "missing"])
    assert code == 1
    entry = json.loads(log.read_text())
    assert entry["level"] == "error" and entry["msg"] == 'container "missing" does not exist'
    assert capsys.readouterr().err == 'container "missing" does not exist\n'


def test_systemd_cgroup_is_refused_naming_the_alternative(tmp_path, capsys):
    assert main(["--root", str(tmp_path), "--systemd-cgroup", "list"]) == 1
    assert "cgroupfs" in capsys.readouterr().err


def test_spec_into_a_missing_bundle_is_an_error_naming_the_path(tmp_path, capsys):
    assert main(["spec", "--bundle", str(tmp_path / "missing")]) == 1
    assert f"cannot write {tmp_path / 'missing' / 'config.json'}: No such file or directory" in capsys.readouterr().err


def test_spec_writes_a_config_once(tmp_path, capsys):
    assert main(["spec", "--bundle", str(tmp_path)]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["process"]["args"] == ["sh"] and config["root"]["path"] == "rootfs"
    assert main(["spec", "--bundle", str(tmp_path)]) == 1
    assert "File config.json exists" in capsys.readouterr().err


def test_features_and_version_print(capsys):
    assert main(["features"]) == 0
    features = json.loads(capsys.readouterr().out)
    assert "createRuntime" in features["hooks"] and features["linux"]["cgroup"]["systemd"] is False
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("dockyard-runtime version ")


def test_text_log_lines_are_logrus_shaped(tmp_path):
    log = tmp_path / "log"
    Logger(str(log)).warn('a "quoted" thing')
    assert log.read_text().endswith('level=warning msg="a \\"quoted\\" thing"\n')


def test_the_store_keeps_one_directory_per_container_and_derives_the_status(tmp_path):
    store = StateStore(str(tmp_path / "root"))
    store.make("c1")
    with pytest.raises(RuntimeCommandError, match="container with id exists: c1"):
        store.make("c1")
    record = {"id": "c1", "pid": os.getpid(), "start_time": None, "bundle": "/b"}
    store.save(record)
    assert store.ids() == ["c1"] and store.load("c1") == record
    assert status_of(record, store) == "stopped"  # a start time that is not this process's
    from supervisor.ociruntime.state import process_start_time

    record["start_time"] = process_start_time(os.getpid())
    assert status_of(record, store) == "running"
    os.mkfifo(store.fifo("c1"))
    assert status_of(record, store) == "created"
    assert spec_state(record, "stopped")["pid"] == 0
    with store.locked("c1"):
        pass
    store.remove("c1")
    with pytest.raises(RuntimeCommandError, match='container "c1" does not exist'):
        store.load("c1")


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_commands_that_do_not_build_a_container_do_not_load_ctypes():
    # start, state, kill and delete (conmon and containerd's shim call them for every
    # container) skip bundle.py, security.py's table, libc and ctypes: ~3 ms of CPU each.
    loaded = _python("import sys\nfrom supervisor.ociruntime import cli, commands\n"
                     "print(sorted(name for name in ('ctypes', '_ctypes', 'supervisor.runtime.libc', 'supervisor.ociruntime.bundle')"
                     " if name in sys.modules))")
    assert loaded.strip() == "[]"


def test_the_script_runs_without_garbage_collection():
    # bin/dockyard-runtime disables the cyclic collector before it imports the package: no
    # collection pass while the command runs (nor in stage 0 and pid 1, its forks).
    script = os.path.join(REPO, "bin", "dockyard-runtime")
    counted = _python(
        "import gc, os, runpy, sys\n"
        "passes = []\n"
        "gc.callbacks.append(lambda phase, info: phase == 'start' and 'supervisor.ociruntime.cli' in sys.modules"
        " and passes.append(info['generation']))\n"
        "real_exit = os._exit\n"
        "def report(code):\n"
        "    sys.stdout.write('passes %d enabled %s\\n' % (len(passes), gc.isenabled())); sys.stdout.flush()\n"
        "    real_exit(code)\n"
        "os._exit = report\n"
        "sys.argv = ['dockyard-runtime', '--version']\n"
        f"runpy.run_path({script!r}, run_name='__main__')\n")
    assert counted.splitlines()[-1] == "passes 0 enabled False"


def test_the_script_finds_its_package_without_site(tmp_path):
    # scripts/setup.sh installs it as `python -S` (site is ~1.5 ms of every command): the
    # script then adds the venv's site-packages and the editable install's path itself.
    script = os.path.join(REPO, "bin", "dockyard-runtime")
    result = subprocess.run([sys.executable, "-S", script, "--version"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("dockyard-runtime version ")


def test_create_s_imports_leave_ctypes_to_stage_0():
    # Only stage 0 and pid 1 need libc (_ctypes, ~0.5 ms): create's stage 0 imports it while
    # the runtime imports the rest (run imports it before the fork, for its subreaper too).
    loaded = _python("import sys\nfrom supervisor.ociruntime import cli, commands, prelude, bundle, seccomp_cache\n"
                     "print(sorted(name for name in ('ctypes', '_ctypes', 'supervisor.runtime.libc') if name in sys.modules))")
    assert loaded.strip() == "[]"
