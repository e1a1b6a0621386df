"""Launch a container: the supervisor's side of the init stage handshake.

:class:`ForkServer` is the one launcher: it sends a launch's five fds to a warm fork
server (``forkserver.py``, where the reasons and the diagram are), which forks the init
stage: no Python start-up per container. The handshake after it (``_start_container``)
moves the bytes; what they mean (the config, the status lines, the server's replies) is
``protocol.py``, sans-IO, where the theory of operation and its diagram are. What it
returns, the container's pid 1 held by a pidfd, is ``process.py``'s.

The supervisor writes the config, waits until stage 0 has been reaped by the fork server
(which then says so), reads ``{"pid": N}`` from the status pipe and opens a pidfd on that
pid at once; EOF means the payload's execve succeeded, an ``{"error": ...}`` line becomes
a :class:`LaunchError`.

The names the lifecycle uses are exported here, wherever they are defined, so that it
imports the launcher from one place: ``from supervisor.runtime.spawn import ForkServer,
LaunchConfig, LaunchError, DEFAULT_CAPABILITIES, become_subreaper``.
"""

from __future__ import annotations

import array
import dataclasses
import fcntl
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

import trio

from supervisor.runtime import forkserver, libc
from supervisor.runtime.process import (
    REAP_TIMEOUT,
    Child,
    ContainerProcess,
    become_subreaper,
    close_pidfd,
    reap,
)
from supervisor.runtime.protocol import (
    DEFAULT_CAPABILITIES,
    MASKED_PATHS,
    MAX_STATUS_BYTES,
    NEED_DATA,
    NeedData,
    READONLY_PATHS,
    LaunchConfig,
    LaunchError,
    StatusDecoder,
    decode_server_reply,
    launch_error,
)
from supervisor.runtime.stdio import StdioEnds, StdioPlan

__all__ = [
    "DEFAULT_CAPABILITIES",
    "MASKED_PATHS",
    "READONLY_PATHS",
    "ContainerProcess",
    "ForkServer",
    "LaunchConfig",
    "LaunchError",
    "become_subreaper",
]

Prepare = Callable[[int], Awaitable[None]]  # launch(prepare=...): called with pid 1's host pid

FORK_SERVER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forkserver.py")
FORK_SERVER_START_TIMEOUT = 30.0  # seconds for a fresh fork server to say it is ready
FORK_SERVER_STOP_TIMEOUT = 5.0  # seconds for it to exit after EOF before it is killed
PREPARE_GRACE = 1.0  # seconds for pid 1's own error to arrive when prepare() failed


def _require_subreaper() -> None:
    if not libc.is_child_subreaper():
        raise RuntimeError(
            "launch(): this process is not a child subreaper; call become_subreaper() at start-up, "
            "or the container's pid 1 would be adopted by the host's init and could not be waited for"
        )


