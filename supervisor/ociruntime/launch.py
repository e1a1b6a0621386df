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

from supervisor.ociruntime.errors import RuntimeCommandError
from supervisor.runtime import cgroupfiles, jsonlite

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


class InitStage:
    """Stage 0, forked before its config is known, then configured (:meth:`run`).

    The fork comes first so that stage 0 imports its modules (``bundle_stage`` and the
    steps, ctypes: a few ms) on the other CPU while this process makes the container's
    cgroups and moves stage 0 into them (:meth:`join_cgroups`): the first write to a v1
    ``cgroup.procs`` waits for an RCU grace period (~5-15 ms of wall time, no CPU), which
    runc's parent overlaps the same way with its ``runc init``. Stage 0 blocks reading
    its config, which is written only after the join, so it unshares inside the cgroups.

    ``fifo``: the exec FIFO, opened here (O_PATH) and given as fd 6, as runc gives its init
    the FIFO: pid 1 may not be allowed to walk to it (a user namespace's root is not the
    host's). ``console_socket``: connected here, given as fd 5.

    Raises:
        RuntimeCommandError: the fork or the console socket failed (nothing left).
    """

    def __init__(self, console_socket: str = "", fifo: str = "", what: str = "container"):
        self.what = what
        console = connect_console(console_socket) if console_socket else None
        fifo_fd = -1
        try:
            fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC) if fifo else -1
            config_read, self.config_write = os.pipe2(os.O_CLOEXEC)
            self.status_read, status_write = os.pipe2(os.O_CLOEXEC)
            try:
                self.pid = os.fork()
            except OSError as exc:
                for fd in (config_read, self.config_write, self.status_read, status_write):
                    os.close(fd)
                raise RuntimeCommandError(f"cannot fork the init stage: {exc.strerror}") from None
            if self.pid == 0:
                _child(config_read, status_write, console.fileno() if console else -1, fifo_fd)
            os.close(config_read)
            os.close(status_write)
        finally:
            if fifo_fd >= 0:
                os.close(fifo_fd)
            if console is not None:
                console.close()

    def join_cgroups(self, procs_files) -> None:
        """Write stage 0's pid into each ``cgroup.procs`` (before :meth:`run`).

        Raises:
            RuntimeCommandError: naming the file and the cause (stage 0 is still there:
                :meth:`abandon` it).
        """
        try:
            cgroupfiles.join(procs_files, self.pid)
        except OSError as exc:
            raise RuntimeCommandError(f'cannot join the cgroup: write "{exc.filename}": {exc.strerror}') from None

    def run(self, stage: dict) -> int:
        """Give stage 0 its config (the map ``stage``); return the process's host pid once it
        is ready (a bundle: built, waiting on its FIFO) or exec'd (an exec, ``"join"``).
        Stage 0 is reaped once the outcome is known (it exits right after reporting the pid:
        waiting for it before reading on would put its exit on the way).

        Raises:
            RuntimeCommandError: the stage failed (its message), nothing of it left running;
                ``exit_code`` is the stage's (125, 126, 127).
        """
        what = self.what
        pid = 0
        try:
            try:
                os.write(self.config_write, jsonlite.dumps(stage).encode())
            except BrokenPipeError:
                pass  # the stage died first: its status says why
            os.close(self.config_write)
            self.config_write = -1
            lines = StatusLines(self.status_read)
            first = lines.next()
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
            for process in (pid, self.pid) if pid else (self.pid,):  # stage 0 is not reaped yet: its pid is ours
                try:
                    os.kill(process, _signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise
        finally:
            os.close(self.status_read)
            self.status_read = -1
            self._reap()

    def abandon(self) -> None:
        """Stage 0 never configured (a step before :meth:`run` failed): killed and reaped."""
        if self.config_write >= 0:
            os.close(self.config_write)
            self.config_write = -1
        if self.status_read >= 0:
            os.close(self.status_read)
            self.status_read = -1
        try:
            os.kill(self.pid, _signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reap()

    def _reap(self) -> None:
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def launch(stage: dict, console_socket: str = "", what: str = "container", fifo: str = "") -> int:
    """Fork stage 0 and run it with ``stage`` at once (an exec: its stage 0 joins the
    container's cgroups itself, ``stage["cgroup_procs"]``). See :class:`InitStage`."""
    init = InitStage(console_socket if stage.get("terminal") else "", fifo, what)
    return init.run(stage)


def _stage_error(what: str, message: dict) -> RuntimeCommandError:
    code = message.get("exit_code")
    return RuntimeCommandError(f"cannot start the {what}: {message.get('error')}",
                               code if code in (125, 126, 127) else 1)
