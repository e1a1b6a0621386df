"""Processes run inside a running container (``dockyard exec``, health checks).

:class:`ExecSpec` is what a client asks for (validated on construction), :class:`ExecConfig`
what the exec stage gets (``runtime/nsenter.py``: the protocol and the diagram), and
:class:`Execution` one exec'd process as the supervisor follows it: its output is pumped to
its attachments (never to the container's logs, as docker), it is reaped, and its end is
announced. The lifecycle calls are :meth:`Supervisor.exec <supervisor.api.Supervisor.exec>`
and :meth:`Supervisor.exec_run <supervisor.api.Supervisor.exec_run>`.

Events (docker's names), topic ``container.<id>.<action>``, attributes ``execID`` and
``command``: ``exec_create`` before it is started, ``exec_start`` once its command runs,
``exec_die`` (with ``exitCode``) once it has exited, or could not be started.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shlex
from dataclasses import dataclass, field
from typing import Any

import trio

from supervisor.attach import Target, receive_chunk
from supervisor.logpump import HOLD_WINDOW
from supervisor.container import Attachment
from supervisor.errors import InvalidArgument
from supervisor.runtime.stdio import set_window_size
from supervisor.spec import ENV_KEY, USER, parse_signal

CONTAINER_ID = re.compile(r"^[0-9a-f]{64}\Z")
#: An exec's output that comes a line at a time is sent to an attached client at most once
#: per this long (seconds) per stream, gathered (docs/logs.md, "Output a line at a time"):
#: longer than a container's live window (COALESCE_WINDOW), so that an exec's output, which
#: is not stored, costs no more than a container's stored output; 20 batches a second still
#: read as a stream on a terminal, and a line after a quiet spell (a key echoed) goes at once.
EXEC_WINDOW = 0.050


@dataclass(frozen=True)
class ExecSpec:
    """``exec [-d] [-i] [-t] [-e K=V] [-w DIR] [-u USER] CONTAINER CMD...``"""

    cmd: tuple[str, ...]
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    tty: bool = False
    stdin: bool = False
    detach: bool = False
    privileged: bool = False  # --privileged: every capability (docker's; the seccomp filter stays, as runc's)

    def __post_init__(self) -> None:
        for name in ("cmd", "env"):
            values = getattr(self, name)
            if not isinstance(values, tuple) or not all(isinstance(v, str) for v in values):
                raise InvalidArgument(f"exec.{name}: must be a list of strings")
            if any("\x00" in v for v in values):
                raise InvalidArgument(f"exec.{name}: contains a NUL byte")
        if not self.cmd or not self.cmd[0]:
            raise InvalidArgument("exec.cmd: a command is needed")
        for entry in self.env:
            key, eq, _ = entry.partition("=")
            if not eq or not ENV_KEY.match(key):
                raise InvalidArgument(f"exec.env: {entry!r} is not KEY=VALUE")
        if not isinstance(self.workdir, str) or (self.workdir and not self.workdir.startswith("/")):
            raise InvalidArgument(f"exec.workdir: {self.workdir!r} is not an absolute path")
        if "\x00" in self.workdir:
            raise InvalidArgument("exec.workdir: contains a NUL byte")
        if not isinstance(self.user, str) or (self.user and not USER.match(self.user)):
            raise InvalidArgument(f"exec.user: {self.user!r} is not USER[:GROUP] or UID[:GID]")
        for name in ("tty", "stdin", "detach", "privileged"):
            if type(getattr(self, name)) is not bool:
                raise InvalidArgument(f"exec.{name}: must be true or false")

    @classmethod
    def from_map(cls, data: Any) -> ExecSpec:
        if not isinstance(data, dict):
            raise InvalidArgument("exec: must be a map")
        known = {"cmd", "env", "workdir", "user", "tty", "stdin", "detach", "privileged"}
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise InvalidArgument(f"exec: unknown field(s) {', '.join(unknown)}")
        values = dict(data)
        for key in ("cmd", "env"):
            if key in values:
                if not isinstance(values[key], (list, tuple)):
                    raise InvalidArgument(f"exec.{key}: must be a list of strings")
                values[key] = tuple(values[key])
        if "cmd" not in values:
            raise InvalidArgument("exec.cmd: a command is needed")
        return cls(**values)


@dataclass(frozen=True)
class ExecConfig:
    """The exec stage's config (JSON on its fd 3); ``spawn`` starts it like a LaunchConfig."""

    container_id: str
    pid: int  # host pid of the container's pid 1
    start_time: int  # its start time: the stage refuses a recycled pid
    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: str
    cgroup_procs: tuple[str, ...]
    capabilities: tuple[str, ...]
    # The container's own (lifecycle/privileges.py): the seccomp program in hex, no_new_privs,
    # the --group-add groups.
    seccomp: str = ""
    no_new_privileges: bool = False
    group_add: tuple[str, ...] = ()
    # -t: the exec stage makes its terminal in the container's devpts (runtime/console.py);
    # ForkServer.launch sets it from the stdio plan.
    terminal: bool = False

    def __post_init__(self) -> None:
        if not CONTAINER_ID.match(self.container_id):
            raise InvalidArgument(f"exec config.container_id: {self.container_id!r} is not 64 lowercase hex digits")
        if type(self.pid) is not int or self.pid <= 0:
            raise InvalidArgument(f"exec config.pid: {self.pid!r} is not a process id")

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "id": self.container_id,
                "join": {"pid": self.pid, "start_time": self.start_time},
                "argv": list(self.argv),
                "env": list(self.env),
                "cwd": self.cwd,
                "user": self.user,
                "cgroup_procs": list(self.cgroup_procs),
                "capabilities": list(self.capabilities),
                "seccomp": self.seccomp,
                "no_new_privileges": self.no_new_privileges,
                "group_add": list(self.group_add),
                "terminal": self.terminal,
            },
            separators=(",", ":"),
        ).encode()


