"""The mount flags of run and create, parsed as docker parses them: ``-v/--volume``,
``--mount``, ``--tmpfs``, ``--volumes-from``. Pure functions, no I/O: the spec checks its
flags with them, start turns them into the init stage's mounts (supervisor/lifecycle/mounts.py).

The error messages are docker's (moby's volume/mounts/linux_parser.go, the CLI's
opts/mount.go), so that a user searching one finds docker's answer. docs/volumes.md says
where dockyard follows docker and where it leaves it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: A volume's name: docker's rule for the local driver.
VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+\Z")
#: ``ro``/``rw`` and the propagation modes of ``-v`` (moby's linux_parser.go); ``z``/``Z``
#: (SELinux labels) and ``nocopy`` are accepted too.
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
MOUNT_TYPES = ("bind", "volume", "tmpfs")
#: What a mount may not cover: the paths the security defaults mask or make read-only
#: (supervisor/runtime/protocol.py MASKED_PATHS, READONLY_PATHS) and the kernel's own
#: filesystems: a volume over them would unmask what the defaults hide.
PROTECTED_PATHS = (
    "/proc", "/sys", "/dev/pts", "/dev/mqueue",
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)
#: --tmpfs's options that are mount flags (the rest, size= mode= uid= gid= nr_inodes=, are data).
TMPFS_FLAGS = ("ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "atime", "noatime",
               "diratime", "nodiratime", "relatime", "norelatime", "strictatime", "nostrictatime",
               "sync", "async", "dirsync", "mand", "nomand")
TMPFS_DATA = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol")
#: docker's defaults for a --tmpfs mount (moby daemon/oci_linux.go).
TMPFS_DEFAULTS = ("noexec", "nosuid", "nodev")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?) *([kKmMgGtTpP]?)[iI]?[bB]?\Z")


class MountError(ValueError):
    """A mount flag docker would refuse; the message is docker's."""

    def __init__(self, message: str, flag: str):
        super().__init__(message)
        self.message = message
        self.flag = flag


@dataclass(frozen=True)
class Mount:
    """One mount of a container, as the flags asked for it.

    ``source`` is a host path (bind), a volume name ("" for an anonymous volume) or "" (tmpfs).
    ``create_source``: a missing bind source is made as a directory (``-v``; ``--mount`` refuses).
    ``options``: a tmpfs mount's options, comma-separated (flags and data, as ``--tmpfs``).
    ``origin``: the flag it came from (``-v``, ``--mount``, ``--tmpfs``, ``image``), for inspect.
    """

    type: str
    source: str
    target: str
    readonly: bool = False
    propagation: str = ""
    nocopy: bool = False
    options: str = ""
    create_source: bool = False
    origin: str = "-v"

    @property
    def mode(self) -> str:
        """docker's ``Mode`` in inspect's Mounts: the -v options ("z" for a volume, "" for --mount)."""
        if self.origin != "-v":
            return ""
        modes = (["ro"] if self.readonly else []) + ([self.propagation] if self.propagation else [])
        modes += ["nocopy"] if self.nocopy else []
        return ",".join(modes) or ("z" if self.type == "volume" else "")


def _invalid_path(kind: str, path: str, flag: str) -> MountError:
    return MountError(
        f'invalid mount config for type "{kind}": invalid mount path: \'{path}\' mount path must be absolute', flag)


def check_target(kind: str, target: str, flag: str) -> str:
    """The container path of a mount: absolute, not ``/``, not over a protected path.

    Raises:
        MountError: with docker's message (the protected paths: dockyard's own).
    """
    if not target.startswith("/"):
        raise _invalid_path(kind, target, flag)
    if "\x00" in target or "\t" in target:
        raise MountError(f'invalid mount config for type "{kind}": the path contains a NUL byte or a tab', flag)
    clean = "/" + "/".join(part for part in target.split("/") if part not in ("", "."))
    if ".." in clean.split("/"):
        raise MountError(f'invalid mount config for type "{kind}": invalid mount path: \'{target}\' '
                         "must not contain '..'", flag)
    if clean == "/":
        raise MountError(f'invalid mount config for type "{kind}": destination can\'t be \'/\'', flag)
    for protected in PROTECTED_PATHS:
        if clean == protected or clean.startswith(protected + "/"):
            raise MountError(f'invalid mount config for type "{kind}": cannot mount over "{clean}": '
                             f'"{protected}" is the kernel\'s or masked by the security defaults', flag)
    return clean


