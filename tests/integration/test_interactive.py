"""Interactive containers as a user meets them: the real CLI on a real pseudo-terminal
(python's pty module), against a private daemon running real containers."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

from bus.client import Client
from supervisor.api import Supervisor
from supervisor.config import Config
from supervisor.errors import DockyardError, StartError
from supervisor.runtime import libc
from supervisor.spec import ContainerSpec
from tests.conftest import DOCKYARD, cgroup_dirs, link_exists, private_bridge, private_daemon, remove_link

pytestmark = pytest.mark.integration

TIMEOUT = 20.0


class Terminal:
    """The CLI on the slave of a fresh pty (its controlling terminal, 24x80 unless told);
    the test types on the master and reads what the user would see. ``initial`` are the
    terminal's settings before the CLI ran."""

    def __init__(self, daemon, *args: str, rows: int = 24, columns: int = 80):
        self.args = args
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.initial = termios.tcgetattr(slave)
        pid = os.fork()
        if pid == 0:  # the child: a session of its own with the slave as its terminal, exec
            try:
                os.close(master)
                os.setsid()
                fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
                for target in (0, 1, 2):
                    os.dup2(slave, target)
                os.execve(DOCKYARD, [DOCKYARD, *args], daemon.env)
            finally:
                os._exit(127)
        os.close(slave)
        self.pid, self.fd = pid, master
        self.seen = b""
        self.exit_code: int | None = None

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def expect(self, token: bytes, timeout: float = TIMEOUT) -> bytes:
        """Read until ``token`` has appeared since the last expect; what came up to it."""
        deadline = time.monotonic() + timeout
        while token not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"{token!r} not seen from dockyard {' '.join(self.args)}; got {self.seen!r}")
        before, _, self.seen = self.seen.partition(token)
        return before + token

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the CLI exited and closed the slave
            return False
        self.seen += data
        return bool(data)

    def resize(self, rows: int, columns: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def attributes(self) -> list:
        return termios.tcgetattr(self.fd)  # on a pty master: the slave's settings

    def wait(self, timeout: float = TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while self.exit_code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.exit_code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"dockyard {' '.join(self.args)} did not exit; it showed {self.seen!r}")
            self._read(0.05)  # keeps the pty drained while waiting for the exit
        return self.exit_code

    def close(self) -> None:
        if self.exit_code is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.exit_code = -9
        os.close(self.fd)


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory, busybox_tar):
    """One private daemon for this module's tests (each starts ~3 s): every test removes
    what it made, and the daemon must stop cleanly, leaving no mount or cgroup, at the end."""
    with private_daemon(tmp_path_factory.mktemp("interactive"), busybox_tar) as instance:
        yield instance


@pytest.fixture
def daemon(shared_daemon):
    yield shared_daemon
    assert shared_daemon.out("ps", "-aq") == "", "a test left a container behind"


@pytest.fixture
def terminals():
    opened: list[Terminal] = []

    def open_terminal(daemon, *args: str, **size: int) -> Terminal:
        terminal = Terminal(daemon, *args, **size)
        opened.append(terminal)
        return terminal

    yield open_terminal
    for terminal in opened:
        terminal.close()


PROMPT = b"# "


def test_run_it_gives_a_shell_whose_size_follows_the_terminal_and_exit_restores_it(daemon, terminals):
    with Client(str(daemon.run_dir)) as client, client.subscribe(["log."]) as logs:
        shell = terminals(daemon, "run", "-it", "--rm", "--hostname", "ttybox", "base", "sh")
        shell.expect(PROMPT)
        raw = shell.attributes()
        assert not raw[3] & termios.ICANON and not raw[3] & termios.ECHO  # raw while attached

        shell.send(b"hostname\r")
        shell.expect(b"ttybox\r\n")  # through the container's pty: its line discipline adds \r
        shell.send(b"stty size\r")
        shell.expect(b"24 80\r\n")
        # SIGWINCH to the CLI -> resize message (sent before the keys typed after it)
        # -> TIOCSWINSZ on the container's pty -> SIGWINCH in there.
        shell.resize(33, 111)
        shell.send(b"stty size\r")
        shell.expect(b"33 111\r\n")
        shell.send(b"exit 3\r")
        assert shell.wait() == 3
        assert shell.attributes() == shell.initial  # the terminal exactly as it was

        logs.timeout = 5.0
        for envelope in logs:  # the terminal's output is in the logs too (stream "stdout")
            if envelope.topic.endswith(".stdout") and envelope.data["data"].startswith(b"ttybox"):
                break
        else:
            pytest.fail("the shell's output did not reach the logs")
    assert daemon.out("ps", "-aq") == ""


