"""A bundle's ``config.json`` (the OCI runtime spec) checked and turned into the config of the
init stage (``supervisor/runtime/bundle_stage.py``), a plain map. Pure: the only outside
inputs are parameters (the host's LSM state, the seccomp compiler), so every rule is
unit-tested without root.

What is refused, and why, is written in docs/runtime.md ("Supported fields").
"""

from __future__ import annotations

import os

from supervisor.capabilities import CAPABILITY_NAMES as CAPABILITIES
from supervisor.ociruntime.errors import RuntimeCommandError


MS = {  # mount(2) flags by option name, as runc's table: (set, clear)
    "ro": (0x1, 0), "rw": (0, 0x1), "nosuid": (0x2, 0), "suid": (0, 0x2), "nodev": (0x4, 0), "dev": (0, 0x4),
    "noexec": (0x8, 0), "exec": (0, 0x8), "sync": (0x10, 0), "async": (0, 0x10), "remount": (0x20, 0),
    "mand": (0x40, 0), "nomand": (0, 0x40), "dirsync": (0x80, 0), "noatime": (0x400, 0), "atime": (0, 0x400),
    "nodiratime": (0x800, 0), "diratime": (0, 0x800), "bind": (0x1000, 0), "rbind": (0x1000 | 0x4000, 0),
    "silent": (0x8000, 0), "loud": (0, 0x8000), "relatime": (0x200000, 0), "norelatime": (0, 0x200000),
    "strictatime": (0x1000000, 0), "nostrictatime": (0, 0x1000000), "lazytime": (0x2000000, 0),
    "nolazytime": (0, 0x2000000), "iversion": (0x800000, 0), "noiversion": (0, 0x800000), "defaults": (0, 0),
    "acl": (0x10000, 0), "noacl": (0, 0x10000),
}
MS_REC = 0x4000
PROPAGATION = {"private": 0x40000, "shared": 0x100000, "slave": 0x80000, "unbindable": 0x20000}
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup")
RLIMITS = ("cpu", "fsize", "data", "stack", "core", "rss", "nproc", "nofile", "memlock", "as", "locks",
           "sigpending", "msgqueue", "nice", "rtprio", "rttime")
ASCII_ALNUM = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


class Host:
    """What the translation needs to know of the host (parameters, for the tests): whether
    it enforces AppArmor or SELinux, and the seccomp compiler (OCI document -> BPF bytes).
    (Plain classes here, not dataclasses: ``dataclasses`` imports ``inspect``, a tenth of
    the command's start-up.)"""

    def __init__(self, apparmor: bool = False, selinux: bool = False, compile_seccomp=None):
        self.apparmor, self.selinux, self.compile_seccomp = apparmor, selinux, compile_seccomp


class Bundle:
    """A bundle ready to create: the stage's config, and what the runtime keeps beside it."""

    def __init__(self, stage: dict, hooks: dict, cgroups_path: str, resources: dict, annotations: dict, rootfs: str):
        self.stage, self.hooks, self.cgroups_path = stage, hooks, cgroups_path
        self.resources, self.annotations, self.rootfs = resources, annotations, rootfs


# The three checks below are hand-written, not regular expressions: ``re`` costs every
# ``run`` ~6 ms to import (docs/runtime.md, "Where the time goes").

def valid_id(text: str) -> bool:
    """``^[\\w+\\-.]+\\Z``: letters and digits (Unicode's, as ``\\w``), ``_+-.``."""
    return bool(text) and all(char.isalnum() or char in "_+-." for char in text)


def valid_oci_version(text: str) -> bool:
    """SemVer with major 1: ``1.MINOR.PATCH[-PRE][+BUILD]``, PRE and BUILD of ``[0-9A-Za-z.-]``."""
    if not text.startswith("1."):
        return False
    rest, plus, build = text[2:].partition("+")
    core, dash, pre = rest.partition("-")
    minor, dot, patch = core.partition(".")
    return (bool(dot) and minor.isdecimal() and patch.isdecimal()
            and (not dash or _semver_identifier(pre)) and (not plus or _semver_identifier(build)))