def parse_volume(text: str) -> Mount:
    """``-v``: ``HOST:CONTAINER[:OPTS]`` (a bind), ``NAME:CONTAINER[:OPTS]`` (a named volume)
    or ``CONTAINER`` (an anonymous volume). OPTS: ``ro``/``rw``, one propagation, ``nocopy``,
    ``z``/``Z``, comma-separated.

    Raises:
        MountError: docker's message.
    """
    if not text or "\x00" in text or "\t" in text:
        raise MountError(f"invalid volume specification: '{text}'", "--volume")
    parts = text.split(":")
    if len(parts) > 3:
        raise MountError(f"invalid volume specification: '{text}'", "--volume")
    if len(parts) == 1:
        target = check_target("volume", parts[0], "--volume")
        return Mount("volume", "", target, origin="-v")
    source, target = parts[0], parts[1]
    modes = parts[2].split(",") if len(parts) == 3 else []
    if not source or not target:
        raise MountError(f"invalid volume specification: '{text}'", "--volume")
    readonly, propagation, nocopy = False, "", False
    seen_rw = False
    for mode in modes:
        if mode in ("ro", "rw") and not seen_rw:
            readonly, seen_rw = mode == "ro", True
        elif mode in PROPAGATIONS and not propagation:
            propagation = mode
        elif mode == "nocopy" and not nocopy:
            nocopy = True
        elif mode in ("z", "Z"):
            continue  # SELinux relabelling: nothing to do without SELinux
        else:
            raise MountError(f"invalid mode: {parts[2]}", "--volume")
    if source.startswith("/"):
        if nocopy:
            raise MountError(f"invalid mode: {parts[2]}", "--volume")
        target = check_target("bind", target, "--volume")
        return Mount("bind", _clean(source), target, readonly, propagation, create_source=True, origin="-v")
    if not VOLUME_NAME.match(source):
        raise MountError(
            f'create {source}: "{source}" includes invalid characters for a local volume name, only '
            '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path',
            "--volume")
    if propagation:
        raise MountError(f"invalid mode: {parts[2]}", "--volume")
    target = check_target("volume", target, "--volume")
    return Mount("volume", source, target, readonly, nocopy=nocopy, origin="-v")


