"""The -v, --mount, --tmpfs and --volumes-from parsers (supervisor/mounts.py): docker's forms
and docker's error messages, without root."""

from __future__ import annotations

import pytest

from supervisor.errors import InvalidArgument
from supervisor.mounts import (Mount, MountError, check_unique, host_config, inspect_mounts, parse_mount,
                               parse_tmpfs, parse_volume, parse_volumes_from)
from supervisor.spec import ContainerSpec


@pytest.mark.parametrize(("text", "expected"), [
    ("/srv/pg:/var/lib/pg", Mount("bind", "/srv/pg", "/var/lib/pg", create_source=True)),
    ("/srv//pg/:/data/:ro", Mount("bind", "/srv/pg", "/data", readonly=True, create_source=True)),
    ("/h:/c:rw,rslave", Mount("bind", "/h", "/c", propagation="rslave", create_source=True)),
    ("/h:/c:Z,ro", Mount("bind", "/h", "/c", readonly=True, create_source=True)),
    ("pgdata:/data", Mount("volume", "pgdata", "/data")),
    ("pgdata:/data:ro,nocopy", Mount("volume", "pgdata", "/data", readonly=True, nocopy=True)),
    ("/anonymous", Mount("volume", "", "/anonymous")),
])
def test_the_three_forms_of_dash_v(text, expected):
    assert parse_volume(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "invalid volume specification: ''"),
    ("a:b:c:d", "invalid volume specification: 'a:b:c:d'"),
    (":/c", "invalid volume specification: ':/c'"),
    ("/h:/c:bogus", "invalid mode: bogus"),
    ("/h:/c:ro,rw", "invalid mode: ro,rw"),
    ("/h:/c:nocopy", "invalid mode: nocopy"),
    ("vol:/c:shared", "invalid mode: shared"),
    ("./rel:/c", 'create ./rel: "./rel" includes invalid characters for a local volume name'),
    ("/h:rel", "invalid mount config for type \"bind\": invalid mount path: 'rel' mount path must be absolute"),
    ("relative", "invalid mount config for type \"volume\": invalid mount path: 'relative' mount path must be absolute"),
    ("vol:/", "invalid mount config for type \"volume\": destination can't be '/'"),
    ("vol:/a/../", "must not contain '..'"),
    ("vol:/proc", 'cannot mount over "/proc"'),
    ("vol:/proc/sys/kernel", 'cannot mount over "/proc/sys/kernel"'),
    ("/h://sys/firmware", 'cannot mount over "/sys/firmware"'),
    ("vol:/dev/pts", 'cannot mount over "/dev/pts"'),
    ("vol:/d\tx", "invalid volume specification"),  # a tab: the launch config's separator
])
def test_dash_v_refuses_with_dockers_message(text, message):
    with pytest.raises(MountError) as caught:
        parse_volume(text)
    assert message in caught.value.message
    assert caught.value.flag == "--volume"


def test_a_mount_under_dev_that_is_not_the_kernels_is_allowed():
    assert parse_volume("/dev/snd:/dev/snd").target == "/dev/snd"


