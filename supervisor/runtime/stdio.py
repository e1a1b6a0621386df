"""The standard fds of a container's pid 1 (or of an exec'd process), and the supervisor's
ends of them.

Three shapes, as docker has them:

- no ``-i``, no ``-t``: stdin is /dev/null, stdout and stderr are two pipes;
- ``-i``: stdin is a pipe too, whose write end the supervisor keeps (:class:`InputPort`);
- ``-t``: one pseudo-terminal. The supervisor opens it (``openpty`` on the host's devpts)
  and keeps the master; the slave is the process's fds 0, 1 and 2, and the init stage makes
  it the controlling terminal (``setsid`` + ``TIOCSCTTY``). stdout and stderr are merged, as
  on any terminal; the master is read as "stdout", written as stdin (with ``-i``), and
  :func:`set_window_size` applies a resize (the kernel sends SIGWINCH to the foreground
  process group).

``detached`` output (``exec -d``) goes to /dev/null, as docker does.
"""

from __future__ import annotations

import fcntl
import os
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
            if self.tty:
                master, slave = os.openpty()
                os.set_inheritable(master, False)
                os.set_inheritable(slave, False)
                ours.terminal = master
                theirs.extend((slave, os.dup(slave), os.dup(slave)))
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

    def close_fds(self) -> None:
        for name in ("stdin", "stdout", "stderr", "terminal"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def streams(self, plan: StdioPlan) -> tuple[InputPort | None, trio.lowlevel.FdStream | None, trio.lowlevel.FdStream | None]:
        """(stdin, stdout, stderr) as trio objects; the fds are theirs from now on."""
        stdin: InputPort | None = None
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