def parse_mount(text: str) -> Mount:
    """``--mount type=bind|volume|tmpfs,source=...,target=...,readonly,...`` as docker's CLI
    (opts/mount.go) and daemon (linux_parser.go) read it; the type defaults to volume.

    Raises:
        MountError: ``invalid argument "TEXT" for "--mount" flag: ...`` for what docker's
            CLI refuses, ``invalid mount config for type ...`` for what its daemon refuses.
    """
    def bad(message: str) -> MountError:
        return MountError(f'invalid argument "{text}" for "--mount" flag: {message}', "--mount")

    values: dict[str, str] = {"type": "volume"}
    readonly = nocopy = False
    bind_options = volume_options = tmpfs_options = False
    for field in _csv(text):
        key, eq, value = field.partition("=")
        key = key.lower()
        if not eq and key not in ("readonly", "ro", "volume-nocopy", "bind-nonrecursive"):
            raise bad(f"invalid field '{field}' must be a key=value pair")
        if key == "type":
            values["type"] = value.lower()
        elif key in ("source", "src"):
            values["source"] = value
        elif key in ("target", "dst", "destination"):
            values["target"] = value
        elif key in ("readonly", "ro"):
            readonly = _bool(key, value, eq, bad)
        elif key == "bind-propagation":
            bind_options = True
            if value.lower() not in PROPAGATIONS:
                raise bad(f"invalid value for {key}: {value}")
            values["propagation"] = value.lower()
        elif key == "bind-nonrecursive":
            raise bad("bind-nonrecursive is not supported by dockyard (binds are recursive)")
        elif key == "volume-nocopy":
            volume_options = True
            nocopy = _bool(key, value, eq, bad)
        elif key in ("volume-label", "volume-driver", "volume-opt"):
            raise bad(f"{key} is not supported by dockyard: create the volume first (dockyard volume create)")
        elif key == "tmpfs-size":
            tmpfs_options = True
            if _size(value) is None:
                raise bad(f"invalid value for {key}: {value}")
            values["size"] = str(_size(value))
        elif key == "tmpfs-mode":
            tmpfs_options = True
            try:
                mode = int(value, 8)
            except ValueError:
                raise bad(f"invalid value for {key}: {value}") from None
            if not 0 <= mode <= 0o7777:
                raise bad(f"invalid value for {key}: {value}")
            values["mode"] = format(mode, "o")
        else:
            raise bad(f"unexpected key '{key}' in '{field}'")
    kind = values["type"]
    if kind not in MOUNT_TYPES:
        raise MountError(f'invalid mount config for type "{kind}": mount type unknown', "--mount")
    if "target" not in values or not values["target"]:
        raise bad("target is required")
    if volume_options and kind != "volume":
        raise bad(f"cannot mix 'volume-*' options with mount type '{kind}'")
    if bind_options and kind != "bind":
        raise bad(f"cannot mix 'bind-*' options with mount type '{kind}'")
    if tmpfs_options and kind != "tmpfs":
        raise bad(f"cannot mix 'tmpfs-*' options with mount type '{kind}'")
    target = check_target(kind, values["target"], "--mount")
    source = values.get("source", "")
    prefix = f'invalid mount config for type "{kind}": '
    if kind == "bind":
        if not source:
            raise MountError(prefix + "field Source must not be empty", "--mount")
        if not source.startswith("/") or "\t" in source or "\x00" in source:
            raise MountError(prefix + f"invalid mount path: '{source}' mount path must be absolute", "--mount")
        return Mount("bind", _clean(source), target, readonly, values.get("propagation", ""), origin="--mount")
    if kind == "volume":
        if source and not VOLUME_NAME.match(source):
            raise MountError(prefix + f'"{source}" includes invalid characters for a local volume name, only '
                             '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed', "--mount")
        return Mount("volume", source, target, readonly, nocopy=nocopy, origin="--mount")
    if source:
        raise MountError(prefix + "field Source must not be specified", "--mount")
    data = [f"{key}={values[key]}" for key in ("size", "mode") if key in values]
    return Mount("tmpfs", "", target, readonly, options=",".join((["ro"] if readonly else []) + data),
                 origin="--mount")


def parse_tmpfs(text: str) -> Mount:
    """``--tmpfs PATH[:OPTIONS]``, OPTIONS as mount(8) takes them for tmpfs; docker's
    defaults (noexec, nosuid, nodev) unless an option says otherwise.

    Raises:
        MountError: docker's message.
    """
    path, _, options = text.partition(":")
    target = check_target("tmpfs", path, "--tmpfs")
    given = [option for option in options.split(",") if option] if options else []
    for option in given:
        key, eq, value = option.partition("=")
        if key in TMPFS_FLAGS and not eq:
            continue
        if key in TMPFS_DATA and eq and value and "," not in value:
            if key == "size" and _size(value) is None:
                raise MountError(f"invalid tmpfs option \"{option}\": invalid size", "--tmpfs")
            continue
        raise MountError(f'invalid tmpfs option "{option}"', "--tmpfs")
    merged = [flag for flag in TMPFS_DEFAULTS if flag[2:] not in given and flag not in given] + given
    modes = [option for option in given if option in ("ro", "rw")]
    readonly = bool(modes) and modes[-1] == "ro"
    return Mount("tmpfs", "", target, readonly, options=",".join(merged), origin="--tmpfs")


