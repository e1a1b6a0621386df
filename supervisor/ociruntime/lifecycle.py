"""The operations of the OCI runtime spec on ``dockyard-runtime``'s containers: create,
start, run, exec, kill, delete, pause, resume, update. Each takes the state store and
holds the container's lock while it reads and changes its state; ``run`` and a foreground
``exec`` release it before they wait.

Processes: ``create`` forks stage 0, which forks the container's pid 1 and exits; pid 1 is
then re-parented to the nearest child subreaper (containerd's shim, conmon) or to init,
exactly as runc's init is, and ``create`` exits. ``run`` and a foreground ``exec`` make
themselves a child subreaper first, so that they can wait for the process they started.
"""

from __future__ import annotations

import os
import select
import _signal  # the C module: signal.py imports enum (~2 ms of every run) for names we do not print

from supervisor.ociruntime import hooks, prelude
from supervisor.ociruntime.cgroups import BundleCgroup
from supervisor.ociruntime.errors import RuntimeCommandError
from supervisor.ociruntime.launch import launch
from supervisor.ociruntime.state import (StateStore, hook_state, now_rfc3339, process_start_time, status_of,
                                         write_small_atomic)
from supervisor.runtime import jsonlite

TYPE_CHECKING = False  # typing itself is not imported: ~2 ms
if TYPE_CHECKING:
    from supervisor.ociruntime.bundle import Host

START_TIMEOUT = 10.0  # seconds for pid 1 to take the start byte once the FIFO is opened


def compile_oci_seccomp(document: dict) -> bytes:
    """``seccomp.compile_oci_seccomp``, imported only for a bundle with linux.seccomp (it
    brings supervisor.errors and typing, ~2.5 ms)."""
    from supervisor.ociruntime.seccomp import compile_oci_seccomp as compile_profile

    return compile_profile(document)


def host_facts(root: str) -> "Host":
    """The host, and the seccomp compiler with its cache under ``root`` (``seccomp_cache.py``)."""
    from supervisor.ociruntime.bundle import Host
    from supervisor.ociruntime.seccomp_cache import compile_cached

    def enabled(path: str, yes: str) -> bool:
        try:
            with open(path) as file:
                return file.read().strip().startswith(yes)
        except OSError:
            return False

    def compile_seccomp(document: dict) -> bytes:
        return compile_cached(root, document, compile_oci_seccomp)

    return Host(apparmor=enabled("/sys/module/apparmor/parameters/enabled", "Y"),
                selinux=enabled("/sys/fs/selinux/enforce", "1"), compile_seccomp=compile_seccomp)


def read_config(bundle_dir: str) -> dict:
    path = os.path.join(bundle_dir, "config.json")
    try:
        with open(path, "rb") as file:
            return jsonlite.loads(file.read())
    except FileNotFoundError:
        raise RuntimeCommandError(f'open "{path}": no such file or directory') from None
    except ValueError as exc:
        raise RuntimeCommandError(f'config.json: invalid JSON: {exc}') from None


def write_pid_file(path: str, pid: int) -> None:
    if path:
        write_small_atomic(os.path.abspath(path), str(pid).encode(), 0o644)


def become_subreaper() -> None:
    from supervisor.runtime import libc  # prelude.py imported it before stage 0's fork

    try:
        libc.set_child_subreaper(True)
    except libc.InitError as exc:
        raise RuntimeCommandError(f"cannot become a child subreaper: {exc.message}") from None


