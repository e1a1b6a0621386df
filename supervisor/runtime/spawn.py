"""Launch a container: the supervisor's side of the init stage handshake.

:func:`launch` spawns ``init.py`` (see its docstring for the protocol and the diagram)
with posix_spawn, which, unlike ``subprocess``' ``pass_fds``, can put the config and status
pipes on exactly fds 3 and 4 of the child, and is safe in a threaded process (it never
runs Python code between fork and exec). It writes the config, reaps stage 0, reads
``{"pid": N}`` from the status pipe and opens a pidfd on that pid at once; EOF means the
payload's execve succeeded, an ``{"error": ...}`` line becomes a :class:`LaunchError`.

The container's pid 1 is re-parented to the supervisor when stage 0 exits, so the
supervisor must be a child subreaper (:func:`become_subreaper`, once, at start-up). A
subreaper also adopts any orphan of its descendants, so it should reap children it does
not know about.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import sys
from dataclasses import asdict, dataclass, field, fields

import trio

from supervisor.errors import InvalidArgument, StartError
from supervisor.runtime import linux
from supervisor.runtime.init import DEFAULT_CAPABILITIES, MASKED_PATHS, READONLY_PATHS
from supervisor.spec import HOSTNAME, USER

__all__ = [
    "DEFAULT_CAPABILITIES",
    "INIT_SCRIPT",
    "MASKED_PATHS",
    "READONLY_PATHS",
    "ContainerProcess",
    "LaunchConfig",
    "LaunchError",
    "become_subreaper",
    "launch",
]

INIT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "init.py")
CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")
INIT_FDS = 5  # stdin, stdout, stderr, config, status
MAX_STATUS_BYTES = 65536  # more than any honest status report
REAP_TIMEOUT = 5.0  # seconds to wait for a killed process while cleaning up a failed launch


class LaunchError(StartError):
    """The container could not be started; ``exit_code`` is 125, 126 or 127 as with docker."""


@dataclass(frozen=True)
class LaunchConfig:
    """What the init stage needs, validated on construction; the JSON of ``init.py``
    (``container_id`` is ``"id"`` there). Lists are accepted and stored as tuples."""

    container_id: str
    lower: tuple[str, ...]
    upper: str
    work: str
    rootfs: str
    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str = "/"
    user: str = ""
    hostname: str = ""
    cgroup_procs: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    masked_paths: tuple[str, ...] = MASKED_PATHS
    readonly_paths: tuple[str, ...] = READONLY_PATHS

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.type == "str":
                if not isinstance(value, str):
                    raise InvalidArgument(f"launch config.{item.name}: must be a string")
                values: tuple = (value,)
            else:
                if not isinstance(value, (list, tuple)):
                    raise InvalidArgument(f"launch config.{item.name}: must be a list of strings")
                values = tuple(value)
                object.__setattr__(self, item.name, values)
            if not all(isinstance(text, str) for text in values):
                raise InvalidArgument(f"launch config.{item.name}: must be a list of strings")
            if any("\x00" in text for text in values):
                raise InvalidArgument(f"launch config.{item.name}: contains a NUL byte")
        if not CONTAINER_ID.match(self.container_id):
            raise InvalidArgument(
                f"launch config.container_id: {self.container_id!r} is not 64 lowercase hex digits"
            )
        if not self.lower:
            raise InvalidArgument("launch config.lower: at least one lower dir is needed")
        for name in ("lower", "upper", "work"):  # overlay mount options: ',' and ':' are syntax
            for path in _as_tuple(getattr(self, name)):
                _check_path(name, path)
                if "," in path or ":" in path:
                    raise InvalidArgument(
                        f"launch config.{name}: {path!r} contains ',' or ':' (overlayfs option syntax)"
                    )
        for name in ("rootfs", "cwd", "cgroup_procs", "masked_paths", "readonly_paths"):
            for path in _as_tuple(getattr(self, name)):
                _check_path(name, path)
        if not self.argv or not self.argv[0]:
            raise InvalidArgument("launch config.argv: a command is needed")
        for entry in self.env:
            if not entry.partition("=")[0] or "=" not in entry:
                raise InvalidArgument(f"launch config.env: {entry!r} is not KEY=VALUE")
        if self.user and not USER.match(self.user):
            raise InvalidArgument(f"launch config.user: {self.user!r} is not USER[:GROUP] or UID[:GID]")
        if self.hostname and not HOSTNAME.match(self.hostname):
            raise InvalidArgument(f"launch config.hostname: {self.hostname!r} is not a valid hostname")
        unknown = [name for name in self.capabilities if name not in linux.CAPABILITIES]
        if unknown:
            raise InvalidArgument(f"launch config.capabilities: unknown {', '.join(unknown)}")

    def to_map(self) -> dict:
        data = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}
        data["id"] = data.pop("container_id")
        return data

    def to_json(self) -> bytes:
        return json.dumps(self.to_map(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> LaunchConfig:
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise InvalidArgument(f"launch config: invalid JSON: {exc}") from None
        if not isinstance(document, dict) or "id" not in document:
            raise InvalidArgument("launch config: not a JSON object with an id")
        document["container_id"] = document.pop("id")
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(document) - known)
        if unknown:
            raise InvalidArgument(f"launch config: unknown field(s) {', '.join(unknown)}")
        return cls(**document)


def _as_tuple(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return value if isinstance(value, tuple) else (value,)


def _check_path(name: str, path: str) -> None:
    if not path.startswith("/"):
        raise InvalidArgument(f"launch config.{name}: {path!r} is not an absolute path")


@dataclass(eq=False)
class ContainerProcess:
    """A running container's pid 1, as seen from the supervisor (its parent)."""

    pid: int  # host pid of the container's pid 1
    pidfd: int
    start_time: int  # field 22 of /proc/<pid>/stat: with pid, names this process for good
    stdout: trio.lowlevel.FdStream  # read ends of the output pipes; stdin is /dev/null
    stderr: trio.lowlevel.FdStream
    returncode: int | None = None
    _wait_lock: trio.Lock = field(default_factory=trio.Lock, init=False, repr=False)

    async def wait(self) -> int:
        """Wait for pid 1 to exit and reap it. Returns its exit code, 128 + the signal
        number when a signal killed it. Safe to call again, and from several tasks."""
        async with self._wait_lock:
            if self.returncode is None:
                if self.pidfd < 0:
                    raise trio.ClosedResourceError(f"container process {self.pid}: closed before it was waited for")
                await trio.lowlevel.wait_readable(self.pidfd)
                self.returncode = _reap(self.pid)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal pid 1 through its pidfd; nothing happens if it has already exited."""
        if self.returncode is not None:
            return
        if self.pidfd < 0:
            raise trio.ClosedResourceError(f"container process {self.pid}: closed")
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:
            pass  # exited, not reaped yet

    def close(self) -> None:
        """Close the pidfd and the output streams (after :meth:`wait`, or the zombie stays)."""
        if self.pidfd >= 0:
            _close_pidfd(self.pidfd)
            self.pidfd = -1
        self.stdout.close()
        self.stderr.close()


def become_subreaper() -> None:
    """Make the calling process a child subreaper: orphans of its descendants, including
    every container's pid 1 once its init stage exits, become its children."""
    linux.set_child_subreaper(True)