async def _start_container(
    config: LaunchConfig,
    init: _ForkedStage0,
    ours: list[int],
    ends: StdioEnds,
    stdio: StdioPlan,
    prepare: Prepare | None = None,
    hold_mounts: bool = False,
) -> ContainerProcess:
    """The supervisor's side of the handshake, once the fork server has forked the init stage:
    ``ours`` are the config pipe's write end and the status pipe's read end, ``ends`` the
    supervisor's ends of the process's stdio. ``init.wait()`` returns only once stage 0 has
    been reaped, so pid 1 is our child when it is adopted. ``config`` is a LaunchConfig or an
    exec's config (``supervisor/exec.py``): the same handshake starts both.

    ``hold_mounts``: keep an fd of pid 1's mount namespace (ContainerProcess.mount_namespace).
    It is opened as soon as the pid is known; with ``network_sync`` pid 1 is then still
    waiting for the go, so it is always there; without, pid 1 may already be gone (nothing
    is held then)."""
    name = config.container_id[:12]
    config_fd, status_fd = ours
    stdin, stdout, stderr = ends.streams(stdio)
    status = _StatusReader(trio.lowlevel.FdStream(status_fd), name)
    container: Child | None = None
    mount_namespace = -1
    sync = bool(getattr(config, "network_sync", False))
    config_stream = trio.lowlevel.FdStream(config_fd)
    try:
        if sync:  # fd 3 stays open: pid 1 reads the go byte on it (init_stage.wait_for_network)
            await _send_config(config_stream, config.to_json() + b"\n", keep_open=True)
        else:
            await _send_config(config_stream, config.to_json())
        init_exit = await init.wait()
        first = await status.next_message()
        if first is None:
            raise LaunchError(
                f"cannot start container {name}: the init stage {_describe(init_exit)} before reporting a pid"
            )
        if "error" in first:  # stage 0 itself failed: cgroups, unshare, fork
            raise launch_error(name, config.container_id, first)
        container = Child.adopt(first.get("pid"), name)
        start_time = container.start_time
        if hold_mounts:
            mount_namespace = _open_mount_namespace(container.pid)
        if sync:
            if prepare is not None:
                try:
                    await prepare(container.pid)
                except Exception:
                    # pid 1 may have failed first (a missing command): its error is the cause.
                    with trio.move_on_after(PREPARE_GRACE):
                        await container.wait()
                    if container.returncode is not None:
                        outcome = await status.next_message()
                        if outcome is not None and "error" in outcome:
                            raise launch_error(name, config.container_id, outcome) from None
                    raise
            try:
                await config_stream.send_all(b"x")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # pid 1 died: its status says why
            config_stream.close()
        outcome = await status.next_message()  # None: EOF, the payload's execve succeeded
        if outcome is not None:
            if "error" not in outcome:
                raise LaunchError(
                    f"cannot start container {name}: unexpected status from the init stage: {outcome!r}"
                )
            await container.wait()
            raise launch_error(name, config.container_id, outcome)
        if init_exit != 0:  # stage 0 failed after the fork: its child gave up on its own
            await container.wait()
            raise LaunchError(
                f"cannot start container {name}: the init stage {_describe(init_exit)} after forking"
            )
        if stdio.tty:  # the terminal pid 1 made in its own devpts (runtime/console.py)
            stdin, stdout, stderr = _receive_terminal(ends, stdio, name)
    except BaseException:
        config_stream.close()
        for stream in (stdin, stdout, stderr):
            if stream is not None:
                stream.close()
        ends.close_fds()  # the console socket, with -t
        if mount_namespace >= 0:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(os.close, mount_namespace)  # may sync: not in trio's thread
        await init.kill_and_reap()
        if container is None:  # cancelled or failed before the pid was read: it may be there
            container = Child.adopt_quietly(status.pending_pid())
        if container is not None:
            await container.kill_and_reap()
            container.close()
        raise
    finally:
        init.close()
        status.close()
    process = ContainerProcess(container.pid, container.pidfd, start_time, stdout, stderr, stdin=stdin, tty=stdio.tty,
                               mount_namespace=mount_namespace)
    container.pidfd = -1  # now owned by ``process``
    return process


def _receive_terminal(ends: StdioEnds, stdio: StdioPlan, name: str) -> tuple:
    """The streams of the pty master the init stage sent back (``StdioEnds.receive_terminal``).

    Raises:
        LaunchError(125): no terminal came.
    """
    try:
        ends.receive_terminal()
    except OSError as exc:
        raise LaunchError(f"cannot start container {name}: receive its terminal: {exc.strerror}") from exc
    return ends.streams(stdio)


def _open_mount_namespace(pid: int) -> int:
    """An fd of the process's mount namespace; -1 when it is gone already."""
    try:
        return os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _open_pipes(name: str, stdio: StdioPlan) -> tuple[list[int], list[int], StdioEnds]:
    """The init stage's fds 0-4 (``theirs``: stdin, stdout and stderr as ``stdio`` plans
    them, the config pipe's read end, the status pipe's write end), the supervisor's ends of
    the config and status pipes (``ours``) and of the stdio. All O_CLOEXEC."""
    ours: list[int] = []
    theirs: list[int] = []
    try:
        theirs, ends = stdio.open()
    except OSError as exc:
        raise LaunchError(f"cannot start container {name}: open its stdio: {libc.strerror(exc.errno)}") from exc
    try:
        config_read, config_write = os.pipe()
        ours.append(config_write)
        theirs.append(config_read)
        status_read, status_write = os.pipe()
        ours.append(status_read)
        theirs.append(status_write)
    except OSError as exc:
        _close_all(ours + theirs)
        ends.close_fds()
        raise LaunchError(f"cannot start container {name}: create the pipes: {libc.strerror(exc.errno)}") from exc
    return ours, theirs, ends


