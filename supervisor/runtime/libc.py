"""The libc calls the init stage needs that Python 3.11's ``os`` lacks, through
``ctypes_lite.py`` (ctypes' C module, without the package's ~2 ms of imports):
mount, umount2, unshare, setns, pivot_root, prctl, capset, rt_sigaction; their constants;
and the one error the stage raises, :class:`InitError`, since every wrapper raises it.

Why a module of its own (as youki's ``syscall/`` and crun's thin libc layer): the steps of
the stage (``namespaces.py``, ``rootfs.py``, ``security.py``) read as what they do, and
only this file knows argument types, syscall numbers and errno. libc is loaded once, by
the fork server (:func:`preload`), so that no forked stage pays for it.

Like every module the stage imports, this one runs under ``python -I -S`` as a top-level
module beside ``forkserver.py``: the standard library's C modules only (``forkserver.py``
says why; ``json``, ``socket``, ``signal`` import ``re`` and ``enum``, a third of a `true`
container's start-up).
"""

import errno
import os

if __package__:  # imported as supervisor.runtime.libc
    from supervisor.runtime import ctypes_lite
else:  # in the fork server: a top-level module beside forkserver.py
    import ctypes_lite

c_int, c_uint, c_long = ctypes_lite.c_int, ctypes_lite.c_uint, ctypes_lite.c_long

EXIT_RUNTIME = 125  # the runtime failed (mount, pivot_root, user lookup, ...)
EXIT_CANNOT_INVOKE = 126  # the command exists but cannot be executed
EXIT_NOT_FOUND = 127  # the command does not exist

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
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_PRIVATE = 0x40000
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_RELATIME = 0x200000
MS_SYNCHRONOUS = 0x10
MS_DIRSYNC = 0x80
MS_MANDLOCK = 0x40
AT_FDCWD = -100
O_PATH = 0o10000000
RESOLVE_NO_SYMLINKS = 0x04
MS_STRICTATIME = 0x1000000
MNT_DETACH = 0x2

PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

_SYSCALLS = {  # no glibc wrapper (pivot_root), only libcap's (capset), or glibc refuses (rt_sigaction)
    "x86_64": {"pivot_root": 155, "capset": 126, "rt_sigaction": 13, "openat2": 437},
    "aarch64": {"pivot_root": 41, "capset": 91, "rt_sigaction": 134, "openat2": 437},
}
# The new mount API (Linux 5.2) has the same numbers on every architecture.
for _numbers in _SYSCALLS.values():
    _numbers.update(move_mount=429, fsopen=430, fsconfig=431, fsmount=432)
FSOPEN_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOVE_MOUNT_F_EMPTY_PATH = 0x4
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

class _Libc:
    """libc's functions that the wrappers below call, with their prototypes."""

    def __init__(self):
        function, c = ctypes_lite.function, ctypes_lite
        self.mount = function("mount", (c.c_char_p, c.c_char_p, c.c_char_p, c.c_ulong, c.c_char_p))
        self.umount2 = function("umount2", (c.c_char_p, c.c_int))
        self.unshare = function("unshare", (c.c_int,))
        self.setns = function("setns", (c.c_int, c.c_int))
        self.prctl = function("prctl", (c.c_int, c.c_ulong, c.c_ulong, c.c_ulong, c.c_ulong))
        self.syscall = function("syscall", restype=c.c_long)


_libc_handle: _Libc | None = None


def _libc() -> _Libc:
    global _libc_handle
    if _libc_handle is None:
        _libc_handle = _Libc()
    return _libc_handle


def preload() -> None:
    """Load libc and set up its prototypes now (the fork server, so that none of its forks pays)."""
    _libc()


def _check(result: int, what: str) -> int:
    if result == -1:
        number = ctypes_lite.get_errno()
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


class _OpenHow(ctypes_lite.Structure):
    _fields_ = (("flags", ctypes_lite.c_uint64), ("mode", ctypes_lite.c_uint64), ("resolve", ctypes_lite.c_uint64))


