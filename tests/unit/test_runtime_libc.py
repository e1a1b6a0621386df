"""supervisor/runtime/libc.py without root: errors as docker words them, failed calls as
InitError naming the operation, and the child subreaper flag."""

from __future__ import annotations

import errno

import pytest

from supervisor.runtime import libc


def test_strerror_is_lower_case_as_dockers() -> None:
    assert libc.strerror(errno.ENOENT) == "no such file or directory"
    assert libc.strerror(None) == "input/output error"  # no errno: EIO


def test_a_refused_call_is_an_init_error_naming_it() -> None:
    with pytest.raises(libc.InitError) as caught:
        libc.umount2("/nonexistent-dockyard-test-path", 0)
    assert caught.value.exit_code == libc.EXIT_RUNTIME
    assert caught.value.message.startswith('umount "/nonexistent-dockyard-test-path": ')


def test_the_child_subreaper_flag_is_set_and_cleared() -> None:
    assert not libc.is_child_subreaper()
    libc.set_child_subreaper(True)
    try:
        assert libc.is_child_subreaper()
    finally:
        libc.set_child_subreaper(False)
    assert not libc.is_child_subreaper()
