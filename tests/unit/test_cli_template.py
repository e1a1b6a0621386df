"""supervisor/cli/template.py: docker's --format templates, parsed and evaluated without eval."""

from __future__ import annotations

import pytest

from supervisor.cli.template import Template, TemplateError, split_table

ROW = {"ID": "abc", "Names": "web", "Labels": "a=1,b=2", "Label": lambda key: {"a": "1", "b": "2"}.get(key, "")}


def render(text: str, row: dict = ROW) -> str:
    return Template(text).render(row)


def test_fields_text_and_label_calls() -> None:
    assert render("{{.ID}}: {{.Names}}") == "abc: web"
    assert render('{{.Label "b"}}|{{.Label "none"}}|{{.Label `a`}}') == "2||1"
    assert render("no actions") == "no actions"


def test_functions_pipelines_and_groups() -> None:
    assert render("{{json .}}") == '{"ID":"abc","Labels":"a=1,b=2","Names":"web"}'
    assert render("{{json .Names}}") == '"web"'
    assert render("{{upper .Names}} {{.Names | upper}} {{lower (upper .Names)}}") == "WEB WEB web"
    assert render('{{join (split .Labels ",") " "}}') == "a=1 b=2"
    assert render("{{truncate .Names 2}}|{{pad .ID 1 2}}|{{title .Names}}") == "we| abc  |Web"


def test_trim_markers() -> None:
    assert render("a   {{- .ID -}}   b") == "aabcb"
    assert render("{{.ID}} {{- .Names}}") == "abcweb"


def test_go_prints_maps_and_lists() -> None:
    assert render("{{.M}} {{.L}}", {"M": {"b": "2", "a": "1"}, "L": ["x", "y"]}) == "map[a:1 b:2] [x y]"


@pytest.mark.parametrize("text, message", [
    ("{{.ID", "unclosed action at character 1"),
    ("{{}}", "empty action"),
    ("{{if .ID}}x{{end}}", "'if' is not supported"),
    ("{{range .}}{{end}}", "'range' is not supported"),
    ("{{exec .ID}}", "'exec' is not a function"),
    ("{{.ID $x}}", "unexpected '$'"),
    ("{{(upper .ID}}", "unclosed '('"),
    ("{{| upper}}", "a '|' with nothing before it"),
])
def test_what_it_does_not_take_is_refused_saying_what(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as refused:
        Template(text)
    assert message in str(refused.value)


def test_errors_at_evaluation_name_the_field() -> None:
    with pytest.raises(TemplateError, match=r"no field \.Nope in the row"):
        render("{{.Nope}}")
    with pytest.raises(TemplateError, match=r"\.Names is not a function"):
        render('{{.Names "x"}}')
    with pytest.raises(TemplateError, match="truncate: wrong arguments"):
        render("{{truncate .Names}}")


def test_check_names_unknown_fields_and_lists_the_known() -> None:
    template = Template("{{.ID}} {{upper (lower .Nope)}} {{.Names.Deep}}")
    assert template.fields() == {"ID", "Nope", "Names"}
    with pytest.raises(TemplateError, match=r"no field \.Nope: the fields are \.ID, \.Label, \.Labels, \.Names"):
        template.check(ROW)


def test_nothing_is_evaluated_as_python() -> None:
    assert render('{{"__import__(\'os\').system(\'false\')"}}') == "__import__('os').system('false')"
    with pytest.raises(TemplateError):
        Template("{{__class__}}")
    with pytest.raises(TemplateError, match=r"no field \.__class__"):
        render("{{.__class__}}")


def test_split_table_turns_escapes_and_the_table_word() -> None:
    assert split_table("table {{.ID}}\\t{{.Names}}") == (True, "{{.ID}}\t{{.Names}}")
    assert split_table("  {{.ID}}\\n") == (False, "{{.ID}}\n")