def _semver_identifier(text: str) -> bool:
    return bool(text) and all(char in ASCII_ALNUM or char in ".-" for char in text)


def valid_sysctl_key(text: str) -> bool:
    """``^[a-zA-Z0-9_]+(?:[./][a-zA-Z0-9_-]+)+\\Z``: two or more parts split by ``.`` or
    ``/``, of ASCII letters, digits, ``_`` (and ``-`` after the first)."""
    parts = text.replace("/", ".").split(".")
    return (len(parts) >= 2 and "-" not in parts[0]
            and all(part and all(char in ASCII_ALNUM or char in "_-" for char in part) for part in parts))


def check_id(container_id: str) -> None:
    if not valid_id(container_id) or container_id in (".", ".."):
        raise RuntimeCommandError(f"invalid container id {container_id!r}: only letters, digits, '_', '+', '-' and '.'")


def _error(what: str) -> RuntimeCommandError:
    return RuntimeCommandError(f"config.json: {what}")


def parse_mount_options(options: list[str]) -> tuple[int, int, str]:
    """(flags, propagation flags, data) of a mount's options, as runc splits them."""
    flags, propagation, data = 0, 0, []
    for option in options:
        if option in MS:
            add, clear = MS[option]
            flags = (flags | add) & ~clear
            continue
        recursive = option.startswith("r") and option[1:] in PROPAGATION
        name = option[1:] if recursive else option
        if name in PROPAGATION:
            propagation |= PROPAGATION[name] | (MS_REC if recursive else 0)
        else:
            data.append(option)
    return flags, propagation, ",".join(data)


def translate_mounts(mounts: list[dict], bundle_dir: str) -> tuple[list, bool]:
    """The stage's mount list and whether the runtime makes /dev's default devices (not when
    /dev is a bind mount of the host's)."""
    result, default_devices = [], True
    for index, mount in enumerate(mounts or []):
        destination = mount.get("destination")
        if not isinstance(destination, str) or not destination.startswith("/"):
            raise _error(f"mounts[{index}].destination {destination!r} is not an absolute path")
        kind = mount.get("type") or ""
        options = mount.get("options") or []
        flags, propagation, data = parse_mount_options(options)
        source = mount.get("source") or kind or "none"
        if kind == "bind" or flags & 0x1000:
            flags |= 0x1000
            kind = "bind"
            if not source.startswith("/"):
                source = os.path.join(bundle_dir, source)
            if os.path.normpath(destination) == "/dev":
                default_devices = False
        elif not kind:
            raise _error(f"mounts[{index}] ({destination}) has no type and is not a bind mount")
        result.append([kind, source, os.path.normpath(destination), flags, propagation, data])
    return result, default_devices


def translate_devices(devices: list[dict]) -> list:
    result = []
    for index, device in enumerate(devices or []):
        path, kind = device.get("path"), device.get("type")
        if not isinstance(path, str) or not path.startswith("/dev/"):
            raise _error(f"linux.devices[{index}].path {path!r} is not under /dev")
        if kind not in ("c", "b", "u", "p"):
            raise _error(f"linux.devices[{index}].type {kind!r} is not one of c, b, u, p")
        major, minor = device.get("major", 0), device.get("minor", 0)
        if kind != "p" and (type(major) is not int or type(minor) is not int):
            raise _error(f"linux.devices[{index}] ({path}) needs integer major and minor numbers")
        mode = device.get("fileMode")
        result.append([path, kind, major or 0, minor or 0, 0o666 if mode is None else mode,
                       device.get("uid") or 0, device.get("gid") or 0])
    return result


def translate_capabilities(capabilities: dict | None) -> dict:
    """The five sets; a capability this kernel's table does not know is left out, as runc
    does (a newer spec may name capabilities that an older kernel lacks)."""
    sets = {}
    for name in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        names = (capabilities or {}).get(name) or []
        if not isinstance(names, list) or not all(isinstance(cap, str) for cap in names):
            raise _error(f"process.capabilities.{name} must be a list of capability names")
        sets[name] = list(dict.fromkeys(cap for cap in names if cap in CAPABILITIES))
    return sets


