"""dockyard's replies in docker's JSON shapes, pure: ``ps`` rows, status text, filters,
events, stats. Every function takes values and returns values (tests/unit/test_api_views.py).
"""

from __future__ import annotations

import shlex
import time
from datetime import datetime, timezone
from typing import Any

from workers.api.http import ApiError

ZERO_TIME = "0001-01-01T00:00:00Z"


def unix_time(rfc3339: str) -> float:
    """``2026-12-06T07:51:06.123456789Z`` to Unix seconds (0 for docker's zero time)."""
    if not rfc3339 or rfc3339.startswith("0001-"):
        return 0.0
    text = rfc3339.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Python takes at most microseconds
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text).timestamp()


def human_duration(seconds: float) -> str:
    """docker's units.HumanDuration: ``Less than a second``, ``5 seconds``, ``About a minute``..."""
    if seconds < 1:
        return "Less than a second"
    if seconds < 2:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def status_text(row: dict[str, Any], now: float | None = None) -> str:
    """``ps``'s STATUS column: ``Up 5 seconds``, ``Exited (0) 3 minutes ago``, ``Created``."""
    now = time.time() if now is None else now
    state = row["status"]
    if row.get("restarting"):
        return f"Restarting ({row['exit_code']}) {human_duration(now - unix_time(row['finished_at']))} ago"
    if state == "running":
        health = f" ({row['health']})" if row.get("health") else ""
        return f"Up {human_duration(now - unix_time(row['started_at']))}{health}"
    if state == "paused":
        return f"Up {human_duration(now - unix_time(row['started_at']))} (Paused)"
    if state == "exited":
        if row["started_at"] == ZERO_TIME and row["finished_at"] == ZERO_TIME:
            return "Created"
        return f"Exited ({row['exit_code']}) {human_duration(now - unix_time(row['finished_at']))} ago"
    if state == "removing":
        return "Removal In Progress"
    if state == "dead":
        return "Dead"
    return "Created"


def docker_state(row: dict[str, Any]) -> str:
    return "restarting" if row.get("restarting") else row["status"]


def ports(column: str) -> list[dict[str, Any]]:
    """``127.0.0.1:8080->80/tcp, ...`` (the ps row's) to docker's Ports list."""
    found = []
    for entry in filter(None, (part.strip() for part in column.split(","))):
        host, _, container = entry.partition("->")
        port, _, kind = container.partition("/")
        host_ip, _, host_port = host.rpartition(":")
        found.append({"IP": host_ip or "0.0.0.0", "PrivatePort": int(port), "PublicPort": int(host_port),
                      "Type": kind or "tcp"})
    return found


