"""The security flags (issue 18) without root: supervisor/privileges.py, their place in the
spec and the launch config, the CLI's shaping, and the init stage's --group-add lookup."""

from __future__ import annotations

import json

import pytest

from supervisor import privileges
from supervisor.cli.parser import build_parser
from supervisor.cli.specs import spec_from
from supervisor.container import _security_host_config
from supervisor.errors import InvalidArgument
from supervisor.runtime import security
from supervisor.runtime.libc import InitError
from supervisor.runtime.protocol import DEFAULT_CAPABILITIES
from supervisor.spec import ContainerSpec
from tests.runtime_helpers import make_config

EVERY = privileges.CAPABILITY_NAMES


def test_the_capability_list_is_the_init_stages():
    assert list(privileges.CAPABILITY_NAMES) == sorted(security.CAPABILITIES, key=security.CAPABILITIES.get)


@pytest.mark.parametrize(("text", "name"), [("NET_ADMIN", "CAP_NET_ADMIN"), ("cap_net_admin", "CAP_NET_ADMIN"),
                                            ("all", "ALL"), ("CAP_BPF", "CAP_BPF")])
def test_capability_names_with_or_without_cap(text, name):
    assert privileges.capability(text, "--cap-add") == name


def test_an_unknown_capability_is_refused_naming_the_flag():
    with pytest.raises(InvalidArgument, match="'FLY' for --cap-drop: unknown capability"):
        privileges.capability("FLY", "--cap-drop")


@pytest.mark.parametrize(("add", "drop", "expected"), [
    ((), (), set(DEFAULT_CAPABILITIES)),
    (("CAP_NET_ADMIN",), ("CAP_CHOWN",), set(DEFAULT_CAPABILITIES) - {"CAP_CHOWN"} | {"CAP_NET_ADMIN"}),
    ((), ("ALL",), set()),
    (("CAP_NET_ADMIN",), ("ALL",), {"CAP_NET_ADMIN"}),
    (("ALL",), ("CAP_SYS_ADMIN",), set(EVERY) - {"CAP_SYS_ADMIN"}),
])
def test_effective_capabilities_as_docker(add, drop, expected):
    assert set(privileges.effective_capabilities(DEFAULT_CAPABILITIES, add, drop, EVERY)) == expected


def test_security_options():
    assert privileges.parse_security_options([]) == privileges.SecurityOptions(None, False)
    assert privileges.parse_security_options(["no-new-privileges"]).no_new_privileges
    assert privileges.parse_security_options(["no-new-privileges:true"]).no_new_privileges
    assert not privileges.parse_security_options(["no-new-privileges", "no-new-privileges=false"]).no_new_privileges
    assert privileges.parse_security_options(["seccomp=unconfined"]).seccomp == "unconfined"
    profile = json.dumps({"defaultAction": "SCMP_ACT_ALLOW"})
    assert privileges.parse_security_options([f"seccomp={profile}"]).seccomp == profile


@pytest.mark.parametrize(("entry", "words"), [
    ("label=disable", "SELinux labels are not supported"),
    ("label:type:foo", "SELinux"),
    ("apparmor=unconfined", "AppArmor profiles are not supported"),
    ("seccomp=/etc/profile.json", "the CLI reads seccomp=FILE.json"),
    ('seccomp={"defaultAction": "NOPE"}', "defaultAction"),
    ("no-new-privileges=maybe", "use true or false"),
    ("systempaths=unconfined", "dockyard knows seccomp, no-new-privileges"),
    ("nonsense", "use KEY=VALUE"),
])
def test_bad_security_options_are_refused_with_the_cause(entry, words):
    with pytest.raises(InvalidArgument, match=words):
        privileges.parse_security_options([entry])


@pytest.mark.parametrize("entry", ["net.ipv4.ip_forward=1", "kernel.shmmax=1048576", "kernel.msgmax=8192",
                                   "kernel.sem=250 32000 32 128", "fs.mqueue.msg_max=20", "net/ipv4/ip_forward=1"])
def test_namespaced_sysctls_are_taken(entry):
    assert privileges.check_sysctl(entry, "bridge").partition("=")[0].count("/") == 0


