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


def mount_system(rootfs: str, devices: tuple[str, ...] | list[str] = (), writable_sysfs: bool = False) -> None:
    """/proc, /sys (read-only, unless ``writable_sysfs``: --privileged), /dev (tmpfs with the
    standard nodes and the ``--device`` ones), /dev/pts, /dev/shm and /dev/mqueue under
    ``rootfs``, each mount point resolved with :func:`secure_join`."""
    libc.mount("proc", _mount_point(rootfs, "/proc"), "proc", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
    sysfs_flags = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC | (0 if writable_sysfs else libc.MS_RDONLY)
    libc.mount("sysfs", _mount_point(rootfs, "/sys"), "sysfs", sysfs_flags)
    dev = _mount_point(rootfs, "/dev")
    libc.mount("tmpfs", dev, "tmpfs", libc.MS_NOSUID | libc.MS_STRICTATIME, "mode=755,size=65536k")
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
        raise libc.InitError(f'populate /dev: "{exc.filename}": {libc.strerror(exc.errno)}') from None
    libc.mount("devpts", f"{dev}/pts", "devpts", libc.MS_NOSUID | libc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
    libc.mount("shm", f"{dev}/shm", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC, "mode=1777,size=65536k")
    libc.mount("mqueue", f"{dev}/mqueue", "mqueue", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)


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


