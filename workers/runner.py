"""Runs one worker in its own process: ``python -m workers NAME`` (how the daemon starts
it) and ``dockyard worker NAME``. It ends on SIGTERM or SIGINT, when the worker's ``serve``
returns, and with the daemon that started it (``--parent-pid``).
"""

from __future__ import annotations

import importlib
import os
import signal
from pathlib import Path
from typing import Any

from supervisor.logconfig import configure_logging
from workers import WORKERS, WorkerContext


def main(name: str, root: Path, run_dir: Path, log_format: str = "logfmt", log_level: str = "info",
         parent_pid: int = 0, listen: tuple[str, ...] = (), tls: tuple[str, ...] = ()) -> int:
    import trio

    parent = open_parent(parent_pid) if parent_pid else None

    if name not in WORKERS:
        known = ", ".join(sorted(WORKERS)) or "none"
        raise SystemExit(f"dockyard worker: unknown worker {name!r} (known: {known})")
    module = importlib.import_module(WORKERS[name])
    log = configure_logging(log_format, log_level).bind(worker=name)
    ctx = WorkerContext(name=name, root=Path(root).absolute(), run_dir=Path(run_dir).absolute(), log=log,
                        listen=tuple(listen), tls=tuple(tls))

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_serve_then_cancel, module.serve, ctx, nursery.cancel_scope)
                if parent is not None:
                    nursery.start_soon(_end_with_parent, parent, parent_pid, log, nursery.cancel_scope)
                async for signum in signals:
                    log.info("worker stopping", signal=signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    break

    trio.run(run)
    return 0


def open_parent(parent_pid: int) -> int:
    """A pidfd of the daemon that started this worker, so the worker can end with it, even
    when it was SIGKILLed: the next daemon starts its own workers, and two monitors must not
    outlive their daemon.

    Not PR_SET_PDEATHSIG: that fires when the *thread* that forked the worker exits, and trio
    forks from a worker thread that ends after 10 s idle, which stopped every worker then.
    """
    try:
        pidfd = os.pidfd_open(parent_pid)
    except ProcessLookupError:
        raise SystemExit(f"dockyard worker: the daemon (pid {parent_pid}) is gone") from None
    if os.getppid() != parent_pid:  # it died before: that pid is another process now
        os.close(pidfd)
        raise SystemExit(f"dockyard worker: the daemon (pid {parent_pid}) is gone")
    return pidfd


async def parent_exited(pidfd: int) -> None:
    """Until the process of ``pidfd`` (from :func:`open_parent`) exited."""
    import trio

    await trio.lowlevel.wait_readable(pidfd)  # a pidfd is readable once its process exited


async def _end_with_parent(pidfd: int, parent_pid: int, log: Any, scope: Any) -> None:
    await parent_exited(pidfd)
    log.info("worker stopping", reason=f"the daemon (pid {parent_pid}) is gone")
    scope.cancel()


async def _serve_then_cancel(serve: Any, ctx: WorkerContext, scope: Any) -> None:
    await serve(ctx)
    scope.cancel()  # serve returned on its own: the worker is done
