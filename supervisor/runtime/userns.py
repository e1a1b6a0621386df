"""A container's user namespace (``dockyard daemon --userns-remap``): made, mapped and
entered by stage 0 while it is still the host's root, and joined by an exec.

Theory of operation
-------------------
The mapping is written from outside the new namespace, by a process that holds CAP_SETUID
and CAP_SETGID in the parent namespace (the kernel refuses a wider map written from inside):
stage 0 itself, before it enters the namespace. It forks a short-lived *holder* that
unshares CLONE_NEWUSER, writes the holder's ``uid_map`` and ``gid_map`` (the daemon's
subordinate range: "0 100000 65536"), keeps the namespace open by an fd, and lets the
holder exit. Everything after that is done with the namespace's fd::

    stage 0 (host root)                             holder
    -------------------                             ------
    fork ----------------------------------------->  unshare(CLONE_NEWUSER), 1 byte
    write /proc/<holder>/{uid_map,setgroups,gid_map} (still the host's root)
    open /proc/<holder>/ns/user, 1 byte ---------->  _exit(0)
    unshare(CLONE_NEWNS)                 a mount namespace of the host's root, private
    each image layer: open_tree(CLONE), mount_setattr(MOUNT_ATTR_IDMAP, userns fd),
        move_mount over the layer's own path    (idmapped: files owned by host uid 0 show
                                                 as the mapped root, nothing is copied)
    mount the overlay (as the host's root: trusted.overlay.* xattrs, the opaque dirs of
        the image store, keep working; the upper dir is owned by the mapped root)
    setns(userns fd, CLONE_NEWUSER); setgroups([]); setresgid(0); setresuid(0)
                                                (host uid 100000: no capability left on
                                                 the host, all of them in the namespace)
    unshare(NS|UTS|IPC|NET|PID|CGROUP)            owned by the new user namespace
    fork pid 1 ...                                (init_stage.stage0 goes on as usual)

pid 1 then builds /proc, /sys, /dev as root of its namespace. Three things differ from an
unmapped container (``rootfs.py``): the overlay came from a more privileged mount namespace,
so the kernel locked it and pivot_root refuses it; pid 1 bind-mounts the root onto itself
first (:func:`unlock_rootfs`, as runc and crun do in a user namespace). mknod is refused in a
user namespace: /dev's nodes are bind mounts of the host's. A network namespace that is not
the container's own (``--network host|container:``) is not ours to mount sysfs for or to
bring ``lo`` up in: /sys is bound from the host, read-only.

Like the other modules of the stage, this one is imported by path under ``python -I -S``:
the standard library's C modules only (see ``libc.py``).
"""

import os

if __package__:  # imported as supervisor.runtime.userns
    from supervisor.runtime import ctypes_lite, libc, rootfs
else:  # in the fork server: a top-level module beside forkserver.py
    import ctypes_lite
    import libc
    import rootfs

CLONE_NEWUSER = 0x10000000

# The mount API (Linux 5.2; MOUNT_ATTR_IDMAP 5.12): the same numbers on every architecture.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000


class _MountAttr(ctypes_lite.Structure):  # struct mount_attr (linux/mount.h)
    _fields_ = (("attr_set", ctypes_lite.c_uint64), ("attr_clr", ctypes_lite.c_uint64),
                ("propagation", ctypes_lite.c_uint64), ("userns_fd", ctypes_lite.c_uint64))


def _syscall(number: int, *args) -> int:  # no typing import in the stage
    library = libc._libc()
    result = library.syscall(ctypes_lite.c_long(number), *args)
    return -ctypes_lite.get_errno() if result < 0 else int(result)


def _fail(what: str, result: int) -> None:
    error = libc.InitError(f"{what}: {libc.strerror(-result)}")
    error.errno = -result  # type: ignore[attr-defined]
    raise error


def map_text(entries) -> bytes:  # entries: "INSIDE OUTSIDE COUNT" strings
    """What is written to ``uid_map``/``gid_map``: one line per entry (at most 340)."""
    return "".join(entry + "\n" for entry in entries).encode()