def translate_rlimits(rlimits: list[dict]) -> list[str]:
    entries = []
    for limit in rlimits or []:
        name = str(limit.get("type", "")).removeprefix("RLIMIT_").lower()
        if name not in RLIMITS:
            raise _error(f"process.rlimits: unknown limit {limit.get('type')!r}")
        hard, soft = limit.get("hard"), limit.get("soft")
        if type(hard) is not int or type(soft) is not int:
            raise _error(f"process.rlimits: {limit.get('type')} needs integer soft and hard values")
        values = [-1 if value >= (1 << 63) else value for value in (soft, hard)]
        entries.append(f"{name} {values[0]} {values[1]}")
    return entries


def translate_namespaces(linux: dict) -> list:
    namespaces, seen = [], set()
    for entry in linux.get("namespaces") or []:
        kind, path = entry.get("type"), entry.get("path") or ""
        if kind == "time":
            raise _error("linux.namespaces: the time namespace is not supported")
        if kind not in NAMESPACE_TYPES:
            raise _error(f"linux.namespaces: unknown type {kind!r}")
        if kind in seen:
            raise _error(f"linux.namespaces: {kind} is listed twice")
        seen.add(kind)
        if path and not path.startswith("/"):
            raise _error(f"linux.namespaces: the {kind} path {path!r} is not absolute")
        namespaces.append([kind, path])
    if "mount" not in seen:
        raise _error("linux.namespaces: a mount namespace is required (dockyard-runtime builds the root in one)")
    return namespaces


def _check_security(process: dict, linux: dict, host: Host) -> None:
    if process.get("apparmorProfile") and host.apparmor:
        raise _error(f"process.apparmorProfile {process['apparmorProfile']!r}: AppArmor profiles are not "
                     "supported by dockyard-runtime (this host enforces AppArmor)")
    if (process.get("selinuxLabel") or linux.get("mountLabel")) and host.selinux:
        raise _error("process.selinuxLabel/linux.mountLabel: SELinux labels are not supported by dockyard-runtime")
    for name in ("intelRdt", "personality", "timeOffsets"):
        if linux.get(name):
            raise _error(f"linux.{name} is not supported by dockyard-runtime")


def translate_process(process: dict, for_exec: bool = False) -> dict:
    """The process part of the stage's config (shared by create and exec)."""
    args = process.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(arg, str) for arg in args) or not args[0]:
        raise _error("process.args must be a non-empty list of strings")
    cwd = process.get("cwd") or "/"
    if not cwd.startswith("/"):
        raise _error(f"process.cwd {cwd!r} is not an absolute path")
    user = process.get("user") or {}
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    groups = user.get("additionalGids") or []
    if type(uid) is not int or type(gid) is not int or not all(type(group) is int for group in groups):
        raise _error("process.user: uid, gid and additionalGids must be integers")
    env = [entry for entry in process.get("env") or [] if isinstance(entry, str)]
    size = process.get("consoleSize") or {}
    stage = {
        "argv": args, "env": env, "cwd": cwd, "uid": uid, "gid": gid,
        "groups": list(dict.fromkeys([gid, *groups])) if not for_exec else [gid, *groups],
        "umask": user.get("umask"),
        "capabilities": translate_capabilities(process.get("capabilities")),
        "no_new_privileges": bool(process.get("noNewPrivileges")),
        "rlimits": translate_rlimits(process.get("rlimits")),
        "terminal": bool(process.get("terminal")),
        "console_size": [size.get("height", 0), size.get("width", 0)] if size else None,
        "oom_score_adj": process.get("oomScoreAdj"),
    }
    return stage


