"""Health checks (``run --health-*``, an image's HEALTHCHECK) as pure values and one pure
state machine; no clock, no process inside.

    starting ──probe ok──▶ healthy ──retries failures in a row──▶ unhealthy
        │                     ▲                                       │
        │                     └───────────────probe ok────────────────┘
        └──retries failures in a row (after the start period)──▶ unhealthy

docker's rules: a probe succeeds when its command exits 0; any other exit, or running past
``timeout``, is a failure. During ``start_period`` after the container started, a failure
does not count (it is still logged) but a success makes it healthy. The last 5 probes are
kept (``State.Health.Log``), each with at most 4 KiB of output.

Who does what: the monitor worker asks for a probe every ``interval``
(``container.health_check``); the supervisor runs the command in the container (its exec),
applies :meth:`HealthState.record`, stores the state (``inspect``: ``State.Health``; ``ps``:
``(healthy)``) and publishes ``container.<id>.health_status`` when the status changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from supervisor import durations
from supervisor.errors import InvalidArgument

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
DEFAULT_START_PERIOD = 0.0
LOG_ENTRIES = 5
OUTPUT_LIMIT = 4096
TIMEOUT_EXIT_CODE = -1  # docker's ExitCode for a probe that ran past its timeout
NANOSECONDS = 1_000_000_000

def parse_duration(text: str | int | float, flag: str) -> float:
    """Go's duration syntax, as docker's flags take it (``30s``, ``1m30s``, ``500ms``;
    supervisor/durations.py); a bare number is seconds. Returns seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str) and re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        try:
            seconds = durations.parse_duration(text, flag)
        except durations.InvalidDuration as error:
            raise InvalidArgument(str(error), flag=flag) from None
    if seconds < 0:
        raise InvalidArgument(f"invalid value {text!r} for {flag}: must not be negative", flag=flag)
    return seconds


