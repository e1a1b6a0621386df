"""The local driver's options (``volume create --opt``), as docker's: ``type``, ``device`` and
``o`` say what is mounted on the volume's ``_data`` (``mount -t TYPE -o O DEVICE _data``).

- ``--opt type=tmpfs --opt device=tmpfs --opt o=size=100m,uid=1000``: a tmpfs volume;
- ``--opt type=none --opt o=bind --opt device=/srv/data``: a bind of a host directory;
- ``--opt type=ext4 --opt device=/dev/sdb1`` (or nfs, with ``o=addr=IP``): a filesystem.

Checked at create with docker's rules and messages (:func:`check_options`: ``invalid option:
"x"``, ``missing required option: "device"``), plus two docker leaves to the mount: ``o``'s
flags are checked, and a bind's device must be an existing absolute directory. Mounted as
docker does: on the host, when the first container that uses the volume starts, and unmounted
when the last one has exited (``VolumeStore.acquire``/``release`` count them). ``o`` is split as
docker's ``mount.ParseOptions``: the words below are mount flags, anything else filesystem
data.
"""

from __future__ import annotations

import errno
import os

from supervisor.errors import InvalidArgument
from supervisor.runtime import libc

VALID_OPTIONS = ("type", "device", "o", "size")
#: An option that needs others (docker's ``mandatoryOpts``).
REQUIRED_WITH = {"device": ("type",), "type": ("device",), "o": ("device", "type")}
#: ``o`` words that are mount flags: (set, cleared). The rest is the filesystem's data.
FLAGS = {
    "bind": (libc.MS_BIND, 0), "rbind": (libc.MS_BIND | libc.MS_REC, 0),
    "ro": (libc.MS_RDONLY, 0), "rw": (0, libc.MS_RDONLY),
    "nosuid": (libc.MS_NOSUID, 0), "suid": (0, libc.MS_NOSUID),
    "nodev": (libc.MS_NODEV, 0), "dev": (0, libc.MS_NODEV),
    "noexec": (libc.MS_NOEXEC, 0), "exec": (0, libc.MS_NOEXEC),
    "sync": (libc.MS_SYNCHRONOUS, 0), "async": (0, libc.MS_SYNCHRONOUS),
    "dirsync": (libc.MS_DIRSYNC, 0),
    "noatime": (libc.MS_NOATIME, 0), "atime": (0, libc.MS_NOATIME),
    "nodiratime": (libc.MS_NODIRATIME, 0), "diratime": (0, libc.MS_NODIRATIME),
    "relatime": (libc.MS_RELATIME, 0), "norelatime": (0, libc.MS_RELATIME),
    "strictatime": (libc.MS_STRICTATIME, 0), "nostrictatime": (0, libc.MS_STRICTATIME),
}
#: Words of ``o`` that would change a mount other than the volume's own: refused.
REFUSED_WORDS = ("remount", "shared", "rshared", "slave", "rslave", "private", "rprivate", "move")


def parse_o(value: str) -> tuple[int, str]:
    """``o`` as (mount flags, filesystem data), as docker's ``mount.ParseOptions``.

    Raises:
        ValueError: a word that would act on another mount (remount, propagation).
    """
    flags = 0
    data = []
    for word in value.split(","):
        if not word:
            continue
        if word in REFUSED_WORDS:
            raise ValueError(f'"{word}" acts on another mount than the volume\'s')
        if word in FLAGS:
            add, clear = FLAGS[word]
            flags = (flags | add) & ~clear
        else:
            data.append(word)
    return flags, ",".join(data)


def check_options(name: str, options: dict[str, str]) -> None:
    """docker's ``validateOpts`` of the local driver, and what dockyard checks before a mount.

    Raises:
        InvalidArgument: naming the volume and the option.
    """
    for key in sorted(options):
        if key not in VALID_OPTIONS:
            raise InvalidArgument(f'create {name}: invalid option: "{key}"', volume=name)
    if "size" in options:
        raise InvalidArgument(f"create {name}: quota size requested but no quota support "
                              "(dockyard's local driver has none; a tmpfs takes o=size=...)", volume=name)
    for key, needed in REQUIRED_WITH.items():
        for other in needed:
            if key in options and other not in options:
                raise InvalidArgument(f'create {name}: missing required option: "{other}"', volume=name)
    if not options:
        return
    if not options["type"] or not options["device"] or "\x00" in "".join(options.values()):
        raise InvalidArgument(f"create {name}: type and device must not be empty", volume=name)
    try:
        flags, _ = parse_o(options.get("o", ""))
    except ValueError as exc:
        raise InvalidArgument(f"create {name}: invalid option o={options['o']!r}: {exc}", volume=name) from None
    if flags & libc.MS_BIND:
        device = options["device"]
        if not device.startswith("/") or not os.path.isdir(device):
            raise InvalidArgument(f"create {name}: the bind device {device!r} is not an existing absolute "
                                  "directory on the host", volume=name)


def mount(options: dict[str, str], mountpoint: str) -> None:
    """Mount the volume's filesystem on ``mountpoint`` (its ``_data``), as ``mount -t TYPE -o O
    DEVICE``; a bind with ``ro`` is remounted read-only (a bind ignores the flag).

    Raises:
        OSError: the kernel refused; its message names the device and the cause.
    """
    flags, data = parse_o(options.get("o", ""))
    device, kind = options["device"], options["type"]
    what = f"mount {device} (type {kind}, o={options.get('o', '')}) on {mountpoint}"
    try:
        if flags & libc.MS_BIND:
            libc.mount(device, mountpoint, None, flags & (libc.MS_BIND | libc.MS_REC), None, what)
            if flags & ~(libc.MS_BIND | libc.MS_REC):
                libc.mount(None, mountpoint, None, libc.MS_REMOUNT | flags, None, what + " (remount)")
        else:
            libc.mount(device, mountpoint, kind, flags, data or None, what)
    except libc.InitError as exc:
        raise OSError(errno.EINVAL, f"failed to mount local volume: {exc.message}") from None


def is_mounted(path: str, mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Whether something is mounted on ``path`` (in this mount namespace). Not
    ``os.path.ismount``: a bind of a directory of the same filesystem has the same device as
    its parent, and that test misses it."""
    wanted = os.path.realpath(path)
    with open(mountinfo, "rb") as file:
        for line in file:
            fields = line.split(b" ", 5)
            if len(fields) > 4 and _unescape(fields[4]) == wanted:
                return True
    return False


def _unescape(field: bytes) -> str:
    r"""A mountinfo path: spaces, tabs, newlines and backslashes are written ``\040`` and so on."""
    text = os.fsdecode(field)
    if "\\" not in text:
        return text
    parts = text.split("\\")
    return parts[0] + "".join(chr(int(part[:3], 8)) + part[3:] for part in parts[1:])


def unmount(mountpoint: str) -> None:
    """Unmount the volume's filesystem (lazily: a process still in it keeps it until it leaves)."""
    try:
        libc.umount2(mountpoint, libc.MNT_DETACH)
    except libc.InitError as exc:
        raise OSError(errno.EBUSY, f"failed to unmount local volume: {exc.message}") from None
