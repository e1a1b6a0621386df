"""`dockyard events --format`: docker's event message and its templates (supervisor/cli/eventformat.py)."""

from __future__ import annotations

import json

import pytest

from supervisor.cli.common import UsageError
from supervisor.cli.eventformat import docker_event, event_printer

DIE = {"v": 2, "topic": "container.abc.die", "seq": 7, "ts": 1764300000.25, "source": "dockyard",
       "data": {"type": "container", "action": "die", "id": "abc", "time": 1764300000.25,
                "attributes": {"name": "web", "image": "base", "exitCode": 3, "read/write": True}}}


def test_an_envelope_as_dockers_event_message() -> None:
    assert docker_event(DIE) == {
        "Type": "container", "Action": "die", "ID": "abc", "Status": "die", "From": "base", "Scope": "local",
        "Actor": {"ID": "abc", "Attributes": {"name": "web", "image": "base", "exitCode": "3", "read/write": "true"}},
        "Time": 1764300000, "TimeNano": 1764300000250000000}


def test_templates_render_dockers_fields(capsys: pytest.CaptureFixture[str]) -> None:
    event_printer("{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}")(DIE)
    event_printer("{{json .}}")(DIE)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "container die web 3"
    assert json.loads(lines[1])["Actor"]["ID"] == "abc"


@pytest.mark.parametrize("form, message", [("{{.Colour}}", "no field .Colour"), ("{{if .Type}}x{{end}}", "--format")])
def test_a_bad_template_is_a_usage_error_naming_it(form: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        event_printer(form)