@dataclass(frozen=True)
class HealthConfig:
    """What to probe and how often. ``test`` is docker's: ``("CMD", argv...)``,
    ``("CMD-SHELL", "command line")`` or ``("NONE",)`` (health checks off)."""

    test: tuple[str, ...]
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    start_period: float = DEFAULT_START_PERIOD

    def __post_init__(self) -> None:
        if not isinstance(self.test, tuple) or not self.test or not all(isinstance(t, str) for t in self.test):
            raise InvalidArgument("healthcheck.test: must be a non-empty list of strings", flag="--health-cmd")
        kind = self.test[0]
        if kind not in ("CMD", "CMD-SHELL", "NONE"):
            raise InvalidArgument(f"healthcheck.test: must start with CMD, CMD-SHELL or NONE, not {kind!r}", flag="--health-cmd")
        if kind != "NONE" and len(self.test) < 2:
            raise InvalidArgument("healthcheck.test: a command is required", flag="--health-cmd")
        if kind == "CMD-SHELL" and len(self.test) != 2:
            raise InvalidArgument("healthcheck.test: CMD-SHELL takes one command line", flag="--health-cmd")
        for name, flag in (("interval", "--health-interval"), ("timeout", "--health-timeout")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidArgument(f"invalid value {value!r} for {flag}: must be more than 0 seconds", flag=flag)
        if isinstance(self.start_period, bool) or not isinstance(self.start_period, (int, float)) or self.start_period < 0:
            raise InvalidArgument(f"invalid value {self.start_period!r} for --health-start-period: must be >= 0", flag="--health-start-period")
        if type(self.retries) is not int or self.retries < 1:
            raise InvalidArgument(f"invalid value {self.retries!r} for --health-retries: must be at least 1", flag="--health-retries")

    @property
    def disabled(self) -> bool:
        return self.test[0] == "NONE"

    def argv(self) -> list[str]:
        """The probe's command line inside the container."""
        if self.test[0] == "CMD-SHELL":
            return ["/bin/sh", "-c", self.test[1]]
        return list(self.test[1:])

    def to_map(self) -> dict[str, Any]:
        return {"test": list(self.test), "interval": self.interval, "timeout": self.timeout,
                "retries": self.retries, "start_period": self.start_period}

    @classmethod
    def from_map(cls, data: Any) -> HealthConfig:
        if not isinstance(data, dict):
            raise InvalidArgument("spec.healthcheck: must be a map")
        unknown = sorted(set(data) - {"test", "interval", "timeout", "retries", "start_period"})
        if unknown:
            raise InvalidArgument(f"spec.healthcheck: unknown field(s) {', '.join(unknown)}")
        values = dict(data)
        if not isinstance(values.get("test"), (list, tuple)):
            raise InvalidArgument("healthcheck.test: must be a non-empty list of strings", flag="--health-cmd")
        values["test"] = tuple(values["test"])
        for key, flag in (("interval", "--health-interval"), ("timeout", "--health-timeout"),
                          ("start_period", "--health-start-period")):
            if key in values:
                values[key] = parse_duration(values[key], flag)
        if "retries" in values and isinstance(values["retries"], str):
            if not values["retries"].isdigit():
                raise InvalidArgument(f"invalid value {values['retries']!r} for --health-retries", flag="--health-retries")
            values["retries"] = int(values["retries"])
        return cls(**values)

    def docker(self) -> dict[str, Any]:
        """``Config.Healthcheck`` of docker inspect (durations in nanoseconds)."""
        return {"Test": list(self.test), "Interval": int(self.interval * NANOSECONDS),
                "Timeout": int(self.timeout * NANOSECONDS), "StartPeriod": int(self.start_period * NANOSECONDS),
                "Retries": self.retries}


def from_image(healthcheck: Any) -> dict[str, Any] | None:
    """An image config's ``Healthcheck`` (nanoseconds; 0 or missing: the default) as the
    fields of a HealthConfig map; None when the image has none."""
    if not isinstance(healthcheck, dict) or not healthcheck.get("Test"):
        return None
    fields: dict[str, Any] = {"test": list(healthcheck["Test"])}
    for source, target in (("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period")):
        if healthcheck.get(source):
            fields[target] = healthcheck[source] / NANOSECONDS
    if healthcheck.get("Retries"):
        fields["retries"] = healthcheck["Retries"]
    return fields


def effective(flags: dict[str, Any] | None, image: Any) -> HealthConfig | None:
    """The health check a container gets: the image's HEALTHCHECK with each field the user
    set overriding it (docker's merge); None when there is none or it is off (NONE)."""
    merged = dict(from_image(image) or {})
    merged.update(flags or {})
    if not merged.get("test"):
        if merged:
            raise InvalidArgument("--health-interval and the like need --health-cmd (the image has no HEALTHCHECK)",
                                  flag="--health-cmd")
        return None
    config = HealthConfig.from_map(merged)
    return None if config.disabled else config


@dataclass(frozen=True)
class Probe:
    start: float  # unix seconds
    end: float
    exit_code: int
    output: str

    def docker(self) -> dict[str, Any]:
        from datetime import datetime, timezone

        def stamp(moment: float) -> str:
            return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        return {"Start": stamp(self.start), "End": stamp(self.end), "ExitCode": self.exit_code, "Output": self.output}


@dataclass(frozen=True)
class HealthState:
    status: str = STARTING
    failing_streak: int = 0
    log: tuple[Probe, ...] = ()

    def record(self, config: HealthConfig, probe: Probe, started_at: float) -> HealthState:
        """The state after ``probe`` of a container that started at ``started_at`` (unix s)."""
        probe = replace(probe, output=probe.output[:OUTPUT_LIMIT])
        log = (self.log + (probe,))[-LOG_ENTRIES:]
        if probe.exit_code == 0:
            return HealthState(HEALTHY, 0, log)
        if self.status == STARTING and probe.start - started_at < config.start_period:
            return HealthState(STARTING, self.failing_streak, log)  # does not count yet
        streak = self.failing_streak + 1
        return HealthState(UNHEALTHY if streak >= config.retries else self.status, streak, log)

    def docker(self) -> dict[str, Any]:
        """``State.Health`` of docker inspect."""
        return {"Status": self.status, "FailingStreak": self.failing_streak, "Log": [p.docker() for p in self.log]}
