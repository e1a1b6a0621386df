"""The CLI's parser (supervisor/cli/parser.py): each command line gets the commands it needs,
and parses as it does with every command registered."""

from __future__ import annotations

import argparse

import pytest

from supervisor.cli import parser as cli_parser
from supervisor.cli.parser import GROUPS, build_parser, groups_for


def registered(group) -> set[str]:
    sub = argparse.ArgumentParser().add_subparsers()
    group.register(sub)
    return set(sub.choices)


@pytest.mark.parametrize("group", GROUPS, ids=lambda group: group.__name__.rsplit(".", 1)[1])
def test_each_group_declares_the_commands_it_registers(group) -> None:
    assert registered(group) == set(group.COMMANDS)


def test_a_command_belongs_to_one_group() -> None:
    names = [name for group in GROUPS for name in group.COMMANDS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("argv", [
    ["run", "--rm", "-e", "A=1", "base", "sh", "-c", "echo hi"],
    ["--run", "/tmp/run", "ps", "-a"],
    ["--run=/tmp/run", "logs", "-f", "web"],
    ["network", "create", "--subnet", "10.9.0.0/24", "app"],
    ["volume", "rm", "-f", "data"],
    ["events-keys", "add", "monitor", "KEY"],
    ["build", "-t", "web", "."],
])
def test_a_command_line_parses_as_with_every_command(argv) -> None:
    assert vars(build_parser(argv).parse_args(argv)) == vars(build_parser().parse_args(argv))


def test_only_the_named_command_s_group_is_built() -> None:
    run = build_parser(["run", "base"])
    subparsers = next(a for a in run._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == set(cli_parser.containers.COMMANDS)


def test_version_builds_no_command_and_help_builds_them_all(capsys) -> None:
    assert groups_for(["--version"]) == () and groups_for([]) == ()
    assert groups_for(["--help"]) == GROUPS and groups_for(["--run", "/r", "-h"]) == GROUPS
    assert groups_for(["nonsense"]) == GROUPS  # argparse's "invalid choice" names them all
    with pytest.raises(SystemExit) as exit:
        build_parser(["--version"]).parse_args(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == "dockyard 0.1.0\n"