@pytest.mark.parametrize(("text", "expected"), [
    ("type=bind,source=/h,target=/c", Mount("bind", "/h", "/c", origin="--mount")),
    ("type=bind,src=/h,dst=/c,readonly,bind-propagation=rshared",
     Mount("bind", "/h", "/c", readonly=True, propagation="rshared", origin="--mount")),
    ("type=bind,src=/h,destination=/c,ro=false", Mount("bind", "/h", "/c", origin="--mount")),
    ("target=/data", Mount("volume", "", "/data", origin="--mount")),  # docker's default type: volume
    ("type=volume,source=pg,target=/data,volume-nocopy",
     Mount("volume", "pg", "/data", nocopy=True, origin="--mount")),
    ("type=tmpfs,target=/run,tmpfs-size=64m,tmpfs-mode=1770",
     Mount("tmpfs", "", "/run", options="size=67108864,mode=1770", origin="--mount")),
    ('type=tmpfs,"target=/a,b",ro=1', Mount("tmpfs", "", "/a,b", readonly=True, options="ro", origin="--mount")),
    ("TYPE=BIND,SOURCE=/h,TARGET=/c", Mount("bind", "/h", "/c", origin="--mount")),
])
def test_dash_dash_mount(text, expected):
    assert parse_mount(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("type=bind,target=/c", 'invalid mount config for type "bind": field Source must not be empty'),
    ("type=bind,source=rel,target=/c", "invalid mount config for type \"bind\": invalid mount path: 'rel' mount "
                                       "path must be absolute"),
    ("type=tmpfs,source=x,target=/c", 'invalid mount config for type "tmpfs": field Source must not be specified'),
    ("type=volume", 'invalid argument "type=volume" for "--mount" flag: target is required'),
    ("type=bind,src=/h,target=/c,bogus", "invalid field 'bogus' must be a key=value pair"),
    ("type=bind,src=/h,target=/c,bogus=1", "unexpected key 'bogus' in 'bogus=1'"),
    ("type=bind,src=/h,target=/c,readonly=maybe", "invalid value for readonly: maybe"),
    ("type=bind,src=/h,target=/c,bind-propagation=sideways", "invalid value for bind-propagation: sideways"),
    ("type=volume,target=/c,bind-propagation=shared", "cannot mix 'bind-*' options with mount type 'volume'"),
    ("type=bind,src=/h,target=/c,volume-nocopy", "cannot mix 'volume-*' options with mount type 'bind'"),
    ("type=volume,target=/c,tmpfs-size=1m", "cannot mix 'tmpfs-*' options with mount type 'volume'"),
    ("type=tmpfs,target=/c,tmpfs-size=big", "invalid value for tmpfs-size: big"),
    ("type=tmpfs,target=/c,tmpfs-mode=999", "invalid value for tmpfs-mode: 999"),
    ("type=npipe,target=/c", 'invalid mount config for type "npipe": mount type unknown'),
    ("type=volume,source=./x,target=/c", 'invalid mount config for type "volume": "./x" includes invalid characters'),
    ("type=volume,target=/proc/kcore", 'cannot mount over "/proc/kcore"'),
])
def test_dash_dash_mount_refuses_with_dockers_message(text, message):
    with pytest.raises(MountError) as caught:
        parse_mount(text)
    assert message in caught.value.message
    assert caught.value.flag == "--mount"


@pytest.mark.parametrize(("text", "options", "readonly"), [
    ("/run", "noexec,nosuid,nodev", False),
    ("/run:size=64m", "noexec,nosuid,nodev,size=64m", False),
    ("/run:exec,mode=1777", "nosuid,nodev,exec,mode=1777", False),
    ("/run:ro", "noexec,nosuid,nodev,ro", True),
    ("/run:ro,rw", "noexec,nosuid,nodev,ro,rw", False),
])
def test_dash_dash_tmpfs(text, options, readonly):
    mount = parse_tmpfs(text)
    assert (mount.type, mount.target, mount.options, mount.readonly) == ("tmpfs", "/run", options, readonly)


@pytest.mark.parametrize(("text", "message"), [
    ("run", "invalid mount config for type \"tmpfs\": invalid mount path: 'run' mount path must be absolute"),
    ("/run:bogus", 'invalid tmpfs option "bogus"'),
    ("/run:size=lots", 'invalid tmpfs option "size=lots": invalid size'),
    ("/run:size", 'invalid tmpfs option "size"'),
    ("/sys", 'cannot mount over "/sys"'),
])
def test_dash_dash_tmpfs_refuses_with_dockers_message(text, message):
    with pytest.raises(MountError) as caught:
        parse_tmpfs(text)
    assert message in caught.value.message


def test_volumes_from_and_duplicates():
    assert parse_volumes_from("db") == ("db", "")
    assert parse_volumes_from("db:ro") == ("db", "ro")
    with pytest.raises(MountError, match="invalid mode: rx"):
        parse_volumes_from("db:rx")
    with pytest.raises(MountError, match="Duplicate mount point: /d"):
        check_unique([parse_volume("a1:/d"), parse_tmpfs("/d/")])


