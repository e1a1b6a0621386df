"""The standard fds of a container's pid 1 (or of an exec'd process), and the supervisor's
ends of them.

Three shapes, as docker has them:

- no ``-i``, no ``-t``: stdin is /dev/null, stdout and stderr are two pipes;
- ``-i``: stdin is a pipe too, whose write end the supervisor keeps (:class:`InputPort`);
- ``-t``: one pseudo-terminal of the container's own devpts. The process's fd 0 is a
  console socket (fds 1 and 2 /dev/null until then): the init stage makes the pty inside
  the container, sends the master back on it and puts the slave on fds 0-2 as the
  controlling terminal (``runtime/console.py``, as runc's console socket). The supervisor
  receives the master once the payload runs (:meth:`StdioEnds.receive_terminal`). stdout
  and stderr are merged, as on any terminal; the master is read as "stdout", written as
  stdin (with ``-i``), and :func:`set_window_size` applies a resize (the kernel sends
  SIGWINCH to the foreground process group).

``detached`` output (``exec -d``) goes to /dev/null, as docker does.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import termios
from dataclasses import dataclass

import trio

__all__ = ["InputPort", "StdioPlan", "StdioEnds", "set_window_size"]


@dataclass(frozen=True)
class StdioPlan:
    """What the process's fds 0-2 are: see the module docstring."""

    stdin: bool = False  # -i: a pipe (or the terminal) instead of /dev/null
    tty: bool = False  # -t: a pseudo-terminal
    output: bool = True  # False: stdout and stderr go to /dev/null (exec -d)

    def open(self) -> tuple[list[int], StdioEnds]:
        """``(theirs, ours)``: the child's fds 0, 1, 2 (all O_CLOEXEC; the caller puts them
        in place and closes them after the spawn) and the supervisor's ends.

        Raises:
            OSError: a pipe or the terminal could not be opened (nothing is left open).
        """
        theirs: list[int] = []
        ours = StdioEnds()
        try:
            if self.tty:  # the console socket (CLOEXEC); the terminal comes back on it
                kept, given = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                ours.console = kept.detach()
                theirs.append(given.detach())
                for _ in range(2):
                    theirs.append(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC))
                return theirs, ours
            if self.stdin:
                read_end, write_end = os.pipe2(os.O_CLOEXEC)
                theirs.append(read_end)
                ours.stdin = write_end
            else:
                theirs.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            for name in ("stdout", "stderr"):
                if self.output:
                    read_end, write_end = os.pipe2(os.O_CLOEXEC)
                    setattr(ours, name, read_end)
                    theirs.append(write_end)
                else:
                    theirs.append(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC))
        except BaseException:
            for fd in theirs:
                os.close(fd)
            ours.close_fds()
            raise
        return theirs, ours


@dataclass
class StdioEnds:
    """The supervisor's raw fds (-1: none) until :meth:`streams` wraps them for trio."""

    stdin: int = -1
    stdout: int = -1
    stderr: int = -1
    terminal: int = -1  # the pty master (read as stdout, written as stdin)
    console: int = -1  # -t: the console socket the master comes back on

    def close_fds(self) -> None:
        for name in ("stdin", "stdout", "stderr", "terminal", "console"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def streams(self, plan: StdioPlan) -> tuple[InputPort | None, trio.lowlevel.FdStream | None, trio.lowlevel.FdStream | None]:
        """(stdin, stdout, stderr) as trio objects; the fds are theirs from now on. With a
        console socket and no terminal yet: (None, None, None)."""
        stdin: InputPort | None = None
        if self.console >= 0 and self.terminal < 0:
            return None, None, None
        if self.terminal >= 0:
            stdout = trio.lowlevel.FdStream(self.terminal)
            if plan.stdin:
                stdin = InputPort(trio.lowlevel.FdStream(os.dup(self.terminal)), terminal=True)
            self.terminal = -1
            return stdin, stdout, None
        if self.stdin >= 0:
            stdin = InputPort(trio.lowlevel.FdStream(self.stdin), terminal=False)
        out = trio.lowlevel.FdStream(self.stdout) if self.stdout >= 0 else None
        err = trio.lowlevel.FdStream(self.stderr) if self.stderr >= 0 else None
        self.stdin = self.stdout = self.stderr = -1
        return stdin, out, err


    def receive_terminal(self) -> None:
        """-t: take the pty master the init stage sent on the console socket, and close the
        socket. Called once the payload's execve succeeded: the stage sends the master before
        it, so it is queued already (never waited for).

        Raises:
            OSError: no terminal came (ENOMSG), or the socket failed.
        """
        console = socket.socket(fileno=self.console)
        self.console = -1
        fds: list[int] = []
        try:  # not socket.recv_fds: Python 3.11's ignores its flags, and would wait
            _, ancillary, _, _ = console.recvmsg(64, socket.CMSG_SPACE(4), socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(struct.unpack(f"{len(data) // 4}i", data[: len(data) // 4 * 4]))
        except BlockingIOError:
            pass
        finally:
            console.close()
        if not fds:
            raise OSError(errno.ENOMSG, "the init stage sent no terminal")
        for extra in fds[1:]:
            os.close(extra)
        self.terminal = fds[0]


class InputPort:
    """The write side of a process's stdin, shared by every client attached to it: one
    writer at a time (a lock), closed once (end of input on a pipe). ``written`` and
    ``dropped`` count bytes."""

    def __init__(self, stream: trio.lowlevel.FdStream, *, terminal: bool):
        self.stream = stream
        self.terminal = terminal
        self.closed = False
        self.written = 0
        self.dropped = 0
        self._lock = trio.Lock()

    async def write(self, data: bytes) -> bool:
        """Write all of ``data``; False (counted in ``dropped``) if the process's stdin is
        closed or its reader is gone."""
        async with self._lock:
            if self.closed:
                self.dropped += len(data)
                return False
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.dropped += len(data)
                return False
            self.written += len(data)
            return True

    async def close_input(self) -> None:
        """End of input: close a pipe, so the process reads EOF. A terminal stays open
        (other clients may attach; the process sees EOF when a client types ctrl-d)."""
        if self.terminal:
            return
        async with self._lock:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.stream.close()


def set_window_size(fd: int, rows: int, columns: int) -> None:
    """TIOCSWINSZ on a pty master: the kernel tells the foreground process group (SIGWINCH)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
