"""The init stage of an OCI bundle (``dockyard-runtime create``/``run``/``exec``): the same
stage as a daemon's container (``init_stage.py``: its config on fd 3, its status pipe on
fd 4, :func:`init_stage.fork_and_report`, the user, capabilities, seccomp and execve of
``security.py``), with the steps the OCI runtime spec asks for in place of docker's:
namespaces as the bundle lists them (joined by path, or new, a user namespace with its
id mappings), the bundle's root directory bind-mounted instead of an overlay, the bundle's
mounts as given, its devices, a console (a pty of the container's devpts, its master sent
over the console socket), the five capability sets, and the wait on the exec FIFO between
``create`` and ``start``.

::

    dockyard-runtime create         stage 0                        pid 1
    -----------------------         -------                        -----
    (stage 0 forked at start-up)    imports its modules
    config on fd 3 ---------------> open exec.fifo (fd 6), setns
    mkdir the cgroups, limits       by path, unshare (not the user
    "x" on fd 3 ------------------> nor the cgroup ns), join the
                                    cgroups ("0" into each v1
                                    ``tasks``), then a new user ns
                                    (a helper writes the id maps),
                                    fork ------------------------> unshare the cgroup ns;
    <-- {"pid": N} ---------------- report, _exit(0)               mounts, devices, console,
                                                                   pivot_root, masks, sysctls,
                                                                   rlimits, user, caps, seccomp
    <-- {"ready": 1} ------------------------------------------------ (the program was found)
    write state.json, exit                                         open exec.fifo O_WRONLY: blocks
    dockyard-runtime start: open exec.fifo O_RDONLY, read -------> write "0"; startContainer
                                                                   hooks; execve

Stage 0 moves itself into the container's cgroups once the runtime has made them (the
``cgroup_sync`` byte; ``cgroupfiles.join_self``: no grace period on cgroup v1), after it
unshared the namespaces and before it enters a user namespace (whose root may not write
the host's cgroup files) or forks pid 1, who is born in them: nothing of the container
runs outside its cgroups. fd 5, when the config says ``terminal``, is a socket connected
to the console socket; fd 6 the exec FIFO (O_PATH), opened by stage 0 from
``exec_fifo_path`` before it enters any namespace.
Like every module of the stage: the standard library only, imported beside
``forkserver.py`` or as ``supervisor.runtime.bundle_stage``.
"""

import os

if __package__:  # imported as supervisor.runtime.bundle_stage
    from supervisor.runtime import bundle_mounts, console, init_stage, libc, namespaces, nsenter, rootfs, security
else:  # pragma: no cover - beside forkserver.py
    import bundle_mounts
    import console
    import init_stage
    import libc
    import namespaces
    import nsenter
    import rootfs
    import security

CONSOLE_FD = 5
FIFO_FD = 6  # the exec FIFO, opened O_PATH by the runtime (runc's _LIBCONTAINER_FIFOFD)
CLONE_NEWUSER = 0x10000000
NAMESPACE_FLAGS = {
    "user": CLONE_NEWUSER, "mount": libc.CLONE_NEWNS, "uts": libc.CLONE_NEWUTS, "ipc": libc.CLONE_NEWIPC,
    "pid": libc.CLONE_NEWPID, "network": libc.CLONE_NEWNET, "cgroup": libc.CLONE_NEWCGROUP,
}
MS_MOVE = 0x2000
MS_UNBINDABLE = 0x20000
PR_SET_KEEPCAPS = 8
PR_CAP_AMBIENT_RAISE = 2


# --- stage 0: namespaces ----------------------------------------------------------------------


