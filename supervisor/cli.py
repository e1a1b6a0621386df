"""The `dockyard` command line: a bus client like any other.

It imports only the synchronous bus client (pyzmq + msgpack), never trio or structlog, so a
`dockyard run` spends its time running the container, not importing Python. The daemon's
own code is imported by `dockyard daemon` alone.

Exit codes follow docker: a command's own failure is 1; for run, create and start a daemon
side error is 125, a command that cannot be invoked 126, one that is not found 127, and
otherwise the container's own exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
from datetime import datetime, timezone
from typing import Any, NoReturn

from bus.errors import BusError, DaemonUnavailable, RemoteError

EVENT_PREFIXES = ("container.", "daemon.", "image.")


class UsageError(Exception):
    pass


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"dockyard: {message}", file=sys.stderr)
    raise SystemExit(code)


# --- formatting ---------------------------------------------------------------------------


def parse_rfc3339(value: str) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def human_ago(value: str) -> str:
    moment = parse_rfc3339(value)
    if moment is None:
        return ""
    seconds = max(0.0, (datetime.now(timezone.utc) - moment).total_seconds())
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    if seconds < 1:
        return "Less than a second ago"
    return f"{int(seconds)} second{'s' if seconds >= 2 else ''} ago"


def human_duration(value: str) -> str:
    return human_ago(value).removesuffix(" ago") or "Less than a second"


def human_status(row: dict[str, Any]) -> str:
    status = row["status"]
    if status == "running":
        health = row.get("health")
        suffix = {"": "", "starting": " (health: starting)"}.get(health, f" ({health})")
        return f"Up {human_duration(row['started_at'])}{suffix}"
    if row.get("restarting"):
        return f"Restarting ({row['exit_code']}) {human_ago(row['finished_at'])}".rstrip()
    if status == "exited":
        return f"Exited ({row['exit_code']}) {human_ago(row['finished_at'])}".rstrip()
    return status.capitalize()


def human_size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.3g}{unit}"
        size /= 1000
    return f"{size:.3g}TB"


def human_binary_size(size: float) -> str:
    """docker stats' memory figures: 1.5MiB, 64MiB, 1.94GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.4g}{unit}"
        size /= 1024
    return f"{size:.4g}TiB"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["   ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [headers, *rows]]
    return "\n".join(lines)


def parse_time(value: str | None) -> float | None:
    """Unix seconds, a duration before now (10s, 5m, 2h, 1d), or an RFC 3339 time."""
    if value is None:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", value)
    if match:
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return time.time() - float(match.group(1)) * scale
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"invalid time {value!r}: use unix seconds, a duration like 10m, or RFC 3339") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def format_event(envelope: dict[str, Any]) -> str:
    data = envelope.get("data") or {}
    moment = datetime.fromtimestamp(envelope.get("ts", 0), timezone.utc)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    attributes = data.get("attributes") or {}
    attrs = ", ".join(f"{k}={v}" for k, v in sorted(attributes.items()))
    actor = data.get("id") or ""
    line = f"{stamp} {data.get('type', '?')} {data.get('action', '?')}"
    if actor:
        line += f" {actor}"
    return f"{line} ({attrs})" if attrs else line


# --- arguments ----------------------------------------------------------------------------


def env_entries(values: list[str]) -> list[str]:
    entries = []
    for value in values:
        if "=" in value:
            entries.append(value)
        elif value in os.environ:
            entries.append(f"{value}={os.environ[value]}")
    return entries


