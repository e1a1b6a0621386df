"""`dockyard daemon`: the Supervisor, served over the bus.

    main ─┬─ BusServer.serve       control.sock (ROUTER) + events.sock (XPUB), bound here or
          │                        taken from systemd (socket activation, supervisor/systemd.py)
          ├─ Supervisor            containers; publishes through the bus + the journal
          │    ├─ READY=1 to systemd once reconciled; STATUS= counts; WATCHDOG=1 pings
          │    ├─ SIGHUP: reload the config file (RELOADING=1 ... READY=1)
          │    └─ waits for SIGTERM/SIGINT (STOPPING=1), then stops containers
          └─ WorkerManager         the workers' processes (log collector, monitor), stopped
                                   last, so that they see every container's end; exit 0

Only one daemon may use a state root at a time: it holds an exclusive lock on
``<root>/daemon.lock`` for as long as it runs.
"""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import socket
from pathlib import Path
from typing import Any

import trio

from bus.server import BusServer
from logs.atomic import write_atomic
from supervisor import configfile, operations, systemd
from supervisor.api import EVENTS_CHANNEL, Supervisor
from supervisor.config import Config
from supervisor.errors import DockyardError
from supervisor.handlers import Handlers
from supervisor.journal import Journal
from supervisor.logconfig import configure_logging, set_log_level
from supervisor.workers import WorkerManager


#: Requests that only wait for something: cancelled when their client disconnects (the
#: others run to the end, their reply dropped, so that no change is left half-made).
CANCEL_ON_DISCONNECT = frozenset({operations.CONTAINER_WAIT, operations.LOGS_READ})


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


#: Logged at start by a daemon that does not run the log collector itself (issue 15).
NO_COLLECTOR_WARNING = (
    "the log collector is not among the daemon's workers: container output is not stored unless one runs "
    "on its own (dockyard worker logcollector); until then dockyard logs shows nothing and a container in "
    "blocking log mode stops once it has written its max-buffer-size")


def worker_commands(config: Config, log_format: str, log_level: str) -> dict[str, list[str]]:
    commands = {
        name: [config.python, "-m", "workers", name, "--root", str(config.root), "--run", str(config.run_dir),
               "--log-format", log_format, "--log-level", log_level, "--parent-pid", str(os.getpid())]
        for name in config.worker_names
    }
    if "api" in commands:
        for address in config.api_addresses:
            commands["api"] += ["--api", address]
        if config.api_tls:
            cacert, cert, key = config.api_tls
            commands["api"] += ["--tlsverify", "--tlscacert", cacert, "--tlscert", cert, "--tlskey", key]
    return commands


async def serve(config: Config, log: Any, log_format: str = "logfmt", log_level: str = "info",
                reloader: Reloader | None = None) -> None:
    # Read (and removed from the environment) before anything starts a child process.
    notifier = systemd.Notifier.from_environment()
    watchdog = systemd.watchdog_interval()
    activated = systemd.bus_sockets(systemd.listen_fds(), config.run_dir)
    lock = DaemonLock(config.root)
    journal = Journal(config.journal_dir, config.journal_events)
    server: BusServer | None = None

    def publish(topic: str, data: dict[str, Any], channel: str, payload: Any = None) -> None:
        envelope = server.publish(topic, data, channel=channel, payload=payload)
        if channel == EVENTS_CHANNEL:
            journal.append(envelope.as_map())
            if topic.startswith("container."):
                status.poke()

    try:
        supervisor = Supervisor(config, publish_frames=publish, log=log, log_store="collector")
        status = systemd.StatusReporter(notifier, lambda: status_line(supervisor))
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
        # The bus listens before the supervisor has loaded its records and started its
        # networks (a restart publishes what reconcile finds): requests wait until it has,
        # so that nobody reads a half-loaded state (an empty `network ls` after a restart).
        ready = trio.Event()
        server = BusServer(config.run_dir, gated(handlers.table(), ready), log=log, activated=activated,
                           max_connections=config.max_connections, max_in_flight=config.max_requests_in_flight,
                           cancel_on_disconnect=CANCEL_ON_DISCONNECT,
                           subscriber_queue_bytes=config.subscriber_queue_bytes,
                           events_listen=config.events_listen, events_keys=config.events_keys_dir)
        # seq of the events channel carries on across restarts, as the journal does.
        server.resume_seq(EVENTS_CHANNEL, journal.last_seq())
        server.publisher.filter_channel = EVENTS_CHANNEL  # filtered subscriptions see lifecycle events
        # A bus subscriber to a container's log topics reads it live: its lines are held
        # back for the short window only (supervisor/logpump.py).
        supervisor.logs.watched = server.publisher.watches_log
        server.publisher.on_log_subscription = supervisor.logs.flush_watched
        # Subscription-only replays (remote subscribers have no control socket: bus/remote.py).
        def replay_after(after_seq: int) -> tuple[list[dict[str, Any]], int, int]:
            last_seq = server.last_seq(EVENTS_CHANNEL)
            events, lost = journal.after(after_seq, last_seq)
            return events, last_seq, lost

        server.publisher.replayer = replay_after
        server.publisher.identity = daemon_identity(config.root)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve)
                async with supervisor:
                    ready.set()
                    await nursery.start(workers.run)
                    log.info("daemon ready", root=str(config.root), run=str(config.run_dir), pid=os.getpid(),
                             socket_activated=sorted(activated), notify=notifier.enabled)
                    if "logcollector" not in config.worker_names:
                        log.warning(NO_COLLECTOR_WARNING, workers=list(config.worker_names))
                    notifier.ready(status_line(supervisor))  # the bus listens, the state is reconciled
                    if notifier.enabled:
                        nursery.start_soon(status.run)
                    if watchdog is not None:
                        nursery.start_soon(systemd.keep_watchdog_fed, notifier, watchdog)
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            notifier.reloading()
                            if reloader is None:
                                log.warning("SIGHUP: no config file to reload (--config)")
                            else:
                                reloader.reload(supervisor, log)
                            notifier.ready(status_line(supervisor))
                            continue
                        log.info("stopping", signal=signal.Signals(signum).name)
                        notifier.stopping()
                        notifier.status("stopping containers")
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


