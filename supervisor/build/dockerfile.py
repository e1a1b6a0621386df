"""The Dockerfile parser: text in, a checked list of instructions out (sans-IO).

Theory of operation, as docker's classic builder reads a Dockerfile:

1. Parser directives (``# escape=``` , ``# syntax=...``, ``# check=...``) are read from the
   top until the first line that is not one; ``escape`` changes the escape character.
2. Comment lines (``#`` first on the line) are dropped, also inside a continuation; a line
   ending with the escape character continues on the next one.
3. Each logical line is ``KEYWORD [--flag=value ...] arguments``. RUN, CMD, ENTRYPOINT,
   SHELL, COPY, ADD and VOLUME take a JSON array (the exec form) or a string (the shell form).
4. Variables are *not* substituted here: :func:`expand` does it at build time with the
   build's environment, for the instructions docker substitutes (:data:`SUBSTITUTED`), and
   removes quotes as docker's shell lexer does.

Anything the parser does not support is a :class:`DockerfileError` naming the line; nothing
is skipped silently.

Errors::

    DockerfileError(ValueError)   a line that cannot be parsed, or an unsupported feature
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

INSTRUCTIONS = ("FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "CMD", "ENTRYPOINT",
                "EXPOSE", "LABEL", "VOLUME", "HEALTHCHECK", "STOPSIGNAL", "ONBUILD", "SHELL", "MAINTAINER")
#: Instructions whose arguments docker substitutes variables in (RUN, CMD and ENTRYPOINT are
#: left to the shell of the container).
SUBSTITUTED = frozenset({"ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER",
                         "VOLUME", "WORKDIR", "ARG", "ONBUILD", "HEALTHCHECK"})
#: The flags each instruction accepts; any other is an error.
FLAGS = {
    "FROM": frozenset({"platform"}),
    "COPY": frozenset({"from", "chown", "chmod"}),
    "ADD": frozenset({"chown", "chmod"}),
    "HEALTHCHECK": frozenset({"interval", "timeout", "start-period", "start-interval", "retries"}),
}
JSON_FORMS = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"})
#: The build arguments docker defines without an ARG line (the proxies).
PREDEFINED_ARGS = frozenset({"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
                             "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"})
DIRECTIVE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9_]*)[ \t]*=[ \t]*(.+?)[ \t]*\Z")
NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")
STAGE_NAME = re.compile(r"^[a-z][a-z0-9_.-]*\Z")


class DockerfileError(ValueError):
    """A Dockerfile line that cannot be parsed or uses an unsupported feature."""

    def __init__(self, line: int, reason: str):
        super().__init__(f"Dockerfile line {line}: {reason}" if line else f"Dockerfile: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Instruction:
    """One instruction.

    ``arguments`` holds the words as written (quotes kept, for :func:`expand`); for the exec
    form (``exec_form``) they are the JSON array's strings; for a RUN/CMD/ENTRYPOINT/HEALTHCHECK
    shell form a single string. ``pairs`` holds ENV/LABEL/ARG ``(key, raw value or None)``.
    ``original`` is the logical line as docker prints it in ``Step N/M : ...``.
    """

    line: int
    keyword: str
    original: str
    arguments: tuple[str, ...] = ()
    flags: tuple[tuple[str, str], ...] = ()
    exec_form: bool = False
    pairs: tuple[tuple[str, str | None], ...] = ()
    trigger: Instruction | None = None

    def flag(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.flags:
            if key == name:
                return value
        return default


@dataclass
class Stage:
    """One FROM and the instructions under it."""

    index: int
    base: str          # the image as written (may hold variables)
    name: str | None
    line: int
    platform: str | None = None
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    escape: str
    directives: dict[str, str]
    global_args: list[Instruction]
    stages: list[Stage]

    def stage(self, target: str) -> int:
        """The index of the stage named (or numbered) ``target``."""
        for stage in self.stages:
            if stage.name == target.lower() or str(stage.index) == target:
                return stage.index
        raise DockerfileError(0, f"target stage `{target}` could not be found")


def parse(text: str) -> Dockerfile:
    """Parse a Dockerfile's text (see the module docstring)."""
    lines = text.splitlines()
    escape, directives, first = read_directives(lines)
    global_args: list[Instruction] = []
    stages: list[Stage] = []
    for number, logical in logical_lines(lines, first, escape):
        instruction = parse_line(number, logical, escape)
        if instruction.keyword == "FROM":
            stages.append(from_stage(instruction, len(stages), stages))
        elif not stages:
            if instruction.keyword != "ARG":
                raise DockerfileError(number, f"{instruction.keyword} before the first FROM "
                                              "(only ARG may come before FROM)")
            global_args.append(instruction)
        else:
            stages[-1].instructions.append(instruction)
    if not stages:
        raise DockerfileError(0, "no FROM instruction: the file has no build stage")
    return Dockerfile(escape, directives, global_args, stages)


