"""Fixtures the unit tests of the lifecycle and its services share."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.fakes import Fakes, make_lifecycle


@pytest.fixture
def fakes(tmp_path: Path, nursery: trio.Nursery) -> Fakes:
    """The lifecycle core on fake kernel mechanics (tests/fakes.py), its tasks in the test's nursery."""
    made = make_lifecycle(tmp_path)
    made.core.nursery = nursery
    return made