def parse_volumes_from(text: str) -> tuple[str, str]:
    """``--volumes-from CONTAINER[:ro|rw]``: (container, mode: "" keeps each mount's).

    Raises:
        MountError: docker's message.
    """
    name, colon, mode = text.partition(":")
    if not name or (colon and mode not in ("ro", "rw")):
        raise MountError(f"invalid mode: {mode}" if name else f"invalid volumes-from: '{text}'", "--volumes-from")
    return name, mode


def check_unique(mounts: list[Mount]) -> None:
    """Raises MountError (docker's ``Duplicate mount point``) when two mounts share a target."""
    seen: set[str] = set()
    for mount in mounts:
        if mount.target in seen:
            raise MountError(f"Duplicate mount point: {mount.target}", "--volume")
        seen.add(mount.target)


def tmpfs_mount_options(options: str) -> tuple[list[str], list[str]]:
    """A tmpfs mount's options split into mount flags and data (``size=``, ``mode=``...)."""
    flags, data = [], []
    for option in options.split(","):
        if not option:
            continue
        key = option.partition("=")[0]
        if key in TMPFS_DATA:
            data.append(option)
        else:
            flags.append(option)
    return flags, data


def _csv(text: str) -> list[str]:
    """docker's --mount is CSV: a field may be quoted to hold a comma."""
    fields, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return [field for field in fields if field]


def _bool(key: str, value: str, given: str, bad) -> bool:  # noqa: ANN001 - bad: the caller's error maker
    if not given:
        return True
    lowered = value.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise bad(f"invalid value for {key}: {value}")


def _size(text: str) -> int | None:
    """docker's RAMInBytes: ``64m``, ``1g``, ``65536k``, ``100`` (binary units)."""
    match = _SIZE.match(text.strip())
    if not match:
        return None
    number = float(match.group(1))
    power = " kmgtp".index(match.group(2).lower() or " ")
    return int(number * (1024 ** power))


def _clean(path: str) -> str:
    """A host path with its ``//`` and ``/./`` and trailing ``/`` gone (``..`` is kept: the
    host side resolves it)."""
    return "/" + "/".join(part for part in path.split("/") if part not in ("", "."))


def inspect_mounts(mounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """docker inspect's ``Mounts``."""
    shown = []
    for mount in mounts:
        entry = {"Type": mount["type"]}
        if mount["type"] == "volume":
            entry["Name"] = mount["name"]
        entry.update({"Source": mount["source"], "Destination": mount["target"]})
        if mount["type"] == "volume":
            entry["Driver"] = "local"
        entry.update({"Mode": mount.get("mode", ""), "RW": not mount["readonly"],
                      "Propagation": mount["propagation"] or ("rprivate" if mount["type"] == "bind" else "")})
        shown.append(entry)
    return shown


def host_config(spec: Any) -> dict[str, Any]:
    """docker inspect's ``HostConfig.Binds/Mounts/Tmpfs/ReadonlyRootfs/VolumesFrom``."""
    parsed = spec.parsed_mounts()
    binds = list(spec.volumes) or None
    docker_mounts = []
    for mount in parsed:
        if mount.origin != "--mount":
            continue
        entry: dict[str, Any] = {"Type": mount.type, "Source": mount.source, "Target": mount.target}
        if mount.readonly:
            entry["ReadOnly"] = True
        if mount.propagation:
            entry["BindOptions"] = {"Propagation": mount.propagation}
        if mount.nocopy:
            entry["VolumeOptions"] = {"NoCopy": True}
        if mount.type == "tmpfs" and mount.options:
            data = dict(option.partition("=")[::2] for option in mount.options.split(",") if "=" in option)
            entry["TmpfsOptions"] = {**({"SizeBytes": int(data["size"])} if "size" in data else {}),
                                     **({"Mode": int(data["mode"], 8)} if "mode" in data else {})}
        docker_mounts.append(entry)
    tmpfs = {mount.target: mount.options for mount in parsed if mount.origin == "--tmpfs"}
    return {"Binds": binds, "Mounts": docker_mounts or None, "Tmpfs": tmpfs or None,
            "ReadonlyRootfs": spec.read_only, "VolumesFrom": list(spec.volumes_from) or None}