def container_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="", help="assign a name to the container")
    parser.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                        help="set an environment variable (KEY alone takes it from this environment)")
    parser.add_argument("-w", "--workdir", default="", help="working directory inside the container")
    parser.add_argument("-u", "--user", default="", help="UID[:GID] or USER[:GROUP] to run as")
    parser.add_argument("-h", "--hostname", default="", help="container host name (default: its short id)")
    parser.add_argument("--entrypoint", default=None, metavar="COMMAND",
                        help="override the image's ENTRYPOINT (\"\" clears it; the image's CMD is dropped too)")
    parser.add_argument("--rm", action="store_true", help="remove the container when it exits")
    parser.add_argument("-i", "--interactive", action="store_true", help="keep stdin open, and attach it (run)")
    parser.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    parser.add_argument("--stop-timeout", type=int, default=None, metavar="SECONDS",
                        help="grace period between the stop signal and SIGKILL (default 10)")
    parser.add_argument("--stop-signal", default=None, help="signal that stops the container (default SIGTERM)")
    parser.add_argument("--restart", default=None, metavar="POLICY",
                        help="restart policy when it exits: no (default), on-failure[:MAX-RETRIES], always, "
                             "unless-stopped (the monitor worker applies it)")
    parser.add_argument("--health-cmd", default=None, metavar="COMMAND",
                        help="command to run to check health (a shell command line; exit 0: healthy)")
    parser.add_argument("--health-interval", default=None, metavar="DURATION", help="time between checks (default 30s)")
    parser.add_argument("--health-timeout", default=None, metavar="DURATION",
                        help="longest a check may run before it counts as failed (default 30s)")
    parser.add_argument("--health-retries", default=None, metavar="N",
                        help="failures in a row that make it unhealthy (default 3)")
    parser.add_argument("--health-start-period", default=None, metavar="DURATION",
                        help="time after start when failures do not count (default 0s)")
    parser.add_argument("--no-healthcheck", action="store_true", help="disable the image's HEALTHCHECK")
    parser.add_argument("--network", "--net", default=None, metavar="MODE",
                        help="bridge (default: an address on the daemon's bridge), none (loopback only), "
                             "host (the host's network) or container:NAME (share that container's)")
    parser.add_argument("-p", "--publish", action="append", default=[], metavar="[HOSTIP:][HOSTPORT:]PORT[/PROTO]",
                        help="publish a container port on the host (repeatable; tcp or udp)")
    parser.add_argument("-P", "--publish-all", action="store_true",
                        help="publish the image's exposed ports on random host ports")
    parser.add_argument("--add-host", action="append", default=[], metavar="HOST:IP",
                        help="add a line to the container's /etc/hosts (repeatable)")
    parser.add_argument("--dns", action="append", default=[], metavar="IP",
                        help="a name server for the container's /etc/resolv.conf (repeatable)")
    resource_options(parser)
    parser.add_argument("--device", action="append", default=[], metavar="/dev/HOST[:/dev/CONTAINER[:rwm]]",
                        help="allow the container to use a host device (it may mknod it; repeatable)")
    parser.add_argument("--log-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="log option (repeatable): mode=blocking|non-blocking, max-buffer-size=SIZE "
                             "(default 4m), max-size=SIZE (one segment, default 64m), max-file=N (default 5)")
    parser.add_argument("image", help="image name, name:tag, or id")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments (default: the image's)")


#: (flags, spec.resources key, metavar, help). Values go to the daemon as typed; it parses them.
RESOURCE_OPTIONS = (
    (("-m", "--memory"), "memory", "SIZE", "memory limit (e.g. 64m; units b, k, m, g)"),
    (("--memory-swap",), "memory_swap", "SIZE", "memory plus swap limit; -1 for unlimited swap (default: twice --memory)"),
    (("--memory-reservation",), "memory_reservation", "SIZE", "memory soft limit"),
    (("--cpus",), "cpus", "CPUS", "number of CPUs (e.g. 0.5)"),
    (("-c", "--cpu-shares"), "cpu_shares", "SHARES", "CPU shares (relative weight, 2..262144)"),
    (("--cpuset-cpus",), "cpuset_cpus", "LIST", "CPUs allowed (0-3, 0,1)"),
    (("--pids-limit",), "pids_limit", "N", "most processes at once; -1 for unlimited"),
)


def resource_options(parser: argparse.ArgumentParser) -> None:
    for flags, key, metavar, text in RESOURCE_OPTIONS:
        parser.add_argument(*flags, dest=f"resource_{key}", default=None, metavar=metavar, help=text)


def resources_from(args: argparse.Namespace) -> dict[str, Any]:
    resources = {key: getattr(args, f"resource_{key}") for _, key, _, _ in RESOURCE_OPTIONS}
    resources = {key: value for key, value in resources.items() if value is not None}
    if getattr(args, "device", None):
        resources["devices"] = args.device
    return resources


def spec_from(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": args.image,
        "cmd": args.command,
        "env": env_entries(args.env),
        "workdir": args.workdir,
        "user": args.user,
        "hostname": args.hostname,
        "name": args.name,
        "auto_remove": args.rm,
    }
    if args.tty:
        spec["tty"] = True
    if args.interactive:
        spec["open_stdin"] = True
    if getattr(args, "entrypoint", None) is not None:
        spec["entrypoint"] = [args.entrypoint] if args.entrypoint else []
    if args.stop_timeout is not None:
        spec["stop_timeout"] = args.stop_timeout
    if args.stop_signal is not None:
        spec["stop_signal"] = args.stop_signal
    if args.restart is not None:
        spec["restart"] = args.restart
    healthcheck = health_flags(args)
    if healthcheck is not None:
        spec["healthcheck"] = healthcheck
    resources = resources_from(args)
    if resources:
        spec["resources"] = resources
    if args.log_opt:
        spec["log_options"] = log_options_from(args.log_opt)
    network_spec(args, spec)
    return spec


def network_spec(args: argparse.Namespace, spec: dict[str, Any]) -> None:
    """The network flags into the spec (the daemon validates them)."""
    if getattr(args, "network", None) is not None:
        spec["network"] = args.network
    for flag, key in (("publish", "publish"), ("add_host", "add_host"), ("dns", "dns")):
        if getattr(args, flag, None):
            spec[key] = list(getattr(args, flag))
    if getattr(args, "publish_all", False):
        spec["publish_all"] = True


def health_flags(args: argparse.Namespace) -> dict[str, Any] | None:
    """The --health-* flags as the spec's healthcheck fields (the daemon checks them)."""
    if args.no_healthcheck:
        return {"test": ["NONE"]}
    flags: dict[str, Any] = {}
    if args.health_cmd is not None:
        flags["test"] = ["CMD-SHELL", args.health_cmd]
    for name in ("interval", "timeout", "retries", "start_period"):
        value = getattr(args, f"health_{name}")
        if value is not None:
            flags[name] = value
    return flags or None


def detach_keys_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detach-keys", default="", metavar="KEYS",
                        help="keys that detach from a terminal, e.g. ctrl-x,y (default ctrl-p,ctrl-q)")


