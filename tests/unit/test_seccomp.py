"""supervisor/seccomp.py (a profile resolved for capabilities and an architecture) and
supervisor/runtime/seccomp_bpf.py (compiled by libseccomp; loaded in a forked child with
no_new_privs, which needs no root)."""

from __future__ import annotations

import errno
import json
import os

import pytest

from supervisor import seccomp
from supervisor.errors import InvalidArgument
from supervisor.runtime import libc, seccomp_bpf
from supervisor.runtime.protocol import DEFAULT_CAPABILITIES

ERRNO = seccomp.ACTIONS["SCMP_ACT_ERRNO"]
ALLOW = seccomp.ACTIONS["SCMP_ACT_ALLOW"]

PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 38,
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["both"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]}},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["s390x"]},
         "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
        {"names": ["new"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.19"}},
        {"names": ["nosys"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {"names": ["plain"], "action": "SCMP_ACT_ERRNO"},
    ],
}


def names(resolved: seccomp.Filter) -> dict[str, list[seccomp.Rule]]:
    found: dict[str, list[seccomp.Rule]] = {}
    for rule in resolved.rules:
        found.setdefault(rule.name, []).append(rule)
    return found


def test_capabilities_pick_the_includes_and_excludes():
    plain = names(seccomp.resolve(PROFILE, DEFAULT_CAPABILITIES, "x86_64", "6.1.0"))
    assert [rule.action for rule in plain["bpf"]] == [ERRNO | errno.EPERM]
    assert "both" not in plain
    admin = names(seccomp.resolve(PROFILE, [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"], "x86_64", "6.1.0"))
    assert [rule.action for rule in admin["bpf"]] == [ALLOW] and "both" not in admin
    both = names(seccomp.resolve(PROFILE, ["CAP_SYS_ADMIN", "CAP_BPF"], "x86_64", "6.1.0"))
    assert "both" in both


def test_the_architecture_picks_the_arches_and_the_sub_architectures():
    on_x86 = seccomp.resolve(PROFILE, (), "x86_64", "6.1.0")
    assert on_x86.architectures == ("x86_64", "x86", "x32")
    assert "arch_prctl" in names(on_x86)
    on_arm = seccomp.resolve(PROFILE, (), "aarch64", "6.1.0")
    assert on_arm.architectures == ("aarch64", "arm")
    assert "arch_prctl" not in names(on_arm)
    assert "clone" in names(on_arm) and "clone" not in names(seccomp.resolve(PROFILE, (), "s390x", "6.1.0"))


def test_min_kernel_errno_defaults_and_conditions():
    old = names(seccomp.resolve(PROFILE, (), "x86_64", "5.10.0-28-amd64"))
    assert "new" not in old and "new" in names(seccomp.resolve(PROFILE, (), "x86_64", "6.1.0"))
    assert "nosys" not in old  # the default action itself: nothing to add (libseccomp refuses it)
    assert old["plain"][0].action == ERRNO | errno.EPERM  # docker's default errno
    (clone,) = old["clone"]
    assert clone.conditions == (seccomp.Condition(0, seccomp.OPERATORS["SCMP_CMP_MASKED_EQ"], 0x7E020000, 0),)
    # Two conditions on one argument: two rules (ORed), as runc, since libseccomp ANDs them.
    assert [rule.conditions[0].value for rule in old["personality"]] == [0, 8]


@pytest.mark.parametrize(("change", "named"), [
    ({"defaultAction": "SCMP_ACT_MAYBE"}, "defaultAction"),
    ({"syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]}, "syscalls[0].names"),
    ({"syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 7, "op": "SCMP_CMP_EQ"}]}]},
     "syscalls[0].args[0].index"),
    ({"syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "op": "LIKE"}]}]},
     "syscalls[0].args[0].op"),
    ({"listenerPath": "/run/x"}, "listenerPath"),
    ({"syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": "CAP_X"}}]},
     "syscalls[0].includes"),
])
def test_a_bad_profile_is_refused_naming_the_field(change, named):
    with pytest.raises(InvalidArgument, match=named.replace("[", r"\[").replace("]", r"\]")):
        seccomp.parse_profile(json.dumps({**PROFILE, **change}))
    with pytest.raises(InvalidArgument, match="invalid JSON"):
        seccomp.parse_profile("{")


def test_the_shipped_profile_parses_and_refuses_what_docker_refuses():
    profile = seccomp.parse_profile(seccomp.default_profile_text())
    default = names(seccomp.resolve(profile, DEFAULT_CAPABILITIES, "x86_64", "6.1.0"))
    for name in ("unshare", "mount", "keyctl", "add_key", "bpf", "perf_event_open", "open_by_handle_at",
                 "kexec_load", "init_module", "clock_settime", "swapon", "reboot", "userfaultfd"):
        assert [rule.action for rule in default[name]] == [ERRNO | errno.EPERM], name
    assert all(rule.action == ALLOW for rule in default["read"])
    admin = names(seccomp.resolve(profile, [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"], "x86_64", "6.1.0"))
    assert [rule.action for rule in admin["unshare"]] == [ALLOW]
    assert [rule.action for rule in admin["mount"]] == [ALLOW]
    assert [rule.action for rule in admin.get("keyctl", ())] == [ERRNO | errno.EPERM]  # never, as docker


def test_compiled_once_per_profile_and_capability_set():
    text = seccomp.default_profile_text()
    first = seccomp_bpf.compiled(text, frozenset(DEFAULT_CAPABILITIES))
    assert len(first) % 8 == 0 and len(first) > 8 * 100
    assert seccomp_bpf.compiled(text, frozenset(DEFAULT_CAPABILITIES)) is first
    assert seccomp_bpf.compiled(text, frozenset([*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"])) != first


def run_filtered(program: bytes, action) -> int:
    """Fork; the child sets no_new_privs, loads ``program`` and exits with ``action()``."""
    child = os.fork()
    if child == 0:
        try:
            libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
            libc.set_seccomp_filter(program)
            os._exit(action())
        finally:
            os._exit(99)
    return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])


def test_the_loaded_filter_refuses_with_the_profiles_errno(tmp_path):
    profile = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES}]})
    program = seccomp_bpf.compiled(profile, frozenset())

    def make() -> int:
        try:
            os.mkdir(tmp_path / "made")
        except OSError as exc:
            return exc.errno
        return 0

    assert run_filtered(program, make) == errno.EACCES
    assert not (tmp_path / "made").exists()
    assert run_filtered(seccomp_bpf.compiled(json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}), frozenset()), make) == 0
