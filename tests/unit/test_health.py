"""Health checks: the pure state machine with a fake clock (times are numbers), the flags and
the image's HEALTHCHECK, and the monitor's probe loop against a fake daemon (trio's
autojump clock: intervals pass without sleeping)."""

from __future__ import annotations

import pytest
import structlog
import trio

from bus.errors import RemoteError
from supervisor.errors import InvalidArgument
from supervisor.health import (HEALTHY, STARTING, UNHEALTHY, HealthConfig, HealthState, Probe, effective,
                               parse_duration)
from supervisor.spec import ContainerSpec
from workers.monitor import Monitor

CHECK = HealthConfig(test=("CMD-SHELL", "test -f /ok"), interval=1.0, timeout=1.0, retries=3, start_period=10.0)
STARTED = 1000.0  # the container's start, unix seconds


def probe(at: float, code: int) -> Probe:
    return Probe(start=STARTED + at, end=STARTED + at + 0.01, exit_code=code, output="x" * 5000)


def run(state: HealthState, *steps: tuple[float, int]) -> list[tuple[str, int]]:
    seen = []
    for at, code in steps:
        state = state.record(CHECK, probe(at, code), STARTED)
        seen.append((state.status, state.failing_streak))
    return seen


def test_failures_in_the_start_period_do_not_count_but_a_success_does():
    assert run(HealthState(), (1, 1), (2, 1), (3, 1), (4, 1)) == [(STARTING, 0)] * 4
    assert run(HealthState(), (1, 1), (2, 0)) == [(STARTING, 0), (HEALTHY, 0)]


def test_retries_failures_in_a_row_make_it_unhealthy_and_one_success_heals_it():
    steps = [(11, 1), (12, 1), (13, 1), (14, 1), (15, 0), (16, 1)]
    assert run(HealthState(), *steps) == [
        (STARTING, 1), (STARTING, 2), (UNHEALTHY, 3), (UNHEALTHY, 4), (HEALTHY, 0), (HEALTHY, 1)]
    # After the start period a healthy container needs `retries` failures too.
    assert run(HealthState(HEALTHY), (20, 1), (21, -1), (22, 2))[-1] == (UNHEALTHY, 3)


def test_the_log_keeps_the_last_five_probes_with_bounded_output():
    state = HealthState()
    for second in range(8):
        state = state.record(CHECK, probe(second, 0), STARTED)
    assert len(state.log) == 5 and state.log[0].start == STARTED + 3
    assert len(state.log[-1].output) == 4096
    document = state.docker()
    assert document["Status"] == HEALTHY and document["Log"][0]["ExitCode"] == 0
    assert document["Log"][0]["Start"].endswith("Z")


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("2", 2), ("1h", 3600)])
def test_durations(text, seconds):
    assert parse_duration(text, "--health-interval") == seconds


@pytest.mark.parametrize("flags, says", [
    ({"test": ["CMD-SHELL", "true"], "interval": "soon"}, "--health-interval"),
    ({"test": ["CMD-SHELL", "true"], "interval": "0s"}, "--health-interval"),
    ({"test": ["CMD-SHELL", "true"], "retries": "0"}, "--health-retries"),
    ({"test": ["CMD-SHELL", "true"], "start_period": "-1s"}, "--health-start-period"),
    ({"test": ["SHELL", "true"]}, "CMD, CMD-SHELL or NONE"),
    ({"test": ["CMD"]}, "a command is required"),
])
def test_bad_health_flags_are_refused_naming_the_flag(flags, says):
    with pytest.raises(InvalidArgument, match=says):
        ContainerSpec(image="base", healthcheck=flags)


IMAGE = {"Test": ["CMD", "/bin/check"], "Interval": 5_000_000_000, "Retries": 2}


def test_the_image_healthcheck_and_the_flags_merge_as_in_docker():
    assert effective(None, IMAGE) == HealthConfig(test=("CMD", "/bin/check"), interval=5.0, retries=2)
    spec = ContainerSpec(image="base", healthcheck={"interval": "1s"})
    assert spec.healthcheck == {"interval": 1.0}
    assert effective(spec.healthcheck, IMAGE) == HealthConfig(test=("CMD", "/bin/check"), interval=1.0, retries=2)
    assert effective({"test": ["NONE"]}, IMAGE) is None  # --no-healthcheck
    assert effective(None, None) is None
    with pytest.raises(InvalidArgument, match="need --health-cmd"):
        effective({"interval": 1.0}, None)
    assert HealthConfig(test=("CMD-SHELL", "a && b")).argv() == ["/bin/sh", "-c", "a && b"]
    assert HealthConfig.from_map(CHECK.to_map()) == CHECK
    assert HealthConfig(test=("CMD", "x"), interval=0.5).docker()["Interval"] == 500_000_000


class FakeDaemon:
    """The monitor's view of a daemon: answers requests from a script, records them, and
    keeps the health state with the real state machine."""

    def __init__(self, exit_codes: list[int] | None, running_for: int = 100):
        self.exit_codes = list(exit_codes) if exit_codes is not None else None
        self.requests: list[tuple[str, dict]] = []
        self.state = HealthState()
        self.statuses: list[str] = []
        self.reports_left = running_for

    async def request(self, op: str, args: dict | None = None, *, timeout: float = 30.0):
        await trio.lowlevel.checkpoint()
        self.requests.append((op, args))
        if op == "container.inspect":
            return {"State": {"Running": True, "StartedAt": "2026-01-01T00:00:00Z"},
                    "Config": {"Healthcheck": CHECK.docker()}}
        if op == "container.health_check":
            if self.exit_codes is None:
                raise RemoteError("bad_request", "unknown operation 'container.health_check'")
            if self.reports_left == 0:
                raise RemoteError("invalid_state", "it is not running")
            self.reports_left -= 1
            before = self.state.status
            now = trio.current_time()
            self.state = self.state.record(CHECK, Probe(now, now, self.exit_codes.pop(0), ""), 0)
            if self.state.status != before:
                self.statuses.append(self.state.status)
            return {"status": self.state.status}
        raise AssertionError(op)


async def test_the_monitor_probes_every_interval_and_reports_until_the_container_stops(autojump_clock):
    daemon = FakeDaemon([0, 1, 1, 1, 0], running_for=5)
    monitor = Monitor(daemon, structlog.get_logger())
    async with trio.open_nursery() as nursery:
        monitor.nursery = nursery
        monitor.watch_health("c1")
        monitor.watch_health("c1")  # one task per container, however often it is seen
    assert daemon.statuses == [HEALTHY, UNHEALTHY, HEALTHY]
    checks = [args for op, args in daemon.requests if op == "container.health_check"]
    assert len(checks) == 6 and checks[0] == {"container": "c1"}  # the sixth: it had stopped
    assert monitor.counters.probes == 5 and "c1" not in monitor.probing
    # Intervals of one (fake) second apart, the first one interval after the task began.
    assert trio.current_time() == pytest.approx(6.0)


async def test_an_older_daemon_without_health_checks_stops_the_probing(autojump_clock):
    daemon = FakeDaemon(None)
    monitor = Monitor(daemon, structlog.get_logger())
    async with trio.open_nursery() as nursery:
        monitor.nursery = nursery
        monitor.watch_health("c1")
    assert monitor.exec_missing and daemon.state.status == STARTING
    monitor.watch_health("c2")  # the nursery is closed: starting a task there would raise
    assert "c2" not in monitor.probing
