"""The exec stage: a new process inside a running container (``dockyard exec``).

It is the init stage's twin (same fds, same status protocol, same fork server; see
``protocol.py``), told apart by ``"join"`` in its config: instead of unsharing new namespaces
and building a root filesystem, it joins those of the container's pid 1.

::

    supervisor                    stage 0 (host namespaces)              exec'd process
    ----------                    -------------------------              --------------
    config {"join": {pid, start_time}, argv, env, cwd, user, ...} on fd 3
                                  check /proc/<pid>/stat: still pid 1 of that start
                                  open /proc/<pid>/ns/{ipc,uts,net,pid,cgroup,mnt}
                                  write own pid to the container's cgroup.procs
                                  setns each (mnt last: it moves / and cwd into the
                                  container's root); pid only applies to children
                                  fork -------------------------------->  wait on the sync pipe
    <-- {"pid": <host pid>} ----- report, sync byte, _exit(0)             setsid + TIOCSCTTY (-t)
    adopt it (child subreaper)                                            cwd, user, capabilities
                                                                          (the container's set),
                                                                          no_new_privs, execve
    <-- EOF / {"error": ..., "exit_code": N}  ----------------------------

Masked and read-only paths come with the mount namespace. The exec'd process lives in the
container's pid namespace and cgroup, so it dies with the container's pid 1 and counts
against its limits. Errors: 127 (command not found), 126 (cannot be run), 125 (anything
else), as for ``run``.

Like ``linux.py`` this module is imported by path in the init stage and uses only the
standard library. The last steps (user, capabilities, execve) repeat the end of
``linux.container``: that function is kept as it is so that other changes to it merge.
"""

import os

if __package__:
    from supervisor.runtime import linux
else:
    import linux

#: The namespaces an exec joins, in order: mnt last, since entering it changes / and cwd.
NAMESPACES = (
    ("ipc", linux.CLONE_NEWIPC),
    ("uts", linux.CLONE_NEWUTS),
    ("net", linux.CLONE_NEWNET),
    ("pid", linux.CLONE_NEWPID),
    ("cgroup", linux.CLONE_NEWCGROUP),
    ("mnt", linux.CLONE_NEWNS),
)


def _start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as file:
        data = file.read()
    return int(data[data.rindex(b")") + 2 :].split()[19])


def join(config: dict) -> None:
    """Stage 0 of an exec: check the target, join its cgroups and namespaces, fork, report
    the child's pid. Returns only in the child; stage 0 exits here."""
    target = config["join"]
    pid, start_time = int(target["pid"]), int(target["start_time"])
    try:
        alive = _start_time(pid) == start_time
    except (OSError, ValueError, IndexError):
        alive = False
    if not alive:
        raise linux.InitError(f"the container's process {pid} is gone: it is not running")
    fds = []
    try:
        for name, _ in NAMESPACES:
            try:
                fds.append(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC))
            except OSError as exc:
                raise linux.InitError(f"open the {name} namespace of process {pid}: {linux.strerror(exc.errno)}") from None
        linux.join_cgroups(config.get("cgroup_procs", ()))
        for fd, (name, nstype) in zip(fds, NAMESPACES):
            linux.setns(fd, nstype, f"join the {name} namespace (setns)")
    finally:
        for fd in fds:
            os.close(fd)
    sync_read, sync_write = os.pipe()
    try:
        child = os.fork()
    except OSError as exc:
        raise linux.InitError(f"fork the exec process: {linux.strerror(exc.errno)}") from None
    if child == 0:
        os.close(sync_write)
        go = os.read(sync_read, 1)
        os.close(sync_read)
        if go != b"x":
            os._exit(linux.EXIT_RUNTIME)
        return
    try:
        os.write(linux.STATUS_FD, linux.status_pid(child))
        os.write(sync_write, b"x")
    except OSError:
        os._exit(linux.EXIT_RUNTIME)
    os._exit(0)


def become(config: dict) -> None:
    """The exec'd process: terminal, cwd, user, capabilities, no_new_privs, execve."""
    linux.take_terminal()
    uid, gid, groups, home = linux.resolve_user(
        config.get("user", ""), linux.read_text("/etc/passwd"), linux.read_text("/etc/group")
    )
    env = list(config.get("env", ()))
    if not any(entry.startswith("HOME=") for entry in env):
        env.append("HOME=" + home)
    cwd = config.get("cwd") or "/"
    try:  # not created, as docker exec: a missing directory is an error
        os.chdir(cwd)
    except OSError as exc:
        raise linux.InitError(f'enter the working dir "{cwd}": {linux.strerror(exc.errno)}') from None
    keep = linux.capability_mask(config.get("capabilities", ()))
    linux.limit_bounding_set(keep)
    linux.switch_user(uid, gid, groups)
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1, what="set no_new_privs")
    if uid == 0:
        linux.capset(effective=keep, permitted=keep, inheritable=0)
    argv = config["argv"]
    path_value = next((entry[5:] for entry in env if entry.startswith("PATH=")), linux.DEFAULT_PATH)
    program = linux.look_path(argv[0], path_value)
    linux.reset_ignored_signals()
    os.umask(0o022)
    environment = dict(entry.split("=", 1) for entry in env if "=" in entry)
    try:
        os.execve(program, argv, environment)
    except OSError as exc:
        raise linux.exec_error(argv[0], exc) from None


def run(config: dict) -> None:
    """The whole exec stage after the config is read. Never returns (errors are raised to
    ``linux.run_init_stage``, which reports them)."""
    join(config)
    become(config)
    os._exit(linux.EXIT_RUNTIME)
