"""Fork the init stage of a bundle or an exec (``supervisor/runtime/bundle_stage.py``) from
this short-lived process, and speak its status pipe (the lines of ``init_stage.py``):

* ``{"pid": N}`` from stage 0: the container's (or exec's) process, host pid N;
* ``{"ready": 1}`` from pid 1 of a ``create``: it is built and waits on the exec FIFO;
* ``{"error": ..., "exit_code": N}``: a step failed; EOF: the exec's execve succeeded.

Unlike the daemon (``spawn.py``), there is no fork server: this process is new (its one
other thread, ``warmup.py``'s, only blocks in a write), so it may fork and let the child run
Python. The child's fds are 0-2 this process's stdio, 3 the config pipe, 4 the status pipe,
5 a socket connected to the console socket when the process has a terminal.
"""

from __future__ import annotations

import fcntl
import os
import _signal  # the C module: signal.py imports enum (~2 ms of every run) for names we do not print

from supervisor.ociruntime.errors import RuntimeCommandError
from supervisor.runtime import jsonlite

CONFIG_FD, STATUS_FD, CONSOLE_FD = 3, 4, 5


def connect_console(path: str):
    import socket  # only with a terminal

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise RuntimeCommandError(f'cannot connect to the console socket "{path}": {exc.strerror}') from None
    return sock


