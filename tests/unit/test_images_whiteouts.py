"""supervisor/images/whiteouts.py: the tar names of overlay whiteouts and opaque directories."""

from __future__ import annotations

import pytest

from supervisor.images.whiteouts import opaque_marker, whiteout_name


@pytest.mark.parametrize("name, expected", [("a", ".wh.a"), ("etc/passwd", "etc/.wh.passwd"), ("a/b/c", "a/b/.wh.c")])
def test_whiteout_names(name, expected):
    assert whiteout_name(name) == expected


def test_opaque_marker():
    assert opaque_marker("var/cache") == "var/cache/.wh..wh..opq"