def create(store: StateStore, container_id: str, bundle_dir: str, pid_file: str = "", console_socket: str = "",
           no_pivot: bool = False) -> dict:
    """``create``: the container built, its process waiting on ``exec.fifo``.

    Raises:
        RuntimeCommandError: nothing of the container is left (state, cgroup, process).
    """
    # bundle.py only here and in exec: ~1 ms of imports that start, state, kill and delete
    # do not need.
    from supervisor.ociruntime.bundle import check_id, translate

    check_id(container_id)
    bundle_dir = os.path.abspath(bundle_dir)
    config = read_config(bundle_dir)
    bundle = translate(config, bundle_dir, container_id, host_facts(store.root))
    stage = bundle.stage
    if stage["terminal"] and not console_socket:
        raise RuntimeCommandError("cannot allocate a tty without --console-socket (process.terminal is true)")
    store.make(container_id)
    cgroup = None
    init = None
    ready = 0
    try:
        with store.locked(container_id, must_exist=False):
            fifo = store.fifo(container_id)
            os.mkfifo(fifo, 0o600)
            os.chmod(fifo, 0o622)  # pid 1 may have dropped to another uid when it opens it
            # Stage 0 was forked at start-up (prelude.py: it imported its modules meanwhile);
            # with a terminal, one is forked now with the console socket.
            init = prelude.take_stage(console_socket if stage["terminal"] else "")
            cgroup = BundleCgroup.for_bundle(bundle.cgroups_path, container_id)
            record = {
                "id": container_id, "pid": 0, "start_time": None, "bundle": bundle_dir, "rootfs": bundle.rootfs,
                "created": now_rfc3339(), "owner": "", "annotations": bundle.annotations,
                "cgroup_paths": cgroup.paths, "cgroup_parents": cgroup.parents, "hooks": bundle.hooks,
                "exec": {"capabilities": stage["capabilities"], "no_new_privileges": stage["no_new_privileges"],
                         "seccomp": stage["seccomp"], "rlimits": stage["rlimits"], "env": stage["env"],
                         "process": config["process"],
                         "join_user": any(kind == "user" for kind, _ in stage["namespaces"])},
            }
            # Stage 0 unshares while the cgroups are made, then moves itself into them
            # (cgroup_sync: the byte release_cgroups sends) and forks pid 1 there.
            stage.update(cgroup_procs=cgroup.procs_files, exec_fifo=True, exec_fifo_path=fifo, cgroup_sync=True,
                         no_pivot=no_pivot, state=jsonlite.dumps(hook_state(record, "created")))
            init.send(stage, keep_open=True)
            cgroup.create()
            cgroup.apply(bundle.resources, stage["devices"])
            init.release_cgroups()
            pid = init.read_pid()
            running, init = init, None
            ready = running.wait_ready()
            record.update(pid=pid, start_time=process_start_time(pid))
            store.save(record)
            state = hook_state(record, "creating")
            hooks.run_hooks("createRuntime", bundle.hooks["createRuntime"], state)
            hooks.run_hooks("createContainer", bundle.hooks["createContainer"], state)
            write_pid_file(pid_file, pid)
            return record
    except BaseException:
        if init is not None:
            init.abandon()  # stage 0 and the process it forked, if any
        if ready:
            _kill_quietly(ready)
        if cgroup is not None:
            try:
                cgroup.remove()
            except RuntimeCommandError:
                pass
        store.remove(container_id)
        raise