def read_directives(lines: list[str]) -> tuple[str, dict[str, str], int]:
    """Read the parser directives: ``(escape character, directives, first line after them)``."""
    directives: dict[str, str] = {}
    index = 0
    for index, raw in enumerate(lines):
        match = DIRECTIVE.match(raw.strip())
        if not match:
            break
        name, value = match.group(1).lower(), match.group(2)
        if name in directives:
            raise DockerfileError(index + 1, f"the parser directive `{name}` appears twice")
        directives[name] = value
    else:
        index = len(lines)
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise DockerfileError(1, f"invalid escape character `{escape}`: it must be \\ or `")
    return escape, directives, index


def logical_lines(lines: list[str], first: int, escape: str):
    """Yield ``(first line number, logical line)``, joining continuations and dropping comments."""
    pending: list[str] = []
    start = 0
    for index in range(first, len(lines)):
        raw = lines[index]
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue    # comments vanish, also inside a continuation
        if not stripped:
            continue    # docker allows (and warns about) empty continuation lines
        if not pending:
            start = index + 1
        body = raw.rstrip()
        if body.endswith(escape) and not body.endswith(escape * 2) or (
                body.endswith(escape) and escape_count(body, escape) % 2 == 1):
            pending.append(body[:-1])
            continue
        pending.append(body)
        yield start, "".join(pending).strip()
        pending = []
    if pending:
        joined = "".join(pending).strip()
        if joined:
            yield start, joined


def escape_count(body: str, escape: str) -> int:
    return len(body) - len(body.rstrip(escape))


def parse_line(number: int, logical: str, escape: str) -> Instruction:
    keyword, _, rest = logical.partition(" ")
    if "\t" in keyword:
        keyword, _, tail = keyword.partition("\t")
        rest = tail + " " + rest
    keyword = keyword.upper()
    rest = rest.strip()
    if keyword not in INSTRUCTIONS:
        raise DockerfileError(number, f"unknown instruction `{keyword}`")
    flags, rest = read_flags(number, keyword, rest)
    if rest.startswith("<<") and keyword in ("RUN", "COPY", "ADD"):
        raise DockerfileError(number, f"heredocs in {keyword} are not supported")
    original = logical
    make = {"number": number, "keyword": keyword, "original": original, "flags": flags}
    return PARSERS[keyword](rest, escape, **make)


def read_flags(number: int, keyword: str, rest: str) -> tuple[tuple[tuple[str, str], ...], str]:
    flags: list[tuple[str, str]] = []
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        rest = rest.strip()
        name, equals, value = word[2:].partition("=")
        if keyword == "RUN":
            raise DockerfileError(number, f"RUN --{name} is not supported (a BuildKit feature)")
        if name not in FLAGS.get(keyword, ()):
            raise DockerfileError(number, f"unknown flag `--{name}` for {keyword}")
        if not equals:
            raise DockerfileError(number, f"the flag `--{name}` of {keyword} needs a value (--{name}=...)")
        flags.append((name, value))
    return tuple(flags), rest


def instruction(number: int, keyword: str, original: str, flags, **fields) -> Instruction:
    return Instruction(line=number, keyword=keyword, original=original, flags=flags, **fields)