async def _send_config(stream: trio.lowlevel.FdStream, data: bytes, keep_open: bool = False) -> None:
    try:
        await stream.send_all(data)
    except trio.BrokenResourceError:
        pass  # the init stage died first; its exit status says so
    finally:
        if not keep_open:
            await stream.aclose()


class _StatusReader:
    """The status pipe's messages (``protocol.StatusDecoder``), read as they come."""

    def __init__(self, stream: trio.lowlevel.FdStream, name: str):
        self._stream = stream
        self._decoder = StatusDecoder(name)

    async def next_message(self) -> dict | None:
        """The next message, or None at EOF. Garbage is a LaunchError."""
        while (message := self._decoder.next_message()) is NEED_DATA:
            self._decoder.feed(await self._stream.receive_some(4096))
        assert not isinstance(message, NeedData)
        return message

    def pending_pid(self) -> object:
        """The pid of a pid line already in the pipe, without waiting; None if there is none."""
        try:
            data = os.read(self._stream.fileno(), MAX_STATUS_BYTES)
        except OSError:  # nothing there (EAGAIN), or closed
            data = b""
        return self._decoder.pending_pid(data)

    def close(self) -> None:
        self._stream.close()


class ForkServer:
    """Launches containers by forking their init stage from one warm, single-threaded
    process (``forkserver.py``: the protocol, the diagram and the reasons are there), so
    that no container pays for a Python start-up.

    Use as ``async with ForkServer(python) as server: await server.launch(config)``.
    :meth:`start` runs the server (again, if it died); :meth:`launch` starts it when needed,
    so a launch after the server's death gets a new one. A launch in flight when the
    server dies fails with LaunchError(125). :meth:`aclose` closes the control socket: the
    server exits at EOF, once its stage-0 children are reaped.
    """

    def __init__(self, python: str = sys.executable):
        self.python = python
        self._control: trio.socket.SocketType | None = None
        self._process: Child | None = None
        self._start_lock = trio.Lock()

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs (for inspection and tests)."""
        return None if self._process is None or self._process.returncode is not None else self._process.pid

    async def __aenter__(self) -> ForkServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Run the server and wait for its ``ready``; nothing if it is already running.

        Raises:
            LaunchError(125): it cannot be started, or died before it was ready.
        """
        async with self._start_lock:
            if self._process is not None and self._process.poll() is None:
                return
            await self._stop()
            control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                high = fcntl.fcntl(theirs.fileno(), fcntl.F_DUPFD_CLOEXEC, forkserver.CONTROL_FD + 1)
                try:
                    pid = os.posix_spawn(
                        self.python,
                        [self.python, "-I", "-S", FORK_SERVER_SCRIPT],
                        {},
                        file_actions=[
                            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                            (os.POSIX_SPAWN_DUP2, high, forkserver.CONTROL_FD),
                        ],
                        setsigmask=(),
                        setsigdef=signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP},
                    )
                finally:
                    os.close(high)
            except OSError as exc:
                control.close()
                raise LaunchError(
                    f"cannot start the fork server {self.python!r}: {libc.strerror(exc.errno)}"
                ) from exc
            finally:
                theirs.close()
            self._process = Child(pid)
            self._control = trio.socket.from_stdlib_socket(control)
            try:
                with trio.fail_after(FORK_SERVER_START_TIMEOUT):
                    ready = await self._control.recv(len(forkserver.READY))
            except trio.TooSlowError:
                ready = b""
            except BaseException:
                await self._stop()
                raise
            if ready != forkserver.READY:
                await self._stop()
                raise LaunchError(f"cannot start the fork server {self.python!r}: it was not ready (got {ready!r})")

    async def launch(
        self, config: LaunchConfig, stdio: StdioPlan = StdioPlan(), prepare: Prepare | None = None,
        hold_mounts: bool = False,
    ) -> ContainerProcess:
        """Start the container described by ``config`` and return its pid 1 once its payload
        has been exec'd. ``stdio`` says what its fds 0-2 are (pipes, a stdin pipe, a
        terminal: ``stdio.py``). ``prepare(pid)``, with ``config.network_sync``, runs once
        pid 1 exists and before its payload may exec (the network set-up); if it raises, the
        container is killed. ``hold_mounts``: see ``_start_container``.

        Raises:
            LaunchError: the container could not be started (exit_code 125/126/127); nothing
                of it is left running.
            RuntimeError: the calling process is not a child subreaper.
        """
        _require_subreaper()
        name = config.container_id[:12]
        if config.terminal != stdio.tty:  # the stdio plan decides: fd 0 is the console socket or not
            config = dataclasses.replace(config, terminal=stdio.tty)
        await self.start()
        server, control = self._process, self._control
        assert server is not None and control is not None
        ours, theirs, ends = _open_pipes(name, stdio)
        try:
            reply, reply_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                fds = array.array("i", [*theirs, reply_theirs.fileno()])
                await control.sendmsg([forkserver.REQUEST], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            except BaseException as exc:
                reply.close()
                if isinstance(exc, OSError):
                    raise LaunchError(
                        f"cannot start container {name}: send the request to the fork server: {libc.strerror(exc.errno)}"
                    ) from exc
                raise
            finally:
                reply_theirs.close()
        except BaseException:
            _close_all(ours)
            ends.close_fds()
            raise
        finally:
            _close_all(theirs)  # the server has its copies now: EOF on them is its (or stage 0's) doing
        stage0 = _ForkedStage0(name, trio.socket.from_stdlib_socket(reply), server)
        return await _start_container(config, stage0, ours, ends, stdio, prepare, hold_mounts)

    async def aclose(self) -> None:
        """Stop the server: close the control socket, wait for it to exit (SIGKILL after
        FORK_SERVER_STOP_TIMEOUT) and reap it."""
        async with self._start_lock:
            await self._stop()

    async def _stop(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None:
            process, self._process = self._process, None
            with trio.CancelScope(shield=True):
                with trio.move_on_after(FORK_SERVER_STOP_TIMEOUT):
                    await process.wait()
                await process.kill_and_reap()
            process.close()


class _ForkedStage0:
    """Stage 0 as forked by the fork server, with :class:`Child`'s interface for
    ``_start_container``. Its pid and pidfd come from stage 0 itself, its exit status
    from the server once it has reaped it; both on the launch's reply socket."""

    def __init__(self, name: str, reply: trio.socket.SocketType, server: Child):
        self.name = name
        self.pid = 0
        self.pidfd = -1
        self.returncode: int | None = None
        self._reply = reply
        self._server = server
        self._orphaned = False  # the server died: stage 0 is (or will be) our own child
        self._closed_by_server = False

    async def _read_reply(self) -> None:
        """One message: the pid (with the pidfd), or the exit status; EOF: the server died."""
        data, ancdata, flags, _ = await self._reply.recvmsg(forkserver.MAX_MESSAGE, socket.CMSG_SPACE(4))
        fds = forkserver._received_fds(ancdata)
        try:
            if not data:
                self._orphaned = True
                raise LaunchError(f"cannot start container {self.name}: the fork server died", 125)
            reply = decode_server_reply(self.name, data)
            if reply.pid is not None and fds and self.pidfd < 0:
                self.pid, self.pidfd = reply.pid, fds.pop()
            if reply.exit is not None:
                self.returncode = reply.exit
        finally:
            _close_all(fds)

    async def wait(self) -> int:
        while self.returncode is None:
            await self._read_reply()
        if not self._closed_by_server:  # the server closes its end right after the exit status:
            await self._reply.recv(1)  # wait for that, so that it holds no fd of this launch
            self._closed_by_server = True
        return self.returncode

    async def kill_and_reap(self) -> None:
        """SIGKILL stage 0 and wait until it is reaped (by the server, or by us if the
        server died), shielded but not for longer than REAP_TIMEOUT."""
        if self.returncode is not None:
            return
        with trio.CancelScope(shield=True, deadline=trio.current_time() + REAP_TIMEOUT):
            try:
                while self.pidfd < 0 and self.returncode is None:
                    await self._read_reply()
                if self.pidfd >= 0:
                    try:
                        signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                await self.wait()
            except LaunchError:
                if not self._orphaned or self.pidfd < 0:
                    return
                await self._server.wait()  # reaped: its children are ours from now on
                await trio.lowlevel.wait_readable(self.pidfd)
                try:
                    self.returncode = reap(self.pid)
                except ChildProcessError:
                    pass

    def close(self) -> None:
        if self.pidfd >= 0:
            close_pidfd(self.pidfd)
            self.pidfd = -1
        self._reply.close()


def _describe(exit_code: int) -> str:
    if exit_code > 128:
        try:
            return f"was killed by {signal.Signals(exit_code - 128).name}"
        except ValueError:
            pass
    return f"exited with status {exit_code}"