@pytest.mark.parametrize(("entry", "network", "words"), [
    ("vm.swappiness=10", "bridge", "sysctl 'vm.swappiness' is not allowed: it is not namespaced"),
    ("kernel.domainname=x", "bridge", "'kernel.domainname' is not allowed"),
    ("net.ipv4.ip_forward=1", "host", "--network host"),
    ("net.ipv4.ip_forward=1", "container:web", "--network container:web"),
    ("novalue", "bridge", "use KEY=VALUE"),
    ("net..x=1", "bridge", "is not a sysctl name"),
])
def test_other_sysctls_are_refused_naming_the_key(entry, network, words):
    with pytest.raises(InvalidArgument, match=words):
        privileges.check_sysctl(entry, network)


def test_the_spec_normalises_keeps_and_shows_the_security_fields():
    spec = ContainerSpec.from_map({"image": "base", "cap_add": ["net_admin"], "cap_drop": ["ALL"],
                                   "privileged": True, "security_opt": ["no-new-privileges"],
                                   "group_add": ["audio", "4242"], "sysctls": {"kernel.shmmax": "1048576"}})
    assert spec.cap_add == ("CAP_NET_ADMIN",) and spec.cap_drop == ("ALL",)
    assert spec.sysctls == ("kernel.shmmax=1048576",)
    assert ContainerSpec.from_map(spec.to_map()) == spec
    assert _security_host_config(spec) == {
        "CapAdd": ["CAP_NET_ADMIN"], "CapDrop": ["ALL"], "Privileged": True, "SecurityOpt": ["no-new-privileges"],
        "GroupAdd": ["audio", "4242"], "Sysctls": {"kernel.shmmax": "1048576"}, "UsernsMode": ""}
    assert _security_host_config(ContainerSpec(image="base"))["CapAdd"] is None


@pytest.mark.parametrize(("fields", "words"), [
    ({"privileged": "yes"}, "spec.privileged"),
    ({"cap_add": "NET_ADMIN"}, "spec.cap_add"),
    ({"group_add": ["a:b"]}, "--group-add"),
    ({"sysctls": ["vm.swappiness=1"]}, "vm.swappiness"),
    ({"network": "host", "sysctls": ["net.core.somaxconn=1024"]}, "--network host"),
])
def test_the_spec_refuses_bad_security_fields(fields, words):
    with pytest.raises(InvalidArgument, match=words):
        ContainerSpec(image="base", **fields)


def test_the_cli_shapes_the_flags_and_reads_a_profile_file(tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    args = build_parser().parse_args([
        "run", "--cap-add", "NET_ADMIN", "--cap-drop", "ALL", "--privileged", "--group-add", "audio",
        "--sysctl", "net.ipv4.ip_forward=1", "--security-opt", f"seccomp={profile}",
        "--security-opt", "no-new-privileges", "base", "true"])
    spec = spec_from(args)
    assert spec["cap_add"] == ["NET_ADMIN"] and spec["cap_drop"] == ["ALL"] and spec["privileged"] is True
    assert spec["group_add"] == ["audio"] and spec["sysctls"] == ["net.ipv4.ip_forward=1"]
    assert spec["security_opt"] == ['seccomp={"defaultAction": "SCMP_ACT_ALLOW"}', "no-new-privileges"]
    ContainerSpec.from_map(spec)
    unconfined = spec_from(build_parser().parse_args(["run", "--security-opt", "seccomp=unconfined", "base"]))
    assert unconfined["security_opt"] == ["seccomp=unconfined"]
    assert "privileged" not in spec_from(build_parser().parse_args(["run", "base"]))


def test_the_launch_config_checks_the_security_fields():
    config = make_config(seccomp="00" * 16, no_new_privileges=True, group_add=["audio"], sysctls=["kernel.sem=1 2 3 4"])
    assert config.seccomp == "00" * 16 and config.group_add == ("audio",)
    for fields in ({"seccomp": "abc"}, {"group_add": ["a:b"]}, {"sysctls": ["x"]}, {"sysctls": ["net...x=1"]},
                   {"no_new_privileges": 1}):
        with pytest.raises(InvalidArgument, match="launch config"):
            make_config(**fields)


def test_group_add_names_come_from_the_containers_group_file():
    group = "root:x:0:\naudio:x:29:\n"
    assert security.additional_groups(["audio", "4242"], group) == (29, 4242)
    with pytest.raises(InitError, match="unable to find group video"):
        security.additional_groups(["video"], group)
