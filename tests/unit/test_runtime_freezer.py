"""The freezer of both cgroup versions (supervisor/runtime/freezer.py) on plain files laid
out as the kernel's: what is written, when it counts as settled, and the errors."""

from __future__ import annotations

import pytest

from supervisor.runtime import freezer


def test_v1_writes_the_state_and_reads_it_back(tmp_path):
    state = tmp_path / "freezer.state"
    state.write_text("THAWED\n")
    freezer.set_frozen(str(state), 1, True)
    assert state.read_text() == "FROZEN" and freezer.is_frozen(str(state), 1)
    freezer.set_frozen(str(state), 1, False)
    assert state.read_text() == "THAWED" and not freezer.is_frozen(str(state), 1)
    state.write_text("FREEZING\n")  # on its way: counts as frozen (a pause is under way)
    assert freezer.is_frozen(str(state), 1)


def test_v2_is_settled_when_cgroup_events_says_so(tmp_path):
    freeze, events = tmp_path / "cgroup.freeze", tmp_path / "cgroup.events"
    freeze.write_text("0\n")
    events.write_text("populated 1\nfrozen 1\n")  # as the kernel once it has frozen every task
    freezer.set_frozen(str(freeze), 2, True)
    assert freeze.read_text() == "1" and freezer.is_frozen(str(freeze), 2)
    with pytest.raises(TimeoutError, match="was not thawed after 0.05 s"):
        freezer.set_frozen(str(freeze), 2, False, timeout=0.05)  # events still says frozen 1


def test_a_missing_freezer_is_an_error_naming_the_file_and_not_frozen(tmp_path):
    missing = tmp_path / "gone" / "freezer.state"
    with pytest.raises(OSError, match=f"cannot write FROZEN to {missing}"):
        freezer.set_frozen(str(missing), 1, True)
    assert not freezer.is_frozen(str(missing), 1)
    assert freezer.freezer_file(1) == ("freezer", "freezer.state") and freezer.freezer_file(2) == ("", "cgroup.freeze")