def json_array(rest: str) -> list[str] | None:
    """The exec form's strings, or None when ``rest`` is not a JSON array of strings (docker
    then takes the line in shell form)."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return value


def parse_command(rest: str, escape: str, *, number: int, keyword: str, **make) -> Instruction:
    """RUN, CMD, ENTRYPOINT: exec form or one shell string."""
    array = json_array(rest)
    if array is not None:
        return instruction(number, keyword, exec_form=True, arguments=tuple(array), **make)
    if not rest and keyword == "RUN":
        raise DockerfileError(number, "RUN needs a command")
    return instruction(number, keyword, arguments=(rest,) if rest else (), **make)


def parse_shell(rest: str, escape: str, *, number: int, keyword: str, **make) -> Instruction:
    array = json_array(rest)
    if not array:
        raise DockerfileError(number, "SHELL needs a JSON array of strings, as SHELL [\"/bin/sh\", \"-c\"]")
    return instruction(number, keyword, exec_form=True, arguments=tuple(array), **make)


def parse_files(rest: str, escape: str, *, number: int, keyword: str, **make) -> Instruction:
    """COPY and ADD: sources then a destination, JSON or words."""
    array = json_array(rest)
    words = array if array is not None else split_words(rest, escape)
    if len(words) < 2:
        raise DockerfileError(number, f"{keyword} needs at least one source and a destination")
    return instruction(number, keyword, exec_form=array is not None, arguments=tuple(words), **make)


def parse_words(rest: str, escape: str, *, number: int, keyword: str, **make) -> Instruction:
    """EXPOSE, VOLUME (or its JSON form), USER, WORKDIR, STOPSIGNAL, MAINTAINER."""
    array = json_array(rest) if keyword == "VOLUME" else None
    if array is not None:
        words = array
    elif keyword in ("WORKDIR", "MAINTAINER"):
        words = [rest] if rest else []
    else:
        words = split_words(rest, escape)
    if not words:
        raise DockerfileError(number, f"{keyword} needs an argument")
    if keyword in ("USER", "STOPSIGNAL") and len(words) != 1:
        raise DockerfileError(number, f"{keyword} takes exactly one argument")
    return instruction(number, keyword, exec_form=array is not None, arguments=tuple(words), **make)


def parse_pairs(rest: str, escape: str, *, number: int, keyword: str, **make) -> Instruction:
    """ENV, LABEL (``key=value ...`` or the legacy ``key value``) and ARG (``name[=default] ...``)."""
    words = split_words(rest, escape)
    if not words:
        raise DockerfileError(number, f"{keyword} needs at least one argument")
    pairs: list[tuple[str, str | None]] = []
    if keyword != "ARG" and "=" not in words[0]:
        if keyword == "LABEL" or len(words) < 2:
            raise DockerfileError(number, f"{keyword} needs key=value pairs")
        # legacy `ENV key the rest`: the value is everything after the first whitespace
        key = words[0]
        value = rest[len(key):].strip()
        pairs.append((key, value))
    else:
        for word in words:
            key, equals, value = word.partition("=")
            if not equals and keyword != "ARG":
                raise DockerfileError(number, f"{keyword} needs key=value pairs, not `{word}`")
            if keyword in ("ENV", "ARG") and not NAME.match(key):
                raise DockerfileError(number, f"{keyword}: invalid variable name `{key}`")
            if not key:
                raise DockerfileError(number, f"{keyword}: a key must not be empty")
            pairs.append((key, value if equals else None))
    return instruction(number, keyword, pairs=tuple(pairs), **make)


def parse_from(rest: str, escape: str, *, number: int, keyword: str, **make) -> Instruction:
    words = split_words(rest, escape)
    if len(words) == 3 and words[1].lower() == "as":
        name = words[2].lower()
        if not STAGE_NAME.match(name):
            raise DockerfileError(number, f"invalid stage name `{words[2]}`")
    elif len(words) != 1:
        raise DockerfileError(number, "FROM takes an image and an optional `AS name`")
    return instruction(number, keyword, arguments=tuple(words), **make)


def parse_healthcheck(rest: str, escape: str, *, number: int, keyword: str, **make) -> Instruction:
    kind, _, command = rest.partition(" ")
    if kind.upper() == "NONE":
        if command.strip() or make["flags"]:
            raise DockerfileError(number, "HEALTHCHECK NONE takes no arguments")
        return instruction(number, keyword, arguments=("NONE",), **make)
    if kind.upper() != "CMD":
        raise DockerfileError(number, "HEALTHCHECK needs NONE or CMD followed by a command")
    command = command.strip()
    if not command:
        raise DockerfileError(number, "HEALTHCHECK CMD needs a command")
    array = json_array(command)
    if array is not None:
        return instruction(number, keyword, exec_form=True, arguments=("CMD", *array), **make)
    return instruction(number, keyword, arguments=("CMD-SHELL", command), **make)


def parse_onbuild(rest: str, escape: str, *, number: int, keyword: str, **make) -> Instruction:
    if not rest:
        raise DockerfileError(number, "ONBUILD needs an instruction")
    trigger = parse_line(number, rest, escape)
    if trigger.keyword in ("ONBUILD", "FROM", "MAINTAINER"):
        raise DockerfileError(number, f"ONBUILD {trigger.keyword} is not allowed")
    return instruction(number, keyword, arguments=(rest,), trigger=trigger, **make)


PARSERS = {
    "FROM": parse_from, "RUN": parse_command, "CMD": parse_command, "ENTRYPOINT": parse_command,
    "SHELL": parse_shell, "COPY": parse_files, "ADD": parse_files, "ENV": parse_pairs,
    "LABEL": parse_pairs, "ARG": parse_pairs, "EXPOSE": parse_words, "VOLUME": parse_words,
    "USER": parse_words, "WORKDIR": parse_words, "STOPSIGNAL": parse_words,
    "MAINTAINER": parse_words, "HEALTHCHECK": parse_healthcheck, "ONBUILD": parse_onbuild,
}


def from_stage(instruction: Instruction, index: int, stages: list[Stage]) -> Stage:
    words = instruction.arguments
    name = words[2].lower() if len(words) == 3 else None
    if name and any(stage.name == name for stage in stages):
        raise DockerfileError(instruction.line, f"the stage name `{name}` is used twice")
    return Stage(index=index, base=words[0], name=name, line=instruction.line,
                 platform=instruction.flag("platform"))


def split_words(text: str, escape: str) -> list[str]:
    """Split on whitespace outside quotes, keeping quotes and escapes (docker's parseWords)."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    index = 0
    while index < len(text):
        char = text[index]
        if char == escape and index + 1 < len(text):
            current.append(text[index:index + 2])
            index += 2
            continue
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char.isspace():
            if current:
                words.append("".join(current))
                current = []
            index += 1
            continue
        current.append(char)
        index += 1
    if current:
        words.append("".join(current))
    return words


class Expansion:
    """Docker's shell lexer for one word: quotes removed, escapes applied, variables substituted."""

    def __init__(self, word: str, environment: dict[str, str], escape: str, line: int):
        self.text, self.environment, self.escape, self.line = word, environment, escape, line
        self.index = 0

    def peek(self) -> str:
        return self.text[self.index] if self.index < len(self.text) else ""

    def next(self) -> str:
        char = self.peek()
        self.index += 1
        return char

    def run(self, stop: str = "") -> str:
        out: list[str] = []
        while self.index < len(self.text):
            char = self.peek()
            if stop and char == stop:
                break
            self.index += 1
            if char == "'":
                end = self.text.find("'", self.index)
                if end < 0:
                    raise DockerfileError(self.line, f"unmatched single quote in `{self.text}`")
                out.append(self.text[self.index:end])
                self.index = end + 1
            elif char == '"':
                out.append(self.double_quoted())
            elif char == "$":
                out.append(self.variable())
            elif char == self.escape:
                out.append(self.next())
            else:
                out.append(char)
        return "".join(out)

    def double_quoted(self) -> str:
        out: list[str] = []
        while True:
            char = self.next()
            if not char:
                raise DockerfileError(self.line, f"unmatched double quote in `{self.text}`")
            if char == '"':
                return "".join(out)
            if char == "$":
                out.append(self.variable())
            elif char == self.escape and self.peek() in ('"', "$", self.escape) and self.peek():
                out.append(self.next())
            else:
                out.append(char)

    def variable(self) -> str:
        if self.peek() == "{":
            self.next()
            return self.braced()
        name = self.name()
        if not name:
            return "$"
        return self.environment.get(name, "")

    def name(self) -> str:
        start = self.index
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            self.index += 1
        return self.text[start:self.index]

    def braced(self) -> str:
        name = self.name()
        if not name:
            raise DockerfileError(self.line, f"bad substitution in `{self.text}`")
        if self.peek() == "}":
            self.next()
            return self.environment.get(name, "")
        operator = self.next()
        if operator == ":":
            operator += self.next()
        if operator not in (":-", "-", ":+", "+", ":?", "?"):
            raise DockerfileError(self.line, f"unsupported modifier `{operator}` in ${{{name}...}} "
                                             "(supported: :- - :+ + :? ?)")
        word = self.run(stop="}")
        if self.next() != "}":
            raise DockerfileError(self.line, f"missing }} in `{self.text}`")
        value = self.environment.get(name)
        is_set = value is not None and (not operator.startswith(":") or value != "")
        if operator.endswith("-"):
            return value if is_set else word
        if operator.endswith("+"):
            return word if is_set else ""
        if not is_set:
            raise DockerfileError(self.line, f"{name}: {word or 'is not set'}")
        return value


def expand(word: str, environment: dict[str, str], escape: str = "\\", line: int = 0) -> str:
    """One word as docker substitutes it: variables, quotes and escapes resolved."""
    return Expansion(word, environment, escape, line).run()


def expand_words(words, environment: dict[str, str], escape: str = "\\", line: int = 0) -> list[str]:
    return [expand(word, environment, escape, line) for word in words]
