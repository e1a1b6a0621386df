"""/sys/fs/cgroup in the container: its own cgroup, read-only, so that the JVM, Go and Node
find their memory and CPU limits where they look for them (issue 17, item 13).

- cgroup v1 (as runc does): a tmpfs on /sys/fs/cgroup; in it, for each hierarchy the
  container has a cgroup in, a directory named as the host's (``memory``, ``cpu,cpuacct``)
  with the container's cgroup directory of the host bound on it read-only, and a symlink
  per controller of a co-mounted hierarchy (``cpu -> cpu,cpuacct``); then the tmpfs itself
  is made read-only. ``/sys/fs/cgroup/memory/memory.limit_in_bytes`` is then the
  container's ``-m``.
- cgroup v2: a ``cgroup2`` mount, read-only. pid 1 joined its cgroup before it unshared its
  cgroup namespace, so the mount's root is the container's cgroup
  (``/sys/fs/cgroup/memory.max``). No mount option is given: the root flags of the
  hierarchy (nsdelegate, ...) are the host's and are not touched.

Nothing here remounts or reconfigures a hierarchy of the host: v1 binds directories of it,
v2 mounts a new view of it in a non-initial cgroup namespace. ``--privileged`` gets it
read-write, as docker does. The daemon says what to mount (``LaunchConfig.cgroupfs``, from
``supervisor/lifecycle/start.py``); this runs in pid 1 before pivot_root, where the host's
cgroup directories are still in reach.

Imported by the init stage under ``python -I -S``: the standard library's C modules only
(see ``libc.py``).
"""

import os

if __package__:  # imported as supervisor.runtime.cgroupfs
    from supervisor.runtime import libc
else:  # in the fork server: a top-level module beside forkserver.py
    import libc

CGROUP_MOUNT_FLAGS = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
V2_ENTRY = "cgroup2"


def mount_cgroupfs(sys_directory: str, entries, writable: bool = False) -> None:  # no typing import in the stage
    """Mount the container's cgroups on ``<sys_directory>/fs/cgroup`` (``entries``: the
    config's ``cgroupfs``); ``writable``: --privileged. Nothing for no entries.

    Raises:
        InitError(125): naming the mount and the cause.
    """
    target = sys_directory + "/fs/cgroup"  # a fresh sysfs: nothing in it is a link
    if not entries or not os.path.isdir(target):  # a kernel without cgroups has no such directory
        return
    readonly = 0 if writable else libc.MS_RDONLY
    if tuple(entries) == (V2_ENTRY,):
        libc.mount("cgroup2", target, "cgroup2", CGROUP_MOUNT_FLAGS | readonly, None,
                   'mount cgroup2 on "/sys/fs/cgroup"')
        return
    libc.mount("tmpfs", target, "tmpfs", CGROUP_MOUNT_FLAGS, "mode=755,size=64k",
               'mount a tmpfs on "/sys/fs/cgroup"')
    for entry in entries:
        hierarchy, _, host_directory = entry.partition("\t")
        bind_hierarchy(target, hierarchy, host_directory, readonly)
    if readonly:
        libc.mount(None, target, None, libc.MS_REMOUNT | CGROUP_MOUNT_FLAGS | libc.MS_RDONLY, "mode=755,size=64k",
                   'make "/sys/fs/cgroup" read-only')


def bind_hierarchy(target: str, hierarchy: str, host_directory: str, readonly: int) -> None:
    """``<target>/<hierarchy>``: the container's cgroup of that v1 hierarchy, bound from the
    host (``host_directory``), and a link per controller of a co-mounted one."""
    where = target + "/" + hierarchy
    try:
        os.mkdir(where, 0o755)
        for controller in hierarchy.split(","):
            if controller != hierarchy and not os.path.lexists(target + "/" + controller):
                os.symlink(hierarchy, target + "/" + controller)
    except OSError as exc:
        raise libc.InitError(f'create "/sys/fs/cgroup/{hierarchy}": {libc.strerror(exc.errno)}') from None
    what = f'bind the container\'s cgroup "{host_directory}" on "/sys/fs/cgroup/{hierarchy}"'
    libc.mount(host_directory, where, None, libc.MS_BIND, None, what)
    libc.mount(None, where, None, libc.MS_BIND | libc.MS_REMOUNT | CGROUP_MOUNT_FLAGS | readonly, None, what + " (remount)")
