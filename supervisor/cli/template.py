"""docker's ``--format`` templates, the small part of Go's text/template that people write:
parsed into a tree and evaluated against a map of fields, never with ``eval``.

What it takes (anything else is refused with a :class:`TemplateError` that says what)::

    {{.ID}}  {{.Names}}              a field of the row
    {{.Label "com.example.team"}}    a field that takes arguments (a label's value)
    {{json .}}  {{json .Labels}}     a function applied to arguments: json, upper, lower,
    {{upper .Names}}                 title, join, split, truncate, pad, println
    {{.Names | upper}}               a pipeline: the value goes in as the last argument
    {{"text"}} {{`raw`}} {{- ... -}} string literals; trim markers eat the whitespace beside

``\\t`` and ``\\n`` written as two characters (as a shell passes them) become a tab and a
newline, and a leading ``table`` asks for a header line and aligned columns (docker's rules;
:func:`split_table`). ``{{if}}``, ``{{range}}``, variables and comparisons are not taken.

A row is a map of field name to value: a string, a map (``json`` shows it), or a function
that takes the call's arguments (``Label``). The same template evaluated against the row of
headers gives the table's header line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any


class TemplateError(ValueError):
    """A template that cannot be parsed or evaluated; the message says where and why."""


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[()|])
""", re.VERBOSE)
_KEYWORDS = ("if", "else", "end", "range", "with", "define", "template", "block", "nil", "and", "or", "not",
             "eq", "ne", "lt", "le", "gt", "ge", "index", "len", "printf", "print", "slice", "call")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)  # Go sorts a map's keys


def _truncate(value: Any, length: Any) -> str:
    return str(value)[:int(length)]


def _pad(value: Any, left: Any, right: Any) -> str:
    return " " * int(left) + str(value) + " " * int(right)


#: The functions a template may call (docker's template package, without printf & co).
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": _json,
    "upper": lambda value: str(value).upper(),
    "lower": lambda value: str(value).lower(),
    "title": lambda value: str(value).title(),
    "join": lambda values, separator: str(separator).join(str(value) for value in values),
    "split": lambda value, separator: str(value).split(str(separator)),
    "truncate": _truncate,
    "pad": _pad,
    "println": lambda *values: " ".join(str(value) for value in values) + "\n",
}


class _Term:
    """One operand: ``kind`` is ``dot``, ``field`` (``value``: the names), ``literal``,
    ``name`` (a function) or ``group`` (``value``: a pipeline)."""

    __slots__ = ("kind", "value")

    def __init__(self, kind: str, value: Any):
        self.kind = kind
        self.value = value


class Template:
    """A parsed template: text pieces and actions (pipelines: lists of commands, each a list of terms)."""

    def __init__(self, text: str):
        self.source = text
        self.pieces: list[str | list[list[_Term]]] = _parse(text)

    def fields(self) -> set[str]:
        """Every top-level field name the template reads (``.Labels.x``: ``Labels``)."""
        found: set[str] = set()

        def visit(pipeline: list[list[_Term]]) -> None:
            for command in pipeline:
                for term in command:
                    if term.kind == "field":
                        found.add(term.value[0])
                    elif term.kind == "group":
                        visit(term.value)

        for piece in self.pieces:
            if not isinstance(piece, str):
                visit(piece)
        return found

    def check(self, known: set[str] | frozenset[str] | Mapping[str, Any]) -> None:
        """Raises TemplateError naming a field not in ``known`` (and listing them)."""
        unknown = sorted(self.fields() - set(known))
        if unknown:
            raise TemplateError(f"no field {', '.join('.' + name for name in unknown)}: the fields are "
                                f"{', '.join('.' + name for name in sorted(known))}")

    def render(self, row: Mapping[str, Any]) -> str:
        out = []
        for piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
            else:
                value = _pipeline(piece, row)
                out.append(_text(value))
        return "".join(out)


