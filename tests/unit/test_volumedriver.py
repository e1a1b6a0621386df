"""supervisor/volumedriver.py without root: docker's option rules, ``o`` split into flags and
data, and the mount table read right (the mounting itself: tests/integration/test_volumes.py)."""

from __future__ import annotations

import pytest

from supervisor.errors import InvalidArgument
from supervisor.runtime import libc
from supervisor.volumedriver import check_options, is_mounted, parse_o


def test_o_is_split_into_mount_flags_and_filesystem_data() -> None:
    assert parse_o("size=100m,uid=1000,ro,noexec") == (libc.MS_RDONLY | libc.MS_NOEXEC, "size=100m,uid=1000")
    assert parse_o("bind") == (libc.MS_BIND, "")
    assert parse_o("ro,rw") == (0, "")
    with pytest.raises(ValueError, match="another mount"):
        parse_o("remount,ro")


@pytest.mark.parametrize("options, message", [
    ({"foo": "1"}, 'invalid option: "foo"'),
    ({"type": "tmpfs"}, 'missing required option: "device"'),
    ({"device": "tmpfs"}, 'missing required option: "type"'),
    ({"o": "size=1m", "type": "tmpfs"}, 'missing required option: "device"'),
    ({"size": "1g"}, "no quota support"),
    ({"type": "none", "device": "relative", "o": "bind"}, "not an existing absolute directory"),
    ({"type": "tmpfs", "device": "", "o": ""}, "must not be empty"),
])
def test_bad_options_get_dockers_errors(options: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_options("vol", options)


def test_good_options_pass(tmp_path) -> None:
    check_options("vol", {})
    check_options("vol", {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    check_options("vol", {"type": "none", "device": str(tmp_path), "o": "bind,ro"})


def test_a_bind_on_the_same_filesystem_is_seen_in_the_mount_table(tmp_path) -> None:
    """os.path.ismount misses a bind of a directory of the same filesystem: the table does not."""
    table = tmp_path / "mountinfo"
    where = tmp_path / "a dir"
    where.mkdir()
    escaped = str(where).replace(" ", "\\040")
    table.write_text(f"36 25 254:0 /src {escaped} rw,relatime shared:1 - ext4 /dev/vda rw\n")
    assert is_mounted(str(where), str(table))
    assert not is_mounted(str(tmp_path), str(table))