def _write(path: str, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        raise libc.InitError(f'write "{path}" ({data.decode().strip()!r}): {libc.strerror(exc.errno)}') from None


def make_user_namespace(uid_map, gid_map) -> int:
    """A new user namespace with these maps, open by the fd returned (close-on-exec): a
    forked holder unshares it, this process (which must be the host's root) writes its maps
    from outside and opens it; the holder then exits.

    Raises:
        InitError(125): the fork, the unshare or a map write failed.
    """
    ready_read, ready_write = os.pipe()
    done_read, done_write = os.pipe()
    try:
        holder = os.fork()
    except OSError as exc:
        raise libc.InitError(f"fork the user namespace's holder: {libc.strerror(exc.errno)}") from None
    if holder == 0:  # the holder: unshare, say so, wait until the namespace is held
        code = 0
        try:
            os.close(ready_read)
            os.close(done_write)
            libc.unshare(CLONE_NEWUSER)
            os.write(ready_write, b"x")
            os.read(done_read, 1)
        except BaseException:
            code = libc.EXIT_RUNTIME
        os._exit(code)
    os.close(ready_write)
    os.close(done_read)
    try:
        if os.read(ready_read, 1) != b"x":
            raise libc.InitError("create the user namespace: unshare(CLONE_NEWUSER) failed in its holder")
        _write(f"/proc/{holder}/uid_map", map_text(uid_map))
        _write(f"/proc/{holder}/gid_map", map_text(gid_map))
        try:
            return os.open(f"/proc/{holder}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise libc.InitError(f"open the new user namespace: {libc.strerror(exc.errno)}") from None
    finally:
        os.close(ready_read)
        os.close(done_write)  # the holder reads EOF and exits
        try:
            os.waitpid(holder, 0)
        except ChildProcessError:
            pass


def idmap_in_place(path: str, userns_fd: int) -> None:
    """Mount an idmapped copy of the mount at ``path`` over ``path`` itself, in this
    process's mount namespace (private, not the host's): the files keep their owners on
    disk and show, through this mount, as the user namespace maps them (host uid 0 as the
    namespace's root). Nothing is copied.

    Raises:
        InitError(125): the kernel or the filesystem refused (``errno`` set): the daemon's
            start-up probe falls back to chowned copies then.
    """
    encoded = os.fsencode(path)
    tree = _syscall(SYS_OPEN_TREE, ctypes_lite.c_int(libc.AT_FDCWD), ctypes_lite.c_char_p(encoded),
                    ctypes_lite.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC))
    if tree < 0:
        _fail(f'clone the mount of the image layer "{path}" (open_tree)', tree)
    try:
        attributes = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        result = _syscall(SYS_MOUNT_SETATTR, ctypes_lite.c_int(tree), ctypes_lite.c_char_p(b""),
                          ctypes_lite.c_uint(AT_EMPTY_PATH), ctypes_lite.byref(attributes), ctypes_lite.c_size_t(ctypes_lite.sizeof(attributes)))
        if result < 0:
            _fail(f'idmap the image layer "{path}" (mount_setattr MOUNT_ATTR_IDMAP)', result)
        result = _syscall(SYS_MOVE_MOUNT, ctypes_lite.c_int(tree), ctypes_lite.c_char_p(b""), ctypes_lite.c_int(libc.AT_FDCWD),
                          ctypes_lite.c_char_p(encoded), ctypes_lite.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
        if result < 0:
            _fail(f'mount the idmapped image layer on "{path}" (move_mount)', result)
    finally:
        os.close(tree)


def become_namespace_root(userns_fd: int) -> None:
    """Enter the user namespace open at ``userns_fd`` and become its root (the mapped uid on
    the host; every capability inside, none outside). Supplementary groups are dropped: the
    host's are not mapped."""
    libc.setns(userns_fd, CLONE_NEWUSER, "join the container's user namespace (setns)")
    try:
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError as exc:
        raise libc.InitError(f"become root of the user namespace: {libc.strerror(exc.errno)}") from None


def prepare_mapped_rootfs(config: dict) -> None:
    """Stage 0 under ``--userns-remap``, as the host's root: the user namespace, a private
    mount namespace, the image layers idmapped (``idmap_layers``; otherwise the daemon gave
    chowned copies), the overlay; then into the user namespace as its root. The theory of
    operation is above; ``init_stage.stage0`` unshares the rest next."""
    userns_fd = make_user_namespace(config["uid_map"], config["gid_map"])
    try:
        libc.unshare(libc.CLONE_NEWNS)
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE, None, "make the mounts private (MS_REC|MS_PRIVATE on /)")
        if config.get("idmap_layers"):
            for layer in config["lower"]:
                idmap_in_place(layer, userns_fd)
        rootfs.mount_rootfs(config["rootfs"], config["lower"], config["upper"], config["work"],
                            config.get("volatile", False))
        become_namespace_root(userns_fd)
    finally:
        os.close(userns_fd)


def unlock_rootfs(rootfs: str) -> None:
    """Bind the root onto itself, in pid 1's mount namespace: the overlay came from stage 0's
    (the host root's) namespace, and the kernel locks such a mount (pivot_root refuses it);
    a bind made here is not locked, the mounts under it stay so."""
    libc.mount(rootfs, rootfs, None, libc.MS_BIND | libc.MS_REC, None, f'bind "{rootfs}" onto itself (user namespace)')


def join_user_namespace(pid: int) -> None:
    """An exec into a container with a user namespace: join pid ``pid``'s (first: it owns
    the others) and become its root. Call after the cgroups are joined (the host's root
    writes them) and with the other namespaces already open."""
    try:
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise libc.InitError(f"open the user namespace of process {pid}: {libc.strerror(exc.errno)}") from None
    try:
        become_namespace_root(fd)
    finally:
        os.close(fd)
