"""Labels, ``--env-file``, and the ``--filter``/``--format`` of ps, images and volume ls, through
the real daemon and CLI (issue 17, item 11; docs/cli.md)."""

from __future__ import annotations

import json
import os
import time

import pytest

pytestmark = pytest.mark.integration


def out(daemon, *args: str) -> str:
    return daemon.out(*args).rstrip("\n")


def names(daemon, *filters: str) -> list[str]:
    """``ps -a --filter ...`` as a sorted list of names."""
    args = [part for entry in filters for part in ("--filter", entry)]
    return sorted(out(daemon, "ps", "-a", "--format", "{{.Names}}", *args).split())


@pytest.fixture
def labelled(daemon, busybox_tar):
    """An image with labels (``a``, ``b``), and ``base``."""
    out(daemon, "import", "--change", "LABEL a=image b=image", "--change", "CMD [\"sleep\", \"1000\"]",
        str(busybox_tar), "labelled:1")
    return daemon


def test_labels_merge_over_the_images_and_show_in_inspect_and_every_event(labelled, tmp_path):
    daemon = labelled
    label_file = tmp_path / "labels"
    label_file.write_text("# team labels\n\nc=from-file\n  d\nb=from-file\n")
    out(daemon, "run", "-d", "--name", "web", "--label-file", str(label_file), "-l", "b=flag", "--label", "e=x=y",
        "labelled:1")
    labels = json.loads(out(daemon, "inspect", "web"))[0]["Config"]["Labels"]
    assert labels == {"a": "image", "b": "flag", "c": "from-file", "d": "", "e": "x=y"}
    out(daemon, "stop", "-t", "0", "web")
    out(daemon, "rm", "web")
    lines = out(daemon, "events", "--since", "0", "--until", str(time.time() + 1), "--format", "json",
                "--filter", "container=web").splitlines()
    events = [json.loads(line)["data"] for line in lines]
    actions = [event["action"] for event in events]
    assert actions[:2] == ["create", "start"] and actions[-3:] == ["die", "stop", "destroy"] and "kill" in actions
    for event in events:
        assert {key: event["attributes"][key] for key in labels} == labels, event
        assert event["attributes"]["name"] == "web" and event["attributes"]["image"] == "labelled:1"
    assert events[actions.index("die")]["attributes"]["exitCode"] == 137  # the event's own attributes too