def translate(config: dict, bundle_dir: str, container_id: str, host: Host | None = None) -> Bundle:
    """The :class:`Bundle` of ``config`` (config.json's document) in ``bundle_dir``.

    Raises:
        RuntimeCommandError: a field is invalid or not supported; the message names it.
    """
    host = host or Host()
    if not isinstance(config, dict):
        raise _error("not a JSON object")
    version = config.get("ociVersion")
    if version is not None and (not isinstance(version, str) or not valid_oci_version(version)):
        raise _error(f"ociVersion {version!r} is not a 1.x SemVer version")
    check_id(container_id)
    process = config.get("process")
    if not isinstance(process, dict):
        raise _error("process is required to create a container")
    root = config.get("root") or {}
    if not isinstance(root.get("path"), str) or not root["path"]:
        raise _error("root.path is required")
    rootfs = os.path.normpath(os.path.join(bundle_dir, root["path"]))
    if not os.path.isdir(rootfs):
        raise _error(f'root.path "{rootfs}": no such directory')
    linux = config.get("linux") or {}
    _check_security(process, linux, host)
    namespaces = translate_namespaces(linux)
    new = {kind for kind, path in namespaces if not path}
    hostname = config.get("hostname") or ""
    if hostname and "uts" not in {kind for kind, _ in namespaces}:
        raise _error("hostname needs a UTS namespace of the container's own (linux.namespaces)")
    if "user" in new and not (linux.get("uidMappings") and linux.get("gidMappings")):
        raise _error("a new user namespace needs linux.uidMappings and linux.gidMappings")
    mounts, default_devices = translate_mounts(config.get("mounts"), bundle_dir)
    sysctls = []
    for key, value in (linux.get("sysctl") or {}).items():
        if not valid_sysctl_key(key) or ".." in key:
            raise _error(f"linux.sysctl: invalid key {key!r}")
        sysctls.append(f"{key}={value}")
    propagation = 0
    if linux.get("rootfsPropagation"):
        _, propagation, data = parse_mount_options([linux["rootfsPropagation"]])
        if data or not propagation:
            raise _error(f"linux.rootfsPropagation {linux['rootfsPropagation']!r} is not a propagation mode")
    seccomp = ""
    if linux.get("seccomp"):
        if host.compile_seccomp is None:
            raise _error("linux.seccomp: no seccomp compiler on this host (libseccomp)")
        seccomp = host.compile_seccomp(linux["seccomp"]).hex()
    stage = translate_process(process)
    stage.update({
        "id": container_id, "bundle": True, "rootfs": rootfs, "readonly_rootfs": bool(root.get("readonly")),
        "namespaces": namespaces,
        "uid_mappings": [[m["containerID"], m["hostID"], m["size"]] for m in linux.get("uidMappings") or []],
        "gid_mappings": [[m["containerID"], m["hostID"], m["size"]] for m in linux.get("gidMappings") or []],
        "mounts": mounts, "default_devices": default_devices,
        "devices": translate_devices(linux.get("devices")),
        "masked_paths": [path for path in linux.get("maskedPaths") or [] if isinstance(path, str)],
        "readonly_paths": [path for path in linux.get("readonlyPaths") or [] if isinstance(path, str)],
        "sysctls": sysctls, "rootfs_propagation": propagation, "seccomp": seccomp,
        "hostname": hostname, "domainname": config.get("domainname") or "",
    })
    hooks = {kind: list((config.get("hooks") or {}).get(kind) or []) for kind in HOOK_KINDS}
    for kind, entries in hooks.items():
        for hook in entries:
            if not isinstance(hook, dict) or not str(hook.get("path", "")).startswith("/"):
                raise _error(f"hooks.{kind}: every hook needs an absolute path")
    stage["start_hooks"] = hooks["startContainer"]
    cgroups_path = linux.get("cgroupsPath") or ""
    if not isinstance(cgroups_path, str):
        raise _error(f"linux.cgroupsPath {cgroups_path!r} is not a string")
    return Bundle(stage=stage, hooks=hooks, cgroups_path=cgroups_path,
                  resources=linux.get("resources") or {}, annotations=config.get("annotations") or {},
                  rootfs=rootfs)
