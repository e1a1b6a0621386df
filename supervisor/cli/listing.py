"""The rows of ``ps``, ``images`` and ``volume ls`` as docker's ``--format`` sees them, and
their printing: the default table, ``--format table``, ``--format json`` (one JSON object
a line, docker 23's) or a template (supervisor/cli/template.py).

Each kind has its fields (docker's names: ``.ID``, ``.Names``, ...), each with the header a
``table`` template prints for it. Every field is text, as docker's are (``.Labels`` is
``k=v,k2=v2``); ``.Label "k"`` is one label's value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timezone
from typing import Any

from .common import UsageError
from .output import human_ago, human_size, human_status, parse_rfc3339, table
from .template import Template, TemplateError, split_table

#: field -> header, per kind (docker's).
CONTAINER_HEADERS = {
    "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Names": "NAMES",
    "Labels": "LABELS", "Label": "LABEL", "Mounts": "MOUNTS", "Networks": "NETWORKS",
}
IMAGE_HEADERS = {
    "ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST", "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT", "Size": "SIZE", "Containers": "CONTAINERS", "Labels": "LABELS", "Label": "LABEL",
}
VOLUME_HEADERS = {
    "Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT", "Labels": "LABELS",
    "Label": "LABEL", "Links": "LINKS", "Size": "SIZE",
}
#: The columns of each kind's default table (``--format table`` too).
CONTAINER_TABLE = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
IMAGE_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
VOLUME_TABLE = "table {{.Driver}}\t{{.Name}}"


def docker_time(value: str) -> str:
    """docker's ``CreatedAt``: ``2024-05-01 10:00:00 +0000 UTC``."""
    moment = parse_rfc3339(value)
    if moment is None:
        return ""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _with_labels(fields: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    fields["Labels"] = labels_text(labels)
    fields["Label"] = lambda key: labels.get(key, "")
    return fields


def container_row(row: dict[str, Any], no_trunc: bool = False) -> dict[str, Any]:
    """A ``container.list`` row as docker's container format fields."""
    command = row["command"] if no_trunc or len(row["command"]) <= 20 else row["command"][:19] + "…"
    state = "restarting" if row.get("restarting") else row["status"]
    return _with_labels({
        "ID": row["id"] if no_trunc else row["id"][:12],
        "Image": row["image"],
        "Command": json.dumps(command, ensure_ascii=False),
        "CreatedAt": docker_time(row["created"]),
        "RunningFor": human_ago(row["created"]),
        "Ports": row.get("ports", ""),
        "State": state,
        "Status": human_status(row),
        "Names": row["name"],
        "Mounts": ",".join(row.get("mounts") or []),
        "Networks": ",".join(row.get("networks") or []),
    }, row.get("labels") or {})


def image_rows(image: dict[str, Any], no_trunc: bool = False) -> list[dict[str, Any]]:
    """An ``image.list`` entry as docker's image format fields: one row per tag (one
    ``<none>`` row for a dangling image)."""
    rows = []
    for tag in image["repo_tags"] or ["<none>:<none>"]:
        repository, _, name_tag = tag.rpartition(":")
        rows.append(_with_labels({
            "ID": f"sha256:{image['id']}" if no_trunc else image["id"][:12],
            "Repository": repository,
            "Tag": name_tag,
            "Digest": "<none>",
            "CreatedSince": human_ago(image["created"]),
            "CreatedAt": docker_time(image["created"]),
            "Size": human_size(image["size"]),
            "Containers": "N/A",
        }, image.get("labels") or {}))
    return rows


def volume_row(volume: dict[str, Any]) -> dict[str, Any]:
    """A volume inspect document as docker's volume format fields."""
    return _with_labels({
        "Name": volume["Name"], "Driver": volume["Driver"], "Scope": volume.get("Scope", "local"),
        "Mountpoint": volume["Mountpoint"], "Links": "N/A", "Size": "N/A",
    }, volume.get("Labels") or {})


def render(format_text: str, rows: list[dict[str, Any]], headers: dict[str, str], default_table: str) -> str:
    """The rows as ``--format`` asks (empty: the default table), without a final newline.

    Raises:
        UsageError: a template that does not parse, or names a field the kind lacks.
    """
    if format_text in ("", "table"):
        format_text = default_table
    if format_text == "json":
        return "\n".join(_json_line(row) for row in rows)
    is_table, body = split_table(format_text)
    try:
        template = Template(body)
        template.check(headers)
        lines = [template.render(row) for row in rows]
        if not is_table:
            return "\n".join(lines)
        header_row: dict[str, Any] = dict(headers)
        header_row["Label"] = lambda key: headers["Label"]
        heading = template.render(header_row)
    except TemplateError as error:
        raise UsageError(f"invalid --format {format_text!r}: {error}") from None
    if "\t" not in body:
        return "\n".join([heading, *lines])
    headings = heading.split("\t")
    cells = [(line.split("\t") + [""] * len(headings))[:len(headings)] for line in lines]
    return table(headings, cells)


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps({key: value for key, value in row.items() if not callable(value)}, ensure_ascii=False,
                      separators=(",", ":"), sort_keys=True)


def output(format_text: str, rows: list[dict[str, Any]], headers: dict[str, str], default_table: str,
           write: Callable[[str], Any] = print) -> None:
    """Print :func:`render`'s text (nothing at all for no rows and no header)."""
    text = render(format_text, rows, headers, default_table)
    if text:
        write(text)

