"""The benchmark keeps its memory rows in every run (issue 26): the steps `--only` chooses,
the partial-run note, and the split of an idle container's memory into the daemon's growth,
the fixed helpers and the per-container helpers (tests/bench/run.py, tests/bench/memory.py)."""

from __future__ import annotations

import pytest

from tests.bench.memory import Reading
from tests.bench.run import STEPS, chosen_steps, partial_note


def test_the_default_set_measures_the_memory_rows_once():
    steps = chosen_steps(None)
    assert "concurrent" in steps and "many" in steps
    assert "memory" not in steps  # concurrent measures the same rows
    assert len(steps) == len(STEPS) - 1


def test_only_adds_the_memory_step_first():
    assert chosen_steps("lines") == ["memory", "lines"]
    assert chosen_steps("api, lines") == ["memory", "api", "lines"]


@pytest.mark.parametrize("only", ["concurrent,lines", "many", "memory,api"])
def test_only_with_a_memory_step_adds_nothing(only):
    assert chosen_steps(only) == [step.strip() for step in only.split(",")]


def test_no_memory_leaves_the_memory_step_out():
    assert chosen_steps("lines", no_memory=True) == ["lines"]


def test_an_unknown_step_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown --only nope; choose from run_rm"):
        chosen_steps("lines,nope")


def test_partial_note_names_what_is_missing():
    assert partial_note(None, ["memory", "memory_daemon", "api"]) == ""
    note = partial_note("lines", ["lines_cpu"])
    assert "--only lines" in note and "memory rows (memory, memory_daemon) were not measured" in note
    assert "not measured" not in partial_note("lines", ["memory", "memory_daemon", "lines_cpu"])


def test_reading_splits_daemon_growth_from_fixed_helpers():
    reading = Reading(50, {"dockyard daemon": 1.0}, fixed={"logcollector": (24.0, 24.5), "monitor": (23.0, 23.0)},
                      spools_mb=None)
    assert reading.daemon_per_container() == pytest.approx(0.02)
    assert reading.fixed_before == pytest.approx(47.0)
    assert reading.fixed_growth == pytest.approx(0.5)
    # the all-in figure keeps its old meaning: everything, the fixed helpers too, per container
    assert reading.per_container() == pytest.approx((1.0 + 47.5) / 50)
    assert "47.0 MB in all divided by 50" in reading.breakdown()
    assert "logcollector 24.5, monitor 23.0" in reading.fixed_note()


def test_reading_of_per_container_helpers():
    reading = Reading(10, {}, helpers_mb=3.3, helpers=10, helper_label="conmon")
    assert reading.per_container() == pytest.approx(0.33)
    assert reading.daemon_per_container() == 0
    assert reading.breakdown() == "conmon 0.330 MB (10 processes)"
    assert reading.fixed_note() == ""