def _kill_quietly(pid: int, sig: int = _signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def start(store: StateStore, container_id: str, warn) -> dict:
    """``start``: prestart hooks, the FIFO opened (pid 1 goes on to execve), poststart hooks.

    Raises:
        RuntimeCommandError: the container is not created, or a prestart hook failed (the
            container is then stopped).
    """
    with store.locked(container_id):
        record = store.load(container_id)
        status = status_of(record, store)
        if status == "stopped":
            raise RuntimeCommandError("cannot start a container that has stopped")
        if status != "created":
            raise RuntimeCommandError(f"cannot start an already {status} container")
        try:
            hooks.run_hooks("prestart", record["hooks"].get("prestart"), hook_state(record, "created"))
        except RuntimeCommandError:
            _kill_quietly(record["pid"])
            raise
        release(store.fifo(container_id), record["pid"])
        hooks.run_hooks_warning("poststart", record["hooks"].get("poststart"), hook_state(record, "running"), warn)
        return record


def release(fifo: str, pid: int) -> None:
    """Open the exec FIFO (which lets pid 1's open for writing return), read its byte, remove
    it. pid 1 is held by a pidfd first: once released it may run, exit and be reaped by its
    parent before we look again."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise RuntimeCommandError("cannot start the container: its process is gone") from None
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.register(pidfd, select.POLLIN)
            events = dict(poller.poll(START_TIMEOUT * 1000))
            if not events.get(fd, 0) & select.POLLIN or not os.read(fd, 1):
                raise RuntimeCommandError("cannot start the container: its process did not take the start "
                                          + ("(it exited)" if pidfd in events else f"in {START_TIMEOUT:.0f} s"))
        finally:
            os.close(fd)
    finally:
        os.close(pidfd)
        try:
            os.unlink(fifo)
        except FileNotFoundError:
            pass


def wait_for(pid: int) -> int:
    """Wait for ``pid`` (our child, as a subreaper), forwarding the usual signals to it; reap
    every other orphan on the way. Returns its exit code (128+N when killed by signal N)."""
    def forward(number, _frame):
        _kill_quietly(pid, number)

    for number in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2,
                   _signal.SIGWINCH):
        _signal.signal(number, forward)
    while True:
        try:
            child, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if child == pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def run(store: StateStore, container_id: str, bundle_dir: str, pid_file: str, console_socket: str, no_pivot: bool,
        detach: bool, warn) -> int:
    """``run``: create and start; in the foreground, wait for the container and delete it.
    Returns the exit code to exit with (the container's)."""
    if not detach:
        become_subreaper()
    record = create(store, container_id, bundle_dir, pid_file, console_socket, no_pivot)
    try:
        start(store, container_id, warn)
    except BaseException:
        delete(store, container_id, force=True, warn=warn)
        raise
    if detach:
        return 0
    code = wait_for(record["pid"])
    delete(store, container_id, force=True, warn=warn)
    return code


def kill(store: StateStore, container_id: str, sig: int, all_processes: bool = False) -> None:
    with store.locked(container_id):
        record = store.load(container_id)
        status = status_of(record, store)
        if status == "stopped" and not all_processes:
            raise RuntimeCommandError("container not running")
        if all_processes:
            BundleCgroup(record["cgroup_paths"]).signal_all(sig)
            if status == "paused":
                BundleCgroup(record["cgroup_paths"]).freeze(False)
        else:
            _kill_quietly(record["pid"], sig)


def delete(store: StateStore, container_id: str, force: bool, warn) -> None:
    """``delete``: a created or stopped container (any, with ``force``) removed: its
    processes killed, its cgroup removed, poststop hooks run, its state removed."""
    try:
        lock = store.locked(container_id)
        lock.__enter__()
    except RuntimeCommandError:
        if force:
            store.remove(container_id)  # a half-made directory, or nothing at all
            return
        raise
    try:
        record = store.load(container_id)
        status = status_of(record, store)
        if status in ("running", "paused") and not force:
            raise RuntimeCommandError(f"cannot delete container {container_id} that is not stopped: {status}")
        cgroup = BundleCgroup(record.get("cgroup_paths") or {}, record.get("cgroup_parents"))
        if status != "stopped":
            _kill_quietly(record["pid"])
            if status == "paused":
                cgroup.freeze(False)
        cgroup.remove()
        hooks.run_hooks_warning("poststop", (record.get("hooks") or {}).get("poststop"),
                                hook_state(record, "stopped"), warn)
        store.remove(container_id)
    finally:
        lock.__exit__(None, None, None)


def exec_process(store: StateStore, container_id: str, process: dict, console_socket: str = "",
                 pid_file: str = "", detach: bool = False) -> int:
    """``exec``: a new process in a created or running container. Returns its exit code in
    the foreground, 0 with ``detach``."""
    with store.locked(container_id):
        record = store.load(container_id)
        status = status_of(record, store)
        if status in ("stopped", "paused"):
            raise RuntimeCommandError(f"cannot exec in a {status} container")
        defaults = record["exec"]
        process = dict(process)
        if "capabilities" not in process:
            process["capabilities"] = defaults["capabilities"]
        if "rlimits" not in process:
            process["rlimits"] = []
        from supervisor.ociruntime.bundle import translate_process

        stage = translate_process(process, for_exec=True)
        if process.get("noNewPrivileges") is None:
            stage["no_new_privileges"] = defaults["no_new_privileges"]
        if stage["terminal"] and not console_socket:
            raise RuntimeCommandError("cannot allocate a tty without --console-socket")
        cgroup = BundleCgroup(record["cgroup_paths"])
        stage.update(id=container_id, join={"pid": record["pid"], "start_time": record["start_time"]},
                     join_user=defaults["join_user"], cgroup_procs=cgroup.procs_files, seccomp=defaults["seccomp"])
        if not detach:
            become_subreaper()
        pid = launch(stage, console_socket, what="exec process")
        write_pid_file(pid_file, pid)
    return 0 if detach else wait_for(pid)


def pause(store: StateStore, container_id: str, frozen: bool) -> None:
    with store.locked(container_id):
        record = store.load(container_id)
        status = status_of(record, store)
        if frozen and status != "running":
            raise RuntimeCommandError(f"cannot pause a container that is {status}" if status != "paused"
                                      else "container already paused")
        if not frozen and status != "paused":
            raise RuntimeCommandError("container not paused")
        BundleCgroup(record["cgroup_paths"]).freeze(frozen)


def update(store: StateStore, container_id: str, resources: dict) -> None:
    with store.locked(container_id):
        record = store.load(container_id)
        BundleCgroup(record["cgroup_paths"]).apply(resources)
