"""Linux mechanics of the init stage (see ``protocol.py`` for the protocol), and the few the
launcher shares with it.

- ctypes wrappers for what Python 3.11's ``os`` lacks: mount, umount2, unshare,
  pivot_root, prctl, capset, rt_sigaction;
- pure helpers, unit tested: :func:`secure_join`, :func:`resolve_user`, :func:`look_path`;
- the steps of the stage (overlay, /proc, /sys, /dev, pivot_root, masked and read-only
  paths, ``lo``, capabilities, user), and :func:`run_init_stage`, which runs them in order.

The fork server (``forkserver.py``) imports this module by path, as the top-level module
``linux``, and forks the init stage from it, so it
imports only the standard library, not even our package. It also avoids the modules that
import ``re`` or ``enum`` (``json``, ``socket``, ``signal``; and ``from __future__``):
they would add a third to a `true` container's start-up time. JSON goes through the C
scanner of the json package (``_json``), sockets through ``_socket``.
"""

import ctypes
import errno
import fcntl
import os
import stat
import struct

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None  # type: ignore[assignment]
import _socket

EXIT_RUNTIME = 125  # the runtime failed (mount, pivot_root, user lookup, ...)
EXIT_CANNOT_INVOKE = 126  # the command exists but cannot be executed
EXIT_NOT_FOUND = 127  # the command does not exist

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_STRICTATIME = 0x1000000
MNT_DETACH = 0x2

PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

TIOCSCTTY = 0x540E  # asm-generic/ioctls.h (x86_64 and aarch64)

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

MAX_SYMLINKS = 40  # the kernel's limit too

# Bit numbers from linux/capability.h.
CAPABILITIES = {
    "CAP_" + name: number
    for number, name in enumerate(
        "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
        "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER "
        "SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE "
        "SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP "
        "MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF "
        "CHECKPOINT_RESTORE".split()
    )
}

# Character devices of the container's /dev, all mode 0666 (runc's defaults), and its links.
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))
DEVICE_LINKS = (
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("core", "/proc/kcore"),
)

_SYSCALLS = {  # no glibc wrapper (pivot_root), only libcap's (capset), or glibc refuses (rt_sigaction)
    "x86_64": {"pivot_root": 155, "capset": 126, "rt_sigaction": 13},
    "aarch64": {"pivot_root": 41, "capset": 91, "rt_sigaction": 134},
}
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class InitError(Exception):
    """A step before execve failed: ``message`` names the step and the path, ``exit_code``
    is the container's exit status (125, 126 or 127)."""

    def __init__(self, message: str, exit_code: int = EXIT_RUNTIME):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def strerror(number: int | None) -> str:
    """``No such file or directory`` as docker writes it: ``no such file or directory``."""
    text = os.strerror(number or errno.EIO)
    return text[:1].lower() + text[1:]


# --- syscalls -----------------------------------------------------------------------------

_libc_handle: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _libc_handle
    if _libc_handle is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
        libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
        libc.unshare.argtypes = (ctypes.c_int,)
        libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
        libc.syscall.restype = ctypes.c_long
        _libc_handle = libc
    return _libc_handle


def preload() -> None:
    """Load libc and set up its prototypes now (the fork server, so that none of its forks pays)."""
    _libc()


def _check(result: int, what: str) -> int:
    if result == -1:
        number = ctypes.get_errno()
        raise InitError(f"{what}: {strerror(number)}")
    return result


def _syscall_number(name: str) -> int:
    machine = os.uname().machine
    try:
        return _SYSCALLS[machine][name]
    except KeyError:
        raise InitError(f"{name}: unsupported architecture {machine}") from None


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None, what: str = ""
) -> None:
    """mount(2); raises InitError(125) naming ``what`` (default: the filesystem and the target)."""
    encode = os.fsencode
    result = _libc().mount(
        None if source is None else encode(source),
        encode(target),
        None if fstype is None else encode(fstype),
        flags,
        None if data is None else encode(data),
    )
    _check(result, what or f'mount {fstype or source} on "{target}"')


