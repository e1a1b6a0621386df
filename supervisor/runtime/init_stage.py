"""The init stage: from the config on fd 3 to the payload's execve, one step after another
(``protocol.py`` has the protocol and its diagram; the fork server forks this stage and
calls :func:`run_init_stage`).

Why a module of its own (youki's ``process/`` init, crun's ``container.c`` calling into
``linux.c``): this file says *in which order* things happen, and speaks the status pipe
(the lean side of ``protocol.py``: :func:`status_pid`, :func:`status_error`, :func:`loads`,
:func:`quote`); the steps themselves are in ``namespaces.py``, ``rootfs.py``, ``cgroupfs.py``,
``console.py`` and ``security.py``, the syscalls in ``libc.py``. An exec's stage (``nsenter.py``) shares its
end: :func:`fork_and_report`, :func:`execute`.

The fork server (``forkserver.py``) imports the stage's modules by path, as top-level
modules beside it, so they import only the standard library, not even our package. They
also avoid the modules that import ``re`` or ``enum`` (``json``, ``socket``, ``signal``;
and ``from __future__``): those would add a third to a `true` container's start-up time.
JSON goes through the C scanner of the json package (``_json``), sockets through
``_socket``.
"""

import errno
import os
import resource
import stat

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None  # type: ignore[assignment]

if __package__:  # imported as supervisor.runtime.init_stage
    from supervisor.runtime import cgroupfs, console, jsonlite, libc, namespaces, rootfs, security, userns
else:  # in the fork server: top-level modules beside forkserver.py
    import cgroupfs
    import console
    import jsonlite
    import libc
    import namespaces
    import rootfs
    import security
    import userns

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONFIG_FD = 3
STATUS_FD = 4

def look_path(name: str, path_value: str) -> str:
    """Find ``name`` in the directories of ``path_value`` as Go's exec.LookPath does: the
    first regular file with an execute bit. A name with a slash is returned as it is.

    Raises:
        libc.InitError(127): no such executable (docker's message).
    """
    if "/" in name:
        return name
    for directory in path_value.split(":"):
        candidate = (directory or ".") + "/" + name
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if not stat.S_ISDIR(mode) and mode & 0o111:
            return candidate
    raise libc.InitError(f'exec: "{name}": executable file not found in $PATH', libc.EXIT_NOT_FOUND)


def exec_error(name: str, error: OSError) -> libc.InitError:
    """The error for a failed execve: 127 when the file is missing, 126 when it cannot be run."""
    code = libc.EXIT_NOT_FOUND if error.errno in (errno.ENOENT, errno.ENOTDIR) else libc.EXIT_CANNOT_INVOKE
    return libc.InitError(f'exec: "{name}": {libc.strerror(error.errno)}', code)


def loads(text: str) -> object:
    """``json.loads`` without importing ``json.decoder`` (and with it ``re``)."""
    if _json is None:  # pragma: no cover
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip())
    try:
        value, end = _json.make_scanner(jsonlite.ScannerContext)(text, start)
    except StopIteration:
        raise ValueError(f"no JSON value at offset {start}") from None
    if text[end:].strip():
        raise ValueError(f"extra data after the JSON value at offset {end}")
    return value


def quote(text: str) -> str:
    """A JSON string literal (ASCII), as ``json.dumps(text)``."""
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(text)
    return _json.encode_basestring_ascii(text)