def _child(config_read: int, status_write: int, console: int) -> None:
    """In the forked child: the fds in place, then the stage (never returns)."""
    try:
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) if fd >= 0 else -1
                 for fd in (config_read, status_write, console)]
        for fd, target in zip(moved, (CONFIG_FD, STATUS_FD, CONSOLE_FD)):
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
    """Stage 0, forked before its config is known, then configured.

    The fork comes first so that stage 0 imports its modules (``bundle_stage`` and the
    steps: a few ms) on the other CPU while this process imports and reads the bundle:
    ``bin/dockyard-runtime`` forks it before anything else (``prelude.py``), ``create``
    takes it from there. Then, for a bundle (docs/runtime.md, "Fifth pass")::

        runtime                              stage 0                 pid 1
        -------                              -------                 -----
        send(config) ----------------------> unshare (not user, cgroup)
        mkdir the cgroups, write the limits
        release_cgroups() -- "x" on fd 3 --> join the cgroups ("0"
                                             into v1 tasks), user ns,
        read_pid() <------- {"pid": N} ----- fork, report, exit --> (born in them)
                                                                     mounts, devices,
                                                                     pivot_root, masks,
                                                                     user, caps, seccomp
        wait_ready() <------------------------------------------- {"ready": 1}
                                                                     open exec.fifo: blocks

    The namespaces are made while the runtime makes the cgroups; stage 0 moves itself
    into them (``cgroupfiles.join_self``: on cgroup v1 without the kernel's grace period
    that a move of another process waits for) and pid 1 is born there. An exec
    (:func:`launch`) is sent its config at once: its stage 0 joins the container's
    existing cgroups the same way.

    ``console_socket``: connected here, given as fd 5 (the stage opens the exec FIFO itself,
    before it enters any namespace, from the config's ``exec_fifo_path``).

    Raises:
        RuntimeCommandError: the fork or the console socket failed (nothing left).
    """

    def __init__(self, console_socket: str = "", what: str = "container"):
        self.what = what
        self.child_pid = 0  # the container's (or exec's) process, once reported
        self.sent = False
        self.config_write = -1
        self.status_read = -1
        self.lines = None
        console = connect_console(console_socket) if console_socket else None
        try:
            config_read, self.config_write = os.pipe2(os.O_CLOEXEC)
            self.status_read, status_write = os.pipe2(os.O_CLOEXEC)
            try:
                self.pid = os.fork()
            except OSError as exc:
                for fd in (config_read, self.config_write, self.status_read, status_write):
                    os.close(fd)
                raise RuntimeCommandError(f"cannot fork the init stage: {exc.strerror}") from None
            if self.pid == 0:
                _child(config_read, status_write, console.fileno() if console else -1)
            os.close(config_read)
            os.close(status_write)
            self.lines = StatusLines(self.status_read)
        finally:
            if console is not None:
                console.close()

    def send(self, stage: dict, keep_open: bool = False) -> None:
        """Give stage 0 its config (the map ``stage``). ``keep_open``: the config pipe stays
        open for :meth:`release_cgroups` (the config's ``cgroup_sync``)."""
        self.sent = True
        try:
            os.write(self.config_write, jsonlite.dumps(stage).encode() + (b"\n" if keep_open else b""))
        except BrokenPipeError:
            pass  # the stage died first: its status says why
        if not keep_open:
            self._close_config()

    def read_pid(self) -> int:
        """The host pid of the process stage 0 forked (its first status line).

        Raises:
            RuntimeCommandError: the stage failed (its message; ``exit_code`` the stage's).
        """
        first = self.lines.next()
        if first is None:
            raise RuntimeCommandError(f"cannot start the {self.what}: the init stage exited without reporting a pid")
        if "error" in first:
            raise _stage_error(self.what, first)
        self.child_pid = int(first["pid"])
        return self.child_pid

    def release_cgroups(self) -> None:
        """Tell stage 0, which waits for its cgroups (``cgroup_sync``), that they are made."""
        if self.config_write >= 0:
            try:
                os.write(self.config_write, b"x")
            except BrokenPipeError:
                pass  # it died: read_pid reports why
            self._close_config()

    def wait_ready(self, joining: bool = False) -> int:
        """The process's pid once it is ready (a bundle: built, waiting on its FIFO) or exec'd
        (an exec, ``joining``). Stage 0 is reaped once the outcome is known.

        Raises:
            RuntimeCommandError: the stage failed (its message), nothing of it left running.
        """
        try:
            outcome = self.lines.next()
            if outcome is None and joining:
                return self.child_pid  # the exec's execve closed the pipe
            if outcome is not None and outcome.get("ready") and not joining:
                return self.child_pid
            if outcome is None:
                raise RuntimeCommandError(f"cannot start the {self.what}: its init process exited during set-up")
            raise _stage_error(self.what, outcome)
        except BaseException:
            self._kill()
            raise
        finally:
            self._close_status()
            self._reap()

    def run(self, stage: dict) -> int:
        """:meth:`send`, :meth:`read_pid` and :meth:`wait_ready` in one (an exec).

        Raises:
            RuntimeCommandError: the stage failed (its message), nothing of it left running;
                ``exit_code`` is the stage's (125, 126, 127).
        """
        try:
            self.send(stage)
            self.read_pid()
        except BaseException:
            self.abandon()
            raise
        return self.wait_ready(joining=bool(stage.get("join")))

    def abandon(self) -> None:
        """Stage 0 (and the process it forked, if any) killed and reaped: a step of ours
        failed before the process was ready. A stage that has its config reports the
        process it forks (or its error) without waiting for us once its config pipe is
        closed (a stage that waits for its cgroups then fails): that line is read first, so
        that no process is left behind."""
        self._close_config()
        if self.sent and not self.child_pid and self.status_read >= 0:
            try:
                self.read_pid()
            except RuntimeCommandError:
                pass  # it failed, or died: no process of it
        self._close_status()
        self._kill()
        self._reap()

    def _kill(self) -> None:
        for process in (self.child_pid, self.pid) if self.child_pid else (self.pid,):
            try:  # stage 0 is not reaped yet: its pid is ours
                os.kill(process, _signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _close_config(self) -> None:
        if self.config_write >= 0:
            os.close(self.config_write)
            self.config_write = -1

    def _close_status(self) -> None:
        if self.status_read >= 0:
            os.close(self.status_read)
            self.status_read = -1

    def _reap(self) -> None:
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def launch(stage: dict, console_socket: str = "", what: str = "container") -> int:
    """Fork stage 0 and run it with ``stage`` at once (an exec: its stage 0 joins the
    container's cgroups itself, ``stage["cgroup_procs"]``). See :class:`InitStage`."""
    init = InitStage(console_socket if stage.get("terminal") else "", what)
    return init.run(stage)


def _stage_error(what: str, message: dict) -> RuntimeCommandError:
    code = message.get("exit_code")
    return RuntimeCommandError(f"cannot start the {what}: {message.get('error')}",
                               code if code in (125, 126, 127) else 1)