def umount2(target: str, flags: int) -> None:
    _check(_libc().umount2(os.fsencode(target), flags), f'umount "{target}"')


def unshare(flags: int) -> None:
    _check(_libc().unshare(flags), "unshare the namespaces")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0, what: str = "prctl") -> int:
    return _check(_libc().prctl(option, arg2, arg3, arg4, arg5), what)


def pivot_root(new_root: str, put_old: str) -> None:
    number = ctypes.c_long(_syscall_number("pivot_root"))
    result = _libc().syscall(number, ctypes.c_char_p(os.fsencode(new_root)), ctypes.c_char_p(os.fsencode(put_old)))
    _check(result, f'pivot_root to "{new_root}"')


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32))


def capset(effective: int, permitted: int, inheritable: int = 0) -> None:
    """Set the calling thread's capability sets from bit masks (capset(2), version 3)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for index in (0, 1):
        shift = 32 * index
        data[index].effective = (effective >> shift) & 0xFFFFFFFF
        data[index].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[index].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    result = _libc().syscall(ctypes.c_long(_syscall_number("capset")), ctypes.byref(header), data)
    _check(result, "set the capabilities (capset)")


def reset_ignored_signals() -> None:
    """Set every ignored signal back to SIG_DFL, since an ignored signal stays ignored across
    execve: python ignores SIGPIPE and SIGXFSZ, and glibc's posix_spawn leaves its two
    internal signals (32, 33) ignored, which glibc's sigaction refuses to touch; hence the
    raw rt_sigaction."""
    ignored = 0
    for line in read_text("/proc/self/status").splitlines():
        if line.startswith("SigIgn:"):
            ignored = int(line.split()[1], 16)
            break
    default = ctypes.create_string_buffer(32)  # struct sigaction, all zero: SIG_DFL, no flags
    number = ctypes.c_long(_syscall_number("rt_sigaction"))
    for sig in range(1, 65):
        if ignored >> (sig - 1) & 1:
            result = _libc().syscall(number, ctypes.c_long(sig), default, None, ctypes.c_long(8))
            _check(result, f"reset the disposition of signal {sig}")


def set_child_subreaper(enabled: bool) -> None:
    prctl(PR_SET_CHILD_SUBREAPER, int(enabled), what="prctl(PR_SET_CHILD_SUBREAPER)")


def is_child_subreaper() -> bool:
    value = ctypes.c_int(0)
    prctl(PR_GET_CHILD_SUBREAPER, ctypes.addressof(value), what="prctl(PR_GET_CHILD_SUBREAPER)")
    return bool(value.value)


# --- pure helpers ---------------------------------------------------------------------------


def secure_join(root: str, path: str) -> str:
    """Join ``path`` to ``root`` as if ``root`` were ``/``: symlinks are resolved component by
    component, an absolute link restarts at ``root`` and ``..`` never climbs above it (the
    semantics of github.com/cyphar/filepath-securejoin). Components that do not exist are
    kept as they are, for the caller to create.

    Raises:
        OSError(ELOOP): more than MAX_SYMLINKS links were followed.
    """
    root = root.rstrip("/")
    resolved: list[str] = []
    pending = path.split("/")
    pending.reverse()  # a stack: the next component is last
    links = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()  # lexical: nothing in ``resolved`` is a link
            continue
        candidate = "/".join([root, *resolved, part])
        try:
            mode = os.lstat(candidate).st_mode
        except (FileNotFoundError, NotADirectoryError):
            mode = 0
        if not stat.S_ISLNK(mode):
            resolved.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, f"too many levels of symbolic links resolving {path!r} in {root or '/'}")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved.clear()
        more = target.split("/")
        more.reverse()
        pending.extend(more)
    return "/".join([root, *resolved]) if resolved else root or "/"


def _table(text: str, fields: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        row = line.split(":")
        if len(row) >= fields and not line.startswith("#"):
            rows.append(row)
    return rows


def resolve_user(spec: str, passwd: str, group: str) -> tuple[int, int, tuple[int, ...], str]:
    """``user[:group]`` to ``(uid, gid, groups, home)`` from the texts of the container's
    /etc/passwd and /etc/group, as runc does: a numeric id needs no entry, a name must have
    one. Without an explicit group the primary group comes from passwd (0 without an entry)
    and the groups that list the user as a member are added. ``home`` is "/" without an entry.

    Raises:
        InitError(125): an unknown user or group name.
    """
    user_part, _, group_part = spec.partition(":")
    user_part = user_part or "0"
    users = _table(passwd, 7)
    if user_part.isdigit():
        uid = int(user_part)
        entry = next((row for row in users if row[2] == str(uid)), None)
    else:
        entry = next((row for row in users if row[0] == user_part), None)
        if entry is None or not entry[2].isdigit():
            raise InitError(f"unable to find user {user_part}: no matching entries in passwd file")
        uid = int(entry[2])
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    home = entry[5] if entry is not None and entry[5] else "/"
    groups = _table(group, 4)
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            match = next((row for row in groups if row[0] == group_part and row[2].isdigit()), None)
            if match is None:
                raise InitError(f"unable to find group {group_part}: no matching entries in group file")
            gid = int(match[2])
        return uid, gid, (gid,), home
    member_of = [gid]
    if entry is not None:
        for row in groups:
            if entry[0] in row[3].split(",") and row[2].isdigit() and int(row[2]) not in member_of:
                member_of.append(int(row[2]))
    return uid, gid, tuple(member_of), home


def look_path(name: str, path_value: str) -> str:
    """Find ``name`` in the directories of ``path_value`` as Go's exec.LookPath does: the
    first regular file with an execute bit. A name with a slash is returned as it is.

    Raises:
        InitError(127): no such executable (docker's message).
    """
    if "/" in name:
        return name
    for directory in path_value.split(":"):
        candidate = (directory or ".") + "/" + name
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if not stat.S_ISDIR(mode) and mode & 0o111:
            return candidate
    raise InitError(f'exec: "{name}": executable file not found in $PATH', EXIT_NOT_FOUND)


def exec_error(name: str, error: OSError) -> InitError:
    """The error for a failed execve: 127 when the file is missing, 126 when it cannot be run."""
    code = EXIT_NOT_FOUND if error.errno in (errno.ENOENT, errno.ENOTDIR) else EXIT_CANNOT_INVOKE
    return InitError(f'exec: "{name}": {strerror(error.errno)}', code)


def capability_mask(names: list[str] | tuple[str, ...]) -> int:
    """Capability names (``CAP_CHOWN``) to a bit mask; InitError(125) for an unknown name."""
    mask = 0
    for name in names:
        try:
            mask |= 1 << CAPABILITIES[name]
        except KeyError:
            raise InitError(f"unknown capability {name!r}") from None
    return mask


class _ScannerContext:  # what json.decoder.JSONDecoder gives the C scanner
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name.lower().replace("infinity", "inf"))


def loads(text: str) -> object:
    """``json.loads`` without importing ``json.decoder`` (and with it ``re``)."""
    if _json is None:  # pragma: no cover
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip())
    try:
        value, end = _json.make_scanner(_ScannerContext)(text, start)
    except StopIteration:
        raise ValueError(f"no JSON value at offset {start}") from None
    if text[end:].strip():
        raise ValueError(f"extra data after the JSON value at offset {end}")
    return value


def quote(text: str) -> str:
    """A JSON string literal (ASCII), as ``json.dumps(text)``."""
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(text)
    return _json.encode_basestring_ascii(text)


# --- steps of the init stage ------------------------------------------------------------------


def mount_rootfs(rootfs: str, lower: list[str], upper: str, work: str, volatile: bool = False) -> None:
    """Make every mount private (nothing propagates back to the host), then mount the
    overlay on ``rootfs``. Must run in the container's own mount namespace.

    ``volatile`` (a ``--rm`` container, whose writable layer is deleted at its exit, as
    podman does): the overlay never syncs. Without it, unmounting an overlay (when pid 1
    exits and its mount namespace goes) runs syncfs() on the *whole* filesystem of the upper
    dir, which held a container's exit up for as long as the host took to write back every
    dirty page on it (0.15-0.4 s after 200 MB of logs here). A kernel without the option
    (before 5.10) mounts without it."""
    mount(None, "/", None, MS_REC | MS_PRIVATE, None, "make the mounts private (MS_REC|MS_PRIVATE on /)")
    options = f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    # A volatile mount leaves this behind and the kernel refuses the dirs while it exists.
    try:
        os.rmdir(f"{work}/work/incompat/volatile")
    except OSError:
        pass
    if volatile:
        try:
            mount("overlay", rootfs, "overlay", 0, options + ",volatile", "")
            return
        except InitError:
            pass  # an older kernel: mount it as usual
    mount("overlay", rootfs, "overlay", 0, options, f'mount overlay on "{rootfs}" ({options})')


def _mount_point(rootfs: str, path: str) -> str:
    target = secure_join(rootfs, path)
    try:
        os.makedirs(target, 0o755, exist_ok=True)
    except OSError as exc:
        raise InitError(f'create the mount point "{path}" in "{rootfs}": {strerror(exc.errno)}') from None
    return target


def parse_device(entry: str) -> tuple[int, int, int, str]:
    """A ``--device`` node of the launch config, ``"c 7 0 0660 /dev/loop0"``, as
    (file type and mode for mknod, major, minor, path in the container)."""
    parts = entry.split(" ")
    if len(parts) != 5 or parts[0] not in ("c", "b") or not parts[4].startswith("/dev/"):
        raise InitError(f"invalid device entry {entry!r}")
    kind = stat.S_IFCHR if parts[0] == "c" else stat.S_IFBLK
    try:
        return kind | (int(parts[3], 8) & 0o777), int(parts[1]), int(parts[2]), parts[4]
    except ValueError:
        raise InitError(f"invalid device entry {entry!r}") from None


def mount_system(rootfs: str, devices: tuple[str, ...] | list[str] = ()) -> None:
    """/proc, /sys (read-only), /dev (tmpfs with the standard nodes and the ``--device``
    ones), /dev/pts, /dev/shm and /dev/mqueue under ``rootfs``, each mount point resolved
    with :func:`secure_join`."""
    mount("proc", _mount_point(rootfs, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("sysfs", _mount_point(rootfs, "/sys"), "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    dev = _mount_point(rootfs, "/dev")
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
    try:  # a fresh tmpfs: nothing in it is a link, plain paths are safe
        for name, major, minor in DEVICES:
            os.mknod(f"{dev}/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor))
        for name, target in DEVICE_LINKS:
            os.symlink(target, f"{dev}/{name}")
        for name, mode in (("pts", 0o755), ("shm", 0o1777), ("mqueue", 0o755)):
            os.mkdir(f"{dev}/{name}", mode)
        for entry in devices:
            mode, major, minor, path = parse_device(entry)
            node = secure_join(dev, path[len("/dev/"):])
            os.makedirs(os.path.dirname(node), 0o755, exist_ok=True)
            os.mknod(node, mode, os.makedev(major, minor))
            os.chmod(node, mode & 0o777)  # mknod applies the umask
    except OSError as exc:
        raise InitError(f'populate /dev: "{exc.filename}": {strerror(exc.errno)}') from None
    mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
    mount("shm", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    mount("mqueue", f"{dev}/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def enter_rootfs(rootfs: str) -> None:
    """pivot_root into ``rootfs`` and detach the old root. pivot_root(".", ".") stacks the
    old root on the new one, and umount2(".") then takes the old one off (man 2 pivot_root):
    no temporary directory is needed."""
    try:
        os.chdir(rootfs)
    except OSError as exc:
        raise InitError(f'chdir to "{rootfs}": {strerror(exc.errno)}') from None
    pivot_root(".", ".")
    umount2(".", MNT_DETACH)
    os.chdir("/")


def mask_paths(paths: list[str]) -> None:
    """/dev/null over files, an empty read-only tmpfs over directories; missing ones are
    skipped. Runs after pivot_root, where every link resolves inside the container."""
    for path in paths:
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISDIR(mode):
            mount("tmpfs", path, "tmpfs", MS_RDONLY, None, f'mask "{path}" (read-only tmpfs)')
        else:
            mount("/dev/null", path, None, MS_BIND, None, f'mask "{path}" (bind /dev/null)')


def make_readonly(paths: list[str]) -> None:
    """Bind each path onto itself and remount it read-only, keeping nosuid/nodev/noexec."""
    for path in paths:
        try:
            flags = os.statvfs(path).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)  # ST_* == MS_* here
        except (FileNotFoundError, NotADirectoryError):
            continue
        mount(path, path, None, MS_BIND | MS_REC, None, f'make "{path}" read-only (bind)')
        remount = MS_BIND | MS_REMOUNT | MS_RDONLY | flags
        mount(path, path, None, remount, None, f'make "{path}" read-only (remount)')


def set_hostname(name: str) -> None:
    try:
        _socket.sethostname(name)
    except OSError as exc:
        raise InitError(f"set the hostname {name!r}: {strerror(exc.errno)}") from None


def loopback_up() -> None:
    """Set IFF_UP on ``lo`` of the current network namespace."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack("16sH22x", b"lo", 0)  # struct ifreq: name, flags, padding
        flags = struct.unpack_from("16sH", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
    except OSError as exc:
        raise InitError(f"bring up the loopback interface: {strerror(exc.errno)}") from None
    finally:
        sock.close()


def last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as file:
            return int(file.read())
    except (OSError, ValueError):
        return max(CAPABILITIES.values())


def limit_bounding_set(keep: int) -> None:
    """Drop every capability not in ``keep`` from the bounding set; clear the ambient set."""
    for cap in range(last_capability() + 1):
        if not keep >> cap & 1:
            prctl(PR_CAPBSET_DROP, cap, what=f"drop capability {cap} from the bounding set")
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, what="clear the ambient capabilities")


def switch_user(uid: int, gid: int, groups: tuple[int, ...]) -> None:
    """setgroups, setgid, setuid. A non-zero uid loses its effective and permitted
    capabilities at setuid (no PR_SET_KEEPCAPS), as under docker."""
    try:
        os.setgroups(list(groups))
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise InitError(f"switch to user {uid}:{gid}: {strerror(exc.errno)}") from None


def take_terminal() -> None:
    """With a terminal on fd 0 (``-t``: the supervisor's pty slave), start a new session
    and make that terminal its controlling terminal, so that ctrl-c, job control and
    SIGWINCH work. Without one, nothing."""
    if not os.isatty(0):
        return
    try:
        os.setsid()
        fcntl.ioctl(0, TIOCSCTTY, 0)
    except OSError as exc:
        raise InitError(f"make the terminal the controlling terminal: {strerror(exc.errno)}") from None


def read_text(path: str) -> str:
    """The text of ``path``, or "" when it does not exist."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except FileNotFoundError:
        return ""


# --- the init stage, in order -------------------------------------------------------------

CONFIG_FD = 3
STATUS_FD = 4
CONTAINER_NAMESPACES = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWCGROUP


def read_config() -> dict:
    """The config JSON on fd 3, up to EOF, or up to a newline that ends a read: with
    ``network_sync`` the supervisor keeps fd 3 open after the config and its newline, and
    pid 1 later reads the network's go byte on it (:func:`wait_for_network`)."""
    chunks = []
    while chunk := os.read(CONFIG_FD, 65536):
        chunks.append(chunk)
        if chunk.endswith(b"\n"):  # compact JSON has no raw newline: this is the end
            break
    try:
        config = loads(b"".join(chunks).decode())
    except ValueError as exc:
        raise InitError(f"read the config: invalid JSON: {exc}") from None
    if not isinstance(config, dict) or not config.get("argv"):
        raise InitError("read the config: not a JSON object with a non-empty argv")
    if not config.get("network_sync"):
        os.close(CONFIG_FD)
    return config


def wait_for_network(config: dict) -> None:
    """With ``network_sync``: block until the supervisor has configured the container's
    network namespace (one byte on fd 3), so the payload never runs without its eth0."""
    if not config.get("network_sync"):
        return
    try:
        go = os.read(CONFIG_FD, 1)
    except OSError as exc:
        raise InitError(f"wait for the network set-up: {strerror(exc.errno)}") from None
    os.close(CONFIG_FD)
    if go != b"x":
        raise InitError("the supervisor did not finish the network set-up")


def setns(fd: int, nstype: int, action: str) -> None:
    """setns(2) into the namespace open at ``fd``; ``action`` says what, in the error."""
    libc = _libc()
    libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
    _check(libc.setns(fd, nstype), action)


def join_cgroups(cgroup_procs: "tuple[str, ...] | list[str]") -> None:
    """Move this process into each cgroup (its ``cgroup.procs`` paths)."""
    pid = str(os.getpid()).encode()
    for path in cgroup_procs:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        except OSError as exc:
            raise InitError(f'join the cgroup: write "{path}": {strerror(exc.errno)}') from None


def join_network_namespace(path: str) -> None:
    """setns(2) into the network namespace at ``path`` (``--network container:NAME``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise InitError(f'open the network namespace "{path}": {strerror(exc.errno)}') from None
    try:
        setns(fd, CLONE_NEWNET, f'join the network namespace "{path}" (setns)')
    finally:
        os.close(fd)


ETC_FILES = ("hosts", "hostname", "resolv.conf")


def mount_etc_files(rootfs: str, directory: str) -> None:
    """Bind-mount the supervisor's generated /etc/hosts, /etc/hostname and /etc/resolv.conf
    from ``directory`` over the image's (read-write, as docker). Bind mounts sit over the
    overlay, and the daemon's init layer (a lower dir) has the mount points, so nothing of
    them reaches the upper dir, a commit or a diff; a missing mount point is created."""
    for name in ETC_FILES:
        source = directory + "/" + name
        if not os.path.exists(source):
            continue
        target = secure_join(rootfs, "/etc/" + name)
        try:
            if not os.path.exists(target):
                os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        except OSError as exc:
            raise InitError(f'create the mount point "/etc/{name}": {strerror(exc.errno)}') from None
        mount(source, target, None, MS_BIND, None, f'bind-mount "{source}" on "/etc/{name}"')


def stage0(config: dict) -> None:
    """Join the cgroups, unshare, fork, report the child's pid. Returns only in the child,
    pid 1 of the new pid namespace; stage 0 itself exits here."""
    join_cgroups(config.get("cgroup_procs", ()))
    namespaces = CONTAINER_NAMESPACES
    network = config.get("network_namespace") or ""
    if network == "host":
        namespaces &= ~CLONE_NEWNET
    elif network:  # another container's: join it, keep it
        join_network_namespace(network)
        namespaces &= ~CLONE_NEWNET
    unshare(namespaces)  # the cgroup namespace is rooted at the cgroups just joined
    sync_read, sync_write = os.pipe()
    try:
        child = os.fork()
    except OSError as exc:
        raise InitError(f"fork the container process: {strerror(exc.errno)}") from None
    if child == 0:
        os.close(sync_write)
        go = os.read(sync_read, 1)
        os.close(sync_read)
        if go != b"x":
            os._exit(EXIT_RUNTIME)  # stage 0 died: nobody knows our pid
        return
    try:
        os.write(STATUS_FD, status_pid(child))
        os.write(sync_write, b"x")
    except OSError:
        os._exit(EXIT_RUNTIME)  # the child reads EOF without the byte and exits
    os._exit(0)


def container(config: dict) -> None:
    """pid 1: build the container's world, become the user, execve. Never returns."""
    os.umask(0)  # device nodes and mount points get exactly the modes given
    take_terminal()
    rootfs = config["rootfs"]
    mount_rootfs(rootfs, config["lower"], config["upper"], config["work"], config.get("volatile", False))
    mount_system(rootfs, config.get("devices", ()))
    if config.get("etc_dir"):
        mount_etc_files(rootfs, config["etc_dir"])
    enter_rootfs(rootfs)
    mask_paths(config.get("masked_paths", ()))
    make_readonly(config.get("readonly_paths", ()))
    set_hostname(config.get("hostname") or config["id"][:12])
    loopback_up()

    uid, gid, groups, home = resolve_user(config.get("user", ""), read_text("/etc/passwd"), read_text("/etc/group"))
    env = list(config.get("env", ()))
    if not any(entry.startswith("HOME=") for entry in env):
        env.append("HOME=" + home)
    cwd = config.get("cwd") or "/"
    try:  # as root, before setuid (as runc): the user may not be allowed to create it
        os.makedirs(cwd, 0o755, exist_ok=True)
        os.chdir(cwd)
    except OSError as exc:
        raise InitError(f'enter the working dir "{cwd}": {strerror(exc.errno)}') from None

    keep = capability_mask(config.get("capabilities", ()))
    limit_bounding_set(keep)
    switch_user(uid, gid, groups)
    prctl(PR_SET_NO_NEW_PRIVS, 1, what="set no_new_privs")
    if uid == 0:
        capset(effective=keep, permitted=keep, inheritable=0)

    argv = config["argv"]
    path_value = next((entry[5:] for entry in env if entry.startswith("PATH=")), DEFAULT_PATH)
    program = look_path(argv[0], path_value)
    wait_for_network(config)  # last: the supervisor's set-up overlaps with ours
    reset_ignored_signals()
    os.umask(0o022)
    environment = dict(entry.split("=", 1) for entry in env if "=" in entry)
    try:
        os.execve(program, argv, environment)
    except OSError as exc:
        raise exec_error(argv[0], exc) from None


def status_pid(pid: int) -> bytes:
    """The status pipe's first line: pid 1's host pid (``protocol.StatusDecoder`` reads it)."""
    return b'{"pid": %d}\n' % pid


def status_error(message: str, exit_code: int) -> bytes:
    """The status pipe's error line (``protocol.launch_error`` reads it): below PIPE_BUF, so
    that it is one atomic write."""
    return ('{"error": %s, "exit_code": %d}\n' % (quote(message[:3000]), exit_code)).encode()


def fail(message: str, exit_code: int) -> None:
    """Report one error line on the status pipe and exit with ``exit_code``."""
    try:
        os.write(STATUS_FD, status_error(message, exit_code))
    except OSError:
        pass  # the supervisor is gone
    os._exit(exit_code)


def run_init_stage() -> None:
    """The whole stage, from fds 3 and 4 to execve (forked by ``forkserver.py``). Never returns."""
    try:
        os.set_inheritable(STATUS_FD, False)  # FD_CLOEXEC: a successful execve closes it
    except OSError:
        os._exit(EXIT_RUNTIME)  # no status pipe: nobody to report to
    try:
        os.closerange(STATUS_FD + 1, 1 << 20)  # nothing else of the supervisor reaches the container
        config = read_config()
        if config.get("join"):  # an exec: join a running container instead of making one
            import nsenter  # beside this file: the stage runs with this directory on sys.path

            nsenter.run(config)
        stage0(config)
        container(config)
    except InitError as exc:
        fail(exc.message, exc.exit_code)
    except Exception as exc:  # a bug or a bad config: still report it, never run on
        fail(f"container init: {type(exc).__name__}: {exc}", EXIT_RUNTIME)
    except BaseException:
        fail("container init: interrupted", EXIT_RUNTIME)
    os._exit(EXIT_RUNTIME)