def container_row(row: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """A ``container.list`` row as one of ``GET /containers/json``'s."""
    network = row.get("network") or "bridge"
    return {
        "Id": row["id"], "Names": [f"/{row['name']}"], "Image": row["image"],
        "ImageID": f"sha256:{row['image_id']}" if row.get("image_id") else "",
        "Command": row["command"], "Created": int(unix_time(row["created"])),
        "Ports": ports(row.get("ports") or ""), "Labels": row.get("labels") or {},
        "State": docker_state(row), "Status": status_text(row, now),
        "HostConfig": {"NetworkMode": "default" if network == "bridge" else network},
        "NetworkSettings": {"Networks": {}}, "Mounts": [],
    }


def parse_filters(value: Any) -> dict[str, list[str]]:
    """docker's ``filters`` (``{"label": ["a=b"]}``, or the old ``{"label": {"a=b": true}}``)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, "invalid filters: must be a JSON object")
    filters: dict[str, list[str]] = {}
    for key, values in value.items():
        if isinstance(values, dict):
            values = [item for item, on in values.items() if on]
        elif isinstance(values, str):
            values = [values]
        if not isinstance(values, list):
            raise ApiError(400, f"invalid filter {key!r}")
        filters[key] = [str(item) for item in values]
    return filters


def labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    """Every ``key`` or ``key=value`` of ``wanted`` holds (docker's label filter)."""
    for entry in wanted:
        key, eq, value = entry.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


CONTAINER_FILTERS = ("id", "name", "label", "status", "ancestor", "exited", "before", "since", "health",
                     "network", "volume", "is-task", "publish", "expose")


def container_matches(row: dict[str, Any], filters: dict[str, list[str]], image_ids: dict[str, str]) -> bool:
    """Whether a docker-shaped ``ps`` row passes ``filters``. ``image_ids``: reference -> id,
    for ``ancestor``."""
    for key, values in filters.items():
        if key not in CONTAINER_FILTERS:
            raise ApiError(400, f"invalid filter '{key}'")
        if not values:
            continue
        if key == "id" and not any(row["Id"].startswith(value) for value in values):
            return False
        if key == "name" and not any(value.lstrip("/") in row["Names"][0].lstrip("/") for value in values):
            return False
        if key == "label" and not labels_match(row["Labels"], values):
            return False
        if key == "status" and row["State"] not in values:
            return False
        if key == "exited" and not (row["State"] == "exited" and any(
                row["Status"].startswith(f"Exited ({value})") for value in values)):
            return False
        if key == "ancestor":
            wanted = {image_ids.get(value, value) for value in values}
            image_id = row["ImageID"].removeprefix("sha256:")
            if not any(image_id.startswith(item.removeprefix("sha256:")) or row["Image"] == item for item in wanted):
                return False
        if key == "health" and not any(f"({value})" in row["Status"] for value in values):
            return False
    return True


# --- events ------------------------------------------------------------------------------------

def docker_event(data: dict[str, Any]) -> dict[str, Any]:
    """A bus lifecycle event's data (docs/events.md) as docker's event JSON."""
    kind = data.get("type", "")
    action = data.get("action", "")
    actor_id = data.get("id", "")
    attributes = {str(key): str(value) for key, value in (data.get("attributes") or {}).items()}
    if kind == "container" and action in ("exec_create", "exec_start") and "command" in attributes:
        action = f"{action}: {attributes['command']}"
    if kind == "container" and action == "health_status" and "health_status" in attributes:
        action = f"health_status: {attributes['health_status']}"
    when = float(data.get("time") or time.time())
    event = {"Type": kind, "Action": action, "Actor": {"ID": actor_id, "Attributes": attributes},
             "scope": "local", "time": int(when),
             "timeNano": int(when) * 1_000_000_000 + min(round((when - int(when)) * 1e9), 999_999_999)}
    if kind == "container":  # the fields before API 1.22, still sent by docker
        event.update({"status": action, "id": actor_id, "from": attributes.get("image", "")})
    return event


EVENT_FILTERS = ("type", "event", "container", "image", "label", "volume", "network", "daemon", "scope", "plugin",
                 "node", "service", "secret", "config")


def event_matches(event: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if key not in EVENT_FILTERS:
            raise ApiError(400, f"invalid filter '{key}'")
        if not values:
            continue
        actor = event["Actor"]
        if key == "type" and event["Type"] not in values:
            return False
        if key == "event" and not any(event["Action"] == value or event["Action"].startswith(value + ":")
                                      for value in values):
            return False
        if key == "container" and (event["Type"] != "container" or not any(
                actor["ID"].startswith(value) or actor["Attributes"].get("name") == value for value in values)):
            return False
        if key == "image" and not any(actor["Attributes"].get("image") == value or actor["ID"] == value
                                      or actor["Attributes"].get("name") == value for value in values):
            return False
        if key == "volume" and (event["Type"] != "volume" or actor["ID"] not in values):
            return False
        if key == "label" and not labels_match(actor["Attributes"], values):
            return False
        if key in ("network", "plugin", "node", "service", "secret", "config"):
            return False
    return True


def parse_time(value: str | None, now: float | None = None) -> float | None:
    """``since``/``until``: Unix seconds (``1700000000.5``), RFC 3339, or a Go duration ago."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return unix_time(value)
    except ValueError:
        pass
    from supervisor.durations import InvalidDuration, parse_duration

    try:
        return (time.time() if now is None else now) - parse_duration(value, "since")
    except InvalidDuration:
        raise ApiError(400, f"invalid time {value!r}: use Unix seconds, RFC 3339 or a duration") from None


def rfc3339(seconds: float) -> str:
    stamp = datetime.fromtimestamp(seconds, timezone.utc)
    whole = int(seconds)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{min(round((seconds - whole) * 1e9), 999_999_999):09d}Z"


def command_text(argv: list[str]) -> str:
    return shlex.join(argv)
