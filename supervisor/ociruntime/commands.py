"""Each command of ``dockyard-runtime`` from its parsed arguments: the lifecycle ones call
``lifecycle.py``; the ones that only read (state, list, ps, events, features, spec) are
here. Output is runc's: JSON where runc prints JSON, its table columns otherwise. ``json``
(and the ``re`` it imports) is imported by the commands that print, not on run's path.
"""

from __future__ import annotations

import os
import sys
import time

from supervisor.ociruntime import lifecycle
from supervisor.ociruntime.cgroups import BundleCgroup
from supervisor.ociruntime.errors import RuntimeCommandError
from supervisor.ociruntime.state import OCI_VERSION, StateStore, spec_state, status_of


SIGNALS = {"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8, "KILL": 9,
           "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17,
           "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25,
           "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31}


def parse_signal(text: str) -> int:
    if text.isdigit():
        return int(text)
    name = text.upper().removeprefix("SIG")
    if name in SIGNALS:
        return SIGNALS[name]
    if name.startswith("RTMIN") or name.startswith("RTMAX"):
        offset = int(name[5:] or 0) if name[5:].lstrip("+-").isdigit() or not name[5:] else None
        if offset is not None:
            return (34 + offset) if name.startswith("RTMIN") else (64 + offset)
    raise RuntimeCommandError(f"invalid signal: {text}")


def dispatch(arguments, store: StateStore, logger) -> int:
    handler = HANDLERS[arguments.command]
    return handler(arguments, store, logger) or 0


def _create(arguments, store, logger) -> int:
    lifecycle.create(store, arguments.id, arguments.bundle, arguments.pid_file, arguments.console_socket,
                     arguments.no_pivot)
    return 0


def _run(arguments, store, logger) -> int:
    return lifecycle.run(store, arguments.id, arguments.bundle, arguments.pid_file, arguments.console_socket,
                         arguments.no_pivot, arguments.detach, logger.warn)


def _start(arguments, store, logger) -> int:
    lifecycle.start(store, arguments.id, logger.warn)
    return 0


def _state(arguments, store, logger) -> int:
    from supervisor.runtime import jsonlite  # not json: its re is ~7 ms of the command

    record = store.load(arguments.id)
    print(jsonlite.dumps_indented(spec_state(record, status_of(record, store))))
    return 0


def _kill(arguments, store, logger) -> int:
    lifecycle.kill(store, arguments.id, parse_signal(arguments.signal), arguments.all)
    return 0


def _delete(arguments, store, logger) -> int:
    lifecycle.delete(store, arguments.id, arguments.force, logger.warn)
    return 0


def exec_process_document(arguments, store: StateStore) -> dict:
    """The process of an ``exec``: ``--process FILE``, or the container's own process with
    the command line's args, terminal, cwd, env, user, capabilities (runc's rule)."""
    import json

    if arguments.process:
        try:
            with open(arguments.process, "rb") as file:
                return json.loads(file.read())
        except (OSError, ValueError) as exc:
            raise RuntimeCommandError(f'cannot read the process file "{arguments.process}": {exc}') from None
    if not arguments.args:
        raise RuntimeCommandError("exec: the process to run is missing (ARGS or --process)")
    process = dict(store.load(arguments.id)["exec"]["process"])
    process["args"] = arguments.args[1:] if arguments.args[0] == "--" else arguments.args
    process["terminal"] = arguments.tty
    if arguments.cwd:
        process["cwd"] = arguments.cwd
    process["env"] = list(process.get("env") or []) + arguments.env
    if arguments.user:
        uid, _, gid = arguments.user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise RuntimeCommandError(f"exec --user {arguments.user!r}: only UID[:GID] numbers are supported")
        process["user"] = {"uid": int(uid), "gid": int(gid or 0), "additionalGids": arguments.additional_gids}
    if arguments.cap:
        capabilities = {key: list(value) for key, value in (process.get("capabilities") or {}).items()}
        for name in ("bounding", "effective", "permitted", "ambient"):
            capabilities[name] = list(dict.fromkeys(capabilities.get(name, []) + arguments.cap))
        process["capabilities"] = capabilities
    if arguments.no_new_privs:
        process["noNewPrivileges"] = True
    return process


def _exec(arguments, store, logger) -> int:
    process = exec_process_document(arguments, store)
    if arguments.tty:
        process["terminal"] = True
    return lifecycle.exec_process(store, arguments.id, process, arguments.console_socket, arguments.pid_file,
                                  arguments.detach)


def _ps(arguments, store, logger) -> int:
    import json

    record = store.load(arguments.id)
    pids = BundleCgroup(record.get("cgroup_paths") or {}).pids()
    if arguments.format == "json":
        print(json.dumps(pids))
        return 0
    import subprocess

    output = subprocess.run(["ps", *(arguments.ps_args or ["-ef"])], capture_output=True, text=True)
    if output.returncode != 0:
        raise RuntimeCommandError(f"ps: {output.stderr.strip()}")
    lines = output.stdout.splitlines()
    if not lines:
        return 0
    try:
        column = lines[0].split().index("PID")
    except ValueError:
        raise RuntimeCommandError("ps: no PID column in its output") from None
    print(lines[0])
    wanted = set(pids)
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in wanted:
            print(line)
    return 0


def _list(arguments, store, logger) -> int:
    import json

    rows = []
    for container_id in store.ids():
        try:
            record = store.load(container_id)
        except RuntimeCommandError:
            continue
        rows.append(spec_state(record, status_of(record, store)))
    if arguments.quiet:
        for row in rows:
            print(row["id"])
    elif arguments.format == "json":
        print(json.dumps(rows))
    else:
        print(f"{'ID':<20} {'PID':<8} {'STATUS':<10} {'BUNDLE':<40} {'CREATED':<31} OWNER")
        for row in rows:
            print(f"{row['id']:<20} {row['pid']:<8} {row['status']:<10} {row['bundle']:<40} {row['created']:<31} "
                  f"{row['owner']}")
    return 0


def _pause(arguments, store, logger) -> int:
    lifecycle.pause(store, arguments.id, True)
    return 0


def _resume(arguments, store, logger) -> int:
    lifecycle.pause(store, arguments.id, False)
    return 0


def _update(arguments, store, logger) -> int:
    import json

    resources: dict = {}
    if arguments.resources:
        try:
            text = sys.stdin.read() if arguments.resources == "-" else open(arguments.resources).read()
            resources = json.loads(text)
        except (OSError, ValueError) as exc:
            raise RuntimeCommandError(f"update --resources: cannot read the resources: {exc}") from None
    if arguments.memory is not None:
        resources.setdefault("memory", {})["limit"] = arguments.memory
    if arguments.pids_limit is not None:
        resources.setdefault("pids", {})["limit"] = arguments.pids_limit
    for key, value in (("shares", arguments.cpu_shares), ("quota", arguments.cpu_quota),
                       ("period", arguments.cpu_period), ("cpus", arguments.cpuset_cpus)):
        if value is not None:
            resources.setdefault("cpu", {})[key] = value
    lifecycle.update(store, arguments.id, resources)
    return 0


def _events(arguments, store, logger) -> int:
    import gc
    import json

    if not arguments.stats:
        gc.enable()  # bin/dockyard-runtime disables it for the short commands; this one may run for days
    while True:
        record = store.load(arguments.id)
        if status_of(record, store) == "stopped":
            raise RuntimeCommandError(f"container {arguments.id} is not running")
        stats = BundleCgroup(record.get("cgroup_paths") or {}).stats()
        print(json.dumps({"type": "stats", "id": arguments.id, "data": stats}), flush=True)
        if arguments.stats:
            return 0
        time.sleep(arguments.interval)  # the command's own period, as runc's --interval


def features_document() -> dict:
    from supervisor.ociruntime.bundle import HOOK_KINDS, MS, NAMESPACE_TYPES, PROPAGATION
    from supervisor.runtime.security import CAPABILITIES
    from supervisor.seccomp import ACTIONS, OPERATORS

    propagation = [name for name in PROPAGATION] + ["r" + name for name in PROPAGATION]
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": list(HOOK_KINDS),
        "mountOptions": sorted(list(MS) + propagation),
        "linux": {
            "namespaces": [name for name in NAMESPACE_TYPES],
            "capabilities": list(CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": True, "actions": list(ACTIONS), "operators": list(OPERATORS),
                        "archs": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64",
                                  "SCMP_ARCH_ARM"]},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {"org.opencontainers.runc.version": "dockyard-runtime", "io.dockyard.runtime.version": "0.1.0"},
    }


def _features(arguments, store, logger) -> int:
    import json

    print(json.dumps(features_document(), indent=4))
    return 0


def _spec(arguments, store, logger) -> int:
    import json

    from supervisor.ociruntime.template import default_spec

    if arguments.rootless:
        raise RuntimeCommandError("spec --rootless: rootless containers are not supported")
    path = os.path.join(arguments.bundle, "config.json")
    if os.path.exists(path):
        raise RuntimeCommandError("File config.json exists. Remove it first")
    try:
        with open(path, "x") as file:
            json.dump(default_spec(), file, indent=4)
    except OSError as exc:
        raise RuntimeCommandError(f"spec: cannot write {path}: {exc.strerror}") from None
    return 0


def _unsupported(arguments, store, logger) -> int:
    raise RuntimeCommandError(f"{arguments.command} is not supported by dockyard-runtime")


HANDLERS = {
    "create": _create, "run": _run, "start": _start, "state": _state, "kill": _kill, "delete": _delete,
    "exec": _exec, "ps": _ps, "list": _list, "pause": _pause, "resume": _resume, "update": _update,
    "events": _events, "features": _features, "spec": _spec, "checkpoint": _unsupported, "restore": _unsupported,
}
