"""supervisor/cli/listing.py: the rows of ps, images and volume ls as docker's format fields,
and their tables, JSON lines and templates."""

from __future__ import annotations

import json

import pytest

from supervisor.cli import listing
from supervisor.cli.common import UsageError

ROW = {"id": "0123456789abcdef" * 4, "name": "web", "image": "base", "command": "sleep 1000",
       "created": "2026-01-01T10:00:00.000000Z", "status": "running", "exit_code": 0,
       "started_at": "2026-01-01T10:00:01.000000Z", "finished_at": "0001-01-01T00:00:00Z", "restarting": False,
       "health": "", "ports": "", "labels": {"tier": "web", "team": "a"}, "mounts": ["data"], "networks": ["bridge"]}


def test_container_fields_as_docker_shows_them() -> None:
    row = listing.container_row(ROW)
    assert row["ID"] == "0123456789ab" and row["Command"] == '"sleep 1000"'
    assert row["CreatedAt"] == "2026-01-01 10:00:00 +0000 UTC" and row["RunningFor"].endswith(" ago")
    assert row["Labels"] == "team=a,tier=web" and row["Label"]("tier") == "web" and row["Label"]("x") == ""
    assert row["Mounts"] == "data" and row["Networks"] == "bridge" and row["State"] == "running"
    assert listing.container_row({**ROW, "status": "exited", "restarting": True})["State"] == "restarting"
    assert listing.container_row(ROW, no_trunc=True)["ID"] == ROW["id"]


def test_the_default_table_json_lines_and_templates() -> None:
    rows = [listing.container_row(ROW)]
    table = listing.render("", rows, listing.CONTAINER_HEADERS, listing.CONTAINER_TABLE).splitlines()
    assert table[0].startswith("CONTAINER ID   IMAGE   COMMAND        CREATED")
    assert table[1].startswith("0123456789ab   base    \"sleep 1000\"")
    assert listing.render("table", rows, listing.CONTAINER_HEADERS, listing.CONTAINER_TABLE) == "\n".join(table)
    line = json.loads(listing.render("json", rows, listing.CONTAINER_HEADERS, listing.CONTAINER_TABLE))
    assert line["Names"] == "web" and "Label" not in line
    assert listing.render('{{.Names}}={{.Label "tier"}}', rows * 2, listing.CONTAINER_HEADERS, "") == "web=web\nweb=web"
    assert listing.render("table {{.Names}}\\t{{.Label \"team\"}}", rows, listing.CONTAINER_HEADERS, "") == \
        "NAMES   LABEL\nweb     a"
    assert listing.render("table {{.Names}}", [], listing.CONTAINER_HEADERS, "") == "NAMES"
    assert listing.render("{{.Names}}", [], listing.CONTAINER_HEADERS, "") == ""


def test_an_unknown_field_is_a_usage_error_even_without_rows() -> None:
    with pytest.raises(UsageError, match=r"invalid --format '\{\{.Tag\}\}': no field .Tag: the fields are .Command"):
        listing.render("{{.Tag}}", [], listing.CONTAINER_HEADERS, "")


def test_images_one_row_per_tag_and_volumes() -> None:
    image = {"id": "f" * 64, "repo_tags": ["a:1", "reg:5000/b:2"], "created": "2026-01-01T10:00:00Z", "size": 1500,
             "labels": {"k": "v"}}
    rows = listing.image_rows(image)
    assert [(row["Repository"], row["Tag"]) for row in rows] == [("a", "1"), ("reg:5000/b", "2")]
    assert rows[0]["ID"] == "f" * 12 and rows[0]["Size"] == "1.5kB" and rows[0]["Label"]("k") == "v"
    assert [(r["Repository"], r["Tag"]) for r in listing.image_rows({**image, "repo_tags": []})] == [("<none>", "<none>")]
    volume = listing.volume_row({"Name": "pg", "Driver": "local", "Mountpoint": "/v/pg/_data", "Labels": None,
                                 "Scope": "local"})
    assert listing.render("", [volume], listing.VOLUME_HEADERS, listing.VOLUME_TABLE) == \
        "DRIVER   VOLUME NAME\nlocal    pg"
