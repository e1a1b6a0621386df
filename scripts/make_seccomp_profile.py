#!/usr/bin/env python3
"""Generate dockyard's default seccomp profile (supervisor/seccomp_default.json).

Source: the containers-common profile that Debian's golang-github-containers-common
0.50.1+ds1-4 (a dependency of podman) installs at /usr/share/containers/seccomp.json,
sha256 cc374cf23846ce1f62f4dc807a8e2b8673c783c6f56cb475467621035d281e6c; Copyright 2018
github.com/containers/common authors, Apache-2.0 (the license of dockyard too).

That profile is docker's default profile format and almost its content. It differs from
docker's in a few syscalls it allows to every container for nested rootless containers,
which docker refuses without CAP_SYS_ADMIN (moby profiles/seccomp/default.json): unshare,
mount and the new mount API, clone with namespace flags, clone3, setns-like pivot_root,
keyctl, reboot, syslog. dockyard follows docker there (docs/security.md says why: a user
namespace gives the payload every capability over the objects it then creates, the door
of many kernel escapes). The changes are :data:`ADJUSTMENTS` below, applied in order.

Run: python3 scripts/make_seccomp_profile.py [SOURCE] > supervisor/seccomp_default.json
"""

from __future__ import annotations

import hashlib
import json
import sys

SOURCE = "/usr/share/containers/seccomp.json"
SOURCE_SHA256 = "cc374cf23846ce1f62f4dc807a8e2b8673c783c6f56cb475467621035d281e6c"
EPERM = 1
ENOSYS = 38
#: clone flags that make a namespace: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)

#: Allowed only with CAP_SYS_ADMIN (refused with EPERM otherwise), as docker.
SYS_ADMIN_ONLY = ("unshare", "mount", "umount", "umount2", "pivot_root", "fsconfig", "fsmount", "fsopen",
                  "fspick", "move_mount", "open_tree", "mount_setattr")


def rule(names, action, errno=None, args=(), includes=None, excludes=None, comment=""):
    entry = {"names": list(names), "action": action, "args": list(args), "comment": comment,
             "includes": includes or {}, "excludes": excludes or {}}
    if errno is not None:
        entry["errnoRet"] = errno
    return entry


def adjust(profile: dict) -> dict:
    """The containers-common profile made docker's equivalent (see the module docstring)."""
    allowed = profile["syscalls"][1]
    assert allowed["action"] == "SCMP_ACT_ALLOW" and not allowed["args"] and "read" in allowed["names"]
    moved = set(SYS_ADMIN_ONLY) | {"clone", "clone3", "keyctl", "reboot", "syslog"}
    allowed["names"] = [name for name in allowed["names"] if name not in moved]
    for entry in profile["syscalls"]:  # bpf and perf_event_open: also allowed with CAP_BPF, CAP_PERFMON
        if entry["action"] == "SCMP_ACT_ERRNO" and "bpf" in entry["names"]:
            entry["names"] = [name for name in entry["names"] if name not in ("bpf", "perf_event_open")]
    sys_admin = {"caps": ["CAP_SYS_ADMIN"]}
    profile["syscalls"] += [
        rule([*SYS_ADMIN_ONLY, "clone", "clone3", "syslog"], "SCMP_ACT_ALLOW", includes=sys_admin,
             comment="dockyard: docker's CAP_SYS_ADMIN-only syscalls"),
        rule(SYS_ADMIN_ONLY, "SCMP_ACT_ERRNO", EPERM, excludes=sys_admin,
             comment="dockyard: namespaces and mounts need CAP_SYS_ADMIN, as in docker"),
        rule(["clone"], "SCMP_ACT_ALLOW",
             args=[{"index": 0, "value": sum(NAMESPACE_FLAGS), "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
             excludes={"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]},
             comment="dockyard: clone without namespace flags"),
        rule(["clone"], "SCMP_ACT_ALLOW",
             args=[{"index": 1, "value": sum(NAMESPACE_FLAGS), "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
             includes={"arches": ["s390", "s390x"]}, excludes=sys_admin,
             comment="dockyard: clone without namespace flags (s390 orders the arguments differently)"),
        *(rule(["clone"], "SCMP_ACT_ERRNO", EPERM,
               args=[{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
               excludes={"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]},
               comment="dockyard: clone with a namespace flag") for flag in NAMESPACE_FLAGS),
        rule(["clone3"], "SCMP_ACT_ERRNO", ENOSYS, excludes=sys_admin,
             comment="dockyard: its flags cannot be filtered; ENOSYS makes libc fall back to clone"),
        rule(["reboot"], "SCMP_ACT_ALLOW", includes={"caps": ["CAP_SYS_BOOT"]}),
        rule(["reboot"], "SCMP_ACT_ERRNO", EPERM, excludes={"caps": ["CAP_SYS_BOOT"]}),
        rule(["syslog"], "SCMP_ACT_ALLOW", includes={"caps": ["CAP_SYSLOG"]}, excludes=sys_admin),
        rule(["syslog"], "SCMP_ACT_ERRNO", EPERM, excludes={"caps": ["CAP_SYS_ADMIN", "CAP_SYSLOG"]}),
        rule(["bpf"], "SCMP_ACT_ALLOW", includes={"caps": ["CAP_BPF"]}, excludes=sys_admin),
        rule(["perf_event_open"], "SCMP_ACT_ALLOW", includes={"caps": ["CAP_PERFMON"]}, excludes=sys_admin),
        rule(["bpf"], "SCMP_ACT_ERRNO", EPERM, excludes={"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]}),
        rule(["perf_event_open"], "SCMP_ACT_ERRNO", EPERM, excludes={"caps": ["CAP_SYS_ADMIN", "CAP_PERFMON"]}),
        rule(["keyctl", "add_key", "request_key"], "SCMP_ACT_ERRNO", EPERM,
             comment="dockyard: the kernel keyrings are not namespaced, as docker refuses them"),
    ]
    return profile


def main() -> None:
    source = sys.argv[1] if len(sys.argv) > 1 else SOURCE
    with open(source, "rb") as file:
        data = file.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        sys.exit(f"{source}: sha256 {digest}, expected {SOURCE_SHA256} (another version: review ADJUSTMENTS)")
    profile = adjust(json.loads(data))
    profile = {"comment": "generated by scripts/make_seccomp_profile.py from containers-common "
                          f"0.50.1 seccomp.json (sha256 {SOURCE_SHA256}, Apache-2.0); see docs/security.md",
               **profile}
    json.dump(profile, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