async def launch(config: LaunchConfig, *, python: str = sys.executable) -> ContainerProcess:
    """Start the container described by ``config`` and return its pid 1 once its payload
    has been exec'd. ``python`` is the absolute path of the interpreter for the init stage.

    Raises:
        LaunchError: the container could not be started (exit_code 125/126/127); nothing
            of it is left running.
        RuntimeError: the calling process is not a child subreaper.
    """
    if not linux.is_child_subreaper():
        raise RuntimeError(
            "launch(): this process is not a child subreaper; call become_subreaper() at start-up, "
            "or the container's pid 1 would be adopted by the host's init and could not be waited for"
        )
    name = config.container_id[:12]
    init_pid, stdout_fd, stderr_fd, config_fd, status_fd = _spawn_init(python, name)
    stdout = trio.lowlevel.FdStream(stdout_fd)
    stderr = trio.lowlevel.FdStream(stderr_fd)
    status = _StatusReader(trio.lowlevel.FdStream(status_fd), name)
    init = _Child(init_pid)
    container: _Child | None = None
    try:
        await _send_config(trio.lowlevel.FdStream(config_fd), config.to_json())
        init_exit = await init.wait()
        first = await status.next_message()
        if first is None:
            raise LaunchError(
                f"cannot start container {name}: the init stage {_describe(init_exit)} before reporting a pid"
            )
        if "error" in first:  # stage 0 itself failed: cgroups, unshare, fork
            raise _launch_error(name, config, first)
        container = _Child.adopt(first.get("pid"), name)
        start_time = container.start_time
        outcome = await status.next_message()  # None: EOF, the payload's execve succeeded
        if outcome is not None:
            if "error" not in outcome:
                raise LaunchError(
                    f"cannot start container {name}: unexpected status from the init stage: {outcome!r}"
                )
            await container.wait()
            raise _launch_error(name, config, outcome)
        if init_exit != 0:  # stage 0 failed after the fork: its child gave up on its own
            await container.wait()
            raise LaunchError(
                f"cannot start container {name}: the init stage {_describe(init_exit)} after forking"
            )
    except BaseException:
        stdout.close()
        stderr.close()
        await init.kill_and_reap()
        if container is None:  # cancelled or failed before the pid was read: it may be there
            container = _Child.adopt_quietly(status.pending_pid())
        if container is not None:
            await container.kill_and_reap()
            container.close()
        raise
    finally:
        init.close()
        status.close()
    process = ContainerProcess(container.pid, container.pidfd, start_time, stdout, stderr)
    container.pidfd = -1  # now owned by ``process``
    return process


