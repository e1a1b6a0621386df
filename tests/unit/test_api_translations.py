"""docker's JSON to dockyard's and back (workers/api/specs.py, views.py): pure functions."""

from __future__ import annotations

import pytest

from supervisor.errors import InvalidArgument
from supervisor.spec import ContainerSpec
from workers.api import specs, views
from workers.api.http import ApiError
from workers.api.sessions import DetachKeys, frame, timestamped


def test_a_full_create_body_becomes_a_spec_dockyard_accepts():
    body = {
        "Image": "base", "Cmd": ["sh", "-c", "echo hi"], "Env": ["A=1"], "WorkingDir": "/tmp", "User": "nobody",
        "Tty": True, "OpenStdin": True, "Labels": {"app": "web", "tier": ""}, "StopSignal": "SIGINT",
        "StopTimeout": 3, "Volumes": {"/anon": {}},
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 2_000_000_000, "Retries": 2},
        "HostConfig": {
            "Binds": ["/tmp:/host:ro"], "Tmpfs": {"/run": "size=1m"},
            "Mounts": [{"Type": "volume", "Source": "data", "Target": "/data", "ReadOnly": True}],
            "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "81": None},
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
            "Memory": 64 << 20, "NanoCpus": 500_000_000, "PidsLimit": 50, "CapAdd": ["NET_ADMIN"],
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m"}}, "ShmSize": 1 << 20,
        },
    }
    spec = specs.spec_from_create(body, "web")
    assert spec["name"] == "web" and spec["cmd"] == ["sh", "-c", "echo hi"]
    assert spec["publish"] == ["127.0.0.1:8080:80/tcp", "81/tcp"]
    assert spec["restart"] == "on-failure:3"
    assert spec["volumes"] == ["/tmp:/host:ro", "/anon"]
    assert spec["mounts"] == ["type=volume,source=data,target=/data,readonly"]
    assert spec["healthcheck"] == {"test": ["CMD", "true"], "interval": "2000000000ns", "retries": 2}
    parsed = ContainerSpec.from_map(spec)  # what the daemon will do with it
    assert parsed.label_map == {"app": "web", "tier": ""}
    assert parsed.resources.memory == 64 << 20 and parsed.resources.pids_limit == 50
    assert parsed.tty and parsed.open_stdin and parsed.stop_timeout == 3


def test_init_is_the_spec_s_init():
    assert specs.spec_from_create({"Image": "base", "HostConfig": {"Init": True}}, None)["init"] is True
    assert "init" not in specs.spec_from_create({"Image": "base", "HostConfig": {"Init": None}}, None)


def test_cpu_quota_and_period_become_nano_cpus():
    assert specs.resources({"CpuQuota": 50_000, "CpuPeriod": 100_000}) == {"nano_cpus": 500_000_000}


@pytest.mark.parametrize("body,message", [
    ({}, "Config.Image"),
    ({"Image": "base", "Cmd": 5}, "invalid Cmd"),
    ({"Image": "base", "HostConfig": {"LogConfig": {"Type": "syslog"}}},
     "logger: no log driver named 'syslog' is registered"),
    ({"Image": "base", "NetworkingConfig": {"EndpointsConfig": {"a": {}, "b": {}}}},
     "Container cannot be connected to network endpoints: a, b"),
    ({"Image": "base", "HostConfig": {"NetworkMode": "app"},
      "NetworkingConfig": {"EndpointsConfig": {"app": {"Links": ["db:database"]}}}}, "endpoint Links is not supported"),
    ({"Image": "base", "HostConfig": {"CgroupnsMode": "host"}}, "invalid HostConfig.CgroupnsMode 'host'"),
])
def test_what_dockyard_cannot_do_is_refused_by_name(body, message):
    with pytest.raises(ApiError) as caught:
        specs.spec_from_create(body, None)
    assert message in caught.value.message


def test_device_cgroup_rules_are_the_spec_s_and_a_paused_row_is_up_paused():
    spec = specs.spec_from_create({"Image": "base", "HostConfig": {"DeviceCgroupRules": ["c 7:128 rwm"],
                                                                   "CgroupnsMode": "private"}}, None)
    assert spec["resources"] == {"device_cgroup_rules": ["c 7:128 rwm"]}
    assert views.status_text(row(status="paused"), now=views.unix_time("2026-12-06T07:00:06Z")) == \
        "Up 5 seconds (Paused)"


