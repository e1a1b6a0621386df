"""Volumes, binds and tmpfs mounts on the real kernel, through the CLI (issue 17, docs/volumes.md)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from supervisor.volumedriver import is_mounted
from tests.conftest import mounts_under, private_daemon

pytestmark = pytest.mark.integration


def out(daemon, *args: str) -> str:
    """The CLI's stdout without its last newline; the command must succeed."""
    return daemon.out(*args).rstrip("\n")


def inspect(daemon, name: str) -> dict:
    return json.loads(out(daemon, "inspect", name))[0]


def test_a_named_volume_survives_rm_and_a_daemon_restart_and_is_shared(daemon):
    out(daemon, "run", "--name", "writer", "-v", "pgdata:/data", "base", "sh", "-c", "echo row1 > /data/table")
    assert out(daemon, "volume", "ls", "-q") == "pgdata"  # created on first use
    out(daemon, "rm", "-v", "writer")  # -v takes anonymous volumes only
    assert out(daemon, "volume", "ls", "-q") == "pgdata"
    daemon.stop()
    daemon.start()
    assert out(daemon, "volume", "ls", "-q") == "pgdata"
    out(daemon, "run", "-d", "--name", "one", "-v", "pgdata:/data", "base", "sleep", "60")
    assert out(daemon, "run", "--rm", "-v", "pgdata:/srv", "base", "cat", "/srv/table") == "row1"
    assert out(daemon, "exec", "one", "sh", "-c", "echo row2 >> /data/table; cat /data/table") == "row1\nrow2"
    assert out(daemon, "run", "--rm", "-v", "pgdata:/srv:ro", "base", "cat", "/srv/table") == "row1\nrow2"
    refused = daemon.cli("volume", "rm", "pgdata")
    assert refused.returncode == 1
    assert b"remove pgdata: volume is in use - [one]" in refused.stderr
    mounts = inspect(daemon, "one")["Mounts"]
    assert mounts == [{"Type": "volume", "Name": "pgdata", "Source": str(daemon.root / "volumes/pgdata/_data"),
                       "Destination": "/data", "Driver": "local", "Mode": "z", "RW": True, "Propagation": ""}]
    assert inspect(daemon, "one")["HostConfig"]["Binds"] == ["pgdata:/data"]
    out(daemon, "rm", "-f", "one")
    assert out(daemon, "volume", "rm", "pgdata") == "pgdata"
    assert out(daemon, "volume", "ls", "-q") == ""
    assert not (daemon.root / "volumes/pgdata").exists()
    events = out(daemon, "events", "--since", "0", "--until", str(time.time() + 1), "--filter", "type=volume")
    actions = [line.split()[2:4] for line in events.splitlines()]
    assert actions[0] == ["create", "pgdata"] and actions[-1] == ["destroy", "pgdata"]
    assert actions.count(["mount", "pgdata"]) == actions.count(["unmount", "pgdata"]) == 4


def test_copy_up_fills_a_fresh_volume_from_the_image_with_owners_and_modes(daemon):
    out(daemon, "run", "--name", "prep", "base", "sh", "-c",
               "mkdir -p /srv/app/sub && echo hi > /srv/app/sub/f && ln -s sub/f /srv/app/link && "
               "chown -R 1000:2000 /srv/app && chmod 0640 /srv/app/sub/f && chmod 0750 /srv/app")
    out(daemon, "commit", "-c", "VOLUME /srv/app", "prep", "withapp")
    listing = "stat -c '%n %u:%g %a' /srv/app /srv/app/sub /srv/app/sub/f; readlink /srv/app/link; cat /srv/app/link"
    expected = "/srv/app 1000:2000 750\n/srv/app/sub 1000:2000 755\n/srv/app/sub/f 1000:2000 640\nsub/f\nhi"
    assert out(daemon, "run", "--rm", "-v", "fresh:/srv/app", "withapp", "sh", "-c", listing) == expected
    data = daemon.root / "volumes/fresh/_data"
    assert (data / "sub/f").stat().st_uid == 1000 and oct(data.stat().st_mode & 0o777) == "0o750"
    # The image's VOLUME: an anonymous volume, filled the same way, removed by --rm.
    assert out(daemon, "run", "--rm", "withapp", "sh", "-c", listing) == expected
    assert out(daemon, "volume", "ls", "-q") == "fresh"
    # nocopy: an empty volume stays empty; a volume with data keeps its own.
    assert out(daemon, "run", "--rm", "-v", "empty:/srv/app:nocopy", "withapp", "ls", "-A", "/srv/app") == ""
    out(daemon, "run", "--rm", "-v", "fresh:/data", "base", "sh", "-c", "rm -r /data/sub; echo mine > /data/own")
    assert out(daemon, "run", "--rm", "-v", "fresh:/srv/app", "withapp", "ls", "/srv/app") == "link\nown"
    # A container's anonymous volume lives until rm -v.
    out(daemon, "run", "--name", "keeper", "withapp", "true")
    anonymous = inspect(daemon, "keeper")["Mounts"][0]["Name"]
    assert len(anonymous) == 64 and anonymous in out(daemon, "volume", "ls", "-q").split()
    out(daemon, "rm", "-v", "keeper")
    assert anonymous not in out(daemon, "volume", "ls", "-q").split()


