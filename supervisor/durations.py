"""Durations and points in time as docker's flags take them; pure functions, no clock inside.

* :func:`parse_duration`: Go's ``time.ParseDuration``, which docker uses for every duration
  flag (``--health-interval``, ``logs --since 1m30s``): an optional sign, then one or more
  decimal numbers, each with a unit, e.g. ``300ms``, ``1.5h``, ``2h45m``, ``1h2m3.5s``. Units:
  ``ns``, ``us`` (or ``µs``, ``μs``), ``ms``, ``s``, ``m``, ``h``; dockyard adds ``d`` (24 h),
  which it took before. ``0`` needs no unit; any other number does.
* :func:`parse_time`: docker's ``--since``/``--until`` (``GetTimestamp``): a duration before
  ``now``, an RFC 3339 date or time (``2024-05-01``, ``2024-05-01T10:00``,
  ``2024-05-01T10:00:00.5Z``, ``...+02:00``; without a zone it is local time, as docker), or
  Unix seconds with an optional fraction (``1714557600.25``).

Errors name the flag and the value: ``invalid value '1x' for --since: ...``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
          "d": 86400.0}
_TERM = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h|d)")
_DURATION = re.compile(rf"([-+]?)((?:{_TERM.pattern})+)")
#: Go's limit: a time.Duration is an int64 of nanoseconds (about 292 years).
MAX_SECONDS = (2**63 - 1) / 1e9
_UNIX = re.compile(r"(\d+)(?:\.(\d{1,9}))?")
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?)?"
    r"(Z|z|[+-]\d{2}:\d{2})?"
)
DURATION_FORMS = "a duration such as 30s, 1m30s, 1.5h or 500ms"
TIME_FORMS = "a duration before now (10m, 1h30m), unix seconds (1714557600.5) or an RFC 3339 time (2024-05-01T10:00:00Z)"


class InvalidDuration(ValueError):
    """A value that is not a duration (or time) in any form the flag takes."""

    def __init__(self, flag: str, value: object, expected: str):
        super().__init__(f"invalid value {value!r} for {flag}: {expected}")
        self.flag = flag
        self.value = value
        self.expected = expected


def parse_duration(text: str, flag: str) -> float:
    """Go's duration syntax to seconds (negative with a leading ``-``).

    Raises:
        InvalidDuration: not a duration, or longer than Go's ~292 years.
    """
    if not isinstance(text, str):
        raise InvalidDuration(flag, text, f"use {DURATION_FORMS}")
    match = _DURATION.fullmatch(text)
    if match is None:
        if text.lstrip("+-") == "0":
            return 0.0
        raise InvalidDuration(flag, text, f"use {DURATION_FORMS}")
    seconds = sum(float(number) * _UNITS[unit] for number, unit in _TERM.findall(match.group(2)))
    if seconds > MAX_SECONDS:
        raise InvalidDuration(flag, text, "out of range (at most 2562047h)")
    return -seconds if match.group(1) == "-" else seconds


def parse_time(text: str, flag: str, now: float, local: tzinfo | None = None) -> float:
    """A ``--since``/``--until`` value to Unix seconds.

    Args:
        now: the time a duration counts back from (Unix seconds).
        local: the zone of a time written without one; None: this host's local zone.

    Raises:
        InvalidDuration: none of the forms.
    """
    if not isinstance(text, str):
        raise InvalidDuration(flag, text, f"use {TIME_FORMS}")
    if text not in ("0", "+0", "-0") and _DURATION.fullmatch(text):
        try:
            return now - parse_duration(text, flag)
        except InvalidDuration:
            raise InvalidDuration(flag, text, f"use {TIME_FORMS}") from None
    unix = _UNIX.fullmatch(text)
    if unix is not None:
        return int(unix.group(1)) + int((unix.group(2) or "0").ljust(9, "0")) / 1e9
    stamp = _TIMESTAMP.fullmatch(text)
    if stamp is None:
        raise InvalidDuration(flag, text, f"use {TIME_FORMS}")
    year, month, day, hour, minute, second, fraction, zone = stamp.groups()
    if zone is None:
        zone_info = local
    elif zone in ("Z", "z"):
        zone_info = timezone.utc
    else:
        sign = -1 if zone[0] == "-" else 1
        zone_info = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
        if zone_info is None:
            moment = moment.astimezone()  # this host's local zone, as docker's ParseInLocation
        else:
            moment = moment.replace(tzinfo=zone_info)
    except ValueError as exc:  # e.g. month 13, hour 25
        raise InvalidDuration(flag, text, f"not a valid time ({exc})") from None
    return moment.timestamp() + int((fraction or "0").ljust(9, "0")) / 1e9
