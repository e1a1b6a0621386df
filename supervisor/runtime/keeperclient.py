"""The daemon's side of the keeper (``keeper.py``: the process, its protocol and diagram).

:class:`KeeperClient` is the containers' launcher when live restore is in use: it launches
through the keeper (the fork server's handshake, ``spawn._start_container``), then hands the
keeper copies of the daemon's ends of the container's stdio, its output spools
(:mod:`supervisor.logspool`) and its published ports' sockets (``hold``). Because the keeper,
not the daemon, is pid 1's parent, a container's exit status comes from the keeper
(:meth:`KeeperClient.exit_status`), while the daemon still waits on a pidfd and signals
through it.

At daemon start :meth:`KeeperClient.connect` finds the keeper left by the last daemon (or
starts one) and takes back what it holds (:class:`HeldContainer`); the lifecycle re-adopts
them (``supervisor/lifecycle/restore.py``).
"""

from __future__ import annotations

import array
import dataclasses
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from supervisor.errors import DockyardError
from supervisor.runtime import forkserver, keeper, libc
from supervisor.runtime.process import Child, ContainerProcess
from supervisor.runtime.protocol import LaunchConfig, LaunchError
from supervisor.runtime.spawn import _close_all, _ForkedStage0, _open_pipes, _start_container, Prepare
from supervisor.runtime.stdio import InputPort, StdioPlan

KEEPER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keeper.py")
START_TIMEOUT = 30.0  # seconds for a fresh keeper to listen
HELLO_TIMEOUT = 10.0  # seconds for the keeper's answer and what it holds
STOP_TIMEOUT = 5.0  # seconds for a keeper that holds nothing to exit once the daemon let it go
EXITS_KEPT = 1024  # exit statuses nobody asked for yet (a pid 1 the daemon still waits for)


class KeeperError(DockyardError):
    """The keeper cannot be started or spoken to."""


class IncompatibleKeeper(KeeperError):
    """The run dir's keeper speaks another protocol version (another dockyard started it)."""

    def __init__(self, pid: int, version: Any, socket_path: str):
        self.pid = pid
        self.version = version
        self.socket_path = socket_path
        super().__init__(f"the container keeper (pid {pid}, {socket_path}) speaks protocol {version}, this daemon "
                         f"{keeper.VERSION}: its containers cannot be adopted; they are left running, listed as "
                         f"not adoptable; stop them with the dockyard that started them, or `dockyard rm -f` them, "
                         f"then end the keeper (kill {pid})")


def versioned_paths(run_dir: Path | str) -> tuple[str, str]:
    """The socket and lock of this version's own keeper, used while the run dir's keeper
    (``keeper.sock``) is another version's (an upgrade whose protocol changed)."""
    return (str(Path(run_dir) / f"keeper-v{keeper.VERSION}.sock"),
            str(Path(run_dir) / f"keeper-v{keeper.VERSION}.lock"))


@dataclass
class HeldContainer:
    """What the keeper held for a container when the daemon started (``fds``: name -> fd,
    now the daemon's)."""

    id: str
    pid: int
    start_time: int
    fds: dict[str, int]
    exit: int | None = None  # the exit code, if pid 1 exited while no daemon ran
    finished: float | None = None  # and when (unix time)
    extra: dict[str, Any] = field(default_factory=dict)

    def take(self, name: str) -> int:
        """The fd called ``name`` (-1 if none), now the caller's."""
        return self.fds.pop(name, -1)

    def close(self) -> None:
        _close_all(list(self.fds.values()))
        self.fds.clear()


