"""What every endpoint shares: the bus client, the event hub, the worker's scratch space,
and docker's status codes for dockyard's error codes.

Error codes to statuses (docs/api.md): ``not_found`` 404, ``conflict`` and
``invalid_state`` 409, ``invalid_argument``/``bad_request`` 400, a daemon that is not there
503, anything else 500; the message is the daemon's (it names the operation, the object and
the cause).
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from bus.errors import BusError, DaemonUnavailable, RemoteError, RequestTimeout
from workers.api.http import ApiError
from workers.api.hub import EventHub

STATUS_OF_CODE = {"not_found": 404, "conflict": 409, "invalid_state": 409, "invalid_argument": 400,
                  "bad_request": 400, "too_many_requests": 429, "timeout": 504}


def api_error(error: BusError, what: str = "") -> ApiError:
    """A bus error as docker's error reply."""
    if isinstance(error, RemoteError):
        status = STATUS_OF_CODE.get(error.code, 500)
        if error.code == "not_found" and what:
            return ApiError(404, f"No such {what}: {error.message}" if what not in error.message else error.message)
        return ApiError(status, error.message)
    if isinstance(error, DaemonUnavailable):
        return ApiError(503, f"the dockyard daemon is not available: {error.reason}")
    if isinstance(error, RequestTimeout):
        return ApiError(504, f"the dockyard daemon did not answer {error.op!r} in {error.timeout:g} s")
    return ApiError(500, str(error))


def start_error(error: Exception) -> ApiError:
    """A start that failed, as docker answers it: 404 for no such container, 400 for a
    command that cannot run (the CLI then exits 126 or 127), 500 otherwise."""
    if isinstance(error, RemoteError) and error.code == "invalid_state":
        exit_code = error.details.get("exit_code")
        if exit_code == 127:
            return ApiError(400, f"{error.message}: executable file not found in $PATH")
        if exit_code == 126:
            return ApiError(400, f"{error.message}: permission denied")
        return ApiError(500, error.message)
    if isinstance(error, BusError):
        return api_error(error, "container")
    raise error


@dataclass
class ExecRecord:
    """An exec created by ``POST /containers/{id}/exec``: the bus runs it at start."""

    id: str
    container: str  # the container's full id
    config: dict[str, Any]
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    daemon_exec_id: str = ""  # the daemon's id, once started
    session: Any = None  # the bus stream while attached (resize goes through it)
    done: trio.Event = field(default_factory=trio.Event)

    def inspect(self) -> dict[str, Any]:
        config = self.config
        command = list(config.get("Cmd") or [])
        return {
            "ID": self.id, "Running": self.running, "ExitCode": self.exit_code, "Pid": self.pid,
            "ContainerID": self.container, "OpenStdin": bool(config.get("AttachStdin")),
            "OpenStdout": bool(config.get("AttachStdout")), "OpenStderr": bool(config.get("AttachStderr")),
            "CanRemove": False, "DetachKeys": "",
            "ProcessConfig": {"tty": bool(config.get("Tty")), "entrypoint": command[0] if command else "",
                              "arguments": command[1:], "privileged": bool(config.get("Privileged")),
                              "user": config.get("User") or ""},
        }


class Api:
    """The state of the API worker, shared by its endpoints."""

    def __init__(self, client: Any, hub: EventHub, scratch: Path, log: Any):
        self.client = client
        self.hub = hub
        self.scratch = scratch
        self.log = log
        self.execs: dict[str, ExecRecord] = {}
        #: container id -> hijacked attaches waiting for its start (docker run: attach, then start)
        self.waiting_attaches: dict[str, list[Any]] = {}
        #: container id -> the attached bus sessions its hijacked connections run (resize)
        self.sessions: dict[str, list[Any]] = {}
        self.nursery: Any = None  # where background tasks run (a detached exec's wait)

    async def call(self, op: str, args: dict[str, Any] | None = None, *, what: str = "",
                   timeout: float = 60.0) -> Any:
        """One bus request; its error as docker's (404 ``No such <what>``, 409, 400...)."""
        try:
            return await self.client.request(op, args or {}, timeout=timeout)
        except BusError as error:
            raise api_error(error, what) from None

    async def inspect(self, ref: str) -> dict[str, Any]:
        from supervisor import operations as ops

        return await self.call(ops.CONTAINER_INSPECT, {"container": ref}, what="container")

    def scratch_path(self, suffix: str = "") -> Path:
        """A new path under the worker's scratch directory (the daemon reads and writes
        files there for archives and tarballs); the caller removes it (:meth:`discard`)."""
        self.scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.scratch / f"{secrets.token_hex(8)}{suffix}"

    @staticmethod
    def discard(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
