"""workers/api/archive.py's extraction of a client's tar (``docker cp`` into a container):
the image store's safe extractor, the owners the worker's, on every Python 3.11 (Debian 12's
3.11.2 has no tarfile ``data`` filter)."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from supervisor.errors import ImageError
from workers.api.archive import extract


def _tar(path, members):
    with tarfile.open(path, "w") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)


def _file(name, data=b"x", uid=0, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size, info.uid, info.gid, info.mode = len(data), uid, uid, mode
    return info, data


def test_a_tar_is_extracted_with_its_modes_and_the_worker_s_owner(tmp_path):
    _tar(tmp_path / "in.tar", [_file("in.txt", b"hello", uid=1234, mode=0o750)])
    target = tmp_path / "out"
    target.mkdir()
    assert extract(tmp_path / "in.tar", target) == ["in.txt"]
    stat = os.stat(target / "in.txt")
    assert (target / "in.txt").read_bytes() == b"hello"
    assert stat.st_mode & 0o7777 == 0o750
    assert (stat.st_uid, stat.st_gid) == (os.geteuid(), os.getegid())


def test_a_member_that_climbs_out_is_refused_by_name_and_nothing_lands_outside(tmp_path):
    _tar(tmp_path / "in.tar", [_file("ok.txt"), _file("../escaped.txt")])
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(ImageError) as raised:
        extract(tmp_path / "in.tar", target)
    assert "../escaped.txt" in raised.value.message and "climbs out" in raised.value.message
    assert not (tmp_path / "escaped.txt").exists()


def test_nothing_is_written_through_a_link_the_tar_made(tmp_path):
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
    _tar(tmp_path / "in.tar", [(link, None), _file("link/evil.txt")])
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(ImageError) as raised:
        extract(tmp_path / "in.tar", target)
    assert "link/evil.txt" in raised.value.message
    assert not (tmp_path / "evil.txt").exists()


def test_devices_are_skipped(tmp_path):
    device = tarfile.TarInfo("null")
    device.type, device.devmajor, device.devminor = tarfile.CHRTYPE, 1, 3
    _tar(tmp_path / "in.tar", [(device, None), _file("a.txt")])
    target = tmp_path / "out"
    target.mkdir()
    assert extract(tmp_path / "in.tar", target) == ["a.txt"]