def openat2(directory_fd: int, path: str, flags: int, resolve: int, what: str) -> int:
    """openat2(2) (Linux 5.6): ``resolve`` the RESOLVE_* rules of the whole path. Raises
    InitError naming ``what``; its ``errno`` attribute is the cause."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    result = _libc().syscall(_syscall_number("openat2"), c_int(directory_fd), os.fsencode(path),
                             ctypes_lite.byref(how), ctypes_lite.c_size_t(ctypes_lite.sizeof(how)))
    if result < 0:
        number = ctypes_lite.get_errno()
        error = InitError(f"{what}: {strerror(number)}")
        error.errno = number  # type: ignore[attr-defined]
        raise error
    return int(result)


def _fs_context_message(fs_fd: int) -> str:
    """The messages the kernel queued on a filesystem context (``e overlay: ...``), if any."""
    lines = []
    while True:
        try:
            line = os.read(fs_fd, 4096)
        except OSError:
            break
        if not line:
            break
        lines.append(line.decode(errors="replace").strip())
    return "; ".join(lines)


def mount_new_api(fstype: str, target: str, options: list[tuple[str, str | None]], what: str) -> None:
    """Mount ``fstype`` on ``target`` through the new mount API: fsopen(2), one fsconfig(2)
    per ``(key, value)`` of ``options`` (a string, or None for a flag; a key may repeat, as
    overlay's ``lowerdir+``), fsmount(2) and move_mount(2). Unlike mount(2), no option
    string is built, so no page-size limit applies. Raises InitError naming ``what`` and
    the key the kernel refused, with the kernel's own message."""
    libc = _libc()
    fs_fd = libc.syscall(c_long(_syscall_number("fsopen")), os.fsencode(fstype), c_uint(FSOPEN_CLOEXEC))
    _check(fs_fd, f"{what}: fsopen {fstype}")
    try:
        for key, value in options:
            command = FSCONFIG_SET_FLAG if value is None else FSCONFIG_SET_STRING
            result = libc.syscall(c_long(_syscall_number("fsconfig")), c_int(fs_fd), c_uint(command),
                                  os.fsencode(key), None if value is None else os.fsencode(value), c_int(0))
            if result == -1:
                number = ctypes_lite.get_errno()
                detail = _fs_context_message(fs_fd)
                raise InitError(f"{what}: {key}={value or ''}: {strerror(number)}" + (f" ({detail})" if detail else ""))
        result = libc.syscall(c_long(_syscall_number("fsconfig")), c_int(fs_fd),
                              c_uint(FSCONFIG_CMD_CREATE), None, None, c_int(0))
        if result == -1:
            number = ctypes_lite.get_errno()
            detail = _fs_context_message(fs_fd)
            raise InitError(f"{what}: create: {strerror(number)}" + (f" ({detail})" if detail else ""))
        mount_fd = _check(libc.syscall(c_long(_syscall_number("fsmount")), c_int(fs_fd),
                                       c_uint(FSMOUNT_CLOEXEC), c_uint(0)), f"{what}: fsmount")
    finally:
        os.close(fs_fd)
    try:
        result = libc.syscall(c_long(_syscall_number("move_mount")), c_int(mount_fd), b"",
                              c_int(AT_FDCWD), os.fsencode(target), c_uint(MOVE_MOUNT_F_EMPTY_PATH))
        _check(result, f"{what}: move_mount")
    finally:
        os.close(mount_fd)


def umount2(target: str, flags: int) -> None:
    _check(_libc().umount2(os.fsencode(target), flags), f'umount "{target}"')


def unshare(flags: int) -> None:
    _check(_libc().unshare(flags), "unshare the namespaces")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0, what: str = "prctl") -> int:
    return _check(_libc().prctl(option, arg2, arg3, arg4, arg5), what)


def pivot_root(new_root: str, put_old: str) -> None:
    number = c_long(_syscall_number("pivot_root"))
    result = _libc().syscall(number, ctypes_lite.c_char_p(os.fsencode(new_root)),
                             ctypes_lite.c_char_p(os.fsencode(put_old)))
    _check(result, f'pivot_root to "{new_root}"')


def setns(fd: int, nstype: int, action: str) -> None:
    """setns(2) into the namespace open at ``fd``; ``action`` says what, in the error."""
    _check(_libc().setns(fd, nstype), action)



class _CapHeader(ctypes_lite.Structure):
    _fields_ = (("version", ctypes_lite.c_uint32), ("pid", ctypes_lite.c_int))


class _CapData(ctypes_lite.Structure):
    _fields_ = (("effective", ctypes_lite.c_uint32), ("permitted", ctypes_lite.c_uint32),
                ("inheritable", ctypes_lite.c_uint32))


def capset(effective: int, permitted: int, inheritable: int = 0) -> None:
    """Set the calling thread's capability sets from bit masks (capset(2), version 3)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for index in (0, 1):
        shift = 32 * index
        data[index].effective = (effective >> shift) & 0xFFFFFFFF
        data[index].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[index].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    result = _libc().syscall(c_long(_syscall_number("capset")), ctypes_lite.byref(header), data)
    _check(result, "set the capabilities (capset)")


class _SockFprog(ctypes_lite.Structure):  # struct sock_fprog (linux/filter.h)
    _fields_ = (("len", ctypes_lite.c_ushort), ("filter", ctypes_lite.c_void_p))


def set_seccomp_filter(program: bytes) -> None:
    """Install a compiled seccomp BPF program (8 bytes per instruction, native byte order)
    on the calling thread: prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER). Needs no_new_privs
    or CAP_SYS_ADMIN."""
    instructions = ctypes_lite.create_string_buffer(program, len(program))
    header = _SockFprog(len(program) // 8, ctypes_lite.addressof(instructions))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes_lite.addressof(header), what="load the seccomp filter")


def reset_ignored_signals() -> None:
    """Set every ignored signal back to SIG_DFL, since an ignored signal stays ignored across
    execve: python ignores SIGPIPE and SIGXFSZ, and glibc's posix_spawn leaves its two
    internal signals (32, 33) ignored, which glibc's sigaction refuses to touch; hence the
    raw rt_sigaction."""
    ignored = 0
    with open("/proc/self/status", encoding="utf-8", errors="replace") as file:
        status = file.read()
    for line in status.splitlines():
        if line.startswith("SigIgn:"):
            ignored = int(line.split()[1], 16)
            break
    default = ctypes_lite.create_string_buffer(32)  # struct sigaction, all zero: SIG_DFL, no flags
    number = c_long(_syscall_number("rt_sigaction"))
    for sig in range(1, 65):
        if ignored >> (sig - 1) & 1:
            result = _libc().syscall(number, c_long(sig), default, None, c_long(8))
            _check(result, f"reset the disposition of signal {sig}")


def set_child_subreaper(enabled: bool) -> None:
    prctl(PR_SET_CHILD_SUBREAPER, int(enabled), what="prctl(PR_SET_CHILD_SUBREAPER)")


def is_child_subreaper() -> bool:
    value = c_int(0)
    prctl(PR_GET_CHILD_SUBREAPER, ctypes_lite.addressof(value), what="prctl(PR_GET_CHILD_SUBREAPER)")
    return bool(value.value)