def test_detach_leaves_the_shell_running_and_attach_finds_its_state(daemon, terminals):
    shell = terminals(daemon, "run", "-it", "--name", "keeper", "base", "sh")
    shell.expect(PROMPT)
    shell.send(b"KEPT=yes-it-is\r")
    shell.send(b"\x10\x11")  # ctrl-p ctrl-q
    assert shell.wait() == 0
    assert shell.attributes() == shell.initial
    assert json.loads(daemon.out("inspect", "keeper"))[0]["State"]["Running"]

    again = terminals(daemon, "attach", "--detach-keys", "ctrl-x,x", "keeper")
    again.send(b"echo $KEPT\r")
    again.expect(b"yes-it-is\r\n")
    again.send(b"\x18x")  # the keys given, ctrl-x x, detach
    assert again.wait() == 0

    last = terminals(daemon, "attach", "keeper")
    last.send(b"exit 4\r")
    assert last.wait() == 4
    assert daemon.out("wait", "keeper").strip() == "4"
    daemon.out("rm", "keeper")


def test_exec_it_runs_inside_the_container(daemon, terminals):
    daemon.out("run", "-d", "--name", "host", "base", "sh", "-c", "sleep 1000")
    inside = terminals(daemon, "exec", "-it", "host", "sh")
    inside.expect(PROMPT)
    inside.send(b"ps -o pid,comm; exit 6\r")
    listing = inside.expect(b"exit 6")  # the echo of what was typed, and ps's output after it
    assert inside.wait() == 6
    rows = [line.split() for line in inside.seen.decode().splitlines() if line.strip()[:1].isdigit()]
    # In the container's pid namespace: its pid 1 (sh -c exec'd sleep), the exec'd sh, ps.
    assert rows == [["1", "sleep"], ["2", "sh"], ["3", "ps"]], listing

    status = daemon.cli("exec", "-u", "1000", "-w", "/tmp", "-e", "EXTRA=1", "host", "sh", "-c",
                        "id -u; pwd; echo $EXTRA $HOSTNAME; grep -E 'NoNewPrivs|CapBnd|Seccomp' /proc/self/status; exit 5")
    lines = status.stdout.decode().splitlines()
    assert status.returncode == 5, status.stderr
    assert lines[:2] == ["1000", "/tmp"] and lines[2].startswith("1 ")
    fields = dict(line.split(":\t") for line in lines[3:])
    assert int(fields["CapBnd"], 16) == 0xA80425FB and fields["NoNewPrivs"] == "0"  # docker's default
    assert fields["Seccomp"] == "2"  # the container's filter (docs/security.md)

    missing = daemon.cli("exec", "host", "no-such-command")
    assert missing.returncode == 127 and b"no-such-command" in missing.stderr
    stopped = daemon.cli("exec", "nope", "true")
    assert stopped.returncode == 1 and b"no such container" in stopped.stderr

    events = daemon.out("events", "--since", "0", "--until", str(time.time() + 0.5), "--filter", "container=host")
    actions = [line.split()[2] for line in events.splitlines()]
    assert actions.count("exec_create") == 3 and actions.count("exec_start") == 2 and actions.count("exec_die") == 3
    assert "exitCode=6" in events and "exitCode=5" in events and "exitCode=127" in events
    daemon.out("rm", "-f", "host")


def test_stdin_passes_ten_megabytes_byte_exact(daemon, tmp_path):
    sample = tmp_path / "sample"
    sample.write_bytes(os.urandom(10_000_000))
    result = subprocess.run(  # through pipes on both sides, as a user's pipeline
        f"cat {sample} | {DOCKYARD} run -i --rm base cat | cmp - {sample}",
        shell=True, capture_output=True, env=daemon.env, timeout=120,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)


def test_ctrl_c_in_a_run_without_terminal_reaches_the_container_as_sigint(daemon):
    script = 'trap "echo got INT; exit 7" INT; echo ready; while :; do sleep 0.1; done'
    run = subprocess.Popen([DOCKYARD, "run", "--rm", "base", "sh", "-c", script],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=daemon.env)
    try:
        assert run.stdout.readline() == b"ready\n"
        run.send_signal(signal.SIGINT)
        assert run.stdout.readline() == b"got INT\n"
        assert run.wait(TIMEOUT) == 7
    finally:
        run.kill()
        run.wait()
        run.stdout.close()
        run.stderr.close()


