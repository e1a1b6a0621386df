"""The security flags of a container spec, checked (issue 18, docs/security.md): ``--cap-add``,
``--cap-drop``, ``--privileged``, ``--security-opt``, ``--group-add``, ``--sysctl``.

Pure: the spec (``spec.py``) calls :func:`check` at construction; the lifecycle
(``lifecycle/privileges.py``) turns the checked values into what the init stage gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from supervisor import seccomp
from supervisor.capabilities import CAPABILITY_NAMES
from supervisor.errors import InvalidArgument

#: Namespaced sysctls, as docker allows them: the IPC namespace's (kernel.msg*, kernel.shm*,
#: kernel.sem), the mqueue ones (fs.mqueue.*) and net.* (with the container's own network).
IPC_SYSCTLS = ("kernel.sem",)
SYSCTL_PREFIXES = ("kernel.msg", "kernel.shm", "fs.mqueue.", "net.")
UNSUPPORTED_OPTIONS = {
    "label": "SELinux labels are not supported by dockyard (it applies no SELinux policy)",
    "apparmor": "AppArmor profiles are not supported by dockyard (it loads no AppArmor profile)",
}


@dataclass(frozen=True)
class SecurityOptions:
    """``--security-opt`` entries, parsed: ``seccomp`` is None for the default profile,
    ``"unconfined"`` for none, or a profile's JSON text."""

    seccomp: str | None = None
    no_new_privileges: bool = False


def capability(text: str, flag: str) -> str:
    """``sys_admin``, ``SYS_ADMIN`` or ``CAP_SYS_ADMIN`` to ``CAP_SYS_ADMIN``; ``all`` to ``ALL``.

    Raises:
        InvalidArgument: not a capability of linux/capability.h.
    """
    if not isinstance(text, str):
        raise InvalidArgument(f"invalid value {text!r} for {flag}: not a capability name", flag=flag)
    name = text.strip().upper()
    if name == "ALL":
        return name
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in CAPABILITY_NAMES:
        raise InvalidArgument(f"invalid value {text!r} for {flag}: unknown capability", flag=flag)
    return name


def effective_capabilities(defaults: Iterable[str], cap_add: Iterable[str], cap_drop: Iterable[str],
                           available: Iterable[str]) -> tuple[str, ...]:
    """The capabilities a container gets, as docker computes them: ``ALL`` in ``cap_add`` starts
    from every ``available`` one (less the dropped ones); ``ALL`` in ``cap_drop`` starts from
    none (plus the added ones); otherwise the defaults, less the dropped, plus the added."""
    adds, drops, every = set(cap_add), set(cap_drop), list(available)
    if "ALL" in adds:
        chosen = {name for name in every if name not in drops}
    else:
        base = set() if "ALL" in drops else set(defaults)
        chosen = (base - drops) | (adds & set(every))
    return tuple(name for name in every if name in chosen)


def parse_security_options(entries: Iterable[str]) -> SecurityOptions:
    """``--security-opt`` entries (``KEY=VALUE``; docker's older ``KEY:VALUE`` too).

    Raises:
        InvalidArgument: an unknown option, a bad value, a profile that is not one, or an
            option dockyard does not support (label, apparmor).
    """
    profile: str | None = None
    no_new_privileges = False
    for entry in entries:
        if not isinstance(entry, str):
            raise InvalidArgument(f"invalid --security-opt {entry!r}: not a string", flag="--security-opt")
        if entry == "no-new-privileges":
            no_new_privileges = True
            continue
        separators = [index for index in (entry.find("="), entry.find(":")) if index > 0]
        if not separators:
            raise InvalidArgument(f"invalid --security-opt {entry[:80]!r}: use KEY=VALUE", flag="--security-opt")
        key, value = entry[:min(separators)], entry[min(separators) + 1:]
        if key in UNSUPPORTED_OPTIONS:
            raise InvalidArgument(f"invalid --security-opt {key}: {UNSUPPORTED_OPTIONS[key]}", flag="--security-opt")
        if key == "no-new-privileges":
            if value not in ("true", "false"):
                raise InvalidArgument(f"invalid --security-opt no-new-privileges={value[:40]}: use true or false",
                                      flag="--security-opt")
            no_new_privileges = value == "true"
        elif key == "seccomp":
            if value == "unconfined":
                profile = value
            elif value.lstrip().startswith("{"):
                seccomp.parse_profile(value, "--security-opt seccomp")
                profile = value
            else:
                raise InvalidArgument(
                    "invalid --security-opt seccomp: give unconfined or the profile's JSON "
                    f"(the CLI reads seccomp=FILE.json), not {value[:80]!r}", flag="--security-opt")
        else:
            raise InvalidArgument(f"invalid --security-opt {key[:40]!r}: dockyard knows seccomp, "
                                  "no-new-privileges (label and apparmor are not supported)", flag="--security-opt")
    return SecurityOptions(profile, no_new_privileges)


def check_sysctl(entry: Any, network: str) -> str:
    """One ``--sysctl KEY=VALUE``: namespaced keys only, as docker; ``net.*`` only with the
    container's own network namespace.

    Raises:
        InvalidArgument: not KEY=VALUE, a host-wide key, or net.* with a shared network.
    """
    if not isinstance(entry, str) or "=" not in entry or "\n" in entry or "\x00" in entry:
        raise InvalidArgument(f"invalid value {str(entry)[:80]!r} for --sysctl: use KEY=VALUE", flag="--sysctl")
    key, _, value = entry.partition("=")
    key = key.strip().replace("/", ".")
    parts = key.split(".")
    if len(parts) < 2 or not all(part and all(c.isalnum() or c in "_-" for c in part) for part in parts):
        raise InvalidArgument(f"invalid value {entry[:80]!r} for --sysctl: {key!r} is not a sysctl name",
                              flag="--sysctl", key=key)
    if key.startswith("net."):
        if network == "host" or network.startswith("container:"):
            raise InvalidArgument(
                f"invalid value {entry[:80]!r} for --sysctl: {key} belongs to the network namespace the "
                f"container shares (--network {network}); it can only be set with the container's own",
                flag="--sysctl", key=key)
    elif key not in IPC_SYSCTLS and not key.startswith(SYSCTL_PREFIXES):
        raise InvalidArgument(
            f"invalid value {entry[:80]!r} for --sysctl: sysctl {key!r} is not allowed: it is not namespaced "
            "(allowed: net.*, kernel.msg*, kernel.shm*, kernel.sem, fs.mqueue.*)", flag="--sysctl", key=key)
    return f"{key}={value}"


def check_group(entry: Any) -> str:
    """One ``--group-add``: a group name or id (looked up in the container's /etc/group at start)."""
    if not isinstance(entry, str) or not entry or ":" in entry or not all(c.isalnum() or c in "_.-" for c in entry):
        raise InvalidArgument(f"invalid value {str(entry)[:80]!r} for --group-add: not a group name or id",
                              flag="--group-add")
    return entry
