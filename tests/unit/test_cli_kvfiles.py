"""supervisor/cli/kvfiles.py: docker's --env-file and --label-file format."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.cli.common import UsageError
from supervisor.cli.kvfiles import label_entries, read_entries
from supervisor.cli.specs import env_entries


def write(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "file"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def test_comments_blank_lines_spaces_and_values_kept_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeff# comment\n\n   # indented comment\n  A=1\nB= two  \nC=\"q\"\nD=a=b\r\nE=\n")
    assert read_entries(path, "--env-file", from_environment=False) == \
        ["A=1", "B= two  ", 'C="q"', "D=a=b", "E="]


def test_a_key_alone_takes_the_environment_in_an_env_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SET_HERE", "value")
    monkeypatch.delenv("NOT_SET", raising=False)
    path = write(tmp_path, "SET_HERE\nNOT_SET\n")
    assert read_entries(path, "--env-file", from_environment=True) == ["SET_HERE=value"]
    assert read_entries(path, "--label-file", from_environment=False) == ["SET_HERE=", "NOT_SET="]


def test_bad_lines_are_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "A=1\nB C=2\n")
    with pytest.raises(UsageError, match=f"invalid --env-file {path}: line 2: variable 'B C' contains whitespaces"):
        read_entries(path, "--env-file", True)
    path = write(tmp_path, "=value\n")
    with pytest.raises(UsageError, match="line 1: no variable name on line '=value'"):
        read_entries(path, "--label-file", False)
    path = write(tmp_path, b"A=\xff\n")
    with pytest.raises(UsageError, match="line 1 is not UTF-8"):
        read_entries(path, "--env-file", True)
    with pytest.raises(UsageError, match="invalid --label-file /no/such: No such file or directory"):
        read_entries("/no/such", "--label-file", False)


def test_flags_come_after_the_files(tmp_path: Path) -> None:
    path = write(tmp_path, "a=file\nb=file\n")
    assert label_entries([path], ["b=flag", "c"]) == ["a=file", "b=file", "b=flag", "c="]
    with pytest.raises(UsageError, match="invalid --label '=x'"):
        label_entries([], ["=x"])
    assert env_entries(["b=flag"], [path]) == ["a=file", "b=file", "b=flag"]
