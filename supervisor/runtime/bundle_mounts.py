"""pid 1 of an OCI bundle (``bundle_stage.py``): its root filesystem. The root bound onto
itself with the bundle's propagation, the config's mounts in order (each destination
resolved inside the root), the cgroup tree as runc mounts it, and the devices.
Like every module of the stage: the standard library only, imported beside
``forkserver.py`` or as ``supervisor.runtime.bundle_mounts``.
"""

import os
import stat

if __package__:  # imported as supervisor.runtime.bundle_mounts
    from supervisor.runtime import init_stage, libc, rootfs
else:  # pragma: no cover - beside forkserver.py
    import init_stage
    import libc
    import rootfs


def prepare_root(root: str, propagation: int) -> None:
    """Make every mount of our mount namespace ``propagation`` (rslave by default, as runc:
    nothing we mount reaches the host), and bind the bundle's root onto itself, so that it
    is a mount point for pivot_root."""
    libc.mount(None, "/", None, propagation or (libc.MS_SLAVE | libc.MS_REC), None, "set the propagation of /")
    if propagation & libc.MS_SHARED:
        make_parent_private(root)
    libc.mount(root, root, None, libc.MS_BIND | libc.MS_REC, None, f'bind-mount the root "{root}" onto itself')


def make_parent_private(root: str) -> None:
    """pivot_root refuses a new root whose parent mount is shared (rootfsPropagation
    "shared"): make that one mount private, as runc does."""
    parent = "/"
    for line in init_stage.read_text("/proc/self/mountinfo").splitlines():
        point = line.split(" ")[4].replace("\\040", " ")
        if (root + "/").startswith(point.rstrip("/") + "/") and len(point) > len(parent):
            parent = point
    libc.mount(None, parent, None, libc.MS_PRIVATE, None, f'make the parent mount "{parent}" of the root private')


def mount_bundle_mounts(root: str, mounts) -> None:
    """Each ``[type, source, destination, flags, propagation, data]`` of the config, in order,
    its destination resolved inside ``root`` (:func:`rootfs.secure_join`)."""
    for kind, source, destination, flags, propagation, data in mounts:
        try:
            where = rootfs.secure_join(root, destination)
        except OSError as exc:
            raise libc.InitError(f'resolve the mount destination "{destination}": {libc.strerror(exc.errno)}') from None
        what = f'mount {kind or "bind"} "{source}" on "{destination}"'
        if kind == "cgroup":
            mount_cgroup_tree(where, flags)
        elif flags & libc.MS_BIND:
            _make_mount_point(where, destination, os.path.isdir(source))
            libc.mount(source, where, None, flags & (libc.MS_BIND | libc.MS_REC), None, what)
            extra = flags & ~(libc.MS_BIND | libc.MS_REC)
            if extra:
                libc.mount(None, where, None, extra | libc.MS_BIND | libc.MS_REMOUNT, None, what + " (remount)")
        else:
            _make_mount_point(where, destination, True)
            libc.mount(source, where, kind, flags, data or None, what)
        if propagation:
            libc.mount(None, where, None, propagation, None, f'set the propagation of "{destination}"')


def _make_mount_point(where: str, destination: str, directory: bool) -> None:
    try:
        if directory:
            os.makedirs(where, 0o755, exist_ok=True)
        elif not os.path.lexists(where):
            os.makedirs(os.path.dirname(where), 0o755, exist_ok=True)
            os.close(os.open(where, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    except OSError as exc:
        raise libc.InitError(f'create the mount point "{destination}": {libc.strerror(exc.errno)}') from None


def mount_cgroup_tree(where: str, flags: int) -> None:
    """A ``cgroup`` mount: on cgroup v2 the unified hierarchy; on v1 (and hybrid) a tmpfs with
    one mount per hierarchy this process is in (``/proc/self/cgroup``), each rooted at its
    cgroup namespace, and links for co-mounted controllers (cpu -> cpu,cpuacct), as runc."""
    lines = init_stage.read_text("/proc/self/cgroup").splitlines()
    _make_mount_point(where, where, True)
    if all(line.startswith("0::") for line in lines):
        libc.mount("cgroup2", where, "cgroup2", flags, None, "mount cgroup2")
        return
    kept = flags & (libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
    libc.mount("tmpfs", where, "tmpfs", kept, "mode=755", "mount the tmpfs of /sys/fs/cgroup")
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if not controllers:
            continue  # the (empty) unified hierarchy of a hybrid host
        name = controllers.replace("name=", "")
        target = where + "/" + name
        os.mkdir(target, 0o755)
        options = ("none," + controllers) if controllers.startswith("name=") else controllers
        try:
            libc.mount("cgroup", target, "cgroup", flags, options, f'mount the cgroup hierarchy "{controllers}"')
        except libc.InitError:
            # A user namespace without a cgroup namespace of its own may not mount cgroupfs:
            # bind the container's own directory of the host's hierarchy instead (as runc).
            source = "/sys/fs/cgroup/" + name + path
            libc.mount(source, target, None, libc.MS_BIND | libc.MS_REC, None, f'bind-mount the cgroup "{source}"')
            if flags & libc.MS_RDONLY:
                libc.mount(None, target, None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | kept, None,
                           f'make the cgroup "{source}" read-only')
        for alias in name.split(",") if "," in name else ():
            os.symlink(name, where + "/" + alias)
    if flags & libc.MS_RDONLY:
        libc.mount(None, where, None, libc.MS_REMOUNT | libc.MS_RDONLY | kept, None, "make /sys/fs/cgroup read-only")


def make_devices(root: str, devices, default_devices: bool) -> None:
    """The spec's default devices (and /dev's links), when /dev is the runtime's, and each
    ``[path, type, major, minor, mode, uid, gid]`` of the config: mknod, or, where mknod is
    not allowed (a user namespace), a bind mount of the host's node."""
    entries = list(devices)
    if default_devices:
        entries = [["/dev/" + name, "c", major, minor, 0o666, 0, 0] for name, major, minor in rootfs.DEVICES] + entries
        for name, target in rootfs.DEVICE_LINKS:
            try:
                os.symlink(target, rootfs.secure_join(root, "/dev/" + name))
            except FileExistsError:
                pass
            except OSError as exc:
                raise libc.InitError(f'link "/dev/{name}": {libc.strerror(exc.errno)}') from None
    for path, kind, major, minor, mode, uid, gid in entries:
        node = rootfs.secure_join(root, path)
        file_type = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[kind]
        try:
            os.makedirs(os.path.dirname(node), 0o755, exist_ok=True)
            if os.path.lexists(node):
                os.unlink(node)
            try:
                os.mknod(node, file_type | (mode & 0o7777), os.makedev(major, minor))
            except PermissionError:
                os.close(os.open(node, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
                libc.mount(path, node, None, libc.MS_BIND, None, f'bind-mount the device "{path}"')
                continue
            os.chmod(node, mode & 0o7777)
            os.chown(node, uid, gid)
        except OSError as exc:
            raise libc.InitError(f'create the device "{path}": {libc.strerror(exc.errno)}') from None