def test_the_spec_refuses_a_bad_flag_with_the_flag_named_and_keeps_good_ones():
    with pytest.raises(InvalidArgument) as caught:
        ContainerSpec(image="x", mounts=("type=bind,target=/c",))
    assert caught.value.details == {"flag": "--mount"}
    spec = ContainerSpec.from_map({"image": "x", "volumes": ["pg:/data"], "tmpfs": ["/run"], "read_only": True,
                                   "volumes_from": ["db:ro"], "mounts": ["type=tmpfs,target=/t"]})
    assert ContainerSpec.from_map(spec.to_map()) == spec
    assert [mount.target for mount in spec.parsed_mounts()] == ["/data", "/t", "/run"]
    with pytest.raises(InvalidArgument, match="spec.read_only: must be true or false"):
        ContainerSpec(image="x", read_only="yes")


def test_inspect_shapes_are_dockers():
    spec = ContainerSpec(image="x", volumes=("/h:/c:ro",), mounts=("type=tmpfs,target=/t,tmpfs-size=1k",),
                         tmpfs=("/run",), read_only=True)
    assert host_config(spec) == {
        "Binds": ["/h:/c:ro"],
        "Mounts": [{"Type": "tmpfs", "Source": "", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1024}}],
        "Tmpfs": {"/run": "noexec,nosuid,nodev"}, "ReadonlyRootfs": True, "VolumesFrom": None}
    record = {"type": "bind", "name": "", "source": "/h", "target": "/c", "readonly": True, "propagation": "",
              "nocopy": False, "options": "", "origin": "-v", "mode": "ro", "anonymous": False}
    assert inspect_mounts([record]) == [{"Type": "bind", "Source": "/h", "Destination": "/c", "Mode": "ro",
                                         "RW": False, "Propagation": "rprivate"}]


# --- --ulimit and --shm-size (supervisor/ulimits.py) ------------------------------------------


def test_ulimit_and_shm_size_as_docker_parses_them():
    from supervisor.ulimits import LimitError, launch_rlimits, parse_shm_size, parse_ulimit

    assert parse_ulimit("nofile=1024:2048") == ("nofile", 1024, 2048)
    assert parse_ulimit("core=0") == ("core", 0, 0)
    assert parse_ulimit("memlock=-1:-1") == ("memlock", -1, -1)
    for text, message in (("nofile", "invalid ulimit argument: nofile"), ("bogus=1", "invalid ulimit type: bogus"),
                          ("nofile=a", "invalid ulimit argument: nofile=a"),
                          ("nofile=20:10", "ulimit soft limit must be less than or equal to hard limit: 20 > 10")):
        with pytest.raises(LimitError, match=message):
            parse_ulimit(text)
    assert parse_shm_size("64m") == 64 << 20 and parse_shm_size("1g") == 1 << 30 and parse_shm_size("8192") == 8192
    with pytest.raises(LimitError, match="invalid size: 'lots'"):
        parse_shm_size("lots")
    # docker's default nofile, capped at the kernel's fs.nr_open; a given nofile replaces it.
    assert launch_rlimits((), 1048576) == ("nofile 1048576 1048576",)
    assert launch_rlimits(("nproc=10",), 65536) == ("nofile 65536 65536", "nproc 10 10")
    assert launch_rlimits(("nofile=10:20",), 1048576) == ("nofile 10 20",)
    spec = ContainerSpec.from_map({"image": "x", "shm_size": "1m", "ulimits": ["nofile=5"]})
    assert spec.shm_size == 1 << 20 and ContainerSpec.from_map(spec.to_map()) == spec
    with pytest.raises(InvalidArgument) as caught:
        ContainerSpec(image="x", ulimits=("nofile=2:1",))
    assert caught.value.details == {"flag": "--ulimit"}