def _spawn_init(python: str, name: str) -> tuple[int, int, int, int, int]:
    """posix_spawn the init stage with stdin=/dev/null, stdout, stderr, config and status
    pipes on fds 0-4. Returns its pid and the supervisor's ends (all O_CLOEXEC)."""
    ours: list[int] = []
    theirs: list[int] = []
    try:
        theirs.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        for _ in ("stdout", "stderr"):
            read_end, write_end = os.pipe()
            ours.append(read_end)
            theirs.append(write_end)
        config_read, config_write = os.pipe()
        ours.append(config_write)
        theirs.append(config_read)
        status_read, status_write = os.pipe()
        ours.append(status_read)
        theirs.append(status_write)
        # Copies of the child's ends above 4 first, so that no dup2 below clobbers a source.
        high = []
        for fd in theirs[:INIT_FDS]:
            high.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, INIT_FDS))
            theirs.append(high[-1])
        pid = os.posix_spawn(
            python,
            [python, "-I", "-S", INIT_SCRIPT],
            {},
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(high)],
            setsigmask=(),
            setsigdef=signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP},
        )
    except OSError as exc:
        for fd in ours:
            os.close(fd)
        raise LaunchError(
            f"cannot start container {name}: run the init stage {python!r}: {linux.strerror(exc.errno)}"
        ) from exc
    finally:
        for fd in theirs:
            os.close(fd)
    return (pid, *ours)  # type: ignore[return-value]