def test_diff_commit_and_export_never_hold_volume_or_bind_content(daemon, tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    out(daemon, "run", "--name", "cc", "-v", "vol:/data", "-v", f"{host}:/bound", "base", "sh", "-c",
               "echo v > /data/secret; echo b > /bound/secret; echo l > /layer")
    assert (host / "secret").read_text() == "b\n"
    changes = out(daemon, "diff", "cc")
    assert "A /layer" in changes and "secret" not in changes
    out(daemon, "commit", "cc", "snap")
    committed = out(daemon, "run", "--rm", "snap", "sh", "-c", "ls -A /data /bound; cat /layer")
    assert "secret" not in committed and committed.endswith("\nl")
    export = tmp_path / "c.tar"
    out(daemon, "export", "-o", str(export), "cc")
    with tarfile.open(export) as archive:
        names = archive.getnames()
    assert "layer" in names and not [name for name in names if "secret" in name]


def test_read_only_root_refuses_writes_while_tmpfs_and_volumes_work(daemon):
    script = ("touch /x 2>&1; echo rc=$?; echo ok > /tmp/t && cat /tmp/t; echo v > /data/v && cat /data/v; "
              "grep ' /tmp ' /proc/mounts | cut -d' ' -f3,4; touch /dev/shm/s && echo shm")
    result = out(daemon, "run", "--rm", "--read-only", "--tmpfs", "/tmp:size=1m", "-v", "rw:/data", "base", "sh", "-c",
                     script)
    lines = result.splitlines()
    assert "Read-only file system" in lines[0] and lines[1] == "rc=1"
    assert lines[2:4] == ["ok", "v"]
    assert lines[4].startswith("tmpfs rw,nosuid,nodev,noexec") and "size=1024k" in lines[4]
    assert lines[5] == "shm"
    out(daemon, "create", "--name", "ro", "--read-only", "--tmpfs", "/run", "base", "true")
    host = inspect(daemon, "ro")["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["Tmpfs"] == {"/run": "noexec,nosuid,nodev"}


def test_binds_ro_rw_and_a_missing_host_path(daemon, tmp_path):
    made = tmp_path / "made" / "here"
    out(daemon, "run", "--rm", "-v", f"{made}:/m", "base", "sh", "-c", "echo x > /m/f")
    assert (made / "f").read_text() == "x\n"  # -v made the missing host path a directory, as docker
    denied = daemon.cli("run", "--rm", "-v", f"{made}:/m:ro", "base", "sh", "-c", "echo y > /m/f")
    assert denied.returncode != 0 and b"Read-only file system" in denied.stderr
    missing = daemon.cli("run", "--rm", "--mount", f"type=bind,source={tmp_path}/nope,target=/m", "base", "true")
    assert missing.returncode == 125
    assert missing.stderr.decode().strip().endswith(
        f'invalid mount config for type "bind": bind source path does not exist: {tmp_path}/nope')
    single = tmp_path / "single.conf"
    single.write_text("conf\n")
    assert out(daemon, "run", "--rm", "--mount", f"type=bind,src={single},dst=/etc/app.conf,readonly", "base",
                      "cat", "/etc/app.conf") == "conf"
    assert mounts_under(daemon.root) == []


def test_a_bind_source_swapped_for_a_symlink_after_the_check_is_not_followed(daemon, tmp_path):
    source, secret = tmp_path / "source", tmp_path / "secret"
    source.mkdir()
    secret.mkdir()
    (secret / "key").write_text("host secret\n")
    out(daemon, "create", "--name", "victim", "-v", f"{source}:/data", "base", "cat", "/data/key")
    source.rmdir()
    source.symlink_to(secret)  # between the check (create) and the mount (start)
    started = daemon.cli("start", "-a", "victim")
    assert started.returncode == 125
    assert b"host secret" not in started.stdout + started.stderr
    assert f'open the mount source "{source}"'.encode() in started.stderr
    assert b"too many levels of symbolic links" in started.stderr


def test_an_image_link_cannot_lead_a_mount_onto_a_masked_path(daemon):
    out(daemon, "run", "--name", "linker", "base", "sh", "-c", "ln -s /proc/sys /evil; ln -s ../sys/firmware /fw")
    out(daemon, "commit", "linker", "links")
    for target, resolved in (("/evil", "/proc/sys"), ("/fw", "/sys/firmware")):
        result = daemon.cli("run", "--rm", "-v", f"vv:{target}", "links", "true")
        assert result.returncode == 125
        assert f'mount on "{target}": it resolves to "{resolved}"'.encode() in result.stderr, result.stderr
    assert daemon.out("run", "--rm", "links", "sh", "-c", "ls /proc/sys | wc -l").strip() != "0"


def test_cp_through_a_symlink_in_a_volume_stays_inside(daemon, tmp_path):
    out(daemon, "run", "-d", "--name", "box", "-v", "cpvol:/data", "base", "sleep", "60")
    out(daemon, "exec", "box", "sh", "-c", "mkdir /data/etc /data/tmp; ln -s /etc /data/out; ln -s ../../../../../../tmp /data/up; "
                                          "echo inside > /data/file")
    payload = tmp_path / "payload"
    payload.write_text("copied\n")
    out(daemon, "cp", str(payload), "box:/data/out/")
    out(daemon, "cp", str(payload), "box:/data/up/")
    volume = daemon.root / "volumes/cpvol/_data"
    assert (volume / "etc/payload").read_text() == "copied\n"  # /etc of the volume, not the host's
    assert (volume / "tmp/payload").read_text() == "copied\n"
    assert not Path("/etc/payload").exists() and not Path("/tmp/payload").exists()
    out(daemon, "cp", "box:/data/file", str(tmp_path / "got"))
    assert (tmp_path / "got").read_text() == "inside\n"
    out(daemon, "cp", "box:/data", str(tmp_path / "whole"))
    assert (tmp_path / "whole/file").read_text() == "inside\n"
    assert (tmp_path / "whole/out").is_symlink()  # copied as a link, never followed
    out(daemon, "rm", "-f", "box")


def test_volumes_from_takes_the_other_containers_mounts(daemon):
    out(daemon, "create", "--name", "source", "-v", "shared:/shared", "--tmpfs", "/scratch", "base", "true")
    out(daemon, "run", "--rm", "-v", "shared:/s", "base", "sh", "-c", "echo s > /s/f")
    assert out(daemon, "run", "--rm", "--volumes-from", "source", "base", "cat", "/shared/f") == "s"
    denied = daemon.cli("run", "--rm", "--volumes-from", "source:ro", "base", "sh", "-c", "echo x > /shared/f")
    assert denied.returncode != 0 and b"Read-only file system" in denied.stderr


@pytest.mark.parametrize(("flags", "message"), [
    (["-v", "a:b:c:d"], "invalid volume specification: 'a:b:c:d'"),
    (["-v", "/h:/c:bogus"], "invalid mode: bogus"),
    (["-v", "./rel:/c"], 'create ./rel: "./rel" includes invalid characters for a local volume name'),
    (["-v", "/h:rel"], "invalid mount config for type \"bind\": invalid mount path: 'rel' mount path must be absolute"),
    (["-v", "vv:/"], "invalid mount config for type \"volume\": destination can't be '/'"),
    (["-v", "vv:/proc/sys"], 'cannot mount over "/proc/sys"'),
    (["-v", "vv:/d", "-v", "ww:/d"], "Duplicate mount point: /d"),
    (["--mount", "type=bind,target=/x"], 'invalid mount config for type "bind": field Source must not be empty'),
    (["--mount", "type=volume"], 'invalid argument "type=volume" for "--mount" flag: target is required'),
    (["--mount", "type=tmpfs,target=/t,bogus=1"],
     "invalid argument \"type=tmpfs,target=/t,bogus=1\" for \"--mount\" flag: unexpected key 'bogus' in 'bogus=1'"),
    (["--mount", "type=tmpfs,target=/t,volume-nocopy"],
     "for \"--mount\" flag: cannot mix 'volume-*' options with mount type 'tmpfs'"),
    (["--mount", "type=tmpfs,target=/t,tmpfs-size=lots"], "invalid value for tmpfs-size: lots"),
    (["--mount", "type=nfs,target=/t"], 'invalid mount config for type "nfs": mount type unknown'),
    (["--mount", "type=bind,source=/tmp,target=/t,nothing"], "invalid field 'nothing' must be a key=value pair"),
    (["--tmpfs", "rel"], "invalid mount config for type \"tmpfs\": invalid mount path: 'rel' mount path must be absolute"),
    (["--tmpfs", "/t:bogus"], 'invalid tmpfs option "bogus"'),
    (["--volumes-from", "nosuch"], "no such container: nosuch"),
    (["-v", "fresh1:/a", "--volumes-from", "nosuch"], "no such container: nosuch"),  # and no volume made
    (["--volumes-from", "x:rx"], "invalid mode: rx"),
])
def test_every_bad_mount_flag_gets_dockers_error_and_changes_nothing(daemon, flags, message):
    result = daemon.cli("run", "--rm", *flags, "base", "true")
    assert result.returncode == 125
    assert message in result.stderr.decode(), result.stderr
    assert out(daemon, "ps", "-aq") == "" and out(daemon, "volume", "ls", "-q") == ""


def test_volume_commands_filters_labels_and_prune(daemon):
    assert out(daemon, "volume", "create", "--label", "team=db", "labelled") == "labelled"
    assert out(daemon, "volume", "create", "plain") == "plain"
    out(daemon, "create", "--name", "user", "-v", "plain:/p", "-v", "/anon", "base", "true")
    names = set(out(daemon, "volume", "ls", "-q").split())
    anonymous = (names - {"labelled", "plain"}).pop()
    assert out(daemon, "volume", "ls", "-q", "--filter", "label=team=db") == "labelled"
    assert out(daemon, "volume", "ls", "-q", "--filter", "dangling=true") == "labelled"
    assert out(daemon, "volume", "ls", "-q", "--filter", "name=pla") == "plain"
    document = json.loads(out(daemon, "volume", "inspect", "labelled"))[0]
    assert document["Labels"] == {"team": "db"} and document["Driver"] == "local" and document["Scope"] == "local"
    assert Path(document["Mountpoint"]).is_dir()
    missing = daemon.cli("volume", "inspect", "nosuch")
    assert missing.returncode == 1 and b"no such volume" in missing.stderr
    assert daemon.cli("volume", "rm", "-f", "nosuch").returncode == 0
    assert "Total reclaimed volumes: 0" in out(daemon, "volume", "prune")  # the anonymous one is in use
    out(daemon, "rm", "user")
    pruned = out(daemon, "volume", "prune")
    assert anonymous in pruned and "Total reclaimed volumes: 1" in pruned
    assert set(out(daemon, "volume", "ls", "-q").split()) == {"labelled", "plain"}
    assert "Total reclaimed volumes: 2" in out(daemon, "volume", "prune", "-a")
    bad = daemon.cli("volume", "create", "-o", "type=tmpfs", "opt")
    assert bad.returncode == 1 and b'create opt: missing required option: "device"' in bad.stderr


def test_no_mount_is_left_on_the_host(daemon, tmp_path):
    out(daemon, "run", "--rm", "-v", "leak:/data", "-v", f"{tmp_path}:/h", "--tmpfs", "/t", "base", "true")
    host_mounts = Path("/proc/self/mountinfo").read_text()
    assert str(daemon.root / "volumes") not in host_mounts and str(tmp_path) not in host_mounts
    assert subprocess.run(["true"]).returncode == 0 and os.path.isdir(daemon.root / "volumes/leak/_data")


def test_containers_get_dockers_default_nofile_not_the_daemons_own(tmp_path, busybox_tar):
    from supervisor.lifecycle.start import nofile_ceiling

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if nofile_ceiling() <= hard:  # e.g. this VM: CapEff lacks CAP_SYS_RESOURCE
        pytest.skip("the daemon cannot raise its hard limit here, so docker's default is capped at what "
                    "containers inherited before: nothing to tell apart")
    with private_daemon(tmp_path / "d", busybox_tar, launcher=["prlimit", f"--nofile=512:{hard}", "--"]) as daemon:
        expected = str(min(1048576, nofile_ceiling()))
        assert out(daemon, "run", "--rm", "base", "sh", "-c", "ulimit -Sn; ulimit -Hn").split() == [expected] * 2


def test_ulimit_and_shm_size(daemon):
    limits = out(daemon, "run", "--rm", "--ulimit", "nofile=100:200", "--ulimit", "nproc=50", "base", "sh", "-c",
                 "ulimit -Sn; ulimit -Hn; ulimit -u")
    assert limits == "100\n200\n50"
    shm = out(daemon, "run", "--rm", "--shm-size", "8m", "base", "sh", "-c", "df -k /dev/shm | tail -1")
    assert shm.split()[1] == "8192"
    bad = daemon.cli("run", "--rm", "--ulimit", "nofile=20:10", "base", "true")
    assert bad.returncode == 125 and b"ulimit soft limit must be less than or equal to hard limit" in bad.stderr
    daemon.out("create", "--name", "lim", "--ulimit", "core=0", "--shm-size", "1m", "base", "true")
    host = inspect(daemon, "lim")["HostConfig"]
    assert host["ShmSize"] == 1 << 20 and host["Ulimits"] == [{"Name": "core", "Soft": 0, "Hard": 0}]


def test_a_daemon_wide_default_ulimit_applies_unless_the_container_sets_its_own(tmp_path, busybox_tar):
    with private_daemon(tmp_path / "d", busybox_tar, "--default-ulimit", "nproc=77:88") as daemon:
        assert out(daemon, "run", "--rm", "base", "sh", "-c", "ulimit -Su; ulimit -Hu") == "77\n88"
        assert out(daemon, "run", "--rm", "--ulimit", "nproc=9", "base", "sh", "-c", "ulimit -Su") == "9"
    bad = subprocess.run([sys.executable, "-m", "supervisor.cli", "daemon", "--root", str(tmp_path / "x"),
                          "--default-ulimit", "nproc=2:1"], capture_output=True, timeout=60)
    assert bad.returncode == 2 and b"ulimit soft limit must be less than or equal to hard limit" in bad.stderr


def test_volume_create_options_mount_like_dockers_local_driver(daemon, tmp_path):
    """--opt type/device/o: a tmpfs volume shared by the containers using it and gone after the
    last one; a bind of a host directory (o=bind) that rm never empties; docker's errors."""
    data = daemon.root / "volumes" / "scratch" / "_data"
    out(daemon, "volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", "--opt", "o=size=1m,uid=1000",
        "scratch")
    assert inspect_volume(daemon, "scratch")["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m,uid=1000"}
    assert not is_mounted(str(data))  # mounted at first use, as docker
    out(daemon, "run", "-d", "--name", "holder", "-v", "scratch:/data", "base", "sh", "-c",
        "echo kept > /data/f; exec sleep 60")
    try:
        assert is_mounted(str(data))
        shown = out(daemon, "run", "--rm", "-v", "scratch:/d", "base", "sh", "-c",
                    "until [ -e /d/f ]; do sleep 0.05; done; cat /d/f; stat -c %u /d; "
                    "grep ' /d ' /proc/mounts | cut -d' ' -f3,4")
        kind, options = shown.splitlines()[2].split()
        assert shown.splitlines()[:2] == ["kept", "1000"] and kind == "tmpfs" and "size=1024k" in options.split(",")
    finally:
        out(daemon, "rm", "-f", "holder")
    assert not is_mounted(str(data))  # the last user gone: unmounted, its content with it
    assert out(daemon, "run", "--rm", "-v", "scratch:/d", "base", "ls", "-A", "/d") == ""
    out(daemon, "volume", "rm", "scratch")

    source = tmp_path / "src"
    source.mkdir()
    out(daemon, "volume", "create", "--opt", "type=none", "--opt", "o=bind", "--opt", f"device={source}", "bound")
    out(daemon, "run", "--rm", "-v", "bound:/data", "base", "sh", "-c", "echo through > /data/f")
    assert (source / "f").read_text() == "through\n"
    assert not is_mounted(str(daemon.root / "volumes" / "bound" / "_data"))
    out(daemon, "volume", "rm", "bound")
    assert (source / "f").read_text() == "through\n"  # rm removes the volume, never the host's files

    for options, message in (
        (["foo=1"], b'create bad: invalid option: "foo"'),
        (["type=tmpfs"], b'create bad: missing required option: "device"'),
        (["o=size=1m"], b'create bad: missing required option: "device"'),
        (["size=1g"], b"create bad: quota size requested but no quota support"),
        (["type=none", "o=bind", f"device={tmp_path}/missing"], b"is not an existing absolute directory"),
        (["type=tmpfs", "device=tmpfs", "o=remount,ro"], b"acts on another mount"),
    ):
        refused = daemon.cli("volume", "create", *[item for option in options for item in ("--opt", option)], "bad")
        assert refused.returncode != 0 and message in refused.stderr, (options, refused.stderr)
    assert out(daemon, "volume", "ls", "-q") == ""


def inspect_volume(daemon, name: str) -> dict:
    return json.loads(out(daemon, "volume", "inspect", name))[0]
