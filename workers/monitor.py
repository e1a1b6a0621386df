"""The monitor worker: applies containers' restart policies by asking the supervisor.

Theory of operation
-------------------
::

    supervisor ──container.<id>.die──▶ monitor ──container.inspect──▶ supervisor
                                          │ supervisor.restart.decide(policy, exit)
                                          └──container.schedule_restart {exit, attempt, delay}──▶
                                               supervisor: answers one exit at most once,
                                               publishes container.<id>.restart, waits, starts

The monitor never touches a container process; it acts only through requests. It keeps no
state that matters: what a decision needs (policy, exit code, start and finish times, the
user's stop, the restart count and backoff attempt, whether a restart is already pending)
is in the supervisor's record of the container. So after the monitor is killed and started
again, or the daemon restarts (``daemon.start``), or every ``RESYNC_INTERVAL`` seconds, it
*resyncs*: it lists every container and considers each exited one as if its die event had
just arrived. Considering one exit twice is harmless: the supervisor refuses a second restart
for the same exit (the request names the exit by its ``finished_at``), so a container is
never restarted twice for one exit, whether the monitor died before, during or after its
request, or two monitors run at once.

``stats.<id>`` events tell the monitor which containers run (a missed ``start`` event is
noticed within one sampling interval). For each running container with a health check it
keeps one probe task: every ``interval`` it asks the supervisor to run the check
(``container.health_check``: the command runs in the container through the supervisor's
exec, and the result goes through the health state machine, supervisor/health.py, which the
supervisor keeps), so nothing is lost when the monitor restarts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import trio

from bus.errors import BusError, DaemonUnavailable, RemoteError
from supervisor import health
from supervisor import operations as ops
from supervisor.restart import CONTAINER_BACKOFF, Exit, RestartPolicy, decide

#: Seconds between two resyncs from the supervisor's state (events are the fast path; this
#: is the safety net for anything missed: a subscriber over its high-water mark, a daemon
#: restart while this monitor runs as its own unit).
RESYNC_INTERVAL = 30.0
#: How long the monitor waits between two attempts to reach a daemon that is not there.
CONNECT_RETRY = (0.1, 2.0)
ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass
class Counters:
    considered: int = 0  # exits looked at
    scheduled: int = 0  # restarts the supervisor accepted
    refused: int = 0  # restarts the supervisor refused (already answered, user stop, ...)
    failed: int = 0  # requests that failed otherwise (daemon gone, timeout)
    resyncs: int = 0
    probes: int = 0  # health probes reported


def _seconds_between(start: str, end: str) -> float:
    try:
        return (datetime.fromisoformat(end.replace("Z", "+00:00"))
                - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return 0.0


def exit_of(document: dict[str, Any]) -> tuple[RestartPolicy, Exit]:
    """The restart policy and the last exit of a container, from its inspect document."""
    state = document["State"]
    policy = document["HostConfig"]["RestartPolicy"]
    extra = document.get("Dockyard") or {}
    return (
        RestartPolicy(policy["Name"], policy["MaximumRetryCount"]),
        Exit(
            exit_code=state["ExitCode"],
            user_stopped=bool(extra.get("UserStopped")),
            restart_count=document["RestartCount"],
            ran_for=_seconds_between(state["StartedAt"], state["FinishedAt"]),
            previous_attempt=int(extra.get("RestartAttempt", 0)),
            ever_started=state["StartedAt"] != ZERO_TIME,
        ),
    )


class Monitor:
    def __init__(self, client: Any, log: Any):
        self.client = client
        self.log = log
        self.counters = Counters()
        self.running: set[str] = set()
        self._answered: dict[str, str] = {}  # container id -> the last exit decided on
        self._lock = trio.Lock()  # one decision at a time: events and resyncs interleave
        self.nursery: trio.Nursery | None = None  # where probe tasks run (health checks)
        self.probing: set[str] = set()
        self.exec_missing = False  # the daemon has no container.health_check: an older daemon

    async def consider(self, container_id: str) -> None:
        """Decide on the container's last exit, and ask for a restart if its policy wants one."""
        async with self._lock:
            await self._consider(container_id)

    async def _consider(self, container_id: str) -> None:
        try:
            document = await self.client.request(ops.CONTAINER_INSPECT, {"container": container_id})
        except RemoteError as error:
            if error.code == "not_found":
                self._forget(container_id)
                return
            raise
        state = document["State"]
        if state["Status"] != "exited":  # running, restarting (answered), created, removing
            return
        exit_id = state["FinishedAt"]
        if self._answered.get(container_id) == exit_id:
            return
        self.counters.considered += 1
        policy, last_exit = exit_of(document)
        decision = decide(policy, last_exit, CONTAINER_BACKOFF)
        self._answered[container_id] = exit_id
        if not decision.restart:
            self.log.debug("no restart", container=container_id, reason=decision.reason)
            return
        try:
            await self.client.request(ops.CONTAINER_SCHEDULE_RESTART, {
                "container": container_id,
                "exit": exit_id,
                "attempt": decision.attempt,
                "delay": decision.delay,
            })
        except RemoteError as error:
            if error.code not in ("conflict", "invalid_state", "not_found"):
                raise
            self.counters.refused += 1
            self.log.info("restart refused", container=container_id, reason=error.message)
            return
        self.counters.scheduled += 1
        self.log.info("restart scheduled", container=container_id, attempt=decision.attempt,
                      delay=decision.delay, reason=decision.reason)

    async def resync(self) -> None:
        """Consider every exited container that has a restart policy (from the supervisor's
        records: nothing this monitor remembers is needed)."""
        rows = (await self.client.request(ops.CONTAINER_LIST, {"all": True}))["containers"]
        self.counters.resyncs += 1
        self.running = {row["id"] for row in rows if row["status"] in ("running", "paused")}
        for container_id in self.running:
            self.watch_health(container_id)
        known = {row["id"] for row in rows}
        for container_id in list(self._answered):
            if container_id not in known:
                self._forget(container_id)
        for row in rows:
            if row["status"] == "exited" and not row.get("restarting") and row.get("restart_policy", "no") != "no":
                await self.consider(row["id"])

    async def on_event(self, topic: str, data: Any) -> None:
        kind, _, rest = topic.partition(".")
        if kind == "stats":
            if rest not in self.running:  # a start this monitor did not see
                self.running.add(rest)
                self.watch_health(rest)
            return
        if kind == "daemon":
            if rest == "start":  # a new daemon: its records are all there is
                self._answered.clear()
                await self.resync()
            return
        container_id, _, action = rest.rpartition(".")
        if action == "die":
            self.running.discard(container_id)
            await self.consider(container_id)
        elif action in ("start", "unpause"):  # a paused one's probe ended (no exec while paused)
            self.running.add(container_id)
            self.watch_health(container_id)
        elif action == "destroy":
            self._forget(container_id)

    def watch_health(self, container_id: str) -> None:
        """Make sure a probe task runs for the container (it ends by itself when the container
        has no health check or stops)."""
        if self.nursery is None or self.exec_missing or container_id in self.probing:
            return
        self.probing.add(container_id)
        self.nursery.start_soon(self._probe_forever, container_id)

    async def _probe_forever(self, container_id: str) -> None:
        try:
            document = await self.client.request(ops.CONTAINER_INSPECT, {"container": container_id})
            fields = health.from_image(document["Config"].get("Healthcheck"))
            if fields is None or not document["State"]["Running"]:
                return
            config = health.HealthConfig.from_map(fields)
            while True:
                await trio.sleep(config.interval)
                result = await run_probe(self.client, container_id, config.timeout)
                if result is None:
                    if not self.exec_missing:
                        self.log.warning("health checks cannot run: the daemon has no container.health_check")
                    self.exec_missing = True
                    return
                self.counters.probes += 1
        except RemoteError as error:
            if error.code not in ("not_found", "invalid_state"):  # those: it stopped or is gone
                self.log.warning("health probe failed", container=container_id, error=error.message)
        except BusError as error:
            self.counters.failed += 1
            self.log.warning("health probe failed", container=container_id, error=str(error))
        finally:
            self.probing.discard(container_id)

    def _forget(self, container_id: str) -> None:
        self._answered.pop(container_id, None)
        self.running.discard(container_id)

    async def guarded(self, what: str, call: Any, *args: Any) -> None:
        """Run one step; a bus failure is logged and counted, never fatal: the next event or
        resync tries again."""
        try:
            await call(*args)
        except BusError as error:
            self.counters.failed += 1
            self.log.warning("monitor step failed", step=what, error=str(error))