def test_several_clients_attach_at_once_and_eof_closes_stdin(daemon):
    daemon.out("run", "-d", "-i", "--name", "echoer", "base", "sh", "-c", 'while read line; do echo "got $line"; done; echo stdin closed')
    watchers = [subprocess.Popen([DOCKYARD, "attach", "--no-stdin", "echoer"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=daemon.env) for _ in range(2)]
    writer = subprocess.Popen([DOCKYARD, "attach", "echoer"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=daemon.env)
    try:
        # The writer goes on writing until both watchers saw a line: each attach is in effect
        # at some moment after it started, and no reply tells the test when.
        for watcher in watchers:
            os.set_blocking(watcher.stdout.fileno(), False)
        seen = [b"", b""]
        deadline = time.monotonic() + TIMEOUT
        count = 0
        while not all(b"got" in text for text in seen):
            assert time.monotonic() < deadline, seen
            count += 1
            writer.stdin.write(b"line%d\n" % count)
            writer.stdin.flush()
            select.select([w.stdout for w in watchers], [], [], 0.1)
            for index, watcher in enumerate(watchers):
                seen[index] += watcher.stdout.read() or b""
        writer.stdin.close()  # end of input: the container's stdin is closed, its loop ends
        out = writer.stdout.read()
        assert writer.wait(TIMEOUT) == 0 and out.endswith(b"stdin closed\n")
        assert out.count(b"got line") == count  # every line, in order
        for watcher in watchers:
            assert watcher.wait(TIMEOUT) == 0
    finally:
        for process in [*watchers, writer]:
            process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
    daemon.out("rm", "echoer")


async def test_exec_run_gives_exit_code_and_output_and_kills_at_its_timeout(tmp_path, busybox_tar):
    """The library call health checks use (Supervisor.exec_run), without the bus."""
    bridge, subnet = private_bridge()
    config = Config(root=tmp_path / "root", run_dir=tmp_path / "run",
                    cgroup_parent=f"dockyard-test-{secrets.token_hex(4)}", stats_interval=0,
                    bridge_name=bridge, bridge_subnet=subnet)
    try:
        async with Supervisor(config) as supervisor:
            with open(busybox_tar, "rb") as tar:
                await supervisor.import_image(tar, "base")
            container = await supervisor.run(ContainerSpec(image="base", cmd=("sleep", "1000")))
            result = await supervisor.exec_run(container.id, ["sh", "-c", "echo healthy; echo warn >&2; exit 3"])
            assert result.exit_code == 3 and sorted(result.output.splitlines()) == [b"healthy", b"warn"]
            slow = await supervisor.exec_run(container.id, ["sleep", "100"], timeout=0.2)
            assert slow.timed_out and slow.exit_code is None
            assert container.status.running  # an exec's end is not the container's
            with pytest.raises(StartError) as missing:
                await supervisor.exec_run(container.id, ["no-such-command"])
            assert missing.value.exit_code == 127
            await supervisor.remove(container.id, force=True)
            with pytest.raises(DockyardError, match="no such container"):
                await supervisor.exec_run(container.id, ["true"])
    finally:
        libc.set_child_subreaper(False)  # the Supervisor made this test process one
        assert cgroup_dirs(config.cgroup_parent) == []
        left = link_exists(bridge)
        remove_link(bridge)
        assert not left, f"bridge {bridge} left behind"


# --- the container's own terminal (issue 17, item 12) -------------------------------------

TERMINAL_REPORT = ('echo "tty=$(tty) term=$TERM"; [ /dev/console -ef "$(tty)" ] && echo console=tty; '
                   'echo pts: $(ls /dev/pts); ls -ln "$(tty)" | { read mode links owner rest; echo "owner=$owner"; }')


def test_run_t_gets_a_terminal_of_its_own_devpts_with_term_and_dev_console(daemon):
    """`tty` names /dev/pts/0 of the container's devpts (not a host pty), /dev/console is that
    terminal, TERM=xterm unless the user sets it, and a non-root user owns its terminal."""
    shown = daemon.out("run", "--rm", "-t", "base", "sh", "-c", TERMINAL_REPORT).replace("\r\n", "\n")
    assert "tty=/dev/pts/0 term=xterm\n" in shown
    assert "console=tty\n" in shown
    assert "pts: 0 ptmx\n" in shown  # the container's devpts holds its one terminal and nothing of the host's
    assert "owner=0\n" in shown

    chosen = daemon.out("run", "--rm", "-t", "-u", "1000", "-e", "TERM=vt100", "base", "sh", "-c",
                        TERMINAL_REPORT + "; echo typed > /dev/tty")
    chosen = chosen.replace("\r\n", "\n")
    assert "tty=/dev/pts/0 term=vt100\n" in chosen and "owner=1000\n" in chosen and "typed\n" in chosen

    plain = daemon.out("run", "--rm", "base", "sh", "-c", 'echo "term=${TERM-unset}"; [ -e /dev/console ] || echo no-console')
    assert plain == "term=unset\nno-console\n"  # without -t, docker's environment and /dev as before


def test_exec_t_gets_a_terminal_of_the_containers_devpts(daemon):
    """An exec with -t opens its pty in the container's devpts too (/dev/pts/1 beside pid 1's
    /dev/pts/0), with TERM=xterm; an exec without -t gets no TERM, as docker."""
    daemon.out("run", "-d", "-t", "--name", "ttyhost", "base", "sh", "-c", "sleep 1000")
    try:
        shown = daemon.out("exec", "-t", "ttyhost", "sh", "-c", 'echo "tty=$(tty) term=$TERM"; echo pts: $(ls /dev/pts)')
        assert shown.replace("\r\n", "\n") == "tty=/dev/pts/1 term=xterm\npts: 0 1 ptmx\n"
        plain = daemon.out("exec", "ttyhost", "sh", "-c", 'echo "term=${TERM-unset}"; tty || true')
        assert plain == "term=unset\nnot a tty\n"
    finally:
        daemon.out("rm", "-f", "ttyhost")