async def _send_config(stream: trio.lowlevel.FdStream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except trio.BrokenResourceError:
        pass  # the init stage died first; its exit status says so
    finally:
        await stream.aclose()


class _StatusReader:
    """JSON lines from the status pipe."""

    def __init__(self, stream: trio.lowlevel.FdStream, name: str):
        self._stream = stream
        self._name = name
        self._buffer = bytearray()
        self._eof = False

    async def next_message(self) -> dict | None:
        """The next message, or None at EOF. Garbage is a LaunchError."""
        while b"\n" not in self._buffer and not self._eof:
            chunk = await self._stream.receive_some(4096)
            self._eof = not chunk
            self._buffer += chunk
            if len(self._buffer) > MAX_STATUS_BYTES:
                raise LaunchError(
                    f"cannot start container {self._name}: "
                    f"the init stage sent more than {MAX_STATUS_BYTES} bytes of status"
                )
        if not self._buffer:
            return None
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise LaunchError(
                f"cannot start container {self._name}: malformed status from the init stage: {line[:200]!r}"
            )
        return message

    def pending_pid(self) -> object:
        """The pid of a pid line already in the pipe, without waiting; None if there is none."""
        try:
            self._buffer += os.read(self._stream.fileno(), MAX_STATUS_BYTES)
        except OSError:  # nothing there (EAGAIN), or closed
            pass
        line = bytes(self._buffer).partition(b"\n")[0]
        try:
            return json.loads(line).get("pid")
        except (ValueError, AttributeError):
            return None

    def close(self) -> None:
        self._stream.close()


class _Child:
    """A child process of the supervisor, held by a pidfd, for the launch's own use."""

    def __init__(self, pid: int, start_time: int = 0):
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.start_time = start_time
        self.returncode: int | None = None

    @classmethod
    def adopt(cls, pid: object, name: str) -> _Child:
        """The container's pid 1 as reported by stage 0: checked to be our child before
        anything is done to it (a garbage pid must not get signalled)."""
        if type(pid) is not int or pid <= 0:
            raise LaunchError(f"cannot start container {name}: the init stage reported an invalid pid {pid!r}")
        try:
            child = cls(pid)
        except ProcessLookupError:
            raise LaunchError(
                f"cannot start container {name}: the init stage reported pid {pid}, which does not exist"
            ) from None
        try:
            parent, child.start_time = _parent_and_start_time(pid)
        except (OSError, ValueError, IndexError):
            parent = None
        if parent != os.getpid():
            child.close()
            raise LaunchError(
                f"cannot start container {name}: the init stage reported pid {pid}, which is not its child"
            )
        return child

    @classmethod
    def adopt_quietly(cls, pid: object) -> _Child | None:
        try:
            return cls.adopt(pid, "")
        except LaunchError:
            return None

    async def wait(self) -> int:
        if self.returncode is None:
            await trio.lowlevel.wait_readable(self.pidfd)
            self.returncode = _reap(self.pid)
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
            _close_pidfd(self.pidfd)
            self.pidfd = -1


def _close_pidfd(pidfd: int) -> None:
    try:
        trio.lowlevel.notify_closing(pidfd)  # wake a task waiting on it
    except RuntimeError:
        pass  # not inside trio
    os.close(pidfd)


def _reap(pid: int) -> int:
    """waitpid a child known to have exited; the exit code, or 128 + the killing signal."""
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _describe(exit_code: int) -> str:
    if exit_code > 128:
        try:
            return f"was killed by {signal.Signals(exit_code - 128).name}"
        except ValueError:
            pass
    return f"exited with status {exit_code}"


def _parent_and_start_time(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/stat", "rb") as file:
        data = file.read()
    fields_after_name = data[data.rindex(b")") + 2 :].split()  # field 3 (state) onwards
    return int(fields_after_name[1]), int(fields_after_name[19])  # fields 4 (ppid) and 22


def _launch_error(name: str, config: LaunchConfig, message: dict) -> LaunchError:
    reason = str(message.get("error"))
    exit_code = message.get("exit_code")
    if exit_code not in (125, 126, 127):
        exit_code = 125
    return LaunchError(
        f"cannot start container {name}: {reason}", exit_code, container=config.container_id, reason=reason
    )
