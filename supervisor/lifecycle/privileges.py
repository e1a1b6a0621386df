"""What a container's processes (pid 1 and every exec) may do, from its spec's security
fields (docs/security.md): the capabilities, the compiled seccomp filter, no_new_privs, the
extra groups; and what ``--privileged`` opens (every capability, no filter, no masked or
read-only paths, /sys writable, every host device).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass
from typing import Any

from supervisor import privileges, seccomp
from supervisor.lifecycle import devices
from supervisor.runtime import rootfs, seccomp_bpf, security
from supervisor.spec import ContainerSpec

#: What docker's GetHostDevices leaves out of a privileged container's /dev (dockyard makes
#: those itself: rootfs.DEVICES, the pts/shm/mqueue mounts).
SKIPPED_DEVICE_DIRS = ("pts", "shm", "fd", "mqueue")


@dataclass(frozen=True)
class ProcessSecurity:
    """The LaunchConfig/ExecConfig fields of a container's process."""

    capabilities: tuple[str, ...]
    seccomp: str  # the BPF program in hex; "" for none
    no_new_privileges: bool
    group_add: tuple[str, ...]

    def launch_fields(self) -> dict[str, Any]:
        return {"capabilities": self.capabilities, "seccomp": self.seccomp,
                "no_new_privileges": self.no_new_privileges, "group_add": self.group_add}


def host_capabilities() -> tuple[str, ...]:
    """Every capability this kernel has and the daemon holds (``--privileged``, ``--cap-add
    ALL``): a daemon confined by its own host (a sandbox that keeps one back) cannot give it."""
    last = security.last_capability()
    held = (1 << (last + 1)) - 1
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith("CapPrm:"):
                    held = int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return tuple(name for number, name in enumerate(privileges.CAPABILITY_NAMES)
                 if number <= last and held >> number & 1)


def process_security(spec: ContainerSpec, cgroup: Any) -> ProcessSecurity:
    """The security of a process of the container of ``spec`` in ``cgroup``.

    Raises:
        InvalidArgument: libseccomp is missing or refused the profile.
    """
    options = spec.security_options
    if spec.privileged:
        capabilities = host_capabilities()
    else:
        capabilities = privileges.effective_capabilities(devices.capabilities(cgroup), spec.cap_add, spec.cap_drop,
                                                         host_capabilities())
    program = ""
    if not spec.privileged and options.seccomp != "unconfined":
        text = options.seccomp or seccomp.default_profile_text()
        program = seccomp_bpf.compiled(text, frozenset(capabilities)).hex()
    return ProcessSecurity(capabilities, program, options.no_new_privileges, spec.group_add)


def exec_security(spec: ContainerSpec, cgroup: Any, privileged: bool = False) -> ProcessSecurity:
    """An exec's (and a health check's): the container's own, or with ``exec --privileged``
    every capability the daemon holds; the container's seccomp filter and no_new_privs stay
    (docker's exec --privileged changes the capabilities only; runc applies the container's
    filter to every process)."""
    security = process_security(spec, cgroup)
    if privileged:
        security = dataclasses.replace(security, capabilities=host_capabilities())
    return security


def privileged_devices() -> tuple[str, ...]:
    """The host's device nodes as LaunchConfig.devices entries (``--privileged``), except those
    the container's /dev has of its own."""
    own = {name for name, _, _ in rootfs.DEVICES} | {name for name, _ in rootfs.DEVICE_LINKS}
    found = []
    for directory, subdirs, files in os.walk("/dev"):
        relative = os.path.relpath(directory, "/dev")
        if relative == ".":
            subdirs[:] = [name for name in subdirs if name not in SKIPPED_DEVICE_DIRS and not name.startswith(".")]
        for name in sorted(files):
            path = os.path.normpath(os.path.join(directory, name))
            inside = path[len("/dev/"):]
            if inside in own or any(c.isspace() for c in path):
                continue
            try:
                node = os.lstat(path)
            except OSError:
                continue  # gone meanwhile
            kind = "c" if stat.S_ISCHR(node.st_mode) else "b" if stat.S_ISBLK(node.st_mode) else ""
            if kind:
                found.append(f"{kind} {os.major(node.st_rdev)} {os.minor(node.st_rdev)} "
                             f"{stat.S_IMODE(node.st_mode):o} {path}")
    return tuple(found)


#: The devices cgroup rule of a privileged container: every device.
ALL_DEVICES_RULE = "a *:* rwm"


def device_rules(spec: ContainerSpec) -> tuple[str, ...]:
    """The devices cgroup rules: every device for ``--privileged``, else the ``--device`` ones
    and the ``--device-cgroup-rule`` ones."""
    if spec.privileged:
        return (ALL_DEVICES_RULE,)
    return devices.device_rules(spec.resources) + spec.resources.device_cgroup_rules


def launch_fields(spec: ContainerSpec, cgroup: Any) -> dict[str, Any]:
    """The LaunchConfig fields of pid 1 that security decides (see the module docstring)."""
    fields = process_security(spec, cgroup).launch_fields()
    fields["devices"] = devices.device_nodes(spec.resources)
    fields["sysctls"] = spec.sysctls
    if spec.privileged:
        fields.update(masked_paths=(), readonly_paths=(), writable_sysfs=True)
        taken = {entry.rpartition(" ")[2] for entry in fields["devices"]}
        fields["devices"] += tuple(entry for entry in privileged_devices() if entry.rpartition(" ")[2] not in taken)
    return fields
