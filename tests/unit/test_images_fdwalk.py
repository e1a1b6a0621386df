"""supervisor/images/fdwalk.py: the fd-relative primitives every walk of a container's files
shares (issue 25); the races themselves are in test_images_changes.py and
tests/integration/test_images.py."""

from __future__ import annotations

import os
import stat

import pytest

from supervisor.images.fdwalk import (
    UnsafeMember,
    WalkWarnings,
    open_contents,
    open_directory,
    open_entry,
    open_listing,
    read_link,
)


def test_an_entry_fd_pins_the_inode_whatever_happens_to_its_name_later(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inside").write_text("inside")
    (tmp_path / "file").write_text("file")
    os.symlink("/", tmp_path / "link")
    parent = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fds = {name: open_entry(parent, name) for name in ("dir", "file", "link")}
    try:
        assert open_entry(parent, "missing") is None
        # The names change: the directory and the symlink swap, the file becomes a FIFO.
        os.rename(tmp_path / "dir", tmp_path / "moved")
        os.rename(tmp_path / "link", tmp_path / "dir")
        os.rename(tmp_path / "file", tmp_path / "old-file")
        os.mkfifo(tmp_path / "file")
        listing = open_listing(fds["dir"])
        try:
            assert os.listdir(listing) == ["inside"]  # the directory, not the host's root
        finally:
            os.close(listing)
        with os.fdopen(open_contents(fds["file"])) as contents:
            assert contents.read() == "file"
        assert read_link(fds["link"]) == "/"
        with pytest.raises(NotADirectoryError):
            open_listing(fds["link"])  # a symlink is never followed, even to a directory
        fifo = open_entry(parent, "file")
        try:
            with pytest.raises(ValueError, match="regular file"):
                open_contents(fifo)  # never opened: that would block (a device could act)
        finally:
            os.close(fifo)
    finally:
        for fd in fds.values():
            os.close(fd)
        os.close(parent)


def test_open_directory_never_goes_through_a_symlink(tmp_path):
    (tmp_path / "real" / "sub").mkdir(parents=True)
    os.symlink(tmp_path / "real", tmp_path / "link")
    root = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(UnsafeMember, match="'link' is a symbolic link"):
            open_directory(root, ["link", "sub"])
        with pytest.raises(FileNotFoundError):
            open_directory(root, ["real", "missing"])
        made = open_directory(root, ["real", "new", "deeper"], create=True)
        os.close(made)
        assert (tmp_path / "real" / "new" / "deeper").is_dir()
        assert stat.S_IMODE(os.stat(tmp_path / "real" / "new").st_mode) == 0o755
    finally:
        os.close(root)


def test_open_directory_closes_every_fd_it_opened_when_it_fails(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    os.symlink("/", tmp_path / "a" / "b" / "link")
    root = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        before = sorted(os.listdir("/proc/self/fd"))
        for parts in (["a", "b", "link", "x"], ["a", "missing"]):
            with pytest.raises((UnsafeMember, FileNotFoundError)):
                open_directory(root, parts)
        assert sorted(os.listdir("/proc/self/fd")) == before
    finally:
        os.close(root)


def test_walk_warnings_keep_the_first_few_and_count_all():
    warnings = WalkWarnings()
    for number in range(WalkWarnings.LIMIT + 5):
        warnings.note(f"/f{number}", "vanished")
    assert warnings.count == WalkWarnings.LIMIT + 5
    assert warnings.messages()[0] == "/f0 vanished" and warnings.messages()[-1] == "and 5 more"
    assert len(warnings.messages()) == WalkWarnings.LIMIT + 1