def log_options_from(entries: list[str]) -> dict[str, str]:
    """``--log-opt KEY=VALUE`` entries to a map; the daemon checks keys and values."""
    options = {}
    for entry in entries:
        key, eq, value = entry.partition("=")
        if not eq or not key:
            raise UsageError(f"invalid --log-opt {entry!r}: use KEY=VALUE (e.g. max-size=10m)")
        options[key] = value
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dockyard",
        description="Run Standard Containers under a trio supervisor with a ZeroMQ bus.",
        epilog="The CLI finds the daemon through --run, $DOCKYARD_RUN, or /run/dockyard.",
    )
    parser.add_argument("--run", dest="run_dir", default=None, metavar="DIR",
                        help="the daemon's run directory, where its sockets are (default $DOCKYARD_RUN or /run/dockyard)")
    parser.add_argument("--version", action="version", version="dockyard 0.1.0")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    p = sub.add_parser("daemon", help="run the supervisor daemon in the foreground")
    p.add_argument("--root", default=None, metavar="DIR", help="state directory (default $DOCKYARD_ROOT or /var/lib/dockyard)")
    p.add_argument("--run", dest="daemon_run", default=None, metavar="DIR",
                   help="run directory for the sockets (default $DOCKYARD_RUN or /run/dockyard)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TOML file with these settings (flags win); SIGHUP reloads log-level, stats-interval "
                        "and shutdown-timeout from it (docs/operations.md)")
    p.add_argument("--cgroup-parent", default=None, help="cgroup that holds this daemon's containers (default dockyard)")
    p.add_argument("--log-format", choices=["logfmt", "json"], default=None, help="format of the daemon's log on stderr")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None)
    p.add_argument("--stats-interval", type=float, default=None, metavar="SECONDS",
                   help="seconds between two samples of every container's resource usage (default 1; 0: off)")
    p.add_argument("--workers", default=None, metavar="NAMES",
                   help="comma-separated workers the daemon starts and keeps running (default: all; "
                        "'none': none, for workers run as their own units with `dockyard worker`)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="a registry to reach over plain HTTP or unverified TLS (repeatable; loopback always is)")
    p.add_argument("--bridge-name", default=None, metavar="NAME",
                   help="the bridge of containers in bridge mode (default dockyard0; removed at shutdown)")
    p.add_argument("--bridge-subnet", default=None, metavar="CIDR",
                   help="the bridge's subnet; its first address is the gateway (default 172.31.0.0/16)")
    p.add_argument("--max-connections", type=int, default=None, metavar="N",
                   help="connections per bus socket, a quarter of it per client process (default 4096; never "
                        "more than a quarter of the open-file limit)")
    p.add_argument("--max-requests-in-flight", type=int, default=None, metavar="N",
                   help="requests of one client without a reply; more get too_many_requests (default 1024)")
    p.add_argument("--subscriber-queue-bytes", type=int, default=None, metavar="BYTES",
                   help="an event subscriber that reads nothing while this many bytes are published is "
                        "disconnected (default 8 MiB)")
    p.add_argument("--ip-masq", action="store_true",
                   help="masquerade traffic from the bridge subnet leaving through other interfaces (iptables)")

    p = sub.add_parser("worker", help="run one of the daemon's workers on its own, in the foreground")
    p.add_argument("name", metavar="NAME", help="the worker (the daemon lists them in `info`)")
    p.add_argument("--root", default=None, metavar="DIR", help="the daemon's state directory (default $DOCKYARD_ROOT or /var/lib/dockyard)")
    p.add_argument("--run", dest="daemon_run", default=None, metavar="DIR",
                   help="the daemon's run directory (default $DOCKYARD_RUN or /run/dockyard)")
    p.add_argument("--log-format", choices=["logfmt", "json"], default="logfmt", help="format of the worker's log on stderr")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")

    p = sub.add_parser("run", help="create and start a container", add_help=False)
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background and print the container id")
    detach_keys_option(p)
    container_options(p)

    p = sub.add_parser("create", help="create a container without starting it", add_help=False)
    p.add_argument("--help", action="help", help="show this help and exit")
    container_options(p)

    p = sub.add_parser("start", help="start stopped containers")
    p.add_argument("-a", "--attach", action="store_true", help="attach to its output (and signals) until it exits")
    p.add_argument("-i", "--interactive", action="store_true", help="attach stdin too")
    detach_keys_option(p)
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("attach", help="attach this terminal to a running container (ctrl-p ctrl-q detaches)")
    p.add_argument("--no-stdin", action="store_true", help="do not attach stdin")
    p.add_argument("--sig-proxy", default="true", choices=["true", "false"],
                   help="forward the signals the CLI gets to the container (without a terminal; default true)")
    detach_keys_option(p)
    p.add_argument("container", metavar="CONTAINER")

    p = sub.add_parser("exec", help="run a command in a running container", add_help=False)
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("-d", "--detach", action="store_true", help="run it in the background")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open and attach it")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                   help="set an environment variable (KEY alone takes it from this environment)")
    p.add_argument("-w", "--workdir", default="", help="working directory (default: the container's)")
    p.add_argument("-u", "--user", default="", help="UID[:GID] or USER[:GROUP] (default: the container's)")
    detach_keys_option(p)
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments")

    p = sub.add_parser("stop", help="stop running containers: stop signal, then SIGKILL after the timeout")
    p.add_argument("-t", "--time", type=int, default=None, metavar="SECONDS", help="seconds to wait before SIGKILL (default: the container's, 10)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("restart", help="stop then start containers")
    p.add_argument("-t", "--time", type=int, default=None, metavar="SECONDS", help="seconds to wait before SIGKILL")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("kill", help="send a signal to running containers")
    p.add_argument("-s", "--signal", default="KILL", help="signal name or number (default KILL)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("wait", help="wait until containers stop, then print their exit codes")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default: running ones)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
    p.add_argument("--no-trunc", action="store_true", help="do not shorten ids and commands")

    p = sub.add_parser("inspect", help="show containers (or images) as JSON, in docker's shape")
    p.add_argument("--type", choices=["container", "image"], default=None, help="what the names refer to")
    p.add_argument("objects", nargs="+", metavar="NAME")

    p = sub.add_parser("port", help="list a container's published ports (or the one of PORT[/PROTO])")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("port", nargs="?", default=None, metavar="PORT[/PROTO]")

    p = sub.add_parser("import", help="create an image from a root filesystem tarball")
    p.add_argument("source", metavar="TARBALL", help="a tar (plain, gz, bz2 or xz), or - for standard input")
    p.add_argument("reference", metavar="NAME[:TAG]")
    p.add_argument("-c", "--change", action="append", default=[], metavar="INSTRUCTION",
                   help="apply a Dockerfile instruction to the image config: CMD, ENTRYPOINT, ENV, WORKDIR, USER")

    p = sub.add_parser("images", help="list images")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the ids")

    p = sub.add_parser("tag", help="give an image another name")
    p.add_argument("source", metavar="IMAGE", help="name[:tag] or id")
    p.add_argument("target", metavar="NAME[:TAG]")

    p = sub.add_parser("rmi", help="remove images (untag; delete once no tag is left)")
    p.add_argument("-f", "--force", action="store_true",
                   help="remove every tag of an image named by id; untag an image that stopped containers use")
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = sub.add_parser("history", help="show the layers and history of an image")
    p.add_argument("--no-trunc", action="store_true", help="do not shorten ids and commands")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
    p.add_argument("image", metavar="IMAGE")

    p = sub.add_parser("commit", help="create an image from a container's changes")
    p.add_argument("-m", "--message", default="", help="commit message")
    p.add_argument("-a", "--author", default="", help='author (e.g. "Jane <jane@example.com>")')
    p.add_argument("-c", "--change", action="append", default=[], metavar="INSTRUCTION",
                   help="apply a Dockerfile instruction to the image config: CMD, ENTRYPOINT, ENV, WORKDIR, USER")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("reference", nargs="?", default=None, metavar="REPO[:TAG]")

    p = sub.add_parser("diff", help="show the files a container added (A), changed (C) or deleted (D)")
    p.add_argument("container", metavar="CONTAINER")

    p = sub.add_parser("export", help="write a container's filesystem as a tar")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write to FILE (default: standard output)")
    p.add_argument("container", metavar="CONTAINER")

    p = sub.add_parser("save", help="write images to an archive (OCI layout and docker's manifest.json)")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write to FILE (default: standard output)")
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = sub.add_parser("load", help="load images from a docker-archive or oci-archive (gzip or not)")
    p.add_argument("-i", "--input", default=None, metavar="FILE", help="read FILE (default: standard input)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the loaded names")

    p = sub.add_parser("cp", help="copy files between a container and the host",
                       description="dockyard cp CONTAINER:SRC DEST|-   or   dockyard cp SRC CONTAINER:DEST")
    p.add_argument("source", metavar="SRC")
    p.add_argument("dest", metavar="DEST")

    p = sub.add_parser("events", help="stream lifecycle events (live, or from --since)")
    p.add_argument("--filter", "-f", action="append", default=[], metavar="KEY=VALUE",
                   help="container=NAME|ID, event=ACTION, type=container|image|daemon (repeatable)")
    p.add_argument("--since", default=None, help="replay from this time (unix seconds, 10m, or RFC 3339)")
    p.add_argument("--until", default=None, help="stop at this time")
    p.add_argument("--format", choices=["text", "json"], default="text", help="one line of text, or one JSON envelope, per event")

    p = sub.add_parser("update", help="change the resource limits of containers")
    resource_options(p)
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("stats", help="show containers' resource usage, live")
    p.add_argument("--no-stream", action="store_true", help="print one sample and exit")
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="a table (as docker stats), or one JSON object per container and sample")
    p.add_argument("-a", "--all", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("containers", nargs="*", metavar="CONTAINER", help="default: every running container")

    p = sub.add_parser("logs", help="show a container's output (stdout to stdout, stderr to stderr)")
    p.add_argument("-f", "--follow", action="store_true", help="keep following new output until the container ends")
    p.add_argument("--since", default=None, help="only output since this time (unix seconds, 10m, or RFC 3339)")
    p.add_argument("--until", default=None, help="only output before this time (same forms)")
    p.add_argument("-n", "--tail", default="all", metavar="N", help="only the last N lines (default all)")
    p.add_argument("-t", "--timestamps", action="store_true", help="prefix each line with the time it was read")
    p.add_argument("container", metavar="CONTAINER")

    sub.add_parser("info", help="show the daemon's facts and counters")

    p = sub.add_parser("login", help="log in to a registry (the daemon checks and keeps the credentials)")
    p.add_argument("-u", "--username", default=None)
    p.add_argument("-p", "--password", default=None, help="the password (insecure: prefer --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("server", nargs="?", default="docker.io", metavar="REGISTRY", help="default docker.io")

    p = sub.add_parser("pull", help="download an image from a registry")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the reference, no progress")
    p.add_argument("--platform", default=None, metavar="OS/ARCH[/VARIANT]",
                   help="the image of this platform from a multi-platform index (default: this machine's)")
    p.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")

    p = sub.add_parser("push", help="upload an image to a registry")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the digest line, no progress")
    p.add_argument("reference", metavar="NAME[:TAG]")

    p = sub.add_parser("logout", help="log out from a registry (forget its credentials)")
    p.add_argument("server", nargs="?", default="docker.io", metavar="REGISTRY", help="default docker.io")
    return parser


# --- commands -----------------------------------------------------------------------------


def client_for(args: argparse.Namespace) -> Any:
    from bus.client import Client

    return Client(args.run_dir or os.environ.get("DOCKYARD_RUN") or "/run/dockyard", source=f"cli:{os.getpid()}")


def start_failure(error: RemoteError) -> NoReturn:
    fail(error.message, int(error.details.get("exit_code", 125)))


def cmd_run(args: argparse.Namespace, client: Any) -> int:
    spec = spec_from(args)
    if args.detach:
        try:
            result = client.request("container.run", {"spec": spec, "attach": False})
        except RemoteError as error:
            start_failure(error)
        print(result["id"])
        return 0
    args_map = {"spec": spec, "attach": True, "stdin": args.interactive}
    return attached_exit(client, "container.run", args_map, args.tty, args.interactive, args.detach_keys)


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
        return for_each(args, client, "container.start", {})
    if len(args.containers) != 1:
        raise UsageError("start: you cannot start and attach multiple containers at once")
    ref = args.containers[0]
    config = client.request("container.inspect", {"container": ref})["Config"]
    interactive = args.interactive and bool(config.get("OpenStdin"))
    request = {"container": ref, "attach": True, "stdin": interactive}
    return attached_exit(client, "container.start", request, bool(config.get("Tty")), interactive, args.detach_keys)


def cmd_attach(args: argparse.Namespace, client: Any) -> int:
    try:
        document = client.request("container.inspect", {"container": args.container})
    except RemoteError as error:
        fail(error.message)
    config, state = document["Config"], document["State"]
    if not state.get("Running"):
        fail(f"cannot attach to container {args.container}: it is not running")
    interactive = bool(config.get("OpenStdin")) and not args.no_stdin
    tty = bool(config.get("Tty"))
    request = {"container": document["Id"], "stdin": interactive}
    return attached_exit(client, "container.attach", request, tty, interactive, args.detach_keys, start_error=False,
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
    request = {"container": args.container, "exec": spec}
    if args.detach:
        try:
            client.request("container.exec", request)
        except RemoteError as error:
            if "exit_code" in error.details:
                start_failure(error)
            fail(error.message)
        return 0
    return attached_exit(client, "container.exec", request, args.tty, args.interactive, args.detach_keys,
                         start_error=False)


def cmd_create(args: argparse.Namespace, client: Any) -> int:
    try:
        result = client.request("container.create", {"spec": spec_from(args)})
    except RemoteError as error:
        start_failure(error)
    print(result["id"])
    return 0


def for_each(args: argparse.Namespace, client: Any, op: str, extra: dict[str, Any], show=None) -> int:
    """Apply one operation to each named container, as docker does: report each failure,
    carry on, and exit 1 if any failed."""
    status = 0
    for ref in args.containers:
        try:
            result = client.request(op, {"container": ref, **extra}, timeout=None)
        except RemoteError as error:
            print(f"dockyard: {error.message}", file=sys.stderr)
            status = 1 if op != "container.start" else int(error.details.get("exit_code", 1))
            continue
        print(show(result) if show else ref)
    return status


def cmd_ps(args: argparse.Namespace, client: Any) -> int:
    rows = client.request("container.list", {"all": args.all})["containers"]
    if args.quiet:
        for row in rows:
            print(row["id"] if args.no_trunc else row["id"][:12])
        return 0
    lines = []
    for row in rows:
        command = row["command"] if args.no_trunc or len(row["command"]) <= 20 else row["command"][:19] + "…"
        lines.append([
            row["id"] if args.no_trunc else row["id"][:12],
            row["image"],
            json.dumps(command, ensure_ascii=False),
            human_ago(row["created"]),
            human_status(row),
            row.get("ports", ""),
            row["name"],
        ])
    print(table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], lines))
    return 0


def cmd_inspect(args: argparse.Namespace, client: Any) -> int:
    documents, status = [], 0
    for ref in args.objects:
        kinds = [args.type] if args.type else ["container", "image"]
        for kind in kinds:
            try:
                op, key = ("container.inspect", "container") if kind == "container" else ("image.inspect", "image")
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
    document = client.request("container.inspect", {"container": args.container})
    ports = (document.get("NetworkSettings") or {}).get("Ports") or {}
    if args.port is not None:
        key = args.port if "/" in args.port else f"{args.port}/tcp"
        if key not in ports:
            fail(f"no public port '{key}' published for {args.container}")
        for binding in ports[key]:
            print(f"{binding['HostIp']}:{binding['HostPort']}")
        return 0
    for key in sorted(ports, key=lambda k: (int(k.split("/")[0]), k)):
        for binding in ports[key]:
            print(f"{key} -> {binding['HostIp']}:{binding['HostPort']}")
    return 0


def cmd_import(args: argparse.Namespace, client: Any) -> int:
    changes = {"changes": args.change} if args.change else {}
    if args.source == "-":
        import tempfile  # only here: it costs the other commands 10 ms of start-up

        # The daemon reads files, not our stdin: spool it where the daemon can read it.
        with tempfile.NamedTemporaryFile(prefix="dockyard-import-", suffix=".tar") as spool:
            while chunk := sys.stdin.buffer.read(1 << 20):
                spool.write(chunk)
            spool.flush()
            result = client.request("image.import", {"path": spool.name, "reference": args.reference, **changes}, timeout=None)
    else:
        result = client.request("image.import", {"path": os.path.abspath(args.source), "reference": args.reference, **changes}, timeout=None)
    print(f"sha256:{result['id']}")
    return 0


def cmd_images(args: argparse.Namespace, client: Any) -> int:
    images = client.request("image.list")["images"]
    if args.quiet:
        for image in images:
            print(image["id"][:12])
        return 0
    rows = []
    for image in images:
        for tag in image["repo_tags"] or ["<none>:<none>"]:
            repository, _, name_tag = tag.rpartition(":")
            rows.append([repository, name_tag, image["id"][:12], human_ago(image["created"]), human_size(image["size"])])
    print(table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows))
    return 0


def cmd_tag(args: argparse.Namespace, client: Any) -> int:
    client.request("image.tag", {"image": args.source, "reference": args.target})
    return 0


def cmd_rmi(args: argparse.Namespace, client: Any) -> int:
    status = 0
    for ref in args.images:
        try:
            report = client.request("image.remove", {"image": ref, "force": args.force}, timeout=None)["report"]
        except RemoteError as error:
            print(f"dockyard: {error.message}", file=sys.stderr)
            status = 1
            continue
        for line in report:
            for action, subject in line.items():
                print(f"{action}: {subject}")
    return status


def cmd_history(args: argparse.Namespace, client: Any) -> int:
    rows = client.request("image.history", {"image": args.image})["history"]
    if args.quiet:
        for row in rows:
            print(row["id"] if args.no_trunc or row["id"] == "<missing>" else row["id"][:12])
        return 0
    lines = []
    for row in rows:
        created_by = row["created_by"]
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        image_id = row["id"] if args.no_trunc or row["id"] == "<missing>" else row["id"][:12]
        lines.append([image_id, human_ago(row["created"]), created_by, human_size(row["size"]), row["comment"]])
    print(table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], lines))
    return 0


