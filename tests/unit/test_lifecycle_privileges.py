"""supervisor/lifecycle/privileges.py without root: what a container's processes get from its
spec's security fields."""

from __future__ import annotations

from types import SimpleNamespace

from supervisor.lifecycle import privileges
from supervisor.runtime.protocol import DEFAULT_CAPABILITIES
from supervisor.spec import ContainerSpec

V1 = SimpleNamespace(version=1)


def security(**fields):
    return privileges.process_security(ContainerSpec(image="base", **fields), V1)


def test_the_default_is_dockers_capabilities_and_filter_without_no_new_privs():
    default = security()
    assert set(default.capabilities) == set(DEFAULT_CAPABILITIES)
    assert default.seccomp and len(default.seccomp) % 16 == 0
    assert default.no_new_privileges is False


def test_the_filter_follows_the_capabilities_and_the_options():
    assert security(cap_add=["SYS_ADMIN"]).seccomp != security().seccomp
    assert security(security_opt=["seccomp=unconfined"]).seccomp == ""
    assert security(security_opt=["no-new-privileges"]).no_new_privileges is True
    assert security(cap_drop=["ALL"]).capabilities == ()


def test_privileged_opens_everything_the_daemon_holds():
    privileged = security(privileged=True)
    assert privileged.seccomp == "" and set(privileged.capabilities) == set(privileges.host_capabilities())
    assert "CAP_SYS_ADMIN" in privileged.capabilities
    fields = privileges.launch_fields(ContainerSpec(image="base", privileged=True), V1)
    assert fields["masked_paths"] == () and fields["readonly_paths"] == () and fields["writable_sysfs"] is True
    assert any(entry.startswith("c ") for entry in fields["devices"])  # the host's nodes
    assert not any(entry.endswith((" /dev/null", " /dev/zero")) for entry in fields["devices"])  # the stage's own
    assert privileges.device_rules(ContainerSpec(image="base", privileged=True)) == ("a *:* rwm",)
    assert privileges.device_rules(ContainerSpec(image="base")) == ()