def test_env_file_comments_blank_lines_and_keys_from_the_environment(daemon, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("\ufeff# a comment\n\nA=1\n   B=two words  \nFROM_CLI\nUNSET_HERE\nC=\"quoted\"\nD=file\n")
    daemon.env = {**daemon.env, "FROM_CLI": "cli value"}
    daemon.env.pop("UNSET_HERE", None)
    shown = out(daemon, "run", "--rm", "--env-file", str(env_file), "-e", "D=flag", "base", "env")
    env = dict(line.split("=", 1) for line in shown.splitlines())
    assert env["A"] == "1" and env["B"] == "two words  " and env["C"] == '"quoted"' and env["D"] == "flag"
    assert env["FROM_CLI"] == "cli value" and "UNSET_HERE" not in env
    env_file.write_text("GOOD=1\nBAD KEY=2\n")
    refused = daemon.cli("run", "--rm", "--env-file", str(env_file), "base", "true")
    assert refused.returncode == 2
    assert f"invalid --env-file {env_file}: line 2: variable 'BAD KEY' contains whitespaces" in refused.stderr.decode()
    missing = daemon.cli("run", "--rm", "--env-file", str(tmp_path / "none"), "base", "true")
    assert f"invalid --env-file {tmp_path / 'none'}: No such file or directory" in missing.stderr.decode()


def test_ps_filters_with_dockers_semantics(labelled):
    daemon = labelled
    out(daemon, "volume", "create", "shared")
    assert daemon.cli("run", "--name", "old", "-l", "tier=db", "base", "sh", "-c", "exit 3").returncode == 3
    out(daemon, "run", "-d", "--name", "api", "-l", "tier=web", "-l", "team=a", "-v", "shared:/data",
        "labelled:1")
    out(daemon, "run", "-d", "--name", "worker", "-l", "tier=web", "--network", "none", "--health-cmd", "true",
        "base", "sleep", "1000")
    out(daemon, "create", "--name", "fresh", "-l", "team=a", "base", "true")
    assert names(daemon) == ["api", "fresh", "old", "worker"]
    assert names(daemon, "label=tier=web") == ["api", "worker"]
    assert names(daemon, "label=tier") == ["api", "old", "worker"]
    assert names(daemon, "label=tier=web", "label=team=a") == ["api"]  # every label= holds
    assert names(daemon, "name=^wor", "name=old") == ["old", "worker"]  # one key's values: any
    assert names(daemon, "name=old", "label=tier=web") == []  # different keys: all
    assert names(daemon, "status=exited") == ["old"]
    assert names(daemon, "status=created", "status=exited") == ["fresh", "old"]
    assert names(daemon, "exited=3") == ["old"] and names(daemon, "exited=0") == []
    assert names(daemon, "ancestor=labelled:1") == ["api"]
    assert names(daemon, "ancestor=base") == ["fresh", "old", "worker"]
    assert names(daemon, "ancestor=no-such-image") == []
    out(daemon, "commit", "old", "child")  # one layer more: a descendant of base
    out(daemon, "create", "--name", "kid", "child", "true")
    assert names(daemon, "ancestor=base") == ["fresh", "kid", "old", "worker"]
    assert names(daemon, "ancestor=child") == ["kid"]
    out(daemon, "rm", "kid")
    assert names(daemon, "since=api") == ["fresh", "worker"]
    assert names(daemon, "before=api") == ["old"]
    assert names(daemon, "volume=shared") == names(daemon, "volume=/data") == ["api"]
    assert names(daemon, "network=none") == ["worker"]
    assert names(daemon, "health=none") == ["api", "fresh", "old"]
    api_id = json.loads(out(daemon, "inspect", "api"))[0]["Id"]
    assert names(daemon, f"id={api_id[:8]}") == ["api"]
    # Without -a, running ones only, unless a status, before or since filter asks (docker's rule).
    assert sorted(out(daemon, "ps", "--format", "{{.Names}}", "--filter", "label=tier").split()) == ["api", "worker"]
    assert out(daemon, "ps", "--format", "{{.Names}}", "--filter", "status=exited") == "old"
    for bad, message in (("colour=red", "invalid filter 'colour': ps takes id, name, label, status, exited,"),
                         ("status=sleeping", "invalid filter 'status=sleeping': use created, restarting,"),
                         ("exited=x", "invalid filter 'exited=x': an exit code is a whole number"),
                         ("since=nothing", "no such container: nothing")):
        refused = daemon.cli("ps", "--filter", bad)
        assert refused.returncode == 1 and message in refused.stderr.decode(), refused.stderr
    out(daemon, "rm", "-f", "old", "api", "worker", "fresh")


def test_ps_format_templates_json_and_tables(labelled):
    daemon = labelled
    out(daemon, "run", "-d", "--name", "api", "-l", "team=a", "-l", "tier=web", "labelled:1")
    assert out(daemon, "ps", "--format", '{{.Names}} {{.Label "tier"}} {{.State}} {{.Image}}') == \
        "api web running labelled:1"
    assert out(daemon, "ps", "--format", "{{.Labels}}") == "a=image,b=image,team=a,tier=web"
    row = json.loads(out(daemon, "ps", "--format", "json"))
    assert row["Names"] == "api" and row["State"] == "running" and row["Labels"] == "a=image,b=image,team=a,tier=web"
    assert row["Command"] == '"sleep 1000"' and row["Status"].startswith("Up ")
    assert json.loads(out(daemon, "ps", "--format", "{{json .}}")) == row
    assert json.loads(out(daemon, "ps", "--format", "{{json .Names}}")) == "api"
    header, line = out(daemon, "ps", "--format", "table {{.Names}}\\t{{.Label \"team\"}}\\t{{upper .State}}").splitlines()
    assert header.split() == ["NAMES", "LABEL", "STATE"] and line.split() == ["api", "a", "RUNNING"]
    assert out(daemon, "ps", "--format", "table").splitlines()[0].split("   ")[0] == "CONTAINER ID"
    refused = daemon.cli("ps", "--format", "{{.Nope}}")
    assert refused.returncode == 2 and "invalid --format '{{.Nope}}': no field .Nope" in refused.stderr.decode()
    refused = daemon.cli("ps", "--format", "{{range .}}x{{end}}")
    assert refused.returncode == 2 and "'range' is not supported" in refused.stderr.decode()
    out(daemon, "rm", "-f", "api")


def test_images_and_volume_ls_filter_and_format(labelled):
    daemon = labelled
    out(daemon, "tag", "base", "other/base:2")
    assert out(daemon, "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", "label=a=image") == "labelled:1"
    assert out(daemon, "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", "reference=other/*") == \
        "other/base:2"
    # reference= keeps only the tags that match, of an image with several
    assert out(daemon, "images", "--format", "{{.Repository}}", "--filter", "reference=base") == "base"
    # docker's positional REPOSITORY[:TAG] is that reference filter
    assert out(daemon, "images", "--format", "{{.Repository}}:{{.Tag}}", "other/base") == "other/base:2"
    assert out(daemon, "images", "--format", "{{.Repository}}:{{.Tag}}", "other/base:1") == ""
    assert out(daemon, "images", "-q", "--filter", "dangling=true") == ""
    assert out(daemon, "images", "--format", '{{.Label "b"}}', "--filter", "reference=labelled") == "image"
    row = json.loads(out(daemon, "images", "--format", "json", "--filter", "reference=labelled:*"))
    assert row["Repository"] == "labelled" and row["Tag"] == "1" and row["Labels"] == "a=image,b=image"
    refused = daemon.cli("images", "--filter", "colour=red")
    assert refused.returncode == 1 and "invalid filter 'colour': images takes reference, label" in \
        refused.stderr.decode()
    out(daemon, "volume", "create", "--label", "team=db", "pgdata")
    out(daemon, "volume", "create", "cache")
    assert out(daemon, "volume", "ls", "--format", '{{.Name}} {{.Label "team"}}', "--filter", "label=team") == \
        "pgdata db"
    row = json.loads(out(daemon, "volume", "ls", "--format", "json", "--filter", "name=^cach"))
    assert row == {"Driver": "local", "Labels": "", "Links": "N/A", "Mountpoint": str(daemon.root / "volumes/cache/_data"),
                   "Name": "cache", "Scope": "local", "Size": "N/A"}
    out(daemon, "volume", "rm", "pgdata", "cache")
    assert os.path.exists(daemon.root)
