"""The OCI seccomp format compiled by libseccomp (supervisor/ociruntime/seccomp.py)."""

from __future__ import annotations

import pytest

from supervisor.ociruntime.errors import RuntimeCommandError
from supervisor.ociruntime.seccomp import compile_oci_seccomp
from supervisor.runtime import seccomp_bpf

pytestmark = pytest.mark.skipif(not seccomp_bpf.available(), reason="libseccomp2 is not installed")


def test_an_oci_profile_compiles_to_a_bpf_program():
    program = compile_oci_seccomp({
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]})
    assert program and len(program) % 8 == 0
    assert program != compile_oci_seccomp({"defaultAction": "SCMP_ACT_ALLOW"})


@pytest.mark.parametrize("profile, message", [
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}, "seccomp agents are not supported"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]}, "filter flags are not supported"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "defaultAction 'SCMP_ACT_NOTIFY' is not one of"),
])
def test_what_is_not_supported_is_refused_by_name(profile, message):
    with pytest.raises(RuntimeCommandError, match=message):
        compile_oci_seccomp(profile)
