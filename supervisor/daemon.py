"""`dockyard daemon`: the Supervisor, served over the bus.

    main ─┬─ BusServer.serve       control.sock (ROUTER) + events.sock (XPUB)
          ├─ Supervisor            containers; publishes through the bus + the journal
          │    └─ waits for SIGTERM/SIGINT, then stops containers
          └─ WorkerManager         the workers' processes (log collector, monitor), stopped
                                   last, so that they see every container's end; exit 0

Only one daemon may use a state root at a time: it holds an exclusive lock on
``<root>/daemon.lock`` for as long as it runs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any

import structlog
import trio

from bus.server import BusServer
from supervisor.api import EVENTS_CHANNEL, Supervisor
from supervisor.config import Config
from supervisor.errors import DockyardError
from supervisor.handlers import Handlers
from supervisor.journal import Journal
from supervisor.workers import WorkerManager


def configure_logging(log_format: str = "logfmt", level: str = "info") -> Any:
    renderer = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.processors.LogfmtRenderer(key_order=["timestamp", "level", "event"])
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    return structlog.get_logger("dockyard")


class DaemonLock:
    """An exclusive flock on <root>/daemon.lock; a second daemon on the same root is refused."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.path = root / "daemon.lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise DockyardError(f"another dockyard daemon (pid {holder}) is using {root}") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        os.close(self.fd)


def worker_commands(config: Config, log_format: str, log_level: str) -> dict[str, list[str]]:
    return {
        name: [config.python, "-m", "workers", name, "--root", str(config.root), "--run", str(config.run_dir),
               "--log-format", log_format, "--log-level", log_level]
        for name in config.worker_names
    }


async def serve(config: Config, log: Any, log_format: str = "logfmt", log_level: str = "info") -> None:
    lock = DaemonLock(config.root)
    journal = Journal(config.journal_dir, config.journal_events)
    server: BusServer | None = None

    def publish(topic: str, data: dict[str, Any], channel: str) -> None:
        envelope = server.publish(topic, data, channel=channel)
        if channel == EVENTS_CHANNEL:
            journal.append(envelope.as_map())

    try:
        supervisor = Supervisor(config, publish=publish, log=log)
        workers = WorkerManager(
            worker_commands(config, log_format, log_level),
            emit=lambda action, name, attributes: supervisor.emit("worker", action, name, attributes),
            log=log,
        )
        handlers = Handlers(
            supervisor,
            journal,
            last_event_seq=lambda: server.last_seq(EVENTS_CHANNEL),
            bus_stats=lambda: server.stats.as_dict(),
            workers=workers.status,
        )
        server = BusServer(config.run_dir, handlers.table(), log=log)
        # seq of the events channel carries on across restarts, as the journal does.
        server.resume_seq(EVENTS_CHANNEL, journal.last_seq())
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve)
                async with supervisor:
                    await nursery.start(workers.run)
                    log.info("daemon ready", root=str(config.root), run=str(config.run_dir), pid=os.getpid())
                    async for signum in signals:
                        log.info("stopping", signal=signal.Signals(signum).name)
                        break
                # The log collector stores the containers' last output before it is stopped.
                if "logcollector" in config.worker_names and not await supervisor.logs.wait_settled(5.0):
                    log.warning("stopping with container output the log collector has not stored")
                await workers.stop()
                await server.drain(timeout=1.0)
                nursery.cancel_scope.cancel()
    finally:
        journal.close()
        lock.release()
    log.info("daemon stopped")


def raise_open_file_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: each running container holds about eight
    descriptors (pidfd, two pipes, five cgroup files for stats), and 1024 is a common soft
    default."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
        except (ValueError, OSError):
            pass


def main(config: Config, log_format: str = "logfmt", log_level: str = "info") -> int:
    log = configure_logging(log_format, log_level)
    if os.geteuid() != 0:
        log.error("the dockyard daemon must run as root")
        return 1
    raise_open_file_limit()
    try:
        trio.run(serve, config, log, log_format, log_level)
    except DockyardError as exc:
        log.error(exc.message)
        return 1
    return 0
