"""Commands on containers: run, create, start, attach, exec, stop, restart, kill, pause,
unpause, wait, rm, ps, inspect, port, update, stats."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bus.errors import RemoteError
from supervisor import operations as ops

from .common import UsageError, fail, for_each, start_failure
from .listing import CONTAINER_HEADERS, CONTAINER_TABLE, container_row, output
from .output import show_stats
from .specs import container_options, detach_keys_option, env_entries, resource_options, resources_from, spec_from


#: The commands :func:`register` adds (parser.py registers only the group a command line names).
COMMANDS = ("run", "create", "start", "attach", "exec", "stop", "restart", "kill", "pause", "unpause", "wait", "rm", "ps", "inspect", "port", "update", "stats")


def register(sub: Any) -> None:
    """Add this module's commands to the subparsers ``sub``."""
    p = sub.add_parser("run", help="create and start a container", add_help=False)
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background and print the container id")
    detach_keys_option(p)
    container_options(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("create", help="create a container without starting it", add_help=False)
    p.add_argument("--help", action="help", help="show this help and exit")
    container_options(p)
    p.set_defaults(handler=cmd_create)

    p = sub.add_parser("start", help="start stopped containers")
    p.add_argument("-a", "--attach", action="store_true", help="attach to its output (and signals) until it exits")
    p.add_argument("-i", "--interactive", action="store_true", help="attach stdin too")
    detach_keys_option(p)
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=cmd_start)

    p = sub.add_parser("attach", help="attach this terminal to a running container (ctrl-p ctrl-q detaches)")
    p.add_argument("--no-stdin", action="store_true", help="do not attach stdin")
    p.add_argument("--sig-proxy", default="true", choices=["true", "false"],
                   help="forward the signals the CLI gets to the container (without a terminal; default true)")
    detach_keys_option(p)
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(handler=cmd_attach)

    p = sub.add_parser("exec", help="run a command in a running container", add_help=False)
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("-d", "--detach", action="store_true", help="run it in the background")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open and attach it")
    p.add_argument("-t", "--tty", action="store_true", help="a pseudo-terminal of the container's devpts; TERM=xterm unless set")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                   help="set an environment variable (KEY alone takes it from this environment)")
    p.add_argument("-w", "--workdir", default="", help="working directory (default: the container's)")
    p.add_argument("-u", "--user", default="", help="UID[:GID] or USER[:GROUP] (default: the container's)")
    p.add_argument("--privileged", action="store_true",
                   help="every capability for the command (the container's seccomp filter and namespaces stay)")
    detach_keys_option(p)
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments")
    p.set_defaults(handler=cmd_exec)

    p = sub.add_parser("stop", help="stop running containers: stop signal, then SIGKILL after the timeout")
    p.add_argument("-t", "--time", type=int, default=None, metavar="SECONDS", help="seconds to wait before SIGKILL (default: the container's, 10)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=cmd_stop)

    p = sub.add_parser("restart", help="stop then start containers")
    p.add_argument("-t", "--time", type=int, default=None, metavar="SECONDS", help="seconds to wait before SIGKILL")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=cmd_restart)

    p = sub.add_parser("kill", help="send a signal to running containers")
    p.add_argument("-s", "--signal", default="KILL", help="signal name or number (default KILL)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=cmd_kill)

    p = sub.add_parser("pause", help="freeze every process of running containers (their cgroup's freezer)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=cmd_pause)

    p = sub.add_parser("unpause", help="thaw paused containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=cmd_unpause)

    p = sub.add_parser("wait", help="wait until containers stop, then print their exit codes")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=cmd_wait)

    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("-v", "--volumes", action="store_true", help="remove its anonymous volumes too (named ones stay)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=cmd_rm)

    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default: running ones)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
    p.add_argument("--no-trunc", action="store_true", help="do not shorten ids and commands")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="only the containers that match (repeatable: one key's values ORed, different keys and "
                        "every label= ANDed): id=, name=, label=KEY[=VALUE], status=, exited=CODE, ancestor=IMAGE, "
                        "before=|since=CONTAINER, volume=NAME|PATH, network=, health=starting|healthy|unhealthy|none")
    p.add_argument("--format", default="", metavar="FORMAT",
                   help="table (default), json (one object a line) or a template: {{.ID}} {{.Image}} {{.Command}} "
                        "{{.CreatedAt}} {{.RunningFor}} {{.Ports}} {{.State}} {{.Status}} {{.Names}} {{.Labels}} "
                        "{{.Label \"KEY\"}} {{.Mounts}} {{.Networks}} {{json .}}; 'table TEMPLATE' adds headers")
    p.set_defaults(handler=cmd_ps)

    p = sub.add_parser("inspect", help="show containers (or images) as JSON, in docker's shape")
    p.add_argument("--type", choices=["container", "image"], default=None, help="what the names refer to")
    p.add_argument("objects", nargs="+", metavar="NAME")
    p.set_defaults(handler=cmd_inspect)

    p = sub.add_parser("port", help="list a container's published ports (or the one of PORT[/PROTO])")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("port", nargs="?", default=None, metavar="PORT[/PROTO]")
    p.set_defaults(handler=cmd_port)

    p = sub.add_parser("update", help="change the resource limits (or the restart policy) of containers")
    resource_options(p)
    p.add_argument("--restart", default=None, metavar="POLICY",
                   help="a new restart policy: no, always, unless-stopped, on-failure[:N] (for the next exits)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=cmd_update)

    p = sub.add_parser("stats", help="show containers' resource usage, live")
    p.add_argument("--no-stream", action="store_true", help="print one sample and exit")
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="a table (as docker stats), or one JSON object per container and sample")
    p.add_argument("-a", "--all", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("containers", nargs="*", metavar="CONTAINER", help="default: every running container")
    p.set_defaults(handler=cmd_stats)


def cmd_run(args: argparse.Namespace, client: Any) -> int:
    spec = spec_from(args)
    if args.detach:
        try:
            result = client.request(ops.CONTAINER_RUN, {"spec": spec, "attach": False})
        except RemoteError as error:
            start_failure(error)
        print(result["id"])
        return 0
    args_map = {"spec": spec, "attach": True, "stdin": args.interactive}
    return attached_exit(client, ops.CONTAINER_RUN, args_map, args.tty, args.interactive, args.detach_keys)


def attached_exit(client: Any, op: str, request: dict[str, Any], tty: bool, interactive: bool, detach_keys: str,
                  start_error: bool = True, sig_proxy: bool = True) -> int:
    """Run an attached session (supervisor/terminal.py) and turn its end into an exit code."""
    from supervisor.terminal import TerminalError, attached

    try:
        result = attached(client, op, request, tty=tty, interactive=interactive, detach_keys=detach_keys,
                          sig_proxy=sig_proxy)
    except TerminalError as error:
        fail(str(error))
    except RemoteError as error:
        if start_error or "exit_code" in error.details:
            start_failure(error)
        fail(error.message)
    if result.get("dropped"):
        print(f"dockyard: {result['dropped']} chunks of output could not be delivered to this terminal "
              f"(the logs have them)", file=sys.stderr)
    if "left" in result:
        return 128 + int(result["left"])
    if result.get("detached"):
        return 0
    return int(result["exit_code"])


def cmd_start(args: argparse.Namespace, client: Any) -> int:
    if not args.attach and not args.interactive:
        return for_each(args, client, ops.CONTAINER_START, {})
    if len(args.containers) != 1:
        raise UsageError("start: you cannot start and attach multiple containers at once")
    ref = args.containers[0]
    config = client.request(ops.CONTAINER_INSPECT, {"container": ref})["Config"]
    interactive = args.interactive and bool(config.get("OpenStdin"))
    request = {"container": ref, "attach": True, "stdin": interactive}
    return attached_exit(client, ops.CONTAINER_START, request, bool(config.get("Tty")), interactive, args.detach_keys)


def cmd_attach(args: argparse.Namespace, client: Any) -> int:
    try:
        document = client.request(ops.CONTAINER_INSPECT, {"container": args.container})
    except RemoteError as error:
        fail(error.message)
    config, state = document["Config"], document["State"]
    if not state.get("Running"):
        fail(f"cannot attach to container {args.container}: it is not running")
    interactive = bool(config.get("OpenStdin")) and not args.no_stdin
    tty = bool(config.get("Tty"))
    request = {"container": document["Id"], "stdin": interactive}
    return attached_exit(client, ops.CONTAINER_ATTACH, request, tty, interactive, args.detach_keys, start_error=False,
                         sig_proxy=args.sig_proxy == "true")


def cmd_exec(args: argparse.Namespace, client: Any) -> int:
    if not args.command:
        raise UsageError("exec: a command is needed: exec [OPTIONS] CONTAINER COMMAND [ARG...]")
    spec = {
        "cmd": args.command,
        "env": env_entries(args.env),
        "workdir": args.workdir,
        "user": args.user,
        "tty": args.tty,
        "stdin": args.interactive,
        "detach": args.detach,
    }
    if args.privileged:
        spec["privileged"] = True
    request = {"container": args.container, "exec": spec}
    if args.detach:
        try:
            client.request(ops.CONTAINER_EXEC, request)
        except RemoteError as error:
            if "exit_code" in error.details:
                start_failure(error)
            fail(error.message)
        return 0
    return attached_exit(client, ops.CONTAINER_EXEC, request, args.tty, args.interactive, args.detach_keys,
                         start_error=False)


def cmd_create(args: argparse.Namespace, client: Any) -> int:
    try:
        result = client.request(ops.CONTAINER_CREATE, {"spec": spec_from(args)})
    except RemoteError as error:
        start_failure(error)
    print(result["id"])
    return 0


def cmd_ps(args: argparse.Namespace, client: Any) -> int:
    try:
        rows = client.request(ops.CONTAINER_LIST, {"all": args.all, "filters": args.filter})["containers"]
    except RemoteError as error:
        fail(error.message)
    if args.quiet:
        for row in rows:
            print(row["id"] if args.no_trunc else row["id"][:12])
        return 0
    output(args.format, [container_row(row, args.no_trunc) for row in rows], CONTAINER_HEADERS, CONTAINER_TABLE)
    return 0


def cmd_inspect(args: argparse.Namespace, client: Any) -> int:
    documents, status = [], 0
    for ref in args.objects:
        kinds = [args.type] if args.type else ["container", "image"]
        for kind in kinds:
            try:
                op, key = (ops.CONTAINER_INSPECT, "container") if kind == "container" else (ops.IMAGE_INSPECT, "image")
                documents.append(client.request(op, {key: ref}))
                break
            except RemoteError as error:
                if error.code != "not_found" or kind == kinds[-1]:
                    print(f"dockyard: {error.message}", file=sys.stderr)
                    status = 1
    print(json.dumps(documents, indent=4))
    return status


def cmd_port(args: argparse.Namespace, client: Any) -> int:
    """docker port: ``80/tcp -> 127.0.0.1:8080``, or the host addresses of one port."""
    document = client.request(ops.CONTAINER_INSPECT, {"container": args.container})
    ports = (document.get("NetworkSettings") or {}).get("Ports") or {}
    if args.port is not None:
        key = args.port if "/" in args.port else f"{args.port}/tcp"
        if key not in ports:
            fail(f"no public port '{key}' published for {args.container}")
        for binding in ports[key]:
            print(_host_binding(binding))
        return 0
    for key in sorted(ports, key=lambda k: (int(k.split("/")[0]), k)):
        for binding in ports[key]:
            print(f"{key} -> {_host_binding(binding)}")
    return 0


def _host_binding(binding: dict[str, str]) -> str:
    """``127.0.0.1:8080``, or ``[::]:8080`` for an IPv6 address (docker's)."""
    address = binding["HostIp"]
    return f"[{address}]:{binding['HostPort']}" if ":" in address else f"{address}:{binding['HostPort']}"


def cmd_update(args: argparse.Namespace, client: Any) -> int:
    resources = resources_from(args)
    if not resources and args.restart is None:
        raise UsageError("update: give at least one limit to change (--memory, --cpus, ...) or --restart")
    return for_each(args, client, ops.CONTAINER_UPDATE, {"resources": resources, "restart": args.restart})


def cmd_stats(args: argparse.Namespace, client: Any) -> int:
    as_json = args.format == "json"
    if args.no_stream:
        show_stats(client.request(ops.CONTAINER_STATS, {"containers": args.containers})["stats"], as_json)
        return 0
    prefixes = ["stats."]
    if args.containers:  # names to ids: the events are per id
        rows = client.request(ops.CONTAINER_STATS, {"containers": args.containers})["stats"]
        prefixes = [f"stats.{row['id']}" for row in rows]
    clear = not as_json and sys.stdout.isatty()
    latest: dict[str, dict[str, Any]] = {}
    with client.subscribe(prefixes) as live:
        while True:
            live.timeout = None if not latest else 0.2  # a round of samples arrives together
            envelope = next(live, None)
            if envelope is not None:
                latest[envelope.data["id"]] = envelope.data
                continue
            show_stats(list(latest.values()), as_json, clear)  # one round: a stopped container drops out
            latest.clear()


def cmd_stop(args: argparse.Namespace, client: Any) -> int:
    return for_each(args, client, ops.CONTAINER_STOP, {"timeout": args.time})


def cmd_restart(args: argparse.Namespace, client: Any) -> int:
    return for_each(args, client, ops.CONTAINER_RESTART, {"timeout": args.time})


def cmd_kill(args: argparse.Namespace, client: Any) -> int:
    return for_each(args, client, ops.CONTAINER_KILL, {"signal": args.signal})


def cmd_pause(args: argparse.Namespace, client: Any) -> int:
    return for_each(args, client, ops.CONTAINER_PAUSE, {})


def cmd_unpause(args: argparse.Namespace, client: Any) -> int:
    return for_each(args, client, ops.CONTAINER_UNPAUSE, {})


def cmd_rm(args: argparse.Namespace, client: Any) -> int:
    return for_each(args, client, ops.CONTAINER_REMOVE, {"force": args.force, "volumes": args.volumes})


def cmd_wait(args: argparse.Namespace, client: Any) -> int:
    return for_each(args, client, ops.CONTAINER_WAIT, {}, show=lambda result: result["exit_code"])
