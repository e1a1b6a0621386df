"""The daemon keeps its workers (workers/) running: one task per worker starts its process,
waits for it to end and starts it again after a backoff, publishing
``worker.<name>.start|die|restart`` events, until the daemon stops them.

A worker talks to the daemon only over the bus, like any other client, so the daemon does not
wait for it to be ready: a worker that connects late finds what it missed through requests
(for example ``events.replay``).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from supervisor.backoff import Backoff

#: emit(action, worker name, attributes): where lifecycle events go.
Emit = Callable[[str, str, dict[str, str]], None]
#: A worker's restarts wait 100 ms doubling up to 10 s (not a minute, as for containers:
#: the daemon's own logs and restarts depend on its workers).
WORKER_BACKOFF = Backoff(initial=0.1, maximum=10.0, reset_after=10.0)


@dataclass
class WorkerState:
    name: str
    argv: tuple[str, ...]
    process: trio.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    last_exit: int | None = None
    stopping: bool = False
    done: trio.Event = field(default_factory=trio.Event)

    def as_dict(self) -> dict[str, Any]:
        """``dockyard info``'s view. ``pid`` is None while no process runs (starting, in the
        restart delay, stopped): never 0, which ``kill`` takes for its own process group."""
        running = self.process is not None and self.process.returncode is None
        return {
            "pid": self.process.pid if running else None,
            "running": running,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }


class WorkerManager:
    def __init__(self, commands: Mapping[str, Sequence[str]], emit: Emit, log: Any,
                 backoff: Backoff = WORKER_BACKOFF):
        self.workers = {name: WorkerState(name, tuple(argv)) for name, argv in commands.items()}
        self._emit = emit
        self.log = log
        self.backoff = backoff

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start every worker; reports started once each one's process exists. Returns when
        all were stopped (:meth:`stop`)."""
        async with trio.open_nursery() as nursery:
            for worker in self.workers.values():
                await nursery.start(self._keep, worker)
            task_status.started()

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM every worker, SIGKILL those still there after ``timeout`` seconds; returns
        once all have exited and will not be restarted."""
        for worker in self.workers.values():
            worker.stopping = True
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout):
            for worker in self.workers.values():
                await worker.done.wait()
        for worker in self.workers.values():
            if worker.process is not None and worker.process.returncode is None:
                self.log.warning("worker did not stop in time; killing it", worker=worker.name, timeout=timeout)
                worker.process.kill()
        for worker in self.workers.values():
            await worker.done.wait()

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: worker.as_dict() for name, worker in self.workers.items()}

    async def _keep(self, worker: WorkerState, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        attempt = 0
        try:
            while not worker.stopping:
                worker.started_at = time.monotonic()
                try:
                    worker.process = await trio.lowlevel.open_process(list(worker.argv), stdin=subprocess.DEVNULL)
                except OSError as error:
                    self.log.error("worker could not start", worker=worker.name, error=str(error))
                    worker.process = None
                    code = 127
                else:
                    self._emit("start", worker.name, {"pid": str(worker.process.pid)})
                    self.log.info("worker started", worker=worker.name, pid=worker.process.pid)
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED
                if worker.process is not None:
                    code = await worker.process.wait()
                worker.last_exit = code
                self._emit("die", worker.name, {"exitCode": str(code)})
                if worker.stopping:
                    break
                attempt = self.backoff.next_attempt(attempt, time.monotonic() - worker.started_at)
                delay = self.backoff.delay(attempt)
                self.log.warning("worker exited; restarting", worker=worker.name, exit_code=code, delay=delay)
                self._emit("restart", worker.name, {"attempt": str(attempt), "delay": f"{delay:.3f}"})
                worker.restarts += 1
                with trio.move_on_after(delay):
                    while not worker.stopping:  # stop() during the delay ends it at once
                        await trio.sleep(0.05)
        finally:
            process = worker.process
            if process is not None and process.returncode is None:  # cancelled: never leave it
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
            worker.done.set()
