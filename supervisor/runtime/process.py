"""A container's pid 1 as the supervisor holds it: by a pidfd, waited for and signalled
through it, so that a recycled pid is never touched (:class:`ContainerProcess`); the
launch's own children (:class:`Child`); and the child subreaper the supervisor must be.

Why a module of its own (youki's ``process/`` apart from ``container_start``): what a
running container's process is and how it is reaped does not depend on how it was
launched (``spawn.py``, the fork server's handshake); the lifecycle (``supervisor/api.py``)
holds a ContainerProcess for as long as the container runs.

The container's pid 1 is re-parented to the supervisor when stage 0 exits, so the
supervisor must be a child subreaper (:func:`become_subreaper`, once, at start-up) and the
fork server must not be one. A subreaper also adopts any orphan of its descendants, so it
should reap children it does not know about.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from supervisor.runtime import libc
from supervisor.runtime.protocol import LaunchError
from supervisor.runtime.stdio import InputPort

REAP_TIMEOUT = 5.0  # seconds to wait for a killed process while cleaning up a failed launch


@dataclass(eq=False)
class ContainerProcess:
    """A running container's pid 1, as seen from the supervisor (its parent)."""

    pid: int  # host pid of the container's pid 1
    pidfd: int
    start_time: int  # field 22 of /proc/<pid>/stat: with pid, names this process for good
    stdout: trio.lowlevel.FdStream | None  # read ends of the output pipes, or the pty master
    stderr: trio.lowlevel.FdStream | None  # None with a terminal (merged into stdout)
    returncode: int | None = None
    stdin: InputPort | None = None  # -i: the write end of stdin (the pty master with -t)
    tty: bool = False  # stdout is a pty master: resize with stdio.set_window_size
    # An fd of pid 1's mount namespace (launch(hold_mounts=True)), -1 for none: see
    # take_mount_namespace().
    mount_namespace: int = -1
    # Set when pid 1 is the keeper's child (live restore, keeperclient.py): its exit code and
    # time come from exit_source(pid) once the pidfd is readable; finished_at is that time.
    exit_source: Callable[[int], Awaitable[tuple[int, float]]] | None = None
    finished_at: float | None = None
    spools: dict[str, int] = field(default_factory=dict)  # stream -> its output spool (logspool.py)
    _wait_lock: trio.Lock = field(default_factory=trio.Lock, init=False, repr=False)

    async def wait(self) -> int:
        """Wait for pid 1 to exit and reap it. Returns its exit code, 128 + the signal
        number when a signal killed it. Safe to call again, and from several tasks."""
        async with self._wait_lock:
            if self.returncode is None:
                if self.pidfd >= 0:
                    await trio.lowlevel.wait_readable(self.pidfd)
                elif self.exit_source is None:
                    raise trio.ClosedResourceError(f"container process {self.pid}: closed before it was waited for")
                if self.exit_source is not None:  # (without a pidfd: it exited, the keeper reports it)
                    self.returncode, self.finished_at = await self.exit_source(self.pid)
                else:
                    self.returncode = reap(self.pid)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal pid 1 through its pidfd; nothing happens if it has already exited."""
        if self.returncode is not None:
            return
        if self.pidfd < 0:
            if self.exit_source is not None:
                return  # adopted after it exited: the keeper reports its exit
            raise trio.ClosedResourceError(f"container process {self.pid}: closed")
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:
            pass  # exited, not reaped yet

    def take_mount_namespace(self) -> int:
        """The fd of pid 1's mount namespace, now the caller's to close (-1 for none).

        Held, the namespace outlives pid 1, so its mounts do too: unmounting the overlay runs
        syncfs() on the whole filesystem of the upper dir (the host's disk), which would
        otherwise hold pid 1's exit up. Whoever closes the fd pays for that sync: do it in a
        thread, after the exit is reported, and before the layer is mounted again."""
        fd, self.mount_namespace = self.mount_namespace, -1
        return fd

    def close(self) -> None:
        """Close the pidfd and the output streams (after :meth:`wait`, or the zombie stays).
        The mount namespace is not closed here (a blocking sync): see take_mount_namespace()."""
        if self.pidfd >= 0:
            close_pidfd(self.pidfd)
            self.pidfd = -1
        for stream in (self.stdout, self.stderr, self.stdin):
            if stream is not None:
                stream.close()
        for spool in self.spools.values():
            os.close(spool)
        self.spools = {}


def become_subreaper() -> None:
    """Make the calling process a child subreaper: orphans of its descendants, including
    every container's pid 1 once its init stage exits, become its children."""
    libc.set_child_subreaper(True)


class Child:
    """A child process of the supervisor, held by a pidfd, for the launch's own use (stage 0,
    the fork server, pid 1 until its launch is done)."""

    def __init__(self, pid: int, start_time: int = 0, exit_source: Callable[[int], Awaitable[int]] | None = None):
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.start_time = start_time
        self.exit_source = exit_source  # not our child (the keeper's): where its exit code comes from
        self.returncode: int | None = None
        self._wait_lock = trio.Lock()

    @classmethod
    def adopt(cls, pid: object, name: str, parent: int | None = None,
              exit_source: Callable[[int], Awaitable[int]] | None = None) -> Child:
        """The container's pid 1 as reported by stage 0: checked to be our child (or
        ``parent``'s) before anything is done to it (a garbage pid must not get signalled)."""
        if type(pid) is not int or pid <= 0:
            raise LaunchError(f"cannot start container {name}: the init stage reported an invalid pid {pid!r}")
        try:
            child = cls(pid, exit_source=exit_source)
        except ProcessLookupError:
            raise LaunchError(
                f"cannot start container {name}: the init stage reported pid {pid}, which does not exist"
            ) from None
        try:
            actual, child.start_time = parent_and_start_time(pid)
        except (OSError, ValueError, IndexError):
            actual = None
        if actual != (parent or os.getpid()):
            child.close()
            raise LaunchError(
                f"cannot start container {name}: the init stage reported pid {pid}, which is not its child"
            )
        return child

    @classmethod
    def adopt_quietly(cls, pid: object, parent: int | None = None,
                      exit_source: Callable[[int], Awaitable[int]] | None = None) -> Child | None:
        try:
            return cls.adopt(pid, "", parent, exit_source)
        except LaunchError:
            return None

    async def wait(self) -> int:
        async with self._wait_lock:
            if self.returncode is None:
                await trio.lowlevel.wait_readable(self.pidfd)
                if self.exit_source is not None:
                    self.returncode = await self.exit_source(self.pid)
                else:
                    self.poll()
        assert self.returncode is not None
        return self.returncode

    def poll(self) -> int | None:
        """Reap it if it has exited, without waiting; its exit code, or None if it runs."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                self.returncode = 128 - code if code < 0 else code
        return self.returncode

    async def kill_and_reap(self) -> None:
        """SIGKILL and reap, shielded from cancellation but not for longer than REAP_TIMEOUT."""
        if self.returncode is not None or self.pidfd < 0:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        with trio.CancelScope(shield=True, deadline=trio.current_time() + REAP_TIMEOUT):
            await self.wait()

    def close(self) -> None:
        if self.pidfd >= 0:
            close_pidfd(self.pidfd)
            self.pidfd = -1


def close_pidfd(pidfd: int) -> None:
    """Close a pidfd, waking a trio task that waits on it."""
    try:
        trio.lowlevel.notify_closing(pidfd)  # wake a task waiting on it
    except RuntimeError:
        pass  # not inside trio
    os.close(pidfd)


def reap(pid: int) -> int:
    """waitpid a child known to have exited; the exit code, or 128 + the killing signal."""
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def parent_and_start_time(pid: int) -> tuple[int, int]:
    """Fields 4 (ppid) and 22 (start time) of /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as file:
        data = file.read()
    fields_after_name = data[data.rindex(b")") + 2 :].split()  # field 3 (state) onwards
    return int(fields_after_name[1]), int(fields_after_name[19])  # fields 4 (ppid) and 22
