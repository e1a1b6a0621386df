"""A real daemon, driven through the real CLI, running real containers on the host kernel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import DOCKYARD, cgroup_dirs, mounts_under
from tests.polling import process_gone

pytestmark = pytest.mark.integration

IMAGE_TOP_LEVEL = {"bin", "dev", "etc", "home", "proc", "root", "sys", "tmp", "usr", "var"}


def test_the_payload_is_pid_1_with_its_own_hostname_and_only_the_image_files(daemon):
    result = daemon.cli("run", "--rm", "base", "sh", "-c", "echo $$; hostname; ls /")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().split()
    assert lines[0] == "1"
    assert lines[1] != os.uname().nodename and len(lines[1]) == 12
    assert set(lines[2:]) == IMAGE_TOP_LEVEL
    assert daemon.out("ps", "-aq") == ""  # --rm removed it


def test_stdout_and_stderr_stay_apart(daemon):
    result = daemon.cli("run", "--rm", "base", "sh", "-c", "echo out; echo err >&2")
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")


def test_processes_network_and_hostname_are_isolated(daemon):
    result = daemon.cli("run", "--rm", "--hostname", "box", "base", "sh", "-c",
                        "hostname; ps -o pid= | wc -l; ls /sys/class/net")
    hostname, process_count, links = result.stdout.decode().split("\n", 2)
    assert hostname == "box"
    assert int(process_count) <= 4  # sh, ps, wc: nothing of the host's
    assert links.split() == ["eth0", "lo"]  # the bridge network: its own eth0, nothing of the host's


def test_security_defaults_match_docker(daemon):
    status = daemon.out("run", "--rm", "base", "cat", "/proc/self/status")
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapEff"], 16) == int(fields["CapBnd"], 16) == 0xA80425FB  # docker's default set
    assert fields["NoNewPrivs"].strip() == "0"  # setuid works, as in docker (docs/security.md)
    assert fields["Seccomp"].strip() == "2"  # the default profile's filter
    # The host has keys and firmware entries; inside, both are masked (empty).
    assert os.listdir("/sys/firmware") and Path("/proc/keys").read_text()
    assert daemon.out("run", "--rm", "base", "sh", "-c", "cat /proc/keys | wc -c; ls /sys/firmware | wc -l").split() == ["0", "0"]
    denied = daemon.cli("run", "--rm", "base", "sh", "-c", "echo 1 > /proc/sys/kernel/panic")
    assert denied.returncode != 0 and b"Read-only" in denied.stderr


def test_writes_never_reach_the_image(daemon):
    daemon.out("run", "--name", "writer", "base", "sh", "-c", "echo changed > /etc/passwd; touch /new")
    check = daemon.out("run", "--rm", "base", "sh", "-c", "cat /etc/passwd | head -1; ls /new 2>&1 || true")
    assert check.startswith("root:x:0:0")
    assert "No such file" in check
    daemon.out("rm", "writer")


def test_a_rm_container_mounts_its_layer_volatile_and_a_kept_one_does_not(daemon):
    """--rm: the writable layer is thrown away, so its overlay is never synced (podman does
    the same); a kept container's layer is synced as usual. A volatile mount's marker in the
    work dir does not stop the layer from being mounted again."""
    overlay = lambda mounts: next(line for line in mounts.splitlines() if line.startswith("overlay / "))
    assert "volatile" in overlay(daemon.out("run", "--rm", "base", "cat", "/proc/mounts"))  # "fsync=volatile"
    kept = daemon.out("run", "-d", "--name", "kept", "base", "cat", "/proc/mounts").strip()
    assert daemon.out("wait", "kept").strip() == "0"
    assert "volatile" not in overlay(daemon.out("logs", "kept"))
    marker = daemon.root / "containers" / kept / "work" / "work" / "incompat" / "volatile"
    marker.mkdir(parents=True)  # as a volatile mount of this layer would have left it
    daemon.out("start", "kept")
    assert daemon.out("wait", "kept").strip() == "0"
    assert not marker.exists()
    daemon.out("rm", "kept")


def test_exit_codes_follow_docker(daemon):
    assert daemon.cli("run", "--rm", "base", "true").returncode == 0
    assert daemon.cli("run", "--rm", "base", "sh", "-c", "exit 7").returncode == 7
    missing_image = daemon.cli("run", "--rm", "nosuchimage", "true")
    assert missing_image.returncode == 125 and b"no such image" in missing_image.stderr.lower()
    not_executable = daemon.cli("run", "--rm", "base", "/etc/passwd")
    assert not_executable.returncode == 126 and b"/etc/passwd" in not_executable.stderr
    not_found = daemon.cli("run", "--rm", "base", "nosuchcommand")
    assert not_found.returncode == 127 and b"nosuchcommand" in not_found.stderr
    bad_flag = daemon.cli("run", "--rm", "-e", "=x", "base", "true")
    assert bad_flag.returncode == 125 and b"spec.env" in bad_flag.stderr
    assert daemon.out("ps", "-aq") == ""


def test_a_name_hostname_user_or_tag_with_a_trailing_newline_is_refused(daemon):
    for flags, field in ((["--name", "web\n"], b"spec.name"), (["-h", "box\n"], b"spec.hostname"),
                         (["-u", "nobody\n"], b"spec.user")):
        refused = daemon.cli("run", "--rm", *flags, "base", "true")
        assert refused.returncode == 125 and field in refused.stderr, (flags, refused.stderr)
    assert daemon.out("ps", "-aq") == ""
    tagged = daemon.cli("tag", "base", "web:v1\n")
    assert tagged.returncode != 0 and b"invalid reference format" in tagged.stderr
    assert "web" not in daemon.out("images")


def test_environment_workdir_and_user(daemon):
    out = daemon.out("run", "--rm", "-e", "GREETING=hi", "-w", "/srv/app", "-u", "1000:1000",
                     "base", "sh", "-c", 'echo $GREETING; pwd; id -u; id -g')
    assert out.split() == ["hi", "/srv/app", "1000", "1000"]
    assert daemon.out("run", "--rm", "-u", "app", "base", "id", "-un").strip() == "app"


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(daemon):
    # sleep as pid 1 has no SIGTERM handler, so the kernel ignores SIGTERM for it.
    container = daemon.out("run", "-d", "base", "sleep", "1000").strip()
    began = time.monotonic()
    daemon.out("stop", "-t", "1", container)
    assert time.monotonic() - began >= 1.0  # it waited the grace period first
    state = json.loads(daemon.out("inspect", container))[0]["State"]
    assert (state["Status"], state["ExitCode"], state["Running"]) == ("exited", 137, False)
    daemon.out("rm", container)


def test_stop_lets_a_container_that_handles_sigterm_exit_cleanly(daemon):
    container = daemon.out("run", "-d", "base", "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done").strip()
    daemon.out("stop", "-t", "30", container)
    assert daemon.out("wait", container).strip() == "0"
    daemon.out("rm", container)


def test_lifecycle_commands(daemon):
    container = daemon.out("create", "--name", "life", "base", "sh", "-c", "echo hi; sleep 1000").strip()
    assert len(container) == 64
    assert daemon.out("ps", "-aq") .split() == [container[:12]]
    assert daemon.out("ps", "-q") == ""
    daemon.out("start", "life")
    assert daemon.out("ps", "-q").split() == [container[:12]]
    duplicate = daemon.cli("run", "--name", "life", "base", "true")
    assert duplicate.returncode == 125 and b"already in use" in duplicate.stderr
    refused = daemon.cli("rm", "life")
    assert refused.returncode == 1 and b"running" in refused.stderr
    daemon.out("kill", "-s", "TERM", "life")  # delivered, and ignored: sh as pid 1 has no handler
    assert daemon.out("ps", "-q").split() == [container[:12]]
    daemon.out("kill", container[:8])
    assert daemon.out("wait", "life").strip() == "137"
    daemon.out("restart", "-t", "0", "life")
    assert json.loads(daemon.out("inspect", "life"))[0]["State"]["Running"] is True
    daemon.out("rm", "-f", "life")
    assert daemon.out("ps", "-aq") == ""
    missing = daemon.cli("kill", "life")
    assert missing.returncode == 1 and b"no such container: life" in missing.stderr


def test_inspect_has_dockers_shape(daemon):
    container = daemon.out("run", "-d", "--name", "shape", "base", "sleep", "1000").strip()
    document = json.loads(daemon.out("inspect", "shape"))[0]
    assert document["Id"] == container and document["Name"] == "/shape"
    state = document["State"]
    assert state["Status"] == "running" and state["Running"] is True and state["Pid"] > 1
    assert state["OOMKilled"] is False and state["StartedAt"].endswith("Z")
    assert document["Config"]["Cmd"] == ["sleep", "1000"] and document["RestartCount"] == 0
    with open(f"/proc/{state['Pid']}/cmdline", "rb") as cmdline:
        assert cmdline.read().split(b"\0")[0] == b"sleep"
    daemon.out("rm", "-f", "shape")
    assert not Path(f"/proc/{state['Pid']}").exists()


def test_events_show_a_whole_life_in_order(daemon):
    since = f"{time.time():.3f}"
    watcher = subprocess.Popen([DOCKYARD, "events", "--since", since, "--format", "json"],
                               stdout=subprocess.PIPE, env=daemon.env)
    try:
        run = daemon.cli("run", "--name", "evented", "base", "sh", "-c", "exit 3")
        assert (run.returncode, run.stdout) == (3, b"")
        daemon.out("rm", "evented")
        seen = []
        while not seen or seen[-1]["data"]["action"] != "destroy":
            line = watcher.stdout.readline()
            assert line, "events stream ended early"
            envelope = json.loads(line)
            if envelope["data"].get("attributes", {}).get("name") == "evented":
                seen.append(envelope)
        actions = [e["data"]["action"] for e in seen]
        assert actions == ["create", "start", "die", "destroy"]
        assert seen[2]["data"]["attributes"]["exitCode"] == 3  # typed (docs/events.md)
        seqs = [e["seq"] for e in seen]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        watcher.terminate()
        watcher.wait(10)
        watcher.stdout.close()


def test_events_since_replays_then_continues_without_gap_or_duplicate(daemon):
    daemon.out("run", "--rm", "--name", "before", "base", "true")
    until = f"{time.time() + 30:.3f}"
    watcher = subprocess.Popen([DOCKYARD, "events", "--since", "0", "--until", until, "--format", "json",
                                "--filter", "type=container"], stdout=subprocess.PIPE, env=daemon.env)
    try:
        daemon.out("run", "--rm", "--name", "after", "base", "true")
        seqs, names = [], []
        while True:
            line = watcher.stdout.readline()
            assert line, "events stream ended early"
            envelope = json.loads(line)
            seqs.append(envelope["seq"])
            names.append(envelope["data"]["attributes"]["name"])
            if names[-1] == "after" and envelope["data"]["action"] == "destroy":
                break
        assert names.count("before") == 4 and names.count("after") == 4
        assert len(set(seqs)) == len(seqs) and seqs == sorted(seqs)
    finally:
        watcher.terminate()
        watcher.wait(10)
        watcher.stdout.close()


def test_a_daemon_restart_keeps_ps_and_reconciles_what_was_running(daemon, tmp_path):
    assert daemon.cli("run", "--name", "done", "base", "sh", "-c", "exit 4").returncode == 4
    running = daemon.out("run", "-d", "--name", "orphan", "base", "sleep", "1000").strip()
    pid = json.loads(daemon.out("inspect", "orphan"))[0]["State"]["Pid"]
    daemon.stop(signal.SIGKILL)  # a crash: nothing is cleaned up by the daemon itself
    daemon.start()
    rows = {row.split()[-1]: row for row in daemon.out("ps", "-a").splitlines()[1:]}
    assert set(rows) == {"done", "orphan"}
    assert "Exited (4)" in rows["done"]
    state = json.loads(daemon.out("inspect", running))[0]["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 255)
    assert process_gone(pid)  # killed; it was re-parented to the host's init, which reaps it
    assert [d for d in cgroup_dirs(daemon.cgroup_parent) if list(Path(d).glob(f"{running}*"))] == []
    daemon.out("rm", "done", "orphan")
    assert mounts_under(tmp_path) == []


def test_sigterm_stops_running_containers_and_exits_zero(daemon):
    container = daemon.out("run", "-d", "base", "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done").strip()
    assert daemon.stop() == 0
    daemon.start()
    state = json.loads(daemon.out("inspect", container))[0]["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0)
    daemon.out("rm", container)


def test_import_from_standard_input_and_list_images(daemon, busybox_tar):
    image_id = daemon.out("import", "-", "other:v1", input=busybox_tar.read_bytes()).strip()
    assert image_id.startswith("sha256:")
    listing = daemon.out("images")
    assert "other" in listing and "v1" in listing and "base" in listing
    assert daemon.out("run", "--rm", "other:v1", "echo", "ok").strip() == "ok"
    hostile = daemon.cli("import", "-", "evil", input=b"this is not a tar")
    assert hostile.returncode == 1 and b"evil" not in daemon.out("images").encode()


def test_no_mount_or_process_is_left_after_rm(daemon, tmp_path):
    container = daemon.out("run", "-d", "base", "sleep", "1000").strip()
    pid = json.loads(daemon.out("inspect", container))[0]["State"]["Pid"]
    with open(f"/proc/{pid}/mounts") as inside:
        assert any(" overlay " in line for line in inside)  # mounted in the container's namespace
    assert mounts_under(tmp_path) == []  # and never on the host
    daemon.out("rm", "-f", container)
    assert not Path(f"/proc/{pid}").exists()
    assert not (daemon.root / "containers" / container).exists()


def test_malformed_frames_and_bad_requests_get_error_replies_and_the_daemon_stays_up(daemon):
    import msgpack
    import zmq


    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, 10_000)
    dealer.connect(f"ipc://{daemon.run_dir}/control.sock")

    def ask(frame: bytes) -> dict:
        dealer.send(frame)
        return msgpack.unpackb(dealer.recv())["data"]

    def request(op: str, args) -> dict:
        return ask(msgpack.packb({"v": 1, "topic": f"request.{op}", "seq": 7, "ts": time.time(),
                                  "source": "test", "data": args}))

    try:
        assert ask(b"\xc1 not msgpack")["error"]["code"] == "bad_frame"
        assert ask(msgpack.packb({"v": 1, "topic": "request.x"}))["error"]["code"] == "bad_frame"
        assert ask(msgpack.packb([1, 2, 3]))["error"]["code"] == "bad_frame"
        unknown = request("container.explode", {})
        assert unknown["error"]["code"] == "bad_request" and "container.explode" in unknown["error"]["message"]
        wrong_type = request("container.kill", {"container": 5})
        assert wrong_type["error"]["code"] == "invalid_argument" and "container" in wrong_type["error"]["message"]
        empty_spec = request("container.create", {"spec": {}})
        assert empty_spec["error"]["code"] == "invalid_argument" and "spec.image" in empty_spec["error"]["message"]
        unknown_argument = request("container.remove", {"container": "x", "forse": True})
        assert unknown_argument["error"]["code"] == "invalid_argument" and "'forse'" in unknown_argument["error"]["message"]
        bad_spec = request("container.create", {"spec": {"image": "base", "cmd": "true"}})
        assert bad_spec["error"]["code"] == "invalid_argument" and "spec.cmd" in bad_spec["error"]["message"]
        bad_signal = request("container.kill", {"container": "x", "signal": "NOPE"})
        assert bad_signal["error"]["code"] == "invalid_argument"
        missing = request("container.inspect", {"container": "nothing-here"})
        assert missing["error"]["code"] == "not_found"
    finally:
        dealer.close()
        context.term()
    info = json.loads(daemon.out("info"))
    assert info["bus"]["frames_bad"] >= 3
    assert info["bus"]["handler_errors"] == 0  # no request above was answered `internal`
    assert daemon.out("run", "--rm", "base", "echo", "still up").strip() == "still up"