@dataclass(eq=False)
class Execution:
    """One exec'd process while the supervisor follows it, and its outcome afterwards."""

    container: Any  # supervisor.container.Container
    spec: ExecSpec
    id: str = field(default_factory=lambda: secrets.token_hex(32))
    process: Any = None  # runtime.spawn.ContainerProcess while it runs
    pid: int = 0
    exit_code: int | None = None
    attachments: list[Attachment] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    _held: dict[str, list[bytes]] = field(default_factory=dict, repr=False)  # output gathered, per stream

    @property
    def command(self) -> str:
        return shlex.join(self.spec.cmd)

    async def wait(self) -> int:
        """Its exit code, once it has exited and its output was pumped to the attachments."""
        await self.done.wait()
        assert self.exit_code is not None
        return self.exit_code

    def target(self) -> Target:
        """What a client attached to this exec acts on: its stdin, terminal and signals."""
        process = self.process

        def resize(rows: int, columns: int) -> None:
            if process is not None and process.tty and process.returncode is None and process.stdout is not None:
                try:
                    set_window_size(process.stdout.fileno(), rows, columns)
                except (OSError, ValueError):
                    pass  # it just exited

        async def deliver(number: int) -> None:
            number = parse_signal(number)
            if process is not None:
                process.send_signal(number)

        return Target(stdin=process.stdin if process is not None else None, resize=resize, signal=deliver)

    async def supervise(self, drain_seconds: float) -> int:
        """Pump its output until it exits (then at most ``drain_seconds`` more), reap it,
        close its fds. Returns the exit code."""
        process = self.process
        async with trio.open_nursery() as pumps:
            for name in ("stdout", "stderr"):
                stream = getattr(process, name)
                if stream is not None:
                    pumps.start_soon(self._pump, stream, name)
            exit_code = await process.wait()
            pumps.cancel_scope.deadline = trio.current_time() + drain_seconds
        process.close()
        self.process = None
        self.exit_code = exit_code
        return exit_code

    async def _pump(self, stream: Any, name: str) -> None:
        """Forward the stream's output to the attachments. Output that comes a line at a
        time (a read less than the window after the previous one) is gathered for the window
        (EXEC_WINDOW with a client attached, HOLD_WINDOW without) and sent as one message:
        the per-message costs (a bus message, the client's credit) are paid once per window,
        as for a container's log (supervisor/logpump.py). A read of the other stream sends
        what this one gathered first, so the two keep their order."""
        fileno = getattr(stream, "fileno", None)
        previous = -math.inf
        held = self._held
        while chunk := await receive_chunk(stream):
            now = trio.current_time()
            await self._send_held(other_stream(name))
            if fileno is not None and now - previous < EXEC_WINDOW:
                gathered = held[name] = [chunk]
                window = EXEC_WINDOW if self.attachments else HOLD_WINDOW
                await trio.sleep(window)
                if held.get(name) is gathered:  # else the other stream sent it meanwhile
                    _read_more(fileno(), gathered)
                chunk = b"".join(held.pop(name, ()))
            previous = trio.current_time()
            if chunk:
                for attachment in tuple(self.attachments):
                    await attachment.send(name, chunk)

    async def _send_held(self, name: str) -> None:
        gathered = self._held.pop(name, None)
        if gathered:
            chunk = b"".join(gathered)
            for attachment in tuple(self.attachments):
                await attachment.send(name, chunk)


def other_stream(name: str) -> str:
    return "stderr" if name == "stdout" else "stdout"


def _read_more(fd: int, gathered: list[bytes], limit: int = 1 << 16) -> None:
    """What the pipe (or pty) holds now, up to ``limit`` bytes in all, into ``gathered``."""
    size = sum(len(chunk) for chunk in gathered)
    while size < limit:
        try:
            more = os.read(fd, limit - size)
        except OSError:  # nothing there (EAGAIN), or a pty's end (EIO): the next read finds out
            return
        if not more:
            return
        gathered.append(more)
        size += len(more)


@dataclass(frozen=True)
class ExecResult:
    """What :meth:`Supervisor.exec_run` returns: the exit code (None after a timeout, when
    the process was killed) and the last bytes of its output, stdout and stderr as they came."""

    exit_code: int | None
    output: bytes
    timed_out: bool = False