def cmd_commit(args: argparse.Namespace, client: Any) -> int:
    result = client.request("container.commit", {
        "container": args.container, "reference": args.reference, "comment": args.message,
        "author": args.author, "changes": args.change,
    }, timeout=None)
    print(f"sha256:{result['id']}")
    return 0


def cmd_diff(args: argparse.Namespace, client: Any) -> int:
    for kind, path in client.request("container.diff", {"container": args.container}, timeout=None)["changes"]:
        print(f"{kind} {path}")
    return 0


def _to_output(output: str | None, op: str, request: dict[str, Any], client: Any) -> dict[str, Any]:
    """Have the daemon write a file (same host: it gets a path), to ``output`` or stdout."""
    if output is not None:
        return client.request(op, {**request, "path": os.path.abspath(output)}, timeout=None)
    if sys.stdout.isatty():
        raise UsageError("refusing to write an archive to a terminal: use -o FILE or redirect the output")
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dockyard-") as scratch:
        path = os.path.join(scratch, "out.tar")
        result = client.request(op, {**request, "path": path}, timeout=None)
        with open(path, "rb") as source:
            shutil.copyfileobj(source, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
    return result


def cmd_export(args: argparse.Namespace, client: Any) -> int:
    _to_output(args.output, "container.export", {"container": args.container}, client)
    return 0


def cmd_save(args: argparse.Namespace, client: Any) -> int:
    _to_output(args.output, "image.save", {"images": args.images}, client)
    return 0


def cmd_load(args: argparse.Namespace, client: Any) -> int:
    if args.input is not None:
        images = client.request("image.load", {"path": os.path.abspath(args.input)}, timeout=None)["images"]
    else:
        import tempfile

        with tempfile.NamedTemporaryFile(prefix="dockyard-load-", suffix=".tar") as spool:
            while chunk := sys.stdin.buffer.read(1 << 20):
                spool.write(chunk)
            spool.flush()
            images = client.request("image.load", {"path": spool.name}, timeout=None)["images"]
    for image in images:
        for tag in image["repo_tags"] or [None]:
            print(f"Loaded image: {tag}" if tag else f"Loaded image ID: sha256:{image['id']}")
    return 0


def split_container_path(value: str) -> tuple[str, str] | None:
    """``CONTAINER:PATH`` to (container, path); None for a host path (absolute or ./...)."""
    if value.startswith(("/", ".")) or ":" not in value:
        return None
    container, _, path = value.partition(":")
    return container, path


def cmd_cp(args: argparse.Namespace, client: Any) -> int:
    source, dest = split_container_path(args.source), split_container_path(args.dest)
    if (source is None) == (dest is None):
        raise UsageError("cp: exactly one of SRC and DEST must be CONTAINER:PATH")
    if dest is not None:
        container, path = dest
        client.request("container.copy_to", {"container": container, "source": os.path.abspath(args.source),
                                             "dest": path or "/"}, timeout=None)
        return 0
    assert source is not None
    container, path = source
    import tempfile

    if args.dest == "-":
        _to_output(None, "container.copy_from", {"container": container, "source": path or "/"}, client)
        return 0
    from supervisor.images.tarsafe import extract

    target = os.path.abspath(args.dest)
    with tempfile.TemporaryDirectory(prefix=".dockyard-cp-", dir=os.path.dirname(target)) as scratch:
        archive = os.path.join(scratch, "copy.tar")
        name = client.request("container.copy_from", {"container": container, "source": path or "/",
                                                      "path": archive}, timeout=None)["name"]
        try:
            with open(archive, "rb") as stream:
                if os.path.isdir(target):
                    extract(stream, target)
                else:
                    unpacked = os.path.join(scratch, "unpacked")
                    os.mkdir(unpacked)
                    extract(stream, unpacked)
                    os.replace(os.path.join(unpacked, name), target)
        except Exception as exc:  # ImageError or OSError: say which copy failed
            fail(f"cannot copy {args.source} to {args.dest}: {getattr(exc, 'message', None) or exc}")
    return 0


def event_filter(filters: list[str]):
    wanted: dict[str, set[str]] = {}
    for item in filters:
        key, eq, value = item.partition("=")
        if not eq or key not in {"container", "event", "type", "image"}:
            raise UsageError(f"invalid filter {item!r}: use container=, event=, type= or image=")
        wanted.setdefault(key, set()).add(value)

    def accept(envelope: dict[str, Any]) -> bool:
        data = envelope.get("data") or {}
        attributes = data.get("attributes") or {}
        if "type" in wanted and data.get("type") not in wanted["type"]:
            return False
        if "event" in wanted and data.get("action") not in wanted["event"]:
            return False
        if "image" in wanted and attributes.get("image") not in wanted["image"]:
            return False
        if "container" in wanted:
            if data.get("type") != "container":
                return False
            actor = data.get("id", "")
            if not any(v == attributes.get("name") or (v and actor.startswith(v)) for v in wanted["container"]):
                return False
        return True

    return accept


def cmd_events(args: argparse.Namespace, client: Any) -> int:
    accept = event_filter(args.filter)
    since, until = parse_time(args.since), parse_time(args.until)
    if until is not None and since is None:
        since = 0.0

    def emit(envelope: dict[str, Any]) -> None:
        if accept(envelope):
            print(json.dumps(envelope, default=repr) if args.format == "json" else format_event(envelope), flush=True)

    # Subscribed (and confirmed by the daemon) before the replay is asked for: nothing falls
    # between the two, and the seq of the replay's end tells which live events are new.
    with client.subscribe(list(EVENT_PREFIXES)) as live:
        last_seq = 0
        if since is not None:
            replay = client.request("events.replay", {"since": since, "until": until})
            for envelope in replay["events"]:
                emit(envelope)
            last_seq = replay["last_seq"]
        while until is None or time.time() < until:
            live.timeout = None if until is None else max(0.0, until - time.time())
            envelope = next(live, None)
            if envelope is None or (until is not None and envelope.ts > until):
                break
            if envelope.seq > last_seq:  # older ones were in the replay
                emit(envelope.as_map())
    return 0


def cmd_update(args: argparse.Namespace, client: Any) -> int:
    resources = resources_from(args)
    if not resources:
        raise UsageError("update: give at least one limit to change (--memory, --cpus, ...)")
    return for_each(args, client, "container.update", {"resources": resources})


STATS_HEADERS = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS", "BLOCK I/O"]


def stats_row(row: dict[str, Any]) -> list[str]:
    return [
        row["id"][:12],
        row["name"],
        f"{row['cpu_percent']:.2f}%",
        f"{human_binary_size(row['memory_usage'])} / {human_binary_size(row['memory_limit'])}",
        f"{row['memory_percent']:.2f}%",
        str(row["pids"]),
        f"{human_size(row['block_read_bytes'])} / {human_size(row['block_write_bytes'])}",
    ]


def show_stats(rows: list[dict[str, Any]], as_json: bool, clear: bool = False) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row), flush=True)
        return
    text = table(STATS_HEADERS, [stats_row(row) for row in sorted(rows, key=lambda r: r["name"])])
    print(("\x1b[2J\x1b[H" if clear else "") + text, flush=True)


