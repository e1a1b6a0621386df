"""The benchmark's clean-up walks cgroup trees that change under it (tests/bench/tools.py)."""

from __future__ import annotations

from tests.bench.tools import _cgroups_below


def test_cgroups_below_lists_the_deepest_first_and_not_the_top(tmp_path):
    (tmp_path / "container" / "inner").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    found = _cgroups_below(tmp_path)
    assert sorted(found) == sorted([tmp_path / "container", tmp_path / "container" / "inner", tmp_path / "other"])
    assert found.index(tmp_path / "container" / "inner") < found.index(tmp_path / "container")


def test_cgroups_below_a_directory_that_went_away_is_empty(tmp_path):
    assert _cgroups_below(tmp_path / "removed meanwhile") == []