def enter_namespaces(config: dict) -> None:
    """Join the namespaces given by path (the user one first), then unshare the new ones (a
    new user namespace first, mapped by :func:`map_user_namespace`). The cgroups are
    joined (:func:`join_cgroups`) before any user namespace is entered, else after the
    unshare, so that it overlaps the runtime's making of the cgroups."""
    joins = [(kind, path) for kind, path in config.get("namespaces", ()) if path]
    joins.sort(key=lambda item: item[0] != "user")
    new = new_namespaces(config)
    user = "user" in new or any(kind == "user" for kind, _ in joins)
    if user:
        join_cgroups(config)
    fds = []
    try:
        for kind, path in joins:
            try:
                fds.append((kind, path, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
            except OSError as exc:
                raise libc.InitError(f'open the {kind} namespace "{path}": {libc.strerror(exc.errno)}') from None
        for kind, path, fd in fds:
            libc.setns(fd, NAMESPACE_FLAGS[kind], f'join the {kind} namespace "{path}" (setns)')
    finally:
        for _, _, fd in fds:
            os.close(fd)
    if "user" in new:
        map_user_namespace(config)
    flags = 0
    for kind in new:
        if kind not in ("user", "cgroup"):  # a cgroup namespace: pid 1's, born in its cgroups
            flags |= NAMESPACE_FLAGS[kind]
    if flags:
        libc.unshare(flags)
    if not user:
        join_cgroups(config)


def join_cgroups(config: dict) -> None:
    """Move stage 0 into the container's cgroups (``cgroup_procs``); with ``cgroup_sync``,
    once the runtime has made them (one byte on fd 3)."""
    if config.get("cgroup_sync") and init_stage.read_go_byte("the cgroups") != b"x":
        raise libc.InitError("the runtime did not make the container's cgroups")
    namespaces.join_cgroups(config.get("cgroup_procs", ()))


def new_namespaces(config: dict) -> list:
    """The kinds of the namespaces the container gets new (not joined by path)."""
    return [kind for kind, path in config.get("namespaces", ()) if not path]


def open_exec_fifo(path: str) -> None:
    """The exec FIFO opened O_PATH as fd 6, before any namespace is entered (as runc gives
    its init the FIFO: a user namespace's root may not be allowed to walk to it)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise libc.InitError(f'open the exec fifo "{path}": {libc.strerror(exc.errno)}') from None
    if fd != FIFO_FD:
        os.dup2(fd, FIFO_FD, inheritable=False)
        os.close(fd)


def enter_cgroup_namespace(config: dict) -> None:
    """pid 1's first step: a new cgroup namespace, rooted at the cgroups it was born in."""
    if "cgroup" in new_namespaces(config):
        libc.unshare(libc.CLONE_NEWCGROUP)


def map_user_namespace(config: dict) -> None:
    """unshare(CLONE_NEWUSER) and have the id maps written: a process cannot map more than
    its own id into its own new namespace, so a helper forked before the unshare (still root
    of the parent namespace) writes ``/proc/<stage 0>/uid_map`` and ``gid_map``."""
    ready_read, ready_write = os.pipe()
    parent = os.getpid()
    helper = os.fork()
    if helper == 0:
        code = 0
        try:
            os.close(ready_write)
            if os.read(ready_read, 1) != b"x":
                os._exit(1)
            for name in ("uid_map", "gid_map"):
                lines = "".join("%d %d %d\n" % tuple(entry) for entry in config.get(name[:3] + "_mappings", ()))
                if lines:
                    with open(f"/proc/{parent}/{name}", "w") as file:
                        file.write(lines)
        except OSError:
            code = 1
        os._exit(code)
    os.close(ready_read)
    try:
        libc.unshare(CLONE_NEWUSER)
    finally:
        os.write(ready_write, b"x")
        os.close(ready_write)
        _, status = os.waitpid(helper, 0)
    if status != 0:
        raise libc.InitError("write the user namespace's uid_map and gid_map: refused by the kernel")
    try:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError as exc:
        raise libc.InitError(f"become root of the user namespace: {libc.strerror(exc.errno)}") from None


# --- pid 1 ---------------------------------------------------------------------------------


def open_console(root: str, console_size, uid: int) -> None:
    """A pty of the container's own devpts (``/dev/pts/ptmx``, :mod:`console`): its master is
    sent over the console socket (fd 5, SCM_RIGHTS, the slave's name as the message, as runc
    does), its slave becomes fds 0-2 and the controlling terminal of a new session."""
    master, slave = console.open_pty(root + "/dev/pts")
    try:
        name = console.pty_name(master)
        os.fchown(slave, uid, -1)
        if console_size:
            console.set_size(slave, console_size[0], console_size[1])
    except OSError as exc:
        raise libc.InitError(f"create the console in the container's /dev/pts: {libc.strerror(exc.errno)}") from None
    console.send_master(master, CONSOLE_FD, name.encode(), "the console socket")
    console.make_controlling(slave)


def enter_root(root: str, no_pivot: bool) -> None:
    """pivot_root into the root (``rootfs.enter_rootfs``), or with ``--no-pivot`` move it
    onto / and chroot (for a root on a ramfs, where pivot_root is refused)."""
    if not no_pivot:
        rootfs.enter_rootfs(root)
        return
    os.chdir(root)
    libc.mount(root, "/", None, MS_MOVE, None, "move the root onto / (--no-pivot)")
    os.chroot(".")
    os.chdir("/")


def set_domainname(name: str) -> None:
    try:  # _socket has no setdomainname: the proc file of the UTS namespace
        with open("/proc/sys/kernel/domainname", "w") as file:
            file.write(name)
    except OSError as exc:
        raise libc.InitError(f"set the domain name {name!r}: {libc.strerror(exc.errno)}") from None


def set_oom_score_adj(value) -> None:
    if value is None:
        return
    try:
        with open("/proc/self/oom_score_adj", "w") as file:
            file.write(str(value))
    except OSError as exc:
        raise libc.InitError(f"set oom_score_adj to {value}: {libc.strerror(exc.errno)}") from None


# --- pid 1: who it runs as ---------------------------------------------------------------------


def apply_capability_sets(caps: dict, uid: int, gid: int, groups, no_new_privileges: bool, seccomp: str) -> None:
    """The spec's five capability sets, the user and groups, no_new_privs and the seccomp
    filter, in runc's order: the filter first when it must be loaded with CAP_SYS_ADMIN
    (no no_new_privs), bounding set, keep-caps across setuid, the ids, the other sets."""
    program = bytes.fromhex(seccomp) if seccomp else b""
    if program and not no_new_privileges:
        libc.set_seccomp_filter(program)
    security.limit_bounding_set(security.capability_mask(caps.get("bounding", ())))
    if uid != 0:
        libc.prctl(PR_SET_KEEPCAPS, 1, what="keep the capabilities across setuid")
    security.switch_user(uid, gid, tuple(groups))
    if no_new_privileges:
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1, what="set no_new_privs")
    libc.capset(effective=security.capability_mask(caps.get("effective", ())),
                permitted=security.capability_mask(caps.get("permitted", ())),
                inheritable=security.capability_mask(caps.get("inheritable", ())))
    for name in caps.get("ambient", ()):
        try:  # refused unless also permitted and inheritable: skipped then, as runc does
            libc.prctl(libc.PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, security.CAPABILITIES[name])
        except libc.InitError:
            pass
    if program and no_new_privileges:
        libc.set_seccomp_filter(program)


def home_of(uid: int) -> str:
    for line in init_stage.read_text("/etc/passwd").splitlines():
        row = line.split(":")
        if len(row) >= 7 and row[2] == str(uid):
            return row[5] or "/"
    return "/"


def wait_for_start(fifo: int) -> None:
    """Block until ``start`` opens the exec FIFO for reading (runc's exec.fifo), then write
    the byte it waits for."""
    try:
        fd = os.open("/proc/self/fd/%d" % fifo, os.O_WRONLY | os.O_CLOEXEC)
        os.write(fd, b"0")
        os.close(fd)
        os.close(fifo)
    except OSError as exc:
        raise libc.InitError(f"wait on the exec fifo: {libc.strerror(exc.errno)}") from None


def run_start_hooks(hooks, state: str) -> None:
    """startContainer hooks, in the container, with the state on their stdin; the first that
    fails stops the start."""
    for hook in hooks:
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            os.dup2(read_end, 0)
            try:
                os.execve(hook["path"], hook.get("args") or [hook["path"]], dict(
                    entry.split("=", 1) for entry in hook.get("env") or () if "=" in entry))
            except OSError:
                os._exit(127)
        os.close(read_end)
        try:
            os.write(write_end, state.encode())
        except OSError:
            pass
        os.close(write_end)
        _, status = os.waitpid(child, 0)
        if status != 0:
            raise libc.InitError(f'startContainer hook "{hook["path"]}" failed with status {status >> 8}')


def container(config: dict) -> None:
    """pid 1 of a bundle: build its world, wait for ``start``, execve. Never returns."""
    enter_cgroup_namespace(config)
    root = config["rootfs"]
    uid = config.get("uid", 0)
    bundle_mounts.prepare_root(root, config.get("rootfs_propagation", 0))
    bundle_mounts.mount_bundle_mounts(root, config.get("mounts", ()))
    bundle_mounts.make_devices(root, config.get("devices", ()), config.get("default_devices", True))
    if config.get("terminal"):
        open_console(root, config.get("console_size"), uid)
    fifo = FIFO_FD if config.get("exec_fifo") else -1
    enter_root(root, config.get("no_pivot", False))
    if config.get("rootfs_propagation"):
        libc.mount(None, "/", None, config["rootfs_propagation"], None, "set the propagation of the root")
    security.write_sysctls(config.get("sysctls", ()))
    rootfs.mask_paths(config.get("masked_paths", ()))
    rootfs.make_readonly(config.get("readonly_paths", ()))
    if config.get("readonly_rootfs"):
        rootfs.make_root_readonly()
    if config.get("hostname"):
        namespaces.set_hostname(config["hostname"])
    if config.get("domainname"):
        set_domainname(config["domainname"])
    set_oom_score_adj(config.get("oom_score_adj"))
    become(config, create=True, fifo=fifo)


def become(config: dict, create: bool = False, fifo: int = -1) -> None:
    """The end of pid 1 and of an exec: rlimits, cwd, user and capabilities, the program
    looked up, ``{"ready": 1}`` reported, the FIFO waited on, startContainer hooks, execve."""
    uid, gid = config.get("uid", 0), config.get("gid", 0)
    env = init_stage.environment_with_home(config, home_of(uid))
    init_stage.set_rlimits(config.get("rlimits", ()))
    cwd = config.get("cwd") or "/"
    try:
        if create:  # as root, before setuid (as runc): the user may not be allowed to create it
            os.makedirs(cwd, 0o755, exist_ok=True)
        os.chdir(cwd)
    except OSError as exc:
        raise libc.InitError(f'enter the working dir "{cwd}": {libc.strerror(exc.errno)}') from None
    if config.get("umask") is not None:
        os.umask(config["umask"])
    apply_capability_sets(config.get("capabilities") or {}, uid, gid, config.get("groups", ()),
                          config.get("no_new_privileges", False), config.get("seccomp", ""))
    argv = config["argv"]
    program = init_stage.find_program(argv, env)
    if create:
        os.write(init_stage.STATUS_FD, b'{"ready": 1}\n')
    if fifo >= 0:
        wait_for_start(fifo)
    run_start_hooks(config.get("start_hooks", ()), config.get("state", "{}"))
    umask = config.get("umask")
    libc.reset_ignored_signals()
    os.umask(0o022 if umask is None else umask)
    environment = dict(entry.split("=", 1) for entry in env if "=" in entry)
    try:
        os.execve(program, argv, environment)
    except OSError as exc:
        raise init_stage.exec_error(argv[0], exc) from None


def join_container(config: dict) -> None:
    """An exec: stage 0 joins the container's user namespace if it has one, then its cgroups
    and other namespaces (``nsenter.join``), forks and reports; the child becomes the
    process, with a console of the container's devpts when asked for."""
    target = config["join"]
    if config.get("join_user"):
        fd = os.open("/proc/%d/ns/user" % int(target["pid"]), os.O_RDONLY | os.O_CLOEXEC)
        try:
            libc.setns(fd, CLONE_NEWUSER, "join the user namespace")
        finally:
            os.close(fd)
    nsenter.join(config)
    if config.get("terminal"):
        open_console("", config.get("console_size"), config.get("uid", 0))
    become(config)


def run_bundle_stage() -> None:
    """The whole stage, from fds 3, 4 (and 5) to execve. Never returns."""
    for fd in (init_stage.STATUS_FD, CONSOLE_FD):
        try:
            os.set_inheritable(fd, False)
        except OSError:
            pass  # no console socket
    try:
        os.closerange(CONSOLE_FD + 1, 1 << 20)  # fd 6, the exec FIFO, is opened from the config
        config = init_stage.read_config()
        if config.get("exec_fifo_path"):
            open_exec_fifo(config["exec_fifo_path"])
        if config.get("join"):
            join_container(config)
        enter_namespaces(config)
        init_stage.fork_and_report("the container process")
        container(config)
    except libc.InitError as exc:
        init_stage.fail(exc.message, exc.exit_code)
    except Exception as exc:  # a bug or a bad config: still report it, never run on
        init_stage.fail(f"container init: {type(exc).__name__}: {exc}", libc.EXIT_RUNTIME)
    except BaseException:
        init_stage.fail("container init: interrupted", libc.EXIT_RUNTIME)
    os._exit(libc.EXIT_RUNTIME)
