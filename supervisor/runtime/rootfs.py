"""The container's root filesystem, built inside its own mount namespace: the overlay,
/proc, /sys, /dev and its nodes, the generated /etc files, pivot_root, masked and
read-only paths; and :func:`secure_join`, which resolves every path of the image inside
the root.

Why a module of its own (youki's ``rootfs/``, crun's mount code in ``linux.c``): it is the
longest and most security-sensitive part of the stage, and it knows nothing of namespaces,
users or the status pipe. Why the overlay is mounted here, in the container's mount
namespace, and when it is unmounted: docs/architecture.md.

Imported by the init stage under ``python -I -S``: the standard library's C modules only
(see ``libc.py``).
"""

import errno
import os
import stat

if __package__:  # imported as supervisor.runtime.rootfs
    from supervisor.runtime import libc
else:  # in the fork server: a top-level module beside forkserver.py
    import libc

MAX_SYMLINKS = 40  # the kernel's limit too

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


def mount_rootfs(rootfs: str, lower: list[str], upper: str, work: str, volatile: bool = False) -> None:
    """Make every mount private (nothing propagates back to the host), then mount the
    overlay on ``rootfs``. Must run in the container's own mount namespace.

    ``volatile`` (a ``--rm`` container, whose writable layer is deleted at its exit, as
    podman does): the overlay never syncs. Without it, unmounting an overlay (when pid 1
    exits and its mount namespace goes) runs syncfs() on the *whole* filesystem of the upper
    dir, which held a container's exit up for as long as the host took to write back every
    dirty page on it (0.15-0.4 s after 200 MB of logs here). A kernel without the option
    (before 5.10) mounts without it."""
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE, None, "make the mounts private (MS_REC|MS_PRIVATE on /)")
    options = f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    # A volatile mount leaves this behind and the kernel refuses the dirs while it exists.
    try:
        os.rmdir(f"{work}/work/incompat/volatile")
    except OSError:
        pass
    if volatile:
        try:
            libc.mount("overlay", rootfs, "overlay", 0, options + ",volatile", "")
            return
        except libc.InitError:
            pass  # an older kernel: mount it as usual
    libc.mount("overlay", rootfs, "overlay", 0, options, f'mount overlay on "{rootfs}" ({options})')


def _mount_point(rootfs: str, path: str) -> str:
    target = secure_join(rootfs, path)
    try:
        os.makedirs(target, 0o755, exist_ok=True)
    except OSError as exc:
        raise libc.InitError(f'create the mount point "{path}" in "{rootfs}": {libc.strerror(exc.errno)}') from None
    return target


def parse_device(entry: str) -> tuple[int, int, int, str]:
    """A ``--device`` node of the launch config, ``"c 7 0 0660 /dev/loop0"``, as
    (file type and mode for mknod, major, minor, path in the container)."""
    parts = entry.split(" ")
    if len(parts) != 5 or parts[0] not in ("c", "b") or not parts[4].startswith("/dev/"):
        raise libc.InitError(f"invalid device entry {entry!r}")
    kind = stat.S_IFCHR if parts[0] == "c" else stat.S_IFBLK
    try:
        return kind | (int(parts[3], 8) & 0o777), int(parts[1]), int(parts[2]), parts[4]
    except ValueError:
        raise libc.InitError(f"invalid device entry {entry!r}") from None