def row(**changes):
    base = {"id": "a" * 64, "name": "web", "image": "base", "image_id": "b" * 64, "command": "sh",
            "created": "2026-12-06T07:00:00.123456789Z", "status": "running", "exit_code": 0,
            "started_at": "2026-12-06T07:00:01Z", "finished_at": "0001-01-01T00:00:00Z", "restarting": False,
            "health": "", "ports": "127.0.0.1:8080->80/tcp", "labels": {"app": "web"}}
    return {**base, **changes}


def test_a_ps_row_in_docker_s_shape():
    now = views.unix_time("2026-12-06T07:00:06Z")
    docker_row = views.container_row(row(), now)
    assert docker_row["Names"] == ["/web"] and docker_row["State"] == "running"
    assert docker_row["Status"] == "Up 5 seconds"
    assert docker_row["Ports"] == [{"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}]
    assert docker_row["Created"] == int(views.unix_time("2026-12-06T07:00:00Z"))
    exited = views.container_row(row(status="exited", exit_code=3, finished_at="2026-12-06T06:00:00Z"), now)
    assert exited["Status"] == "Exited (3) About an hour ago"
    created = views.container_row(row(status="created", started_at="0001-01-01T00:00:00Z"), now)
    assert created["Status"] == "Created"


def test_container_filters():
    rows = [views.container_row(row()), views.container_row(row(id="c" * 64, name="db", labels={}, status="exited",
                                                                  exit_code=1, finished_at="2026-12-06T07:00:02Z"))]

    def names(filters):
        return [r["Names"][0] for r in rows if views.container_matches(r, views.parse_filters(filters), {})]

    assert names({"label": ["app=web"]}) == ["/web"]
    assert names({"label": {"app": True}}) == ["/web"]  # the old map form
    assert names({"status": ["exited"]}) == ["/db"]
    assert names({"exited": ["1"]}) == ["/db"]
    assert names({"name": ["db"]}) == ["/db"]
    assert names({"id": ["ccc"]}) == ["/db"]
    assert names({"ancestor": ["base"]}) == ["/web", "/db"]
    with pytest.raises(ApiError):
        names({"colour": ["red"]})


def test_a_bus_event_as_docker_s_event_and_its_filters():
    data = {"type": "container", "action": "die", "id": "a" * 64,
            "attributes": {"name": "web", "image": "base", "exitCode": "0"}, "time": 1700000000.25}
    event = views.docker_event(data)
    assert event["Type"] == "container" and event["Action"] == "die"
    assert event["Actor"] == {"ID": "a" * 64, "Attributes": {"name": "web", "image": "base", "exitCode": "0"}}
    assert event["time"] == 1700000000 and event["timeNano"] == 1700000000250000000
    assert event["status"] == "die" and event["from"] == "base"
    assert views.event_matches(event, {"container": ["web"], "event": ["die"]})
    assert not views.event_matches(event, {"type": ["image"]})
    assert not views.event_matches(event, {"event": ["start"]})
    exec_start = views.docker_event({**data, "action": "exec_start", "attributes": {"command": "ls"}})
    assert exec_start["Action"] == "exec_start: ls"
    assert views.event_matches(exec_start, {"event": ["exec_start"]})


def test_times_as_docker_takes_them():
    assert views.parse_time("1700000000.5") == 1700000000.5
    assert views.parse_time("2023-11-14T22:13:20Z") == 1700000000.0
    assert views.parse_time("10m", now=1000.0) == 400.0
    with pytest.raises(ApiError):
        views.parse_time("yesterday")
    assert views.rfc3339(1700000000.25) == "2023-11-14T22:13:20.250000000Z"


def test_detach_keys_hold_a_partial_sequence_and_pass_the_rest():
    keys = DetachKeys.parse(None)  # docker's default: ctrl-p, ctrl-q
    assert keys.feed(b"ab\x10c") == (b"ab\x10c", False)  # ctrl-p then not ctrl-q: passed on
    assert keys.feed(b"x\x10") == (b"x", False)  # held: it may begin the sequence
    assert keys.feed(b"\x11rest") == (b"", True)
    assert DetachKeys.parse("ctrl-x,a").sequence == b"\x18a"
    with pytest.raises(ApiError):
        DetachKeys.parse("ctrl-1")


def test_frames_and_timestamps_as_docker_writes_them():
    assert frame(2, b"err") == b"\x02\x00\x00\x00\x00\x00\x00\x03err"
    stamped, at_start = timestamped(b"a\nb", 1700000000.5, True)
    assert stamped == b"2023-11-14T22:13:20.500000000Z a\n2023-11-14T22:13:20.500000000Z b" and not at_start


def test_logs_with_tail_0_read_nothing_without_follow():
    import trio

    from workers.api.sessions import stored_output

    class NoBus:
        async def call(self, *args, **kwargs):
            raise AssertionError("tail=0 without follow needs no page of the store")

    async def collect():
        return [record async for record in stored_output(NoBus(), "a" * 64, follow=False, tail=0)]

    assert trio.run(collect) == []


def test_uts_mode_host_is_the_spec_s_and_checked_there():
    spec = specs.spec_from_create({"Image": "base", "HostConfig": {"UTSMode": "host"}}, None)
    assert ContainerSpec.from_map(spec).uts == "host"
    assert "uts" not in ContainerSpec(image="base").to_map()  # records an earlier dockyard still reads
    for fields, message in (({"uts": "private"}, "only 'host' is supported"),
                            ({"uts": "host", "hostname": "web"}, "--hostname and --uts host"),
                            ({"uts": "host", "sysctls": ["kernel.domainname=x"]}, "not allowed in the host's UTS")):
        with pytest.raises(InvalidArgument, match=message):
            ContainerSpec(image="base", **fields)


@pytest.mark.parametrize("config,host,message", [
    ({}, {"PidMode": "host"}, "HostConfig.PidMode 'host' is not supported"),
    ({}, {"IpcMode": "host"}, "HostConfig.IpcMode 'host'"),
    ({}, {"Links": ["db:database"]}, "HostConfig.Links ['db:database']"),
    ({}, {"OomKillDisable": True}, "HostConfig.OomKillDisable True"),
    ({}, {"DeviceRequests": [{"Count": -1}]}, "HostConfig.DeviceRequests"),
    ({}, {"Runtime": "nvidia"}, "HostConfig.Runtime 'nvidia'"),
    ({"MacAddress": "02:42:ac:11:00:09"}, {}, "Config.MacAddress '02:42:ac:11:00:09'"),
    ({"NetworkDisabled": True}, {}, "Config.NetworkDisabled True"),
])
def test_a_field_dockyard_does_not_honour_is_refused_by_name_when_it_asks_for_something(config, host, message):
    with pytest.raises(ApiError) as caught:
        specs.spec_from_create({"Image": "base", **config, "HostConfig": host}, None)
    assert caught.value.status == 400 and message in caught.value.message


def test_docker_s_defaults_for_the_fields_dockyard_does_not_honour_pass():
    """What the docker CLI sends for a plain ``docker run``: every field at its default."""
    host = {"PidMode": "", "IpcMode": "", "Links": None, "OomKillDisable": False, "OomScoreAdj": 0,
            "MemorySwappiness": None, "BlkioWeightDevice": [], "DeviceRequests": None, "CpusetMems": "",
            "MaskedPaths": None, "VolumeDriver": "", "Isolation": "", "ConsoleSize": [0, 0],
            "DnsSearch": ["example.test"], "DnsOptions": ["ndots:2"], "UsernsMode": "host"}
    spec = specs.spec_from_create({"Image": "base", "Domainname": "", "MacAddress": "", "HostConfig": host}, None)
    assert spec["dns_search"] == ["example.test"] and spec["dns_option"] == ["ndots:2"]
    assert ContainerSpec.from_map(spec).userns_mode == "host"
    assert specs.spec_from_create({"Image": "base", "HostConfig": {"IpcMode": "shareable", "Runtime": "runc"}},
                                  None) == {"image": "base"}
