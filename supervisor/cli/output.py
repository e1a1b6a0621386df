"""How the CLI prints: docker's relative times, sizes and statuses, tables, event lines,
timestamped log lines and the stats table. Pure functions of their arguments (and the clock)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any


def parse_rfc3339(value: str) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def human_ago(value: str) -> str:
    moment = parse_rfc3339(value)
    if moment is None:
        return ""
    seconds = max(0.0, (datetime.now(timezone.utc) - moment).total_seconds())
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    if seconds < 1:
        return "Less than a second ago"
    return f"{int(seconds)} second{'s' if seconds >= 2 else ''} ago"


def human_duration(value: str) -> str:
    return human_ago(value).removesuffix(" ago") or "Less than a second"


def human_status(row: dict[str, Any]) -> str:
    status = row["status"]
    if status == "running":
        health = row.get("health")
        suffix = {"": "", "starting": " (health: starting)"}.get(health, f" ({health})")
        return f"Up {human_duration(row['started_at'])}{suffix}"
    if status == "paused":  # docker's words
        return f"Up {human_duration(row['started_at'])} (Paused)"
    if row.get("restarting"):
        return f"Restarting ({row['exit_code']}) {human_ago(row['finished_at'])}".rstrip()
    if status == "exited":
        return f"Exited ({row['exit_code']}) {human_ago(row['finished_at'])}".rstrip()
    return status.capitalize()


def human_size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.3g}{unit}"
        size /= 1000
    return f"{size:.3g}TB"


def human_binary_size(size: float) -> str:
    """docker stats' memory figures: 1.5MiB, 64MiB, 1.94GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.4g}{unit}"
        size /= 1024
    return f"{size:.4g}TiB"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["   ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [headers, *rows]]
    return "\n".join(lines)


def _attribute(value: Any) -> str:
    """An attribute as docker prints it: booleans as true/false, everything else as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def format_event(envelope: dict[str, Any]) -> str:
    data = envelope.get("data") or {}
    moment = datetime.fromtimestamp(envelope.get("ts", 0), timezone.utc)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    attributes = data.get("attributes") or {}
    attrs = ", ".join(f"{k}={_attribute(v)}" for k, v in sorted(attributes.items()))
    actor = data.get("id") or ""
    line = f"{stamp} {data.get('type', '?')} {data.get('action', '?')}"
    if actor:
        line += f" {actor}"
    return f"{line} ({attrs})" if attrs else line


def timestamped(data: bytes, ts: float, at_line_start: bool) -> tuple[bytes, bool]:
    """``data`` with each line that starts in it prefixed by ``ts`` (docker's RFC 3339 form);
    returns it and whether the next data starts a line."""
    if not data:
        return data, at_line_start
    stamp = (datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z ").encode()
    lines = data.split(b"\n")
    out = []
    for index, line in enumerate(lines):
        last = index == len(lines) - 1
        if last and not line:
            break
        if at_line_start or index > 0:
            out.append(stamp)
        out.append(line if last else line + b"\n")
    return b"".join(out), data.endswith(b"\n")


STATS_HEADERS = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS", "BLOCK I/O"]


def stats_row(row: dict[str, Any]) -> list[str]:
    return [
        row["id"][:12],
        row["name"],
        f"{row['cpu_percent']:.2f}%",
        f"{human_binary_size(row['memory_usage'])} / {human_binary_size(row['memory_limit'])}",
        f"{row['memory_percent']:.2f}%",
        str(row["pids"]),
        f"{human_size(row['block_read_bytes'])} / {human_size(row['block_write_bytes'])}",
    ]


def show_stats(rows: list[dict[str, Any]], as_json: bool, clear: bool = False) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row), flush=True)
        return
    text = table(STATS_HEADERS, [stats_row(row) for row in sorted(rows, key=lambda r: r["name"])])
    print(("\x1b[2J\x1b[H" if clear else "") + text, flush=True)
