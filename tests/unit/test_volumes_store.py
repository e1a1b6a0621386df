"""supervisor/volumes.py: the local driver's folders and records, without root."""

from __future__ import annotations

import json

import pytest

from supervisor.errors import Conflict, InvalidArgument, NotFound
from supervisor.volumes import VolumeStore


def test_a_volume_is_a_folder_with_a_record_that_a_new_store_loads(tmp_path):
    store = VolumeStore(tmp_path)
    store.load()
    volume, made = store.create("pgdata", labels={"team": "db"})
    assert made and volume.mountpoint.is_dir() and volume.mountpoint == tmp_path / "volumes/pgdata/_data"
    assert store.create("pgdata") == (volume, False)  # docker: creating it again returns it
    record = json.loads((tmp_path / "volumes/pgdata/volume.json").read_text())
    assert record["labels"] == {"team": "db"} and record["anonymous"] is False
    (tmp_path / "volumes/half").mkdir()  # a crash between the folder and the record: not listed
    again = VolumeStore(tmp_path)
    again.load()
    assert [v.name for v in again.list()] == ["pgdata"]
    assert again.get("pgdata").inspect() == {
        "CreatedAt": volume.created, "Driver": "local", "Labels": {"team": "db"},
        "Mountpoint": str(volume.mountpoint), "Name": "pgdata", "Options": None, "Scope": "local"}


def test_bad_names_options_in_use_and_missing_volumes_are_refused_and_change_nothing(tmp_path):
    store = VolumeStore(tmp_path)
    store.load()
    with pytest.raises(InvalidArgument, match='"a/b" includes invalid characters'):
        store.create("a/b")
    with pytest.raises(InvalidArgument, match='create opts: missing required option: "device"'):
        store.create("opts", options={"type": "tmpfs"})
    store.create("used", labels={"a": "1"})
    with pytest.raises(Conflict, match="other labels"):
        store.create("used", labels={"a": "2"})
    with pytest.raises(Conflict, match=r"remove used: volume is in use - \[web, db\]"):
        store.remove("used", ["web", "db"])
    with pytest.raises(NotFound, match="get nosuch: no such volume"):
        store.remove("nosuch", [])
    assert [v.name for v in store.list()] == ["used"] and (tmp_path / "volumes/used/_data").is_dir()
    store.remove("used", [])
    assert store.list() == [] and not (tmp_path / "volumes/used").exists()
