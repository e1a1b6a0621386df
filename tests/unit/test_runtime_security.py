"""supervisor/runtime/security.py without root: the user and groups from the container's
/etc/passwd and /etc/group, the capability mask."""

from __future__ import annotations

import pytest

from supervisor.runtime.libc import InitError
from supervisor.runtime.protocol import DEFAULT_CAPABILITIES
from supervisor.runtime.security import capability_mask, resolve_user

PASSWD = """root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nohome:x:1001:1001:::/bin/sh
# a comment
broken line
"""
GROUP = """root:x:0:
wheel:x:10:app,other
app:x:1000:
audio:x:29:other,app
"""


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", (0, 0, (0,), "/root")),
        ("0", (0, 0, (0,), "/root")),
        ("app", (1000, 1000, (1000, 10, 29), "/home/app")),
        ("1000", (1000, 1000, (1000, 10, 29), "/home/app")),
        ("1000:1000", (1000, 1000, (1000,), "/home/app")),
        ("app:wheel", (1000, 10, (10,), "/home/app")),
        ("4242", (4242, 0, (0,), "/")),
        ("4242:77", (4242, 77, (77,), "/")),
        ("nohome", (1001, 1001, (1001,), "/")),
    ],
)
def test_resolve_user(spec: str, expected: tuple) -> None:
    assert resolve_user(spec, PASSWD, GROUP) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuchuser", "unable to find user nosuchuser: no matching entries in passwd file"),
        ("app:nosuchgroup", "unable to find group nosuchgroup: no matching entries in group file"),
    ],
)
def test_resolve_user_unknown_names(spec: str, message: str) -> None:
    with pytest.raises(InitError) as caught:
        resolve_user(spec, PASSWD, GROUP)
    assert caught.value.message == message
    assert caught.value.exit_code == 125


def test_resolve_user_without_files() -> None:
    assert resolve_user("", "", "") == (0, 0, (0,), "/")


def test_capability_mask_is_dockers_default() -> None:
    assert capability_mask(DEFAULT_CAPABILITIES) == 0xA80425FB  # CapEff under docker
    with pytest.raises(InitError, match="CAP_NOPE"):
        capability_mask(["CAP_NOPE"])