def gated(table: dict[str, Any], ready: trio.Event) -> dict[str, Any]:
    """The handlers of ``table``, each waiting for ``ready`` before it runs."""

    def gate(handler: Any) -> Any:
        async def when_ready(request: Any) -> Any:
            if not ready.is_set():
                await ready.wait()
            return await handler(request)

        when_ready.__doc__ = handler.__doc__
        return when_ready

    return {op: gate(handler) for op, handler in table.items()}


def daemon_identity(root: Path) -> dict[str, str]:
    """This daemon's id (made at its first start, kept in ``<root>/daemon-id``) and the
    host's name: what a merged view of several daemons tags their events with."""
    path = root / "daemon-id"
    try:
        daemon_id = path.read_text().strip()
    except FileNotFoundError:
        daemon_id = ""
    if len(daemon_id) != 32 or not all(c in "0123456789abcdef" for c in daemon_id):
        daemon_id = os.urandom(16).hex()
        write_atomic(path, daemon_id.encode() + b"\n", durable=True, mode=0o644)
    return {"id": daemon_id, "name": socket.gethostname()}


def status_line(supervisor: Supervisor) -> str:
    """systemd's STATUS= text: the container counts."""
    containers = supervisor.list(all=True)
    running = sum(1 for c in containers if c.status.running)
    restarting = sum(1 for c in containers if c.pending_restart is not None)
    return f"{len(containers)} containers: {running} running, {restarting} restarting"


class Reloader:
    """Applies the config file again on SIGHUP (see supervisor/configfile.py): the reloadable
    keys that changed, unless a command-line flag set them."""

    def __init__(self, path: str, settings: dict[str, Any], flags: frozenset[str] = frozenset()):
        self.path = path
        self.settings = settings  # as last applied
        self.flags = flags  # keys given on the command line: they win over the file
        self.reloads = 0
        self.failures = 0

    def reload(self, supervisor: Supervisor, log: Any) -> bool:
        try:
            new = configfile.load(self.path)
        except DockyardError as exc:
            self.failures += 1
            log.error("config reload failed; nothing changed", path=self.path, error=exc.message)
            return False
        apply, need_restart = configfile.changes(self.settings, new)
        apply = {key: value for key, value in apply.items() if key not in self.flags}
        if need_restart:
            log.warning("config keys changed that take effect at the next start", path=self.path, keys=need_restart)
        changes: dict[str, Any] = {}
        for key, value in apply.items():
            if key == "log-level":
                set_log_level(value or "info")
            elif key == "stats-interval":
                changes["stats_interval"] = float(1.0 if value is None else value)
            elif key == "shutdown-timeout":
                changes["shutdown_timeout"] = float(30.0 if value is None else value)
        supervisor.reconfigure(**changes)
        for key in configfile.RELOADABLE:
            if key in new:
                self.settings[key] = new[key]
            else:
                self.settings.pop(key, None)
        self.reloads += 1
        log.info("config reloaded", path=self.path, applied=sorted(apply))
        return True


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


def main(config: Config, log_format: str = "logfmt", log_level: str = "info", reloader: Reloader | None = None) -> int:
    log = configure_logging(log_format, log_level)
    if os.geteuid() != 0:
        log.error("the dockyard daemon must run as root")
        return 1
    raise_open_file_limit()
    try:
        trio.run(serve, config, log, log_format, log_level, reloader)
    except DockyardError as exc:
        log.error(exc.message)
        return 1
    return 0
