"""The Dockerfile parser and docker's variable substitution (supervisor/build/dockerfile.py)."""

from __future__ import annotations

import pytest

from supervisor.build.dockerfile import DockerfileError, expand, parse


def only(text: str):
    parsed = parse(text)
    return parsed.stages[-1].instructions


def test_a_full_file_parses_into_stages_and_instructions():
    parsed = parse(
        "# syntax=docker/dockerfile:1\n"
        "ARG BASE=base\n"
        "FROM $BASE AS build\n"
        "RUN echo hi \\\n"
        "    # a comment inside the continuation vanishes\n"
        "    && echo there\n"
        "FROM ${BASE}\n"
        'COPY --from=build --chown=1:2 ["a b", "/dst/"]\n'
        'CMD ["sh", "-c", "echo"]\n'
        "ENTRYPOINT echo go\n"
    )
    assert parsed.directives == {"syntax": "docker/dockerfile:1"}
    assert [arg.pairs for arg in parsed.global_args] == [(("BASE", "base"),)]
    build, final = parsed.stages
    assert (build.name, build.base, final.name, final.base) == ("build", "$BASE", None, "${BASE}")
    run = build.instructions[0]
    assert run.arguments == ("echo hi     && echo there",) and not run.exec_form and run.line == 4
    copy, cmd, entrypoint = final.instructions
    assert copy.flags == (("from", "build"), ("chown", "1:2")) and copy.arguments == ("a b", "/dst/")
    assert copy.exec_form
    assert cmd.exec_form and cmd.arguments == ("sh", "-c", "echo")
    assert not entrypoint.exec_form and entrypoint.arguments == ("echo go",)
    assert parsed.stage("build") == 0 and parsed.stage("1") == 1


def test_the_escape_directive_changes_the_continuation_character():
    parsed = parse("# escape=`\nFROM base\nRUN dir c:\\ `\n  && echo\n")
    assert parsed.escape == "`"
    assert parsed.stages[0].instructions[0].arguments == ("dir c:\\   && echo",)


def test_a_directive_after_an_instruction_is_a_comment():
    parsed = parse("FROM base\n# escape=`\nRUN a \\\n b\n")
    assert parsed.escape == "\\" and parsed.stages[0].instructions[0].arguments == ("a  b",)


@pytest.mark.parametrize("line, pairs", [
    ("ENV A=1 B=\"two words\" C", None),
    ("ENV A=1 B=\"two words\"", (("A", "1"), ("B", '"two words"'))),
    ("ENV LEGACY the rest of it", (("LEGACY", "the rest of it"),)),
    ("LABEL a.b=c \"d e\"=f", (("a.b", "c"), ('"d e"', "f"))),
    ("ARG ONE TWO=2", (("ONE", None), ("TWO", "2"))),
])
def test_env_label_and_arg_pairs(line, pairs):
    if pairs is None:
        with pytest.raises(DockerfileError, match="line 2: ENV needs key=value pairs, not `C`"):
            only("FROM base\n" + line)
    else:
        assert only("FROM base\n" + line)[0].pairs == pairs


def test_every_instruction_of_the_issue_parses():
    text = ("FROM base\nRUN true\nCOPY a /b\nADD --chmod=644 t.tar /\nENV A=1\nARG B\nWORKDIR /w\n"
            "USER 1:1\nCMD x\nENTRYPOINT [\"y\"]\nEXPOSE 80/tcp 53/udp\nLABEL k=v\nVOLUME [\"/v\"]\n"
            "HEALTHCHECK --interval=5s --retries=2 CMD [\"true\"]\nSTOPSIGNAL SIGTERM\n"
            "ONBUILD RUN echo later\nSHELL [\"/bin/bash\", \"-c\"]\n")
    instructions = only(text)
    assert [i.keyword for i in instructions] == [
        "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "CMD", "ENTRYPOINT", "EXPOSE", "LABEL",
        "VOLUME", "HEALTHCHECK", "STOPSIGNAL", "ONBUILD", "SHELL"]
    health = instructions[12]
    assert health.arguments == ("CMD", "true") and health.flag("interval") == "5s"
    assert instructions[14].trigger.keyword == "RUN"
    assert instructions[9].arguments == ("80/tcp", "53/udp")


@pytest.mark.parametrize("text, message", [
    ("RUN true", "line 1: RUN before the first FROM"),
    ("FROM base\nFROBNICATE x", "line 2: unknown instruction `FROBNICATE`"),
    ("FROM base\nRUN --mount=type=cache true", "line 2: RUN --mount is not supported"),
    ("FROM base\nCOPY --link a b", "line 2: unknown flag `--link` for COPY"),
    ("FROM base\nCOPY a", "line 2: COPY needs at least one source and a destination"),
    ("FROM base\nRUN <<EOF\nx\nEOF", "line 2: heredocs in RUN are not supported"),
    ("FROM base\nSHELL sh -c", "line 2: SHELL needs a JSON array"),
    ("FROM base\nONBUILD FROM x", "line 2: ONBUILD FROM is not allowed"),
    ("FROM a AS x\nFROM b AS x", "line 2: the stage name `x` is used twice"),
    ("# escape=x\nFROM a", "invalid escape character"),
    ("", "no FROM instruction"),
    ("FROM a b c d", "line 1: FROM takes an image"),
    ("FROM base\nUSER a b", "line 2: USER takes exactly one argument"),
])
def test_unsupported_or_bad_syntax_names_the_line(text, message):
    with pytest.raises(DockerfileError, match=message.replace("[", r"\[")):
        parse(text)


def test_shell_form_when_json_is_invalid():
    assert only("FROM base\nCMD [not json]")[0].arguments == ("[not json]",)


@pytest.mark.parametrize("word, expected", [
    ("$A", "a"), ("${A}", "a"), ("x${A}y", "xay"), ("$UNSET", ""),
    ("${UNSET:-def}", "def"), ("${EMPTY:-def}", "def"), ("${EMPTY-def}", ""),
    ("${A:-def}", "a"), ("${A:+alt}", "alt"), ("${UNSET:+alt}", ""), ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"), ("'$A'", "$A"), ('"$A b"', "a b"), ("\\$A", "$A"),
    ('"\\$A"', "$A"), ('"a\\b"', "a\\b"), ("${UNSET:-${A}}", "a"), ("$", "$"), ("a\\ b", "a b"),
])
def test_substitution_as_docker(word, expected):
    assert expand(word, {"A": "a", "EMPTY": ""}) == expected


def test_substitution_errors_name_the_line():
    with pytest.raises(DockerfileError, match="line 3: X: needed"):
        expand("${X:?needed}", {}, line=3)
    with pytest.raises(DockerfileError, match="line 4: unsupported modifier"):
        expand("${X#pre}", {}, line=4)
    with pytest.raises(DockerfileError, match="unmatched double quote"):
        expand('"abc', {})
