"""Resource usage: the stats sampler and one-off samples (``dockyard stats``).

The sampler publishes ``stats.<id>`` (on the channel of the same name) for every running
container every ``stats_interval`` seconds. One pass reads every container's cgroup files in
the trio thread: a few preads each (``supervisor.stats.StatsReader`` keeps them open), no
process, and no thread that could race with a container's cgroup being removed.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from supervisor import stats
from supervisor.lifecycle.core import Lifecycle

#: A fresh sample's CPU % is measured over at least this long.
FIRST_SAMPLE_SECONDS = 0.2


class Sampler:
    def __init__(self, core: Lifecycle):
        self.core = core
        self._scope: trio.CancelScope | None = None

    def restart(self, interval: float) -> None:
        """(Re)start publishing every ``interval`` seconds (0: stop); needs the core's nursery."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
        if interval > 0 and self.core.nursery is not None:
            self._scope = trio.CancelScope()
            self.core.nursery.start_soon(self._sample_within, self._scope, interval)

    async def _sample_within(self, scope: trio.CancelScope, interval: float) -> None:
        with scope:
            deadline = trio.current_time()
            while True:
                deadline = max(deadline + interval, trio.current_time())
                await trio.sleep_until(deadline)
                self.sample_once()

    def sample_once(self) -> int:
        """Sample and publish every running container once; returns how many."""
        count = 0
        for container in tuple(self.core.containers.values()):
            reader = container.stats_reader
            if reader is None:
                continue
            sample = reader.read()
            data = stats.record(container.id, container.name, sample, container.last_sample)
            container.last_sample = sample
            topic = f"stats.{container.id}"
            self.core.events.publish(topic, data, topic)
            count += 1
        return count

    async def sample(self, refs: list[str] | None = None) -> list[dict[str, Any]]:
        """One fresh sample of each named container (default: every running one), with the
        CPU % over the time since the sampler's last sample (at least ~0.2 s)."""
        containers = [self.core.get(ref) for ref in refs] if refs else self.core.list()
        if any(c.last_sample is None and c.stats_reader is not None for c in containers):
            for container in containers:
                if container.stats_reader is not None and container.last_sample is None:
                    container.last_sample = container.stats_reader.read()
            await trio.sleep(FIRST_SAMPLE_SECONDS)
        rows = []
        for container in containers:
            reader = container.stats_reader
            if reader is None:  # not running: docker shows zeros
                rows.append(stats.record(container.id, container.name, stats.Sample(time.monotonic()), None))
                continue
            rows.append(stats.record(container.id, container.name, reader.read(), container.last_sample))
        return rows


def host_memory() -> int:
    """The host's memory in bytes (0 if /proc/meminfo cannot be read)."""
    try:
        with open("/proc/meminfo") as meminfo:
            return stats.host_memory(meminfo.read())
    except OSError:
        return 0
