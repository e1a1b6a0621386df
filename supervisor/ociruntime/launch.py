"""Fork the init stage of a bundle or an exec (``supervisor/runtime/bundle_stage.py``) from
this short-lived process, and speak its status pipe (the lines of ``init_stage.py``):

* ``{"pid": N}`` from stage 0: the container's (or exec's) process, host pid N;
* ``{"ready": 1}`` from pid 1 of a ``create``: it is built and waits on the exec FIFO;
* ``{"error": ..., "exit_code": N}``: a step failed; EOF: the exec's execve succeeded.

Unlike the daemon (``spawn.py``), there is no fork server: this process is new and
single-threaded, so it may fork and let the child run Python. The child's fds are 0-2 this
process's stdio, 3 the config pipe, 4 the status pipe, 5 a socket connected to the console
socket when the process has a terminal.
"""

from __future__ import annotations

import fcntl
import os
import _signal  # the C module: signal.py imports enum (~2 ms of every run) for names we do not print

from supervisor.ociruntime import jsonlite
from supervisor.ociruntime.errors import RuntimeCommandError

CONFIG_FD, STATUS_FD, CONSOLE_FD, FIFO_FD = 3, 4, 5, 6


def connect_console(path: str):
    import socket  # only with a terminal

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise RuntimeCommandError(f'cannot connect to the console socket "{path}": {exc.strerror}') from None
    return sock


def _child(config_read: int, status_write: int, console: int, fifo: int) -> None:
    """In the forked child: the fds in place, then the stage (never returns)."""
    try:
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) if fd >= 0 else -1
                 for fd in (config_read, status_write, console, fifo)]
        for fd, target in zip(moved, (CONFIG_FD, STATUS_FD, CONSOLE_FD, FIFO_FD)):
            if fd >= 0:
                os.dup2(fd, target)
            else:  # whatever of ours is there (the stage keeps fds 0-5 and closes the rest)
                try:
                    os.close(target)
                except OSError:
                    pass
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        from supervisor.runtime import bundle_stage

        bundle_stage.run_bundle_stage()
    finally:
        os._exit(125)


class StatusLines:
    """The status pipe's JSON lines, read as they come."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = b""

    def next(self) -> dict | None:
        while b"\n" not in self.buffer:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            message = jsonlite.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise RuntimeCommandError(f"malformed status from the init stage: {line[:200]!r}")
        return message


def launch(stage: dict, console_socket: str = "", what: str = "container", fifo: str = "") -> int:
    """Run the stage for ``stage`` (the config map); return the process's host pid once it
    is ready (a bundle: built, waiting on its FIFO) or exec'd (an exec, ``"join"``).
    ``fifo``: the exec FIFO, opened here (O_PATH) and given as fd 6, as runc gives its init
    the FIFO: pid 1 may not be allowed to walk to it (a user namespace's root is not the
    host's).

    Raises:
        RuntimeCommandError: the stage failed (its message), nothing of it left running;
            ``exit_code`` is the stage's (125, 126, 127).
    """
    console = connect_console(console_socket) if stage.get("terminal") else None
    fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC) if fifo else -1
    config_read, config_write = os.pipe2(os.O_CLOEXEC)
    status_read, status_write = os.pipe2(os.O_CLOEXEC)
    try:
        stage0 = os.fork()
    except OSError as exc:
        raise RuntimeCommandError(f"cannot fork the init stage: {exc.strerror}") from None
    if stage0 == 0:
        _child(config_read, status_write, console.fileno() if console else -1, fifo_fd)
    os.close(config_read)
    if fifo_fd >= 0:
        os.close(fifo_fd)
    os.close(status_write)
    if console is not None:
        console.close()
    pid = 0
    try:
        try:
            os.write(config_write, jsonlite.dumps(stage).encode())
        except BrokenPipeError:
            pass  # the stage died first: its status says why
        os.close(config_write)
        lines = StatusLines(status_read)
        first = lines.next()
        os.waitpid(stage0, 0)
        if first is None:
            raise RuntimeCommandError(f"cannot start the {what}: the init stage exited without reporting a pid")
        if "error" in first:
            raise _stage_error(what, first)
        pid = int(first["pid"])
        outcome = lines.next()
        joining = bool(stage.get("join"))
        if outcome is None and joining:
            return pid  # the exec's execve closed the pipe
        if outcome is not None and outcome.get("ready") and not joining:
            return pid
        if outcome is None:
            raise RuntimeCommandError(f"cannot start the {what}: its init process exited during set-up")
        raise _stage_error(what, outcome)
    except BaseException:
        if pid:
            try:
                os.kill(pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise
    finally:
        os.close(status_read)


def _stage_error(what: str, message: dict) -> RuntimeCommandError:
    code = message.get("exit_code")
    return RuntimeCommandError(f"cannot start the {what}: {message.get('error')}",
                               code if code in (125, 126, 127) else 1)
