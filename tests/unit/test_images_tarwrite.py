"""supervisor/images/tarwrite.py: the layer tar of ``commit``, back through the extractor."""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from supervisor.errors import ImageError
from supervisor.images.tarsafe import extract
from supervisor.images.tarwrite import write_layer
from supervisor.images.whiteouts import OPAQUE_XATTR
from tests.layers import make_upper

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="overlay whiteouts are 0/0 devices: mknod needs root")


@needs_root
def test_layer_tar_round_trip_keeps_whiteouts_opaque_dirs_and_metadata(tmp_path):
    upper = make_upper(tmp_path)
    buffer = io.BytesIO()
    write_layer(str(upper), buffer)

    with tarfile.open(fileobj=io.BytesIO(buffer.getvalue())) as tar:
        members = {member.name: member for member in tar}
    assert members["bin/.wh.vi"].isreg() and members["bin/.wh.vi"].size == 0
    assert members["var/cache/.wh..wh..opq"].isreg()
    assert members["hard"].islnk() and members["hard"].linkname == "new" or members["new"].islnk()
    assert members["soft"].issym() and members["soft"].linkname == "/new"
    assert members["new"].pax_headers.get("SCHILY.xattr.user.note") == "hello"
    assert not any("trusted.overlay" in key for m in members.values() for key in m.pax_headers)

    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    report = extract(io.BytesIO(buffer.getvalue()), unpacked, whiteouts=True)
    assert report.whiteouts == 2
    vi = os.lstat(unpacked / "bin" / "vi")
    assert stat.S_ISCHR(vi.st_mode) and vi.st_rdev == 0
    assert os.getxattr(unpacked / "var" / "cache", OPAQUE_XATTR) == b"y"
    assert not (unpacked / "var" / "cache" / ".wh..wh..opq").exists()
    new = os.lstat(unpacked / "new")
    assert (stat.S_IMODE(new.st_mode), new.st_uid, new.st_gid, new.st_nlink) == (0o4751, 1000, 1000, 2)
    assert os.lstat(unpacked / "hard").st_ino == new.st_ino
    assert abs(new.st_mtime_ns - 1_600_000_000_123_456_789) < 1000
    assert os.getxattr(unpacked / "new", "user.note") == b"hello"
    assert os.readlink(unpacked / "soft") == "/new"
    assert stat.S_ISFIFO(os.lstat(unpacked / "fifo").st_mode)



def test_commit_refuses_redirect_dirs(tmp_path):
    if not ROOT:
        pytest.skip("trusted.* xattrs need root")
    upper = tmp_path / "upper"
    (upper / "moved").mkdir(parents=True)
    os.setxattr(upper / "moved", "trusted.overlay.redirect", b"/old")
    with pytest.raises(ImageError, match="redirect_dir"):
        write_layer(str(upper), io.BytesIO())