async def run_probe(client: Any, container_id: str, timeout: float) -> dict[str, Any] | None:
    """Ask the supervisor to run the container's health check once; its reply
    ``{status, failing_streak, exit_code}``, or None when the daemon does not know the
    operation (``bad_request``)."""
    try:
        return await client.request(ops.CONTAINER_HEALTH_CHECK, {"container": container_id}, timeout=timeout + 10)
    except RemoteError as error:
        if error.code == "bad_request":
            return None
        raise


async def serve(ctx: Any) -> None:
    from bus.client import AsyncClient

    log = ctx.log
    delay = CONNECT_RETRY[0]
    while True:
        client = AsyncClient(ctx.run_dir, source=f"worker.monitor.{os.getpid()}")
        try:
            async with client:
                await _run(Monitor(client, log), client)
        except DaemonUnavailable as error:
            log.info("waiting for the daemon", reason=error.reason)
        await trio.sleep(delay)
        delay = min(delay * 2, CONNECT_RETRY[1])


async def _run(monitor: Monitor, client: Any) -> None:
    async with client.subscribe(["container.", "daemon.", "stats."]) as events:
        monitor.log.info("monitor subscribed")
        async with trio.open_nursery() as nursery:
            monitor.nursery = nursery
            nursery.start_soon(_resync_forever, monitor)
            async for envelope in events:
                await monitor.guarded(envelope.topic, monitor.on_event, envelope.topic, envelope.data)


async def _resync_forever(monitor: Monitor) -> None:
    while True:
        await monitor.guarded("resync", monitor.resync)
        await trio.sleep(RESYNC_INTERVAL)
