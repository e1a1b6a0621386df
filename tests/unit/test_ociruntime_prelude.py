"""The first steps of run and create, before the runtime's imports
(supervisor/ociruntime/prelude.py): which commands fork stage 0 early, and that a stage no
command takes is killed and reaped."""

from __future__ import annotations

import os

import pytest

from supervisor.ociruntime import prelude


@pytest.fixture
def fresh_prelude():
    yield prelude
    prelude.discard()
    prelude.warmed_up = False


def _reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.mark.parametrize("argv", [["state", "x"], ["--version"], ["run", "--help"], ["exec", "x", "true"],
                                  ["--systemd-cgroup", "run", "x"], []])
def test_other_commands_fork_nothing(fresh_prelude, argv):
    fresh_prelude.start(argv)
    assert fresh_prelude._stage is None and not fresh_prelude.warmed_up


@pytest.mark.parametrize("argv", [["run", "--bundle", "b", "x"], ["--root", "/r", "create", "-b", "b", "x"]])
def test_run_and_create_fork_stage_0_and_a_stage_nobody_took_is_killed_and_reaped(fresh_prelude, argv):
    fresh_prelude.start(argv)
    stage = fresh_prelude._stage
    assert stage is not None and fresh_prelude.warmed_up
    assert os.path.exists(f"/proc/{stage.pid}")
    fresh_prelude.discard()
    assert fresh_prelude._stage is None and _reaped(stage.pid)


def test_create_takes_the_early_stage_once(fresh_prelude):
    fresh_prelude.start(["run", "x"])
    early = fresh_prelude._stage
    taken = fresh_prelude.take_stage()
    assert taken is early and fresh_prelude._stage is None
    taken.abandon()
    assert _reaped(early.pid)
