"""The OCI runtime spec's seccomp format (``linux.seccomp``) compiled to a BPF program.

The OCI format is docker's profile format without ``archMap``, ``includes`` and
``excludes`` (the runtime is given the rules already chosen), so it goes through the same
parser, resolver and libseccomp compiler as the daemon's profiles (``supervisor/seccomp.py``,
``supervisor/runtime/seccomp_bpf.py``). Refused, with the field named: ``SCMP_ACT_NOTIFY``
and ``listenerPath`` (no seccomp agent), and filter ``flags``.
"""

from __future__ import annotations

import json

from supervisor.errors import InvalidArgument
from supervisor.ociruntime.errors import RuntimeCommandError

OCI_ONLY_FIELDS = ("listenerPath", "listenerMetadata")


def compile_oci_seccomp(document: dict) -> bytes:
    """The BPF program of an OCI ``linux.seccomp`` object.

    Raises:
        RuntimeCommandError: the profile is invalid or uses what is not supported.
    """
    from supervisor import seccomp
    from supervisor.runtime import seccomp_bpf

    profile = dict(document)
    for name in OCI_ONLY_FIELDS:
        if profile.pop(name, None):
            raise RuntimeCommandError(f"config.json: linux.seccomp.{name}: seccomp agents are not supported")
    flags = profile.pop("flags", None) or []
    if flags:
        raise RuntimeCommandError(f"config.json: linux.seccomp.flags {flags}: filter flags are not supported")
    try:
        parsed = seccomp.parse_profile(json.dumps(profile), "config.json: linux.seccomp")
        resolved = seccomp.resolve(parsed, seccomp_capabilities())
        return seccomp_bpf.compile_filter(resolved)
    except InvalidArgument as exc:
        raise RuntimeCommandError(str(exc)) from None


def seccomp_capabilities() -> tuple[str, ...]:
    """Every capability: an OCI profile has no capability conditions to resolve."""
    from supervisor.runtime.security import CAPABILITIES

    return tuple(CAPABILITIES)
