"""Health checks: recording probes and running a container's check once.

The monitor worker schedules the probes (:mod:`supervisor.health` holds the rules: the
status after a probe, the output kept); this service runs the check's command through
:class:`~supervisor.services.execs.Execs` and records the result on the running container,
publishing ``container.<id>.health_status`` when the status changes.
"""

from __future__ import annotations

import time
from datetime import datetime

from supervisor import health
from supervisor.container import Container
from supervisor.errors import InvalidState, StartError
from supervisor.lifecycle.core import Lifecycle
from supervisor.services.execs import Execs


class HealthChecks:
    def __init__(self, core: Lifecycle, execs: Execs):
        self.core = core
        self.execs = execs

    def report(self, ref: str, probe: health.Probe) -> Container:
        """Record one probe of a running container's health check; publishes
        ``container.<id>.health_status`` when its status changes.

        Raises:
            InvalidState: it is not running, or has no health check.
        """
        container = self.core.get(ref)
        if not container.status.running or container.health is None or container.healthcheck is None:
            why = "it is not running" if not container.status.running else "it has no health check"
            raise InvalidState(container.name, "record the health of", container.status.value, why)
        started = _unix_time(container.started_at)
        before = container.health.status
        container.health = container.health.record(container.healthcheck, probe, started)
        if container.health.status != before:
            self.core.events.container(container, "health_status", health_status=container.health.status)
        return container

    async def run(self, ref: str) -> Container:
        """Run the container's health check once (its command, through ``Execs.run``, with
        its timeout) and record the result as :meth:`report` does. A command that cannot
        be started counts as a failed probe (exit 125/126/127), as in docker.

        Raises:
            InvalidState: it is not running, or has no health check.
        """
        container = self.core.get(ref)
        config = container.healthcheck
        if not container.status.running or container.health is None or config is None:
            why = "it is not running" if not container.status.running else "it has no health check"
            raise InvalidState(container.name, "check the health of", container.status.value, why)
        if not container.status.can_pause():  # paused: no probe (it starts again at the unpause)
            raise InvalidState(container.name, "check the health of", container.status.value, "it is paused")
        start = time.time()
        try:
            result = await self.execs.run(container.id, config.argv(), timeout=config.timeout,
                                          output_limit=health.OUTPUT_LIMIT)
        except StartError as exc:
            probe = health.Probe(start, time.time(), exc.exit_code, exc.message)
        else:
            if result.timed_out or result.exit_code is None:
                probe = health.Probe(start, time.time(), health.TIMEOUT_EXIT_CODE,
                                     f"Health check exceeded timeout ({config.timeout:g}s)")
            else:
                probe = health.Probe(start, time.time(), result.exit_code, result.output.decode(errors="replace"))
        return self.report(container.id, probe)


def _unix_time(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