def read_text(path: str) -> str:
    """The text of ``path``, or "" when it does not exist."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except FileNotFoundError:
        return ""


# --- the init stage, in order -------------------------------------------------------------


_after_config = b""  # what came on fd 3 after the config's newline, in the same read


def read_config() -> dict:
    """The config JSON on fd 3, up to EOF, or up to a newline that ends a read: with
    ``network_sync`` the supervisor keeps fd 3 open after the config and its newline, and
    pid 1 later reads the network's go byte on it (:func:`wait_for_network`); with
    ``cgroup_sync`` (``bundle_stage.join_cgroups``) stage 0 reads the byte that says
    dockyard-runtime made its cgroups."""
    chunks = []
    global _after_config
    while chunk := os.read(CONFIG_FD, 65536):
        chunks.append(chunk)
        if b"\n" in chunk:  # compact JSON has no raw newline: this is the end
            break
    # A go byte sent at once (dockyard-runtime's cgroups are made fast) may share the read.
    text, _, _after_config = b"".join(chunks).partition(b"\n")
    try:
        config = loads(text.decode())
    except ValueError as exc:
        raise libc.InitError(f"read the config: invalid JSON: {exc}") from None
    if not isinstance(config, dict) or not config.get("argv"):
        raise libc.InitError("read the config: not a JSON object with a non-empty argv")
    if not config.get("network_sync") and not config.get("cgroup_sync"):  # the bundle stage's
        os.close(CONFIG_FD)
    return config


def read_go_byte(what: str) -> bytes:
    """The one byte that follows the config on fd 3 (a ``*_sync`` config's go), fd 3 then
    closed; raises InitError naming ``what`` it waited for when the read fails."""
    go = _after_config[:1]
    if not go:
        try:
            go = os.read(CONFIG_FD, 1)
        except OSError as exc:
            raise libc.InitError(f"wait for {what}: {libc.strerror(exc.errno)}") from None
    os.close(CONFIG_FD)
    return go


def wait_for_network(config: dict) -> None:
    """With ``network_sync``: block until the supervisor has configured the container's
    network namespace (one byte on fd 3), so the payload never runs without its eth0."""
    if not config.get("network_sync"):
        return
    if read_go_byte("the network set-up") != b"x":
        raise libc.InitError("the supervisor did not finish the network set-up")


def fork_and_report(what: str) -> None:
    """Fork; in the parent (stage 0), report the child's host pid on the status pipe, let
    the child go on and exit. Returns only in the child, which waits for the go first, so
    that the pid line always comes before anything the child reports.

    Raises:
        InitError(125): the fork failed (``what`` names the process it was for).
    """
    sync_read, sync_write = os.pipe()
    try:
        child = os.fork()
    except OSError as exc:
        raise libc.InitError(f"fork {what}: {libc.strerror(exc.errno)}") from None
    if child == 0:
        os.close(sync_write)
        go = os.read(sync_read, 1)
        os.close(sync_read)
        if go != b"x":
            os._exit(libc.EXIT_RUNTIME)  # stage 0 died: nobody knows our pid
        return
    try:
        os.write(STATUS_FD, status_pid(child))
        os.write(sync_write, b"x")
    except OSError:
        os._exit(libc.EXIT_RUNTIME)  # the child reads EOF without the byte and exits
    os._exit(0)


def stage0(config: dict) -> None:
    """Join the cgroups, unshare, fork, report the child's pid. Returns only in the child,
    pid 1 of the new pid namespace; stage 0 itself exits here."""
    namespaces.join_cgroups(config.get("cgroup_procs", ()))
    network = config.get("network_namespace") or ""
    if config.get("uid_map"):  # --userns-remap: userns.py's theory of operation
        if network not in ("", "host"):  # another container's: joined while we are the host's root
            namespaces.join_network_namespace(network)
            network = "host"  # i.e. keep the one we are in
        userns.prepare_mapped_rootfs(config)
    namespaces.unshare_container(network, config.get("uts_namespace") or "")
    fork_and_report("the container process")


def environment_with_home(config: dict, home: str) -> list[str]:
    """The config's environment, with ``HOME`` from the user's passwd entry unless set."""
    env = list(config.get("env", ()))
    if not any(entry.startswith("HOME=") for entry in env):
        env.append("HOME=" + home)
    return env


def find_program(argv: list[str], env: list[str]) -> str:
    """argv[0] looked up in the environment's PATH (DEFAULT_PATH without one)."""
    path_value = next((entry[5:] for entry in env if entry.startswith("PATH=")), DEFAULT_PATH)
    return look_path(argv[0], path_value)


def execute(program: str, argv: list[str], env: list[str]) -> None:
    """The last step: ignored signals back to their default, umask 022, execve. Never
    returns.

    Raises:
        InitError(126/127): execve failed (:func:`exec_error`).
    """
    libc.reset_ignored_signals()
    os.umask(0o022)
    environment = dict(entry.split("=", 1) for entry in env if "=" in entry)
    try:
        os.execve(program, argv, environment)
    except OSError as exc:
        raise exec_error(argv[0], exc) from None


def with_additional_groups(config: dict, groups: tuple) -> tuple:
    """The user's groups and the ``--group-add`` ones (``group_add``), without repeats."""
    extra = security.additional_groups(config.get("group_add", ()), read_text("/etc/group"))
    return tuple(dict.fromkeys(groups + extra))


def container(config: dict) -> None:
    """pid 1: build the container's world, become the user, execve. Never returns."""
    os.umask(0)  # device nodes and mount points get exactly the modes given
    root = config["rootfs"]
    mapped = bool(config.get("uid_map"))
    if mapped:  # stage 0 mounted the overlay, as the host's root
        userns.unlock_rootfs(root)
    else:
        rootfs.mount_rootfs(root, config["lower"], config["upper"], config["work"], config.get("volatile", False))
    rootfs.mount_system(root, config.get("devices", ()), config.get("writable_sysfs", False), config.get("shm_size", ""),
                        user_namespace=mapped)
    cgroupfs.mount_cgroupfs(rootfs.secure_join(root, "/sys"), config.get("cgroupfs", ()), config.get("writable_sysfs", False))
    if config.get("terminal"):  # -t: a pty of the container's own devpts (console.py)
        console.set_up_terminal(rootfs.secure_join(root, "/dev"), console=True)
    if config.get("etc_dir"):
        rootfs.mount_etc_files(root, config["etc_dir"])
    if config.get("mounts"):
        protected = tuple(config.get("masked_paths", ())) + tuple(config.get("readonly_paths", ()))
        rootfs.mount_volumes(root, config["mounts"], protected)
    rootfs.enter_rootfs(root)
    security.write_sysctls(config.get("sysctls", ()))  # before /proc/sys is made read-only
    rootfs.mask_paths(config.get("masked_paths", ()))
    rootfs.make_readonly(config.get("readonly_paths", ()))
    if config.get("readonly_rootfs"):
        rootfs.make_root_readonly()
    if config.get("uts_namespace") != "host":  # the host's hostname is never the container's to set
        namespaces.set_hostname(config.get("hostname") or config["id"][:12])
    if not (mapped and config.get("network_namespace")):  # a shared one is not ours to change
        namespaces.loopback_up()

    uid, gid, groups, home = security.resolve_user(
        config.get("user", ""), read_text("/etc/passwd"), read_text("/etc/group")
    )
    env = environment_with_home(config, home)
    cwd = config.get("cwd") or "/"
    try:  # as root, before setuid (as runc): the user may not be allowed to create it
        os.makedirs(cwd, 0o755, exist_ok=True)
        os.chdir(cwd)
    except OSError as exc:
        raise libc.InitError(f'enter the working dir "{cwd}": {libc.strerror(exc.errno)}') from None
    groups = with_additional_groups(config, groups)
    if config.get("terminal"):
        console.give_terminal(uid)
    set_rlimits(config.get("rlimits", ()))  # as root: raising a hard limit needs CAP_SYS_RESOURCE
    security.drop_privileges(config.get("capabilities", ()), uid, gid, groups,
                             config.get("no_new_privileges", False), config.get("seccomp", ""))

    argv = config["argv"]
    program = find_program(argv, env)
    wait_for_network(config)  # last: the supervisor's set-up overlaps with ours
    execute(program, argv, env)


def set_rlimits(entries) -> None:  # no typing import in the stage
    """setrlimit for each ``"NAME SOFT HARD"`` (--ulimit and docker's default nofile; -1: unlimited).

    Raises:
        InitError(125): naming the limit and the cause.
    """
    for entry in entries:
        name, soft, hard = entry.split(" ")
        limit = getattr(resource, "RLIMIT_" + name.upper(), {"locks": 10}.get(name))  # Python lacks RLIMIT_LOCKS
        if limit is None:
            raise libc.InitError(f"set the {name} limit: unknown on this system")
        values = tuple(resource.RLIM_INFINITY if int(value) < 0 else int(value) for value in (soft, hard))
        try:
            resource.setrlimit(limit, values)
        except (OSError, ValueError) as exc:
            raise libc.InitError(f"set the {name} limit to {soft}:{hard}: {exc}") from None


def status_pid(pid: int) -> bytes:
    """The status pipe's first line: pid 1's host pid (``protocol.StatusDecoder`` reads it)."""
    return b'{"pid": %d}\n' % pid


def status_error(message: str, exit_code: int) -> bytes:
    """The status pipe's error line (``protocol.launch_error`` reads it): below PIPE_BUF, so
    that it is one atomic write."""
    return ('{"error": %s, "exit_code": %d}\n' % (quote(message[:3000]), exit_code)).encode()


def fail(message: str, exit_code: int) -> None:
    """Report one error line on the status pipe and exit with ``exit_code``."""
    try:
        os.write(STATUS_FD, status_error(message, exit_code))
    except OSError:
        pass  # the supervisor is gone
    os._exit(exit_code)


def run_init_stage(join) -> None:  # join(config: dict): no typing import in the stage
    """The whole stage, from fds 3 and 4 to execve (forked by ``forkserver.py``). Never returns.
    ``join`` runs an exec's stage instead (``nsenter.run``: passed in, as nsenter uses this
    module's steps and this module must not import it back)."""
    try:
        os.set_inheritable(STATUS_FD, False)  # FD_CLOEXEC: a successful execve closes it
    except OSError:
        os._exit(libc.EXIT_RUNTIME)  # no status pipe: nobody to report to
    try:
        os.closerange(STATUS_FD + 1, 1 << 20)  # nothing else of the supervisor reaches the container
        config = read_config()
        if config.get("join"):  # an exec: join a running container instead of making one
            join(config)
        stage0(config)
        container(config)
    except libc.InitError as exc:
        fail(exc.message, exc.exit_code)
    except Exception as exc:  # a bug or a bad config: still report it, never run on
        fail(f"container init: {type(exc).__name__}: {exc}", libc.EXIT_RUNTIME)
    except BaseException:
        fail("container init: interrupted", libc.EXIT_RUNTIME)
    os._exit(libc.EXIT_RUNTIME)
