"""Attach and exec: clients on a running container's streams, commands run inside it.

An attached client (:mod:`supervisor.attach`) gets the container's output from the moment it
attaches, and acts on its stdin, terminal and signals through a :class:`Target`. An exec
(:mod:`supervisor.exec`) is a second process started by the same launcher as the container's
pid 1, in all of its namespaces and its cgroup, with its capabilities.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any

import trio

from supervisor.attach import Collector, Target
from supervisor.container import Container
from supervisor.errors import InvalidState, StartError
from supervisor.exec import ExecConfig, ExecResult, ExecSpec, Execution
from supervisor.lifecycle import privileges
from supervisor.lifecycle.core import Lifecycle
from supervisor.lifecycle.reconcile import ORPHAN_EXIT_CODE
from supervisor.lifecycle.start import OUTPUT_DRAIN_SECONDS
from supervisor.runtime.spawn import LaunchError
from supervisor.runtime.stdio import StdioPlan, set_window_size
from supervisor.spec import merge_env, parse_signal, terminal_env


class Execs:
    def __init__(self, core: Lifecycle):
        self.core = core

    # --- attached clients (supervisor/attach.py) ------------------------------------------

    def attach(self, ref: str, attachment: Any) -> Container:
        """Send a running container's output to ``attachment`` from now on, until it exits
        or :meth:`detach`. Raises InvalidState if it is not running."""
        container = self.core.get(ref)
        if not container.status.running or container.process is None:
            raise InvalidState(container.name, "attach to", container.status.value, "it is not running")
        container.attachments.append(attachment)
        log = self.core.logs.get(container.id)
        if log is not None:  # the lines held back for the collector go first (logpump.py)
            log.flush()
        return container

    @staticmethod
    def detach(container: Container, attachment: Any) -> None:
        with contextlib.suppress(ValueError):
            container.attachments.remove(attachment)

    def target(self, container: Container) -> Target:
        """What an attached client acts on: the running process's stdin, terminal, signals."""
        process = container.process

        def resize(rows: int, columns: int) -> None:
            if process is not None and process.tty and process.returncode is None and process.stdout is not None:
                with contextlib.suppress(OSError):
                    set_window_size(process.stdout.fileno(), rows, columns)

        async def deliver(number: int) -> None:
            number = parse_signal(number)
            if container.process is process and container.status.running:
                await self.core.kill(container.id, number)

        return Target(stdin=process.stdin if process is not None else None, resize=resize, signal=deliver)

    # --- exec (supervisor/exec.py) --------------------------------------------------------

    async def start(self, ref: str, spec: ExecSpec, attach: Any = None) -> Execution:
        """Start ``spec.cmd`` inside the running container ``ref`` (Supervisor.exec)."""
        container = self.core.get(ref)
        process, cgroup = container.process, container.cgroup
        if not container.status.running or process is None or cgroup is None:
            raise InvalidState(container.name, "exec in", container.status.value, "it is not running")
        if not container.status.can_pause():  # docker: no exec in a paused container
            raise InvalidState(container.name, "exec in", container.status.value, "it is paused: unpause it first")
        execution = Execution(container=container, spec=spec)
        if attach is not None:
            execution.attachments.append(attach)
        resolved = container.resolved
        config = ExecConfig(
            container_id=container.id,
            pid=process.pid,
            start_time=process.start_time,
            argv=spec.cmd,
            env=tuple(terminal_env(merge_env(resolved.env, spec.env), spec.tty)),
            cwd=spec.workdir or resolved.workdir,
            user=spec.user or resolved.user,
            cgroup_procs=tuple(cgroup.procs_files),
            **privileges.exec_security(container.spec, cgroup, spec.privileged).launch_fields(),
        )
        names = {"execID": execution.id, "command": execution.command}
        events = self.core.events
        events.container(container, "exec_create", **names)
        stdio = StdioPlan(stdin=spec.stdin, tty=spec.tty, output=not spec.detach)
        try:
            execution.process = await self.core.launcher.launch(config, stdio)
        except LaunchError as exc:
            execution.exit_code = exc.exit_code
            execution.done.set()
            events.container(container, "exec_die", **names, exitCode=str(exc.exit_code))
            reason = exc.details.get("reason", exc.message)
            raise StartError(
                f"cannot exec in container {container.name}: {reason}", exit_code=exc.exit_code, container=container.id
            ) from exc
        execution.pid = execution.process.pid
        events.container(container, "exec_start", **names)
        assert self.core.nursery is not None
        self.core.nursery.start_soon(self._supervise, execution, names)
        return execution

    async def run(
        self, ref: str, argv: list[str] | tuple[str, ...], *, timeout: float | None = None, output_limit: int = 4096
    ) -> ExecResult:
        """Run ``argv`` in the container to its end (health checks): its exit code and the
        last ``output_limit`` bytes of its output. After ``timeout`` seconds it is killed
        and the result says ``timed_out``. Raises as :meth:`start`."""
        collector = Collector(output_limit)
        execution = await self.start(ref, ExecSpec(cmd=tuple(argv)), attach=collector)
        with trio.move_on_after(float("inf") if timeout is None else timeout):
            exit_code = await execution.wait()
            return ExecResult(exit_code, bytes(collector.data))
        if execution.process is not None:
            execution.process.send_signal(signal.SIGKILL)
        await execution.wait()
        return ExecResult(None, bytes(collector.data), timed_out=True)

    async def _supervise(self, execution: Execution, names: dict[str, str]) -> None:
        try:
            exit_code = await execution.supervise(OUTPUT_DRAIN_SECONDS)
        finally:
            if execution.exit_code is None:  # cancelled: the daemon stops, and the container with it
                execution.exit_code = ORPHAN_EXIT_CODE
            execution.done.set()
        self.core.events.container(execution.container, "exec_die", **names, exitCode=str(exit_code))
