"""supervisor/userns.py: the subordinate id files, the mapping and its translations, the
``dockyard`` user of ``--userns-remap default`` (with a fake useradd and passwd), a layer's
chowned copy (root only: it chowns)."""

from __future__ import annotations

import os
import types
from pathlib import Path

import pytest

from supervisor import userns
from supervisor.userns import IdMapping, RemapError

SUBUID = """# a comment
alice:100000:65536
1001:165536:65536
dockyard:231072:1000
bad:line
"""


def test_the_ranges_of_a_user_by_name_or_number() -> None:
    assert userns.subordinate_ranges(SUBUID, "alice", 1000) == [(100000, 65536)]
    assert userns.subordinate_ranges(SUBUID, "bob", 1001) == [(165536, 65536)]
    assert userns.subordinate_ranges(SUBUID, "carol", 1002) == []


def test_container_ids_run_over_the_ranges_in_order() -> None:
    table = userns.id_map([(300000, 10), (200000, 5)])
    assert table == ((0, 200000, 5), (5, 300000, 10))
    mapping = IdMapping("u", "g", table, ((0, 500000, 65536),))
    assert (mapping.root_uid, mapping.root_gid, mapping.key) == (200000, 500000, "200000.500000")
    assert mapping.host_uid(7) == 300002
    assert mapping.container_uid(300002) == 7 and mapping.container_uid(1) == 65534
    assert mapping.from_host(300002, 500001) == (7, 1)
    assert mapping.from_host(0, 0) == (0, 0)  # an image layer's ids, 0-based on disk: kept
    assert mapping.to_host(0, 0) == (200000, 500000)
    assert mapping.launch_maps() == {"uid_map": ("0 200000 5", "5 300000 10"), "gid_map": ("0 500000 65536",)}
    assert IdMapping.from_map(mapping.to_map()) == mapping
    with pytest.raises(RemapError, match="not mapped"):
        mapping.host_uid(15)


def test_a_new_range_starts_after_every_other() -> None:
    assert userns.next_free_start("") == 100000
    assert userns.next_free_start(SUBUID) == 231072 + 1000


def test_default_adds_the_user_and_its_ranges_once(tmp_path: Path) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("alice:100000:65536")  # no newline at the end
    created: list[str] = []
    users = {}

    def lookup(name: str):
        return users[name]

    def add_user(name: str) -> None:
        created.append(name)
        users[name] = types.SimpleNamespace(pw_uid=998, pw_gid=997)

    for _ in range(2):
        userns.ensure_default_user(str(subuid), str(subgid), add_user, lookup)
    assert created == ["dockyard"]
    assert subuid.read_text() == "alice:100000:65536\ndockyard:165536:65536\n"
    assert subgid.read_text() == "dockyard:100000:65536\n"


def test_default_fails_clearly_when_the_user_cannot_be_made(tmp_path: Path) -> None:
    def lookup(name: str):
        raise KeyError(name)

    with pytest.raises(RemapError, match="was not created"):
        userns.ensure_default_user(str(tmp_path / "u"), str(tmp_path / "g"), lambda name: None, lookup)


def test_a_user_without_subordinate_ids_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "subuid").write_text("someone:100000:65536\n")
    (tmp_path / "subgid").write_text("root:100000:65536\n")
    with pytest.raises(RemapError, match=r"subuid gives user 'root' no subordinate uids"):
        userns.resolve("root", str(tmp_path / "subuid"), str(tmp_path / "subgid"))
    with pytest.raises(RemapError, match="no user"):
        userns.resolve("no-such-user-here", str(tmp_path / "subuid"), str(tmp_path / "subgid"))


def test_a_user_and_group_by_number(tmp_path: Path) -> None:
    (tmp_path / "subuid").write_text("0:400000:65536\n")
    (tmp_path / "subgid").write_text("root:500000:65536\n")
    mapping = userns.resolve("0:0", str(tmp_path / "subuid"), str(tmp_path / "subgid"))
    assert (mapping.user, mapping.group, mapping.root_uid, mapping.root_gid) == ("root", "root", 400000, 500000)


def test_a_directory_the_mapped_root_cannot_pass_is_named(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    inner = closed / "inner"
    inner.mkdir(parents=True)
    closed.chmod(0o700)
    if os.stat(closed).st_uid == 123456:
        pytest.skip("runs as the probed uid")
    assert userns.reachable_by(inner, 123456, 123456) in (closed, tmp_path, tmp_path.parent,
                                                         *tmp_path.parents)
    userns.open_directory(closed)
    assert closed.stat().st_mode & 0o011 == 0o011


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_layer_copy_is_shifted_and_made_once(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "bin").mkdir(parents=True)
    tool = layer / "bin" / "tool"
    tool.write_text("x")
    tool.chmod(0o4755)
    os.symlink("tool", layer / "bin" / "link")
    os.chown(layer / "bin", 1000, 1000)
    mapping = IdMapping("u", "g", ((0, 300000, 65536),), ((0, 300000, 65536),))
    copy = Path(userns.layer_copy(str(layer), mapping, tmp_path / "cache"))
    assert copy.stat().st_uid == 300000
    assert (copy / "bin").stat().st_uid == 301000
    assert (copy / "bin" / "tool").stat().st_mode & 0o7777 == 0o4755  # chown cleared it: put back
    assert os.lstat(copy / "bin" / "link").st_uid == 300000
    assert tool.stat().st_uid == 0  # the layer itself is left alone
    (copy / "marker").write_text("")
    assert userns.layer_copy(str(layer), mapping, tmp_path / "cache") == str(copy)
    assert (copy / "marker").exists()  # cached: not copied again
