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


def test_compiled_programs_are_cached_under_the_root_per_profile(tmp_path):
    from supervisor.ociruntime.seccomp_cache import CACHE_DIR, compile_cached

    compiled = []

    def counting(document):
        compiled.append(document)
        return compile_oci_seccomp(document)

    allow = {"defaultAction": "SCMP_ACT_ALLOW"}
    deny = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    first = compile_cached(str(tmp_path), deny, counting)
    assert first == compile_oci_seccomp(deny)
    assert compile_cached(str(tmp_path), dict(reversed(deny.items())), counting) == first  # key order: same
    assert len(compiled) == 1
    assert compile_cached(str(tmp_path), allow, counting) != first
    assert len(compiled) == 2
    files = sorted((tmp_path / CACHE_DIR).iterdir())
    assert len(files) == 2 and all(oct(path.stat().st_mode & 0o777) == "0o600" for path in files)
    for path in files:
        path.write_bytes(b"short")  # not whole instructions: compiled again, replaced
    assert compile_cached(str(tmp_path), deny, counting) == first
    assert len(compiled) == 3


def test_an_invalid_profile_is_not_cached(tmp_path):
    from supervisor.ociruntime.seccomp_cache import CACHE_DIR, compile_cached

    with pytest.raises(RuntimeCommandError):
        compile_cached(str(tmp_path), {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["X"]}, compile_oci_seccomp)
    assert not (tmp_path / CACHE_DIR).exists() or not any((tmp_path / CACHE_DIR).iterdir())