class KeeperClient:
    """Launches containers through the keeper of ``run_dir`` and holds the connection to it."""

    def __init__(self, run_dir: Path, python: str, log: Any = None):
        self.socket_path = str(Path(run_dir) / "keeper.sock")
        self.lock_path = str(Path(run_dir) / "keeper.lock")
        self.versioned = versioned_paths(run_dir)
        self.incompatible: IncompatibleKeeper | None = None  # the run dir's keeper, if another version's
        self.python = python
        self.log = log
        self.pid = 0  # the keeper's
        self.started_here = False  # this daemon started it (it is our child)
        self._child: Child | None = None
        self._control: trio.socket.SocketType | None = None
        self._send_lock = trio.Lock()
        self._exits: dict[int, tuple[int, float]] = {}
        self._waiters: dict[int, trio.Event] = {}
        self._closed = False
        self._stopping = False

    # --- connection --------------------------------------------------------------------

    async def connect(self) -> list[HeldContainer]:
        """Connect to the run dir's keeper (starting one if none runs) and take back what it
        holds. A keeper of another protocol version (an upgrade of dockyard whose protocol
        changed) is left alone with its containers (``incompatible``, logged): this daemon
        uses a keeper of its own version beside it (:func:`versioned_paths`), and keeps using
        it while its socket is there.

        Raises:
            KeeperError: it cannot be started or spoken to.
        """
        if self.socket_path != self.versioned[0] and not os.path.exists(self.socket_path) \
                and os.path.exists(self.versioned[0]):
            self.socket_path, self.lock_path = self.versioned  # the other version's keeper is gone
        try:
            return await self._connect()
        except IncompatibleKeeper as exc:
            if self.socket_path == self.versioned[0]:
                raise
            self.incompatible = exc
            if self.log is not None:
                self.log.warning("the container keeper is of another dockyard version: its containers are left "
                                 "running, not adopted", keeper=exc.pid, protocol=exc.version, ours=keeper.VERSION,
                                 socket=exc.socket_path, using=self.versioned[0])
            self.socket_path, self.lock_path = self.versioned
            return await self._connect()

    async def _connect(self) -> list[HeldContainer]:
        for attempt in range(3):
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                await sock.connect(self.socket_path)
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                await self._spawn()
                continue
            self._control = sock
            try:
                return await self._hello()
            except (EOFError, ConnectionResetError):  # it was exiting (it held nothing): start another
                sock.close()
                self._control = None
                continue
        raise KeeperError(f"cannot connect to the container keeper at {self.socket_path}")

    async def _spawn(self) -> None:
        ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
        try:
            high = os.dup(ready_write)  # not O_CLOEXEC: dup2'd onto READY_FD by the spawn
            try:
                pid = os.posix_spawn(
                    self.python, [self.python, "-I", "-S", KEEPER_SCRIPT, self.socket_path, self.lock_path], {},
                    file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                  (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                                  (os.POSIX_SPAWN_DUP2, high, keeper.READY_FD)],
                    setsid=True, setsigmask=(),
                    setsigdef=signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP},
                )
            finally:
                os.close(high)
        except OSError as exc:
            os.close(ready_read)
            raise KeeperError(f"cannot start the container keeper {self.python!r}: {libc.strerror(exc.errno)}") from exc
        finally:
            os.close(ready_write)
        self._child = Child(pid)
        self.started_here = True
        stream = trio.lowlevel.FdStream(ready_read)
        try:
            with trio.move_on_after(START_TIMEOUT):
                answer = await stream.receive_some(16)
        finally:
            await stream.aclose()
        if answer == b"busy":  # another keeper holds the lock: it is (about to be) listening
            await trio.sleep(0.05)
            return
        if answer != forkserver.READY:
            raise KeeperError(f"cannot start the container keeper: it was not ready (got {answer!r})")

    async def _hello(self) -> list[HeldContainer]:
        await self._send({"op": "hello", "version": keeper.VERSION})
        with trio.fail_after(HELLO_TIMEOUT):
            try:
                message, fds = await self._receive()
            except (ValueError, TypeError) as exc:  # not this version's encoding
                assert self._control is not None
                self._control.close()
                self._control = None
                raise IncompatibleKeeper(self._lock_pid(), "unknown", self.socket_path) from exc
            _close_all(fds)
            if message is None:
                raise EOFError
            if message.get("version") != keeper.VERSION:
                self._control.close()  # what else it sends (its held fds) is closed with the socket
                self._control = None
                raise IncompatibleKeeper(message.get("pid"), message.get("version"), self.socket_path)
            self.pid = int(message["pid"])
            held = []
            for _ in range(int(message["held"])):
                description, fds = await self._receive()
                if description is None:
                    raise KeeperError("the container keeper closed the connection while handing over")
                held.append(self._held(description, fds))
        return held

    def _lock_pid(self) -> int:
        """The pid the keeper wrote in its lock file (0 if unreadable)."""
        try:
            with open(self.lock_path, "rb") as lock:
                return int(lock.read().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    @staticmethod
    def _held(description: dict, fds: list[int]) -> HeldContainer:
        names = list(description.get("names") or [])
        return HeldContainer(str(description["id"]), int(description["pid"]), int(description["start_time"]),
                             dict(zip(names, fds)), description.get("exit"), description.get("finished"),
                             dict(description.get("extra") or {}))

    async def _receive(self) -> tuple[dict | None, list[int]]:
        assert self._control is not None
        data, ancdata, _, _ = await self._control.recvmsg(keeper.MAX_MESSAGE, socket.CMSG_SPACE(keeper.MAX_FDS * 4),
                                                          socket.MSG_CMSG_CLOEXEC)
        fds = forkserver._received_fds(ancdata)
        if not data:
            return None, fds
        return keeper.decode(data), fds

    async def _send(self, message: dict, fds: list[int] = ()) -> None:
        if self._control is None:
            raise KeeperError("the container keeper is not connected")
        async with self._send_lock:
            try:
                if fds:
                    await self._control.sendmsg([keeper.encode(message)],
                                                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                else:
                    await self._control.send(keeper.encode(message))
            except OSError as exc:
                raise KeeperError(f"cannot reach the container keeper: {libc.strerror(exc.errno)}") from exc

    async def serve(self) -> None:
        """Read the keeper's exit reports until it goes away (run in the Supervisor's nursery)."""
        try:
            while self._control is not None:
                message, fds = await self._receive()
                _close_all(fds)
                if message is None:
                    break
                if message.get("op") == "exit":
                    pid = int(message["pid"])
                    if len(self._exits) >= EXITS_KEPT:
                        self._exits.pop(next(iter(self._exits)))
                    self._exits[pid] = (int(message["status"]), float(message["time"]))
                    event = self._waiters.pop(pid, None)
                    if event is not None:
                        event.set()
        except OSError:
            pass
        if self.log is not None and not self._closed:
            self.log.error("the container keeper went away: containers started from now on get a new one",
                           pid=self.pid)
        self._lost()

    def _lost(self) -> None:
        self._closed = True
        if self._control is not None:
            self._control.close()
            self._control = None
        for event in self._waiters.values():
            event.set()
        self._waiters.clear()

    async def exit_status(self, pid: int) -> tuple[int, float]:
        """pid 1's exit code and time, as the keeper reaped it (call once its pidfd is readable)."""
        while pid not in self._exits:
            if self._closed:  # the keeper died: pid 1 was re-parented (to us, if we are its ancestor)
                try:
                    got, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    return 255, time.time()
                if got:
                    code = os.waitstatus_to_exitcode(status)
                    return (128 - code if code < 0 else code), time.time()
                await trio.sleep(0.1)
                continue
            event = self._waiters.setdefault(pid, trio.Event())
            await event.wait()
        return self._exits.pop(pid)

    async def _exit_code(self, pid: int) -> int:
        return (await self.exit_status(pid))[0]

    async def release(self, container_id: str, pid: int) -> None:
        """The keeper may let that run's fds go (its exit and output are recorded)."""
        if self._control is not None:
            try:
                await self._send({"op": "release", "id": container_id, "pid": pid})
            except KeeperError:
                pass

    async def stop_when_idle(self) -> None:
        """The daemon stops without live restore: the keeper exits once no container runs."""
        self._stopping = True
        if self._control is not None:
            try:
                await self._send({"op": "stop"})
            except KeeperError:
                pass

    async def aclose(self) -> None:
        """Let go of the keeper: it stays while it holds containers, else it exits (reaped
        here if this daemon started it)."""
        self._closed = True
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._child is not None:
            child, self._child = self._child, None
            if self._stopping:  # it exits once no container runs: reap it (our child)
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(STOP_TIMEOUT):
                        await child.wait()
            child.close()

    # --- launching ---------------------------------------------------------------------

    async def launch(self, config: LaunchConfig, stdio: StdioPlan = StdioPlan(), prepare: Prepare | None = None,
                     hold_mounts: bool = False, hold: dict[str, int] | None = None,
                     extra: dict[str, Any] | None = None) -> ContainerProcess:
        """``ForkServer.launch`` through the keeper; then the keeper holds copies of the
        daemon's stdio ends, the new output spools and ``hold`` (name -> fd, duplicated),
        with ``extra`` (returned as it is at the next daemon start).

        Raises:
            LaunchError: as ForkServer.launch, and when the keeper cannot be reached.
        """
        name = config.container_id[:12]
        if config.terminal != stdio.tty:  # as ForkServer.launch: fd 0 is the console socket or not
            config = dataclasses.replace(config, terminal=stdio.tty)
        if self._control is None:
            try:
                for held in await self.connect():  # a keeper that went away left nothing to adopt
                    held.close()
            except (KeeperError, OSError) as exc:
                raise LaunchError(f"cannot start container {name}: {exc}") from exc
            self._closed = False
        ours, theirs, ends = _open_pipes(name, stdio)
        names: list[str] = []
        kept: list[int] = []
        spools: dict[str, int] = {}
        try:
            for end in ("stdin", "stdout", "stderr", "terminal"):
                fd = getattr(ends, end)
                if fd >= 0:
                    names.append(end)
                    kept.append(os.dup(fd))
            for stream in ("stdout", "stderr"):
                if getattr(ends, stream) >= 0 or (stream == "stdout" and stdio.tty):
                    spools[stream] = os.memfd_create(f"dockyard-spool-{name}-{stream}", os.MFD_CLOEXEC)
            for key, fd in (hold or {}).items():
                names.append(key)
                kept.append(os.dup(fd))
            reply, reply_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                assert self._control is not None
                async with self._send_lock:
                    await self._control.sendmsg([forkserver.REQUEST], [(
                        socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [*theirs, reply_theirs.fileno()]))])
            except BaseException as exc:
                reply.close()
                if isinstance(exc, OSError):
                    raise LaunchError(f"cannot start container {name}: send the request to the container keeper: "
                                      f"{libc.strerror(exc.errno)}") from exc
                raise
            finally:
                reply_theirs.close()
        except BaseException:
            _close_all(ours + kept + list(spools.values()))
            ends.close_fds()
            raise
        finally:
            _close_all(theirs)
        stage0 = _ForkedStage0(name, trio.socket.from_stdlib_socket(reply), None)
        try:
            process = await _start_container(config, stage0, ours, ends, stdio, prepare, hold_mounts,
                                             parent=self.pid, exit_source=self._exit_code)
        except BaseException:
            _close_all(kept + list(spools.values()))
            raise
        process.exit_source = self.exit_status
        process.spools = spools
        if stdio.tty and "terminal" not in names and process.stdout is not None:
            names.append("terminal")  # -t: the master came back after the exec; it is process.stdout's
            kept.append(os.dup(process.stdout.fileno()))
        try:
            await self._send({"op": "hold", "id": config.container_id, "pid": process.pid,
                              "start_time": process.start_time,
                              "names": names + [f"spool.{stream}" for stream in spools], "extra": extra or {}},
                             kept + list(spools.values()))
        except KeeperError as exc:  # it runs all the same; only a later daemon cannot adopt it
            if self.log is not None:
                self.log.error("the container keeper does not hold a container: it cannot outlive the daemon",
                               container=config.container_id, error=exc.message)
        finally:
            _close_all(kept)
        return process


def adopt(held: HeldContainer, keeper_pid: int, exit_source: Any, open_stdin: bool,
          hold_mounts: bool) -> ContainerProcess:
    """The ContainerProcess of a container the keeper held: its pid 1 checked (the keeper's
    child, the recorded start time) and held by a new pidfd, or its exit as the keeper
    reaped it. Takes the stdio and spool fds out of ``held``.

    A pid 1 that is gone (or is no longer the process the keeper held: the pid was reused)
    exited after the keeper's answer: its exit code comes from the keeper (``wait``).
    """
    from supervisor.runtime.process import parent_and_start_time

    pidfd = -1
    mount_namespace = -1
    if held.exit is None:
        try:
            pidfd = os.pidfd_open(held.pid)
            parent, start_time = parent_and_start_time(held.pid)
        except (OSError, ValueError, IndexError):
            parent = start_time = None
        if (parent, start_time) != (keeper_pid, held.start_time):
            # It exited (and was reaped) since the keeper answered: the keeper reports its
            # exit on this connection, which wait() then takes (pidfd -1).
            if pidfd >= 0:
                os.close(pidfd)
            pidfd = -1
        elif hold_mounts:
            try:
                mount_namespace = os.open(f"/proc/{held.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                mount_namespace = -1
    terminal = held.take("terminal")
    stdin: InputPort | None = None
    if terminal >= 0:
        stdout: trio.lowlevel.FdStream | None = trio.lowlevel.FdStream(terminal)
        stderr = None
        if open_stdin:
            stdin = InputPort(trio.lowlevel.FdStream(os.dup(terminal)), terminal=True)
    else:
        out, err, into = held.take("stdout"), held.take("stderr"), held.take("stdin")
        stdout = trio.lowlevel.FdStream(out) if out >= 0 else None
        stderr = trio.lowlevel.FdStream(err) if err >= 0 else None
        if into >= 0:
            stdin = InputPort(trio.lowlevel.FdStream(into), terminal=False)
    process = ContainerProcess(held.pid, pidfd, held.start_time, stdout, stderr, stdin=stdin, tty=terminal >= 0,
                               mount_namespace=mount_namespace)
    process.exit_source = exit_source
    process.spools = {stream: held.take(f"spool.{stream}") for stream in ("stdout", "stderr")
                      if f"spool.{stream}" in held.fds}
    if held.exit is not None:
        process.returncode = held.exit
        process.finished_at = held.finished
    return process