def mount_system(rootfs: str, devices: tuple[str, ...] | list[str] = (), writable_sysfs: bool = False,
                 shm_size: str = "", user_namespace: bool = False) -> None:
    """/proc, /sys (read-only, unless ``writable_sysfs``: --privileged), /dev (tmpfs with the
    standard nodes and the ``--device`` ones), /dev/pts, /dev/shm (``shm_size`` bytes, default
    64m) and /dev/mqueue under ``rootfs``, each mount point resolved with :func:`secure_join`.

    ``user_namespace`` (``--userns-remap``; ``userns.py``): the kernel refuses mknod there, so
    the nodes are bind mounts of the host's (as runc does); and a network namespace that is
    not the container's own refuses a sysfs mount, so the host's /sys is bound instead."""
    libc.mount("proc", _mount_point(rootfs, "/proc"), "proc", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
    sysfs_flags = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC | (0 if writable_sysfs else libc.MS_RDONLY)
    _mount_sysfs(_mount_point(rootfs, "/sys"), sysfs_flags, user_namespace)
    dev = _mount_point(rootfs, "/dev")
    libc.mount("tmpfs", dev, "tmpfs", libc.MS_NOSUID | libc.MS_STRICTATIME, "mode=755,size=65536k")
    try:  # a fresh tmpfs: nothing in it is a link, plain paths are safe
        for name, major, minor in DEVICES:
            make_node(f"{dev}/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor), "/dev/" + name, user_namespace)
        for name, target in DEVICE_LINKS:
            os.symlink(target, f"{dev}/{name}")
        for name, mode in (("pts", 0o755), ("shm", 0o1777), ("mqueue", 0o755)):
            os.mkdir(f"{dev}/{name}", mode)
        for entry in devices:
            mode, major, minor, path = parse_device(entry)
            node = secure_join(dev, path[len("/dev/"):])
            os.makedirs(os.path.dirname(node), 0o755, exist_ok=True)
            make_node(node, mode, os.makedev(major, minor), path, user_namespace)
            if not user_namespace:
                os.chmod(node, mode & 0o777)  # mknod applies the umask
    except OSError as exc:
        raise libc.InitError(f'populate /dev: "{exc.filename}": {libc.strerror(exc.errno)}') from None
    libc.mount("devpts", f"{dev}/pts", "devpts", libc.MS_NOSUID | libc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
    shm = f"mode=1777,size={shm_size or '65536k'}"  # --shm-size: bytes
    libc.mount("shm", f"{dev}/shm", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC, shm)
    libc.mount("mqueue", f"{dev}/mqueue", "mqueue", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)


def make_node(node: str, mode: int, device: int, host_path: str, bind: bool) -> None:
    """A device node at ``node``: mknod, or with ``bind`` (a user namespace, where mknod is
    refused) a bind mount of the host's node of that number (``host_path`` first)."""
    if not bind:
        os.mknod(node, mode, device)
        return
    source = host_node(mode, device, host_path)
    os.close(os.open(node, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
    libc.mount(source, node, None, libc.MS_BIND, None, f'bind the host\'s device "{source}" on "{node}"')


def host_node(mode: int, device: int, host_path: str) -> str:
    """The host's node of this type and number: ``host_path`` when it is one, else the first
    under /dev (two levels deep).

    Raises:
        InitError(125): the host has no such node.
    """
    kind = stat.S_IFMT(mode)

    def matches(path: str) -> bool:
        try:
            info = os.lstat(path)
        except OSError:
            return False
        return stat.S_IFMT(info.st_mode) == kind and info.st_rdev == device

    if matches(host_path):
        return host_path
    for directory in ("/dev", *(entry.path for entry in os.scandir("/dev") if entry.is_dir(follow_symlinks=False))):
        for entry in os.scandir(directory):
            if matches(entry.path):
                return entry.path
    raise libc.InitError(f"bind the device {os.major(device)}:{os.minor(device)} into a user namespace: "
                         "the host has no such node under /dev")


def _mount_sysfs(target: str, flags: int, user_namespace: bool) -> None:
    try:
        libc.mount("sysfs", target, "sysfs", flags, None, f'mount sysfs on "{target}"')
    except libc.InitError:
        if not user_namespace:
            raise
        # --network host|container: under a user namespace, not ours to mount sysfs for.
        libc.mount("/sys", target, None, libc.MS_BIND | libc.MS_REC, None, f'bind the host\'s /sys on "{target}"')
        if flags & libc.MS_RDONLY:
            libc.mount(None, target, None, libc.MS_BIND | libc.MS_REMOUNT | flags, None, f'make "{target}" read-only')


def enter_rootfs(rootfs: str) -> None:
    """pivot_root into ``rootfs`` and detach the old root. pivot_root(".", ".") stacks the
    old root on the new one, and umount2(".") then takes the old one off (man 2 pivot_root):
    no temporary directory is needed."""
    try:
        os.chdir(rootfs)
    except OSError as exc:
        raise libc.InitError(f'chdir to "{rootfs}": {libc.strerror(exc.errno)}') from None
    libc.pivot_root(".", ".")
    libc.umount2(".", libc.MNT_DETACH)
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
            libc.mount("tmpfs", path, "tmpfs", libc.MS_RDONLY, None, f'mask "{path}" (read-only tmpfs)')
        else:
            libc.mount("/dev/null", path, None, libc.MS_BIND, None, f'mask "{path}" (bind /dev/null)')


def make_readonly(paths: list[str]) -> None:
    """Bind each path onto itself and remount it read-only, keeping nosuid/nodev/noexec."""
    for path in paths:
        try:
            flags = os.statvfs(path).f_flag & (libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)  # ST_* == MS_* here
        except (FileNotFoundError, NotADirectoryError):
            continue
        libc.mount(path, path, None, libc.MS_BIND | libc.MS_REC, None, f'make "{path}" read-only (bind)')
        remount = libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | flags
        libc.mount(path, path, None, remount, None, f'make "{path}" read-only (remount)')


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
            raise libc.InitError(f'create the mount point "/etc/{name}": {libc.strerror(exc.errno)}') from None
        libc.mount(source, target, None, libc.MS_BIND, None, f'bind-mount "{source}" on "/etc/{name}"')




# --- volumes, binds and tmpfs mounts (the config's "mounts"; issue 17) -------------------------

#: Never a mount target, after its path is resolved in the root: the kernel's filesystems (the
#: masked and read-only paths of the config are added to these).
PROTECTED_MOUNT_PATHS = ("/proc", "/sys", "/dev/pts", "/dev/mqueue")
_PROPAGATION = {"private": libc.MS_PRIVATE, "shared": libc.MS_SHARED, "slave": libc.MS_SLAVE}
#: tmpfs options that are mount flags: (flag set, flag cleared).
_TMPFS_FLAGS = {
    "ro": (libc.MS_RDONLY, 0), "rw": (0, libc.MS_RDONLY),
    "noexec": (libc.MS_NOEXEC, 0), "exec": (0, libc.MS_NOEXEC),
    "nosuid": (libc.MS_NOSUID, 0), "suid": (0, libc.MS_NOSUID),
    "nodev": (libc.MS_NODEV, 0), "dev": (0, libc.MS_NODEV),
    "noatime": (libc.MS_NOATIME, 0), "atime": (0, libc.MS_NOATIME),
    "nodiratime": (libc.MS_NODIRATIME, 0), "diratime": (0, libc.MS_NODIRATIME),
    "relatime": (libc.MS_RELATIME, 0), "norelatime": (0, libc.MS_RELATIME),
    "strictatime": (libc.MS_STRICTATIME, 0), "nostrictatime": (0, libc.MS_STRICTATIME),
    "sync": (libc.MS_SYNCHRONOUS, 0), "async": (0, libc.MS_SYNCHRONOUS),
    "dirsync": (libc.MS_DIRSYNC, 0), "mand": (libc.MS_MANDLOCK, 0), "nomand": (0, libc.MS_MANDLOCK),
}


def mount_volumes(rootfs: str, entries, protected=()) -> None:  # no typing import in the stage
    """Mount each ``TYPE\\tSOURCE\\tTARGET\\tFLAGS\\tDATA`` entry (protocol.py) over the
    container's root, in order, before pivot_root.

    A bind or volume source is opened with openat2(O_PATH, RESOLVE_NO_SYMLINKS): the daemon
    made it canonical at create, so a symlink found in it now was put there since (a swap
    between the check and the mount) and is refused, never followed; the mount then takes
    the opened fd (``/proc/self/fd/N``), not the path. The target is resolved inside the root
    (:func:`secure_join`) and refused when it lands on a protected path (``protected``: the
    masked and read-only ones). An empty volume on a directory of the image gets the image's
    content first (docker's copy-up), unless ``nocopy``.

    Raises:
        InitError(125): naming the mount and the cause.
    """
    refused = PROTECTED_MOUNT_PATHS + tuple(protected)
    for entry in entries:
        kind, source, target, flags, data = entry.split("\t")
        flag_set = [flag for flag in flags.split(",") if flag]
        where = secure_join(rootfs, target)
        inside = "/" + where[len(rootfs.rstrip("/")):].lstrip("/")
        for path in refused:
            if inside == path or inside.startswith(path.rstrip("/") + "/"):
                raise libc.InitError(f'mount on "{target}": it resolves to "{inside}", under "{path}", which the '
                                     "security defaults mask or the kernel owns")
        if kind == "tmpfs":
            _mount_tmpfs(where, target, data)
        else:
            _mount_source(kind, source, where, target, flag_set)
        for flag in flag_set:
            propagation = _PROPAGATION.get(flag[1:] if flag.startswith("r") else flag)
            if propagation:
                recursive = libc.MS_REC if flag.startswith("r") else 0
                libc.mount(None, where, None, propagation | recursive, None, f'set "{target}" {flag}')


def _mount_tmpfs(where: str, target: str, options: str) -> None:
    flags = 0
    data = []
    for option in options.split(","):
        if not option:
            continue
        if option in _TMPFS_FLAGS:
            add, clear = _TMPFS_FLAGS[option]
            flags = (flags | add) & ~clear
        else:
            data.append(option)
    _make_directory(where, target)
    libc.mount("tmpfs", where, "tmpfs", flags, ",".join(data) or None, f'mount tmpfs on "{target}" ({options})')


def _make_directory(where: str, target: str) -> None:
    try:
        os.makedirs(where, 0o755, exist_ok=True)
    except OSError as exc:
        raise libc.InitError(f'create the mount point "{target}": {libc.strerror(exc.errno)}') from None


def open_source(source: str) -> int:
    """An O_PATH fd of a mount's host source; no symlink anywhere in its path.

    Raises:
        InitError(125): missing, or a symlink on the way (``ELOOP``).
    """
    try:
        return libc.openat2(libc.AT_FDCWD, source, libc.O_PATH, libc.RESOLVE_NO_SYMLINKS,
                            f'open the mount source "{source}" (no symlink may be on its path)')
    except libc.InitError as exc:
        if getattr(exc, "errno", 0) == errno.ENOSYS:  # before Linux 5.6: O_NOFOLLOW on the last component only
            try:
                return os.open(source, libc.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as error:
                raise libc.InitError(f'open the mount source "{source}": {libc.strerror(error.errno)}') from None
        raise


def _mount_source(kind: str, source: str, where: str, target: str, flags: list) -> None:
    fd = open_source(source)
    try:
        is_directory = stat.S_ISDIR(os.fstat(fd).st_mode)
        handle = f"/proc/self/fd/{fd}"
        if is_directory:
            if kind == "volume" and "nocopy" not in flags:
                copy_up(where, handle, target)
            _make_directory(where, target)
        else:
            try:
                os.makedirs(os.path.dirname(where), 0o755, exist_ok=True)
                if not os.path.lexists(where):
                    os.close(os.open(where, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644))
            except OSError as exc:
                raise libc.InitError(f'create the mount point "{target}": {libc.strerror(exc.errno)}') from None
        libc.mount(handle, where, None, libc.MS_BIND | libc.MS_REC, None, f'bind-mount "{source}" on "{target}"')
    finally:
        os.close(fd)
    if "ro" in flags:
        kept = os.statvfs(where).f_flag & (libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
        libc.mount(None, where, None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | kept, None,
                   f'make "{target}" read-only')


def copy_up(image_directory: str, volume: str, target: str) -> None:
    """Copy the image's files at ``image_directory`` into ``volume`` when the volume is empty
    (docker's copy-up): owners, modes, times, links and device nodes kept, no link followed
    on either side (the volume is walked by fds, the image's files are lstat'ed)."""
    try:
        source_mode = os.lstat(image_directory)
    except (FileNotFoundError, NotADirectoryError):
        return
    if not stat.S_ISDIR(source_mode.st_mode):
        return
    try:
        destination = os.open(volume, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise libc.InitError(f'open the volume for "{target}": {libc.strerror(exc.errno)}') from None
    try:
        if os.listdir(destination):
            return  # a volume with data keeps it
        _copy_tree(image_directory, destination)
        os.fchown(destination, source_mode.st_uid, source_mode.st_gid)
        os.fchmod(destination, stat.S_IMODE(source_mode.st_mode))
    except OSError as exc:
        raise libc.InitError(f'copy the image\'s "{target}" into its volume: "{exc.filename}": '
                             f"{libc.strerror(exc.errno)}") from None
    finally:
        os.close(destination)


def _copy_tree(source: str, destination: int) -> None:
    with os.scandir(source) as entries:
        for entry in entries:
            info = entry.stat(follow_symlinks=False)
            mode, name = info.st_mode, entry.name
            if stat.S_ISDIR(mode):
                os.mkdir(name, 0o700, dir_fd=destination)
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=destination)
                try:
                    _copy_tree(entry.path, child)
                    _set_owner_mode_times(child, info)
                finally:
                    os.close(child)
            elif stat.S_ISREG(mode):
                reader = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    writer = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     0o600, dir_fd=destination)
                    try:
                        while os.sendfile(writer, reader, None, 1 << 20):
                            pass
                        _set_owner_mode_times(writer, info)
                    finally:
                        os.close(writer)
                finally:
                    os.close(reader)
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(entry.path), name, dir_fd=destination)
                os.chown(name, info.st_uid, info.st_gid, dir_fd=destination, follow_symlinks=False)
            else:  # fifo, socket, device node
                os.mknod(name, mode, info.st_rdev, dir_fd=destination)
                os.chown(name, info.st_uid, info.st_gid, dir_fd=destination, follow_symlinks=False)
                os.chmod(name, stat.S_IMODE(mode), dir_fd=destination)


def _set_owner_mode_times(fd: int, info: os.stat_result) -> None:
    os.fchown(fd, info.st_uid, info.st_gid)
    os.fchmod(fd, stat.S_IMODE(info.st_mode))  # after chown, which clears setuid bits
    os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))


def make_root_readonly() -> None:
    """``--read-only``: remount / read-only (after pivot_root); the mounts on it (/dev, /proc,
    volumes, tmpfs, the /etc files) keep their own flags."""
    kept = os.statvfs("/").f_flag & (libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
    libc.mount(None, "/", None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | kept, None,
               "make the root filesystem read-only (--read-only)")
