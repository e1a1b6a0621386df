"""``--init``: tini as the container's pid 1, on the real kernel, through the CLI (issue 17,
item 10; supervisor/lifecycle/initbinary.py)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import private_daemon
from tests.polling import wait_until
from tests.tools import require

pytestmark = pytest.mark.integration

#: A command that orphans a shell (a subshell starts it in the background and exits): the
#: orphan waits for /tmp/go, then exits; only pid 1 can reap it. pid 1's command then execs
#: sleep, which never reaps anything.
ORPHANING = "(sh -c 'until [ -e /tmp/go ]; do sleep 0.01; done' &); exec sleep 1000"


def processes(daemon, name: str) -> list[tuple[int, str, str, int]]:
    """(pid, command, state, parent pid) of every process in the container but the exec's own."""
    text = daemon.out("exec", name, "sh", "-c", "for f in /proc/[0-9]*/stat; do cat $f 2>/dev/null; echo; done")
    found = []
    for line in text.splitlines():
        if ")" not in line:
            continue
        head, _, rest = line.rpartition(")")
        pid, _, command = head.partition(" (")
        state, parent = rest.split()[:2]
        found.append((int(pid), command, state, int(parent)))
    return found


def orphan_done(daemon, name: str) -> list[tuple[int, str, str, int]] | None:
    """The container's processes once the orphaned shell has exited (reaped, or a zombie)."""
    listed = processes(daemon, name)
    live_orphans = [p for p in listed if p[1] == "sh" and p[3] == 1 and p[2] != "Z"]
    return None if live_orphans else listed


def test_init_reaps_the_zombies_a_payload_leaves(daemon):
    require("tini-static")
    daemon.out("run", "-d", "--init", "--name", "reaped", "base", "sh", "-c", ORPHANING)
    assert [p[1] for p in processes(daemon, "reaped") if p[0] == 1] == ["init"]  # /dev/init
    daemon.out("exec", "reaped", "touch", "/tmp/go")
    listed = wait_until(lambda: orphan_done(daemon, "reaped"), "the orphan's exit")
    assert [p for p in listed if p[2] == "Z"] == []
    # Without --init the same payload leaves its orphan a zombie: pid 1 (sleep) never reaps.
    daemon.out("run", "-d", "--name", "unreaped", "base", "sh", "-c", ORPHANING)
    daemon.out("exec", "unreaped", "touch", "/tmp/go")
    listed = wait_until(lambda: orphan_done(daemon, "unreaped"), "the orphan's exit")
    assert [p[1] for p in listed if p[2] == "Z"] == ["sh"]
    daemon.out("rm", "-f", "reaped", "unreaped")


def test_init_forwards_sigterm_and_passes_the_exit_code_on(daemon):
    require("tini-static")
    # sleep as pid 1 ignores SIGTERM (no handler, pid 1): stop must SIGKILL it, exit 137;
    # under tini it gets the forwarded SIGTERM and dies of it: 128 + 15.
    daemon.out("run", "-d", "--init", "--name", "term", "base", "sleep", "1000")
    daemon.out("stop", "-t", "60", "term")
    assert json.loads(daemon.out("inspect", "term"))[0]["State"]["ExitCode"] == 143
    daemon.out("run", "-d", "--name", "noinit", "base", "sleep", "1000")
    daemon.out("stop", "-t", "1", "noinit")
    assert json.loads(daemon.out("inspect", "noinit"))[0]["State"]["ExitCode"] == 137
    exited = daemon.cli("run", "--rm", "--init", "base", "sh", "-c", "exit 7")
    assert exited.returncode == 7, exited.stderr
    document = json.loads(daemon.out("inspect", "term"))[0]
    assert document["HostConfig"]["Init"] is True
    assert document["Path"] == "sleep"  # the user's command, as docker shows it
    assert json.loads(daemon.out("inspect", "noinit"))[0]["HostConfig"]["Init"] is False
    daemon.out("rm", "term", "noinit")


def test_init_leaves_nothing_in_the_layer_and_works_with_a_read_only_root(daemon):
    require("tini-static")
    shown = daemon.out("run", "--rm", "--init", "--read-only", "base", "sh", "-c",
                       "tr '\\0' ' ' < /proc/1/cmdline; echo; grep ' /dev/init ' /proc/mounts")
    command, mount = shown.splitlines()
    assert command == "/dev/init -- sh -c tr '\\0' ' ' < /proc/1/cmdline; echo; grep ' /dev/init ' /proc/mounts "
    assert mount.split()[3].split(",")[0] == "ro"  # the host's binary is never writable from inside
    daemon.out("run", "--name", "layer", "--init", "base", "true")
    assert daemon.out("diff", "layer") == ""
    daemon.out("rm", "layer")


def test_a_missing_init_path_is_refused_naming_it(daemon, tmp_path):
    missing = tmp_path / "no-such-tini"
    refused = daemon.cli("run", "--rm", "--init", "--init-path", str(missing), "base", "true")
    assert refused.returncode == 125
    assert f"invalid --init-path {missing}: No such file or directory" in refused.stderr.decode()
    not_executable = tmp_path / "plain"
    not_executable.write_text("#!/bin/sh\n")
    refused = daemon.cli("create", "--init", "--init-path", str(not_executable), "base", "true")
    assert refused.returncode == 125
    assert f"invalid --init-path {not_executable}: not executable" in refused.stderr.decode()
    assert daemon.out("ps", "-aq") == ""  # nothing was created


def test_the_daemons_init_is_the_default(tmp_path, busybox_tar):
    require("tini-static")
    with private_daemon(tmp_path / "d", busybox_tar, "--init") as daemon:
        assert daemon.out("run", "--rm", "base", "cat", "/proc/1/cmdline").split("\0")[0] == "/dev/init"
        daemon.out("create", "--name", "later", "base", "true")
        assert json.loads(daemon.out("inspect", "later"))[0]["HostConfig"]["Init"] is True
        daemon.out("rm", "later")
