"""How `dockyard events` prints an event: one line of text, the JSON envelope, or a Go
template over docker's event message (supervisor/cli/template.py)."""

from __future__ import annotations

import json
from typing import Any

from .common import UsageError
from .output import format_event


#: docker's event message: what ``--format`` templates read.
DOCKER_EVENT_FIELDS = frozenset({"Type", "Action", "Actor", "ID", "Status", "From", "Scope", "Time", "TimeNano"})


def docker_event(envelope: dict[str, Any]) -> dict[str, Any]:
    """An envelope as docker's event message (attributes as text, as docker's)."""
    data = envelope.get("data") or {}
    attributes = {key: (("true" if value else "false") if isinstance(value, bool) else str(value))
                  for key, value in (data.get("attributes") or {}).items()}
    moment = float(data.get("time") or envelope.get("ts") or 0)
    return {"Type": data.get("type", ""), "Action": data.get("action", ""),
            "Actor": {"ID": data.get("id", ""), "Attributes": attributes},
            "ID": data.get("id", ""), "Status": data.get("action", ""), "From": attributes.get("image", ""),
            "Scope": "local", "Time": int(moment), "TimeNano": round(moment * 1e6) * 1000}


def event_printer(form: str) -> Any:
    """The function that prints one envelope in ``form`` (text, json, or a template).

    Raises:
        UsageError: a template that cannot be parsed or reads a field docker's events lack.
    """
    if form == "json":
        return lambda envelope: print(json.dumps(envelope, default=repr), flush=True)
    if form == "text":
        return lambda envelope: print(format_event(envelope), flush=True)
    from .template import Template, TemplateError

    try:
        template = Template(form)
        template.check(DOCKER_EVENT_FIELDS)
    except TemplateError as error:
        raise UsageError(f"--format: {error}") from None
    return lambda envelope: print(template.render(docker_event(envelope)), flush=True)