def cmd_stats(args: argparse.Namespace, client: Any) -> int:
    as_json = args.format == "json"
    if args.no_stream:
        show_stats(client.request("container.stats", {"containers": args.containers})["stats"], as_json)
        return 0
    prefixes = ["stats."]
    if args.containers:  # names to ids: the events are per id
        rows = client.request("container.stats", {"containers": args.containers})["stats"]
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


#: How long a following `logs.read` may wait at the daemon (it answers sooner when output comes).
LOGS_WAIT = 10.0


def timestamped(data: bytes, ts: float, at_line_start: bool) -> tuple[bytes, bool]:
    """``data`` with each line that starts in it prefixed by ``ts`` (docker's RFC 3339 form);
    returns it and whether the next data starts a line."""
    if not data:
        return data, at_line_start
    stamp = (datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z ").encode()
    lines = data.split(b"\n")
    out = []
    for index, line in enumerate(lines):
        last = index == len(lines) - 1
        if last and not line:
            break
        if at_line_start or index > 0:
            out.append(stamp)
        out.append(line if last else line + b"\n")
    return b"".join(out), data.endswith(b"\n")


def cmd_logs(args: argparse.Namespace, client: Any) -> int:
    if args.tail in ("all", "-1"):
        tail = None
    elif args.tail.isdigit():
        tail = int(args.tail)
    else:
        raise UsageError(f"invalid --tail {args.tail!r}: use a number of lines or all")
    request = {"container": args.container, "since": parse_time(args.since), "until": parse_time(args.until),
               "tail": tail, "follow": args.follow, "wait": LOGS_WAIT}
    targets = {1: sys.stdout.buffer, 2: sys.stderr.buffer}
    at_line_start = {1: True, 2: True}
    previous = None
    pending = client.send_request("logs.read", request, timeout=LOGS_WAIT + 30)
    while True:
        result = pending.result()
        if not result["done"]:
            # The next page is asked for before this one is written: the daemon reads it
            # while the CLI writes (the cursor is all the next request needs).
            request["cursor"] = result["cursor"]
            request["tail"] = None
            pending = client.send_request("logs.read", request, timeout=LOGS_WAIT + 30)
        for stream, ts, data, flags in result["records"]:
            stream = 2 if flags & 2 else stream  # a marker of lost output goes to stderr
            target = targets[stream]
            if previous is not None and previous is not target:
                previous.flush()  # keeps stdout and stderr in their original order
            previous = target
            if args.timestamps:
                data, at_line_start[stream] = timestamped(data, ts, at_line_start[stream])
            target.write(data)
        if previous is not None:
            previous.flush()
        if result["done"]:
            return 0


def cmd_info(args: argparse.Namespace, client: Any) -> int:
    print(json.dumps(client.request("daemon.info"), indent=2, sort_keys=True))
    return 0


def cmd_login(args: argparse.Namespace, client: Any) -> int:
    username, password = args.username, args.password
    if args.password_stdin:
        if password is not None:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        if username is None:
            raise UsageError("--password-stdin needs a username (-u USER)")
        password = sys.stdin.readline().rstrip("\r\n")
    elif password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    if username is None:
        if not sys.stdin.isatty():
            raise UsageError("a username is needed: -u USER (standard input is not a terminal to ask on)")
        username = input("Username: ").strip()
    if password is None:
        if not sys.stdin.isatty():
            raise UsageError("a password is needed: --password-stdin (standard input is not a terminal to ask on)")
        import getpass

        password = getpass.getpass("Password: ")
    if not username or not password:
        raise UsageError("the username and the password must not be empty")
    result = client.request("image.login", {"registry": args.server, "username": username, "password": password},
                            timeout=120)
    print(result["status"])
    return 0


def transfer_with_progress(client: Any, op: str, request: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Send a pull or push and draw its streamed progress on stdout if it is a terminal."""
    from supervisor.registry.progress import Progress, TerminalProgress

    view = TerminalProgress(sys.stdout, force=False if quiet else None)
    stream = client.stream(op, request, timeout=None)
    while True:
        try:
            payload = next(stream)
        except StopIteration as done:
            return done.value
        if "progress" in payload:
            view(Progress.from_json(payload["progress"]))


def cmd_pull(args: argparse.Namespace, client: Any) -> int:
    request = {"reference": args.reference, **({"platform": args.platform} if args.platform else {})}
    result = transfer_with_progress(client, "image.pull", request, args.quiet)
    if not args.quiet:
        print(f"Digest: {result['digest']}")
        status = "Downloaded newer image" if result["fetched"] else "Image is up to date"
        print(f"Status: {status} for {result['reference']}")
    print(result["reference"])
    return 0


def cmd_push(args: argparse.Namespace, client: Any) -> int:
    result = transfer_with_progress(client, "image.push", {"reference": args.reference}, args.quiet)
    tag = result["reference"].rpartition(":")[2] if "@" not in result["reference"] else "digest"
    print(f"{tag}: digest: {result['digest']} size: {result['size']}")
    return 0


def cmd_logout(args: argparse.Namespace, client: Any) -> int:
    result = client.request("image.logout", {"registry": args.server})
    if result["removed"]:
        print(f"Removing login credentials for {result['registry']}")
    else:
        print(f"Not logged in to {result['registry']}")
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    from supervisor import configfile
    from supervisor.config import Config, default_root, default_run_dir
    from supervisor.daemon import Reloader, main as daemon_main
    from supervisor.errors import DockyardError

    settings: dict[str, Any] = {}
    if args.config is not None:
        try:
            settings = configfile.load(args.config)
        except DockyardError as error:
            fail(error.message)
    flags = {
        "root": args.root, "run": args.daemon_run or args.run_dir, "cgroup-parent": args.cgroup_parent,
        "log-format": args.log_format, "log-level": args.log_level, "stats-interval": args.stats_interval,
        "workers": args.workers, "max-connections": args.max_connections,
        "max-requests-in-flight": args.max_requests_in_flight,
        "subscriber-queue-bytes": args.subscriber_queue_bytes,
    }
    given = frozenset(key for key, value in flags.items() if value is not None)

    def setting(key: str, default: Any) -> Any:
        value = flags.get(key)
        return value if value is not None else settings.get(key, default)

    workers = setting("workers", None)
    if isinstance(workers, str):
        workers = tuple(name for name in workers.split(",") if name and name != "none")
    try:
        config = Config(
            root=setting("root", None) or default_root(),
            run_dir=setting("run", None) or default_run_dir(),
            cgroup_parent=setting("cgroup-parent", "dockyard"),
            stats_interval=float(setting("stats-interval", 1.0)),
            shutdown_timeout=float(setting("shutdown-timeout", 30.0)),
            workers=tuple(workers) if workers is not None else None,
            insecure_registries=tuple(args.insecure_registry or setting("insecure-registries", [])),
            max_connections=setting("max-connections", 4096),
            max_requests_in_flight=setting("max-requests-in-flight", 1024),
            subscriber_queue_bytes=setting("subscriber-queue-bytes", 8 << 20),
            **network_settings(args),
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    reloader = Reloader(os.path.abspath(args.config), dict(settings), given) if args.config is not None else None
    return daemon_main(config, setting("log-format", "logfmt"), setting("log-level", "info"), reloader)


def network_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The daemon's network flags as Config fields (only those given)."""
    settings: dict[str, Any] = {}
    if args.bridge_name is not None:
        settings["bridge_name"] = args.bridge_name
    if args.bridge_subnet is not None:
        settings["bridge_subnet"] = args.bridge_subnet
    if args.ip_masq:
        settings["ip_masq"] = True
    return settings


def cmd_worker(args: argparse.Namespace) -> int:
    from supervisor.config import default_root, default_run_dir
    from workers import main as worker_main

    return worker_main(args.name, args.root or default_root(), args.daemon_run or args.run_dir or default_run_dir(),
                       args.log_format, args.log_level)


def dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "daemon":
        return cmd_daemon(args)
    if args.cmd == "worker":
        return cmd_worker(args)
    simple = {
        "stop": ("container.stop", lambda a: {"timeout": a.time}),
        "restart": ("container.restart", lambda a: {"timeout": a.time}),
        "kill": ("container.kill", lambda a: {"signal": a.signal}),
        "rm": ("container.remove", lambda a: {"force": a.force}),
    }
    with client_for(args) as client:
        if args.cmd in simple:
            op, extra = simple[args.cmd]
            return for_each(args, client, op, extra(args))
        if args.cmd == "wait":
            return for_each(args, client, "container.wait", {}, show=lambda r: r["exit_code"])
        handler = {
            "run": cmd_run,
            "create": cmd_create,
            "ps": cmd_ps,
            "inspect": cmd_inspect,
            "port": cmd_port,
            "import": cmd_import,
            "images": cmd_images,
            "events": cmd_events,
            "info": cmd_info,
            "update": cmd_update,
            "stats": cmd_stats,
            "start": cmd_start,
            "attach": cmd_attach,
            "exec": cmd_exec,
            "tag": cmd_tag,
            "rmi": cmd_rmi,
            "history": cmd_history,
            "commit": cmd_commit,
            "diff": cmd_diff,
            "export": cmd_export,
            "save": cmd_save,
            "load": cmd_load,
            "cp": cmd_cp,
            "login": cmd_login,
            "logout": cmd_logout,
            "pull": cmd_pull,
            "push": cmd_push,
            "logs": cmd_logs,
        }[args.cmd]
        return handler(args, client)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    launch_error_code = 125 if args.cmd in ("run", "create", "start") else 1
    try:
        return dispatch(args)
    except UsageError as error:
        parser.error(str(error))
    except DaemonUnavailable as error:
        fail(str(error), launch_error_code)
    except RemoteError as error:
        fail(error.message, launch_error_code)
    except BusError as error:
        fail(str(error), launch_error_code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
