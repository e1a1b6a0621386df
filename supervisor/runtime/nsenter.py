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
                                  (--userns-remap: setns its user namespace first, it
                                  owns the others; become its root: userns.py)
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

Like the init stage's modules this one is imported by path in the stage and uses only the
standard library. It differs from the init stage in its first half (join instead of
unshare, no root filesystem to build); the second is the same functions
(``security.drop_privileges``, ``init_stage.execute``).
"""

import os

if __package__:
    from supervisor.runtime import console, init_stage, libc, namespaces, security
else:
    import console
    import init_stage
    import libc
    import namespaces
    import security


def join(config: dict) -> None:
    """Stage 0 of an exec: check the target, join its cgroups and namespaces, fork, report
    the child's pid. Returns only in the child; stage 0 exits here."""
    target = config["join"]
    pid, start_time = int(target["pid"]), int(target["start_time"])
    try:
        alive = namespaces.process_start_time(pid) == start_time
    except (OSError, ValueError, IndexError):
        alive = False
    if not alive:
        raise libc.InitError(f"the container's process {pid} is gone: it is not running")
    namespaces.join_process(pid, config.get("cgroup_procs", ()))
    init_stage.fork_and_report("the exec process")


def become(config: dict) -> None:
    """The exec'd process: terminal, cwd, user, capabilities, no_new_privs, execve."""
    if config.get("terminal"):  # -t: a pty of the container's devpts, joined above (console.py)
        console.set_up_terminal("/dev", console=False)
    uid, gid, groups, home = security.resolve_user(
        config.get("user", ""), init_stage.read_text("/etc/passwd"), init_stage.read_text("/etc/group")
    )
    env = init_stage.environment_with_home(config, home)
    cwd = config.get("cwd") or "/"
    try:  # not created, as docker exec: a missing directory is an error
        os.chdir(cwd)
    except OSError as exc:
        raise libc.InitError(f'enter the working dir "{cwd}": {libc.strerror(exc.errno)}') from None
    groups = init_stage.with_additional_groups(config, groups)
    if config.get("terminal"):
        console.give_terminal(uid)
    security.drop_privileges(config.get("capabilities", ()), uid, gid, groups,
                             config.get("no_new_privileges", False), config.get("seccomp", ""))
    argv = config["argv"]
    program = init_stage.find_program(argv, env)
    init_stage.execute(program, argv, env)


def run(config: dict) -> None:
    """The whole exec stage after the config is read. Never returns (errors are raised to
    ``init_stage.run_init_stage``, which reports them)."""
    join(config)
    become(config)
    os._exit(libc.EXIT_RUNTIME)
