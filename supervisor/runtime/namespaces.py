"""The container's namespaces: new ones for a container (unshare), a running container's
for an exec (setns), and what is set inside them (the cgroups joined before, the hostname,
``lo`` up).

Why a module of its own (youki's ``namespaces.rs``): which namespaces a container gets,
and in which order an exec joins them, are decisions of their own, apart from the
filesystem that is built inside them (``rootfs.py``) and from the stage's sequence
(``init_stage.py``, ``nsenter.py``).

Imported by the init stage under ``python -I -S``: the standard library's C modules only
(see ``libc.py``).
"""

import fcntl
import os
import struct

import _socket

if __package__:  # imported as supervisor.runtime.namespaces
    from supervisor.runtime import cgroupfiles, libc, userns
else:  # in the fork server: a top-level module beside forkserver.py
    import cgroupfiles
    import libc
    import userns

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

#: Every namespace a container gets of its own (the network one unless shared: see
#: :func:`unshare_container`).
CONTAINER_NAMESPACES = (
    libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC | libc.CLONE_NEWNET | libc.CLONE_NEWPID
    | libc.CLONE_NEWCGROUP
)

#: The namespaces an exec joins, in order: mnt last, since entering it changes / and cwd.
EXEC_NAMESPACES = (
    ("ipc", libc.CLONE_NEWIPC),
    ("uts", libc.CLONE_NEWUTS),
    ("net", libc.CLONE_NEWNET),
    ("pid", libc.CLONE_NEWPID),
    ("cgroup", libc.CLONE_NEWCGROUP),
    ("mnt", libc.CLONE_NEWNS),
)


def join_cgroups(cgroup_procs: "tuple[str, ...] | list[str]") -> None:
    """Move this process, stage 0 (one thread), into each cgroup (its ``cgroup.procs``
    paths): ``cgroupfiles.join_self``, which on cgroup v1 spares the kernel's grace period."""
    try:
        cgroupfiles.join_self(cgroup_procs)
    except OSError as exc:
        raise libc.InitError(f'join the cgroup: write "{exc.filename}": {libc.strerror(exc.errno)}') from None


def join_network_namespace(path: str) -> None:
    """setns(2) into the network namespace at ``path`` (``--network container:NAME``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise libc.InitError(f'open the network namespace "{path}": {libc.strerror(exc.errno)}') from None
    try:
        libc.setns(fd, libc.CLONE_NEWNET, f'join the network namespace "{path}" (setns)')
    finally:
        os.close(fd)


def unshare_container(network: str, uts: str = "") -> None:
    """unshare(2) the container's namespaces. ``network``: "" for a network namespace of its
    own, "host" for the host's, or the path of another container's to join and keep. ``uts``:
    "" for a UTS namespace of its own, "host" for the host's (then its hostname must never be
    set: it is the host's). The cgroup namespace is rooted at the cgroups the process is in:
    join them first."""
    namespaces = CONTAINER_NAMESPACES
    if network == "host":
        namespaces &= ~libc.CLONE_NEWNET
    elif network:  # another container's: join it, keep it
        join_network_namespace(network)
        namespaces &= ~libc.CLONE_NEWNET
    if uts == "host":
        namespaces &= ~libc.CLONE_NEWUTS
    libc.unshare(namespaces)


def process_start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat: with the pid, it names a process for good."""
    with open(f"/proc/{pid}/stat", "rb") as file:
        data = file.read()
    return int(data[data.rindex(b")") + 2 :].split()[19])


def join_process(pid: int, cgroup_procs: "tuple[str, ...] | list[str]") -> None:
    """Join the cgroups (``cgroup_procs``) and the namespaces of process ``pid`` (an exec
    into a running container). Every namespace is opened before the first setns, since
    joining the mount namespace changes what /proc/<pid> resolves to; the pid namespace
    applies to children only. A user namespace of its own (``--userns-remap``) is joined
    first, after the cgroups (written as the host's root): it owns the others."""
    fds = []
    try:
        for name, _ in EXEC_NAMESPACES:
            try:
                fds.append(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC))
            except OSError as exc:
                raise libc.InitError(f"open the {name} namespace of process {pid}: {libc.strerror(exc.errno)}") from None
        join_cgroups(cgroup_procs)
        if not same_namespace(pid, "user"):  # --userns-remap: it owns the others, join it first
            userns.join_user_namespace(pid)
        for fd, (name, nstype) in zip(fds, EXEC_NAMESPACES):
            libc.setns(fd, nstype, f"join the {name} namespace (setns)")
    finally:
        for fd in fds:
            os.close(fd)


def same_namespace(pid: int, name: str) -> bool:
    """Whether process ``pid`` is in this process's namespace of kind ``name``."""
    try:
        theirs = os.stat(f"/proc/{pid}/ns/{name}")
        ours = os.stat(f"/proc/self/ns/{name}")
    except OSError as exc:
        raise libc.InitError(f"open the {name} namespace of process {pid}: {libc.strerror(exc.errno)}") from None
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def set_hostname(name: str) -> None:
    """The hostname of the current UTS namespace."""
    try:
        _socket.sethostname(name)
    except OSError as exc:
        raise libc.InitError(f"set the hostname {name!r}: {libc.strerror(exc.errno)}") from None


def loopback_up() -> None:
    """Set IFF_UP on ``lo`` of the current network namespace."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack("16sH22x", b"lo", 0)  # struct ifreq: name, flags, padding
        flags = struct.unpack_from("16sH", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
    except OSError as exc:
        raise libc.InitError(f"bring up the loopback interface: {libc.strerror(exc.errno)}") from None
    finally:
        sock.close()