def _text(value: Any) -> str:
    """A value as Go's template prints it (a map as ``map[k:v]``, a list as ``[a b]``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{key}:{_text(item)}" for key, item in sorted(value.items())) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_text(item) for item in value) + "]"
    return "" if value is None else str(value)


def _parse(text: str) -> list[Any]:
    pieces: list[Any] = []
    position = 0
    while True:
        start = text.find("{{", position)
        if start < 0:
            pieces.append(text[position:])
            break
        end = text.find("}}", start + 2)
        if end < 0:
            raise TemplateError(f"unclosed action at character {start + 1}: a '{{{{' without '}}}}'")
        inner = text[start + 2:end]
        before = text[position:start]
        if inner.startswith("- ") or inner == "-":
            before = before.rstrip()
            inner = inner[1:]
        trim_after = inner.endswith(" -") or inner == "-"
        if trim_after:
            inner = inner[:-1]
        pieces.append(before)
        pieces.append(_parse_action(inner, start + 1))
        position = end + 2
        if trim_after:
            rest = text[position:]
            position += len(rest) - len(rest.lstrip())
    return [piece for piece in pieces if piece != ""]


def _tokens(inner: str, where: int) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(inner):
        match = _TOKEN.match(inner, position)
        if match is None:
            raise TemplateError(f"action at character {where}: unexpected {inner[position]!r} in {{{{{inner}}}}}")
        position = match.end()
        if match.lastgroup != "space":
            tokens.append((match.lastgroup, match.group()))
    return tokens


def _parse_action(inner: str, where: int) -> list[list[_Term]]:
    tokens = _tokens(inner, where)
    if not tokens:
        raise TemplateError(f"empty action at character {where}")
    pipeline, rest = _parse_pipeline(tokens, inner, where)
    if rest:
        raise TemplateError(f"action at character {where}: unexpected {rest[0][1]!r} in {{{{{inner}}}}}")
    return pipeline


def _parse_pipeline(tokens: list[tuple[str, str]], inner: str, where: int) -> tuple[list[list[_Term]], list]:
    pipeline: list[list[_Term]] = []
    command: list[_Term] = []
    while tokens:
        kind, text = tokens[0]
        if text == ")":
            break
        tokens = tokens[1:]
        if text == "|":
            if not command:
                raise TemplateError(f"action at character {where}: a '|' with nothing before it in {{{{{inner}}}}}")
            pipeline.append(command)
            command = []
        elif text == "(":
            group, tokens = _parse_pipeline(tokens, inner, where)
            if not tokens or tokens[0][1] != ")":
                raise TemplateError(f"action at character {where}: unclosed '(' in {{{{{inner}}}}}")
            tokens = tokens[1:]
            command.append(_Term("group", group))
        elif kind == "name":
            if text in _KEYWORDS or text not in FUNCTIONS:
                what = "is not supported" if text in _KEYWORDS else "is not a function"
                raise TemplateError(f"action at character {where}: {text!r} {what} (the functions: "
                                    f"{', '.join(FUNCTIONS)})")
            command.append(_Term("name", text))
        elif kind == "field":
            command.append(_Term("field", text[1:].split(".")))
        elif kind == "dot":
            command.append(_Term("dot", None))
        elif kind == "number":
            command.append(_Term("literal", int(text)))
        elif kind == "raw":
            command.append(_Term("literal", text[1:-1]))
        else:
            command.append(_Term("literal", json.loads(text)))
    if not command:
        raise TemplateError(f"action at character {where}: missing a value in {{{{{inner}}}}}")
    pipeline.append(command)
    return pipeline, tokens


def _pipeline(pipeline: list[list[_Term]], row: Mapping[str, Any]) -> Any:
    value: Any = None
    for index, command in enumerate(pipeline):
        extra = [value] if index else []
        value = _command(command, row, extra)
    return value


def _command(command: list[_Term], row: Mapping[str, Any], extra: list[Any]) -> Any:
    head, args = command[0], command[1:]
    values = [_term(term, row) for term in args] + extra
    if head.kind == "name":
        try:
            return FUNCTIONS[head.value](*values)
        except (TypeError, ValueError) as exc:
            raise TemplateError(f"{head.value}: wrong arguments ({exc})") from None
    value = _term(head, row, call_args=values)
    if values and not (head.kind == "field" and callable(_lookup(head.value, row))):
        raise TemplateError(f"{_shown(head)} is not a function: it takes no arguments")
    return value


def _shown(term: _Term) -> str:
    return "." + ".".join(term.value) if term.kind == "field" else "a value"


def _lookup(names: list[str], row: Mapping[str, Any]) -> Any:
    value: Any = row
    for depth, name in enumerate(names):
        if not isinstance(value, Mapping) or name not in value:
            where = "." + ".".join(names[:depth]) if depth else "the row"
            raise TemplateError(f"no field .{name} in {where}")
        value = value[name]
    return value


def _term(term: _Term, row: Mapping[str, Any], call_args: list[Any] | None = None) -> Any:
    if term.kind == "dot":
        return {key: value for key, value in row.items() if not callable(value)}
    if term.kind == "literal":
        return term.value
    if term.kind == "group":
        return _pipeline(term.value, row)
    if term.kind == "name":
        return FUNCTIONS[term.value]()
    value = _lookup(term.value, row)
    if callable(value):
        try:
            return value(*(call_args or []))
        except TypeError:
            raise TemplateError(f"{_shown(term)}: wrong number of arguments") from None
    return value


def split_table(text: str) -> tuple[bool, str]:
    """docker's preprocessing: (whether it asks for a table, the template with ``\\t`` and
    ``\\n`` turned into a tab and a newline, and the ``table`` word and outer spaces gone)."""
    is_table = text.startswith("table")
    body = text[len("table"):] if is_table else text
    body = body.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    return is_table, body
