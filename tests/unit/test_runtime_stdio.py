"""supervisor/runtime/stdio.py without root: the console socket of a ``-t`` launch and the
terminal received on it (the stage's side is runtime/console.py, run in the integration tests)."""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct

import pytest

from supervisor.runtime.console import MESSAGE
from supervisor.runtime.stdio import StdioPlan
from supervisor.spec import terminal_env


def test_a_tty_launch_gives_the_stage_a_console_socket_and_takes_the_master_sent_on_it() -> None:
    theirs, ours = StdioPlan(stdin=True, tty=True).open()
    try:
        assert stat.S_ISSOCK(os.fstat(theirs[0]).st_mode)  # fd 0: where the stage sends the master
        assert all(os.path.samestat(os.fstat(fd), os.stat(os.devnull)) for fd in theirs[1:])
        assert ours.streams(StdioPlan(tty=True)) == (None, None, None)  # nothing until it comes
        read_end, write_end = os.pipe()  # any fd stands for the master here
        stage = socket.socket(fileno=os.dup(theirs[0]))
        stage.sendmsg([MESSAGE], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", write_end))])
        stage.close()
        os.close(write_end)
        ours.receive_terminal()
        assert ours.console == -1 and ours.terminal >= 0
        os.write(ours.terminal, b"through")
        assert os.read(read_end, 16) == b"through"
        os.close(read_end)
    finally:
        for fd in theirs:
            os.close(fd)
        ours.close_fds()


def test_no_terminal_on_the_console_socket_is_an_error_not_a_wait() -> None:
    theirs, ours = StdioPlan(tty=True).open()
    try:
        with pytest.raises(OSError) as missing:
            ours.receive_terminal()
        assert missing.value.errno == errno.ENOMSG and ours.console == -1
    finally:
        for fd in theirs:
            os.close(fd)
        ours.close_fds()


def test_term_is_xterm_with_a_terminal_unless_set() -> None:
    assert terminal_env(["PATH=/bin"], True) == ["PATH=/bin", "TERM=xterm"]
    assert terminal_env(["TERM=vt100"], True) == ["TERM=vt100"]
    assert terminal_env(["PATH=/bin"], False) == ["PATH=/bin"]
