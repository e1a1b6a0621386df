"""The container flags of run and create, and how they become the bus's container spec
(the daemon validates the values: the CLI only shapes them)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .common import UsageError, key_values
from .kvfiles import label_entries, read_entries


def env_entries(values: list[str], files: list[str] = ()) -> list[str]:
    """``--env-file`` entries, then ``-e`` ones (later ones win in the container, as docker);
    ``KEY`` alone takes its value from this environment, and is left out when it is not set."""
    entries = [entry for path in files for entry in read_entries(path, "--env-file", from_environment=True)]
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
    parser.add_argument("--env-file", action="append", default=[], metavar="FILE",
                        help="read environment variables from a file: KEY=VALUE lines, # comments (repeatable; "
                             "-e wins)")
    parser.add_argument("-l", "--label", action="append", default=[], metavar="KEY=VALUE",
                        help="set a label (KEY alone: an empty value; over the image's labels; repeatable)")
    parser.add_argument("--label-file", action="append", default=[], metavar="FILE",
                        help="read labels from a file: KEY=VALUE lines, # comments (repeatable; -l wins)")
    parser.add_argument("--init", action="store_true", default=None,
                        help="run an init (tini) as pid 1 that forwards signals and reaps zombies, mounted "
                             "read-only at /dev/init (default: the daemon's --init)")
    parser.add_argument("--init-path", default=None, metavar="PATH",
                        help="the host's init binary for --init (default: the daemon's, tini-static)")
    parser.add_argument("-w", "--workdir", default="", help="working directory inside the container")
    parser.add_argument("-u", "--user", default="", help="UID[:GID] or USER[:GROUP] to run as")
    parser.add_argument("-h", "--hostname", default="", help="container host name (default: its short id)")
    parser.add_argument("--entrypoint", default=None, metavar="COMMAND",
                        help="override the image's ENTRYPOINT (\"\" clears it; the image's CMD is dropped too)")
    parser.add_argument("--rm", action="store_true", help="remove the container when it exits")
    parser.add_argument("-i", "--interactive", action="store_true", help="keep stdin open, and attach it (run)")
    parser.add_argument("-t", "--tty", action="store_true", help="a pseudo-terminal of the container's own devpts (/dev/console too); TERM=xterm unless set")
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
    parser.add_argument("--network", "--net", action="append", default=None, metavar="MODE",
                        help="bridge (default: an address on the daemon's bridge), none (loopback only), "
                             "host (the host's network), container:NAME (share that container's) or a "
                             "network made with `network create` (repeatable: an interface on each)")
    parser.add_argument("--network-alias", "--net-alias", action="append", default=[], metavar="ALIAS",
                        help="another name of the container on its first user-defined network (repeatable)")
    parser.add_argument("--ip", default=None, metavar="IPv4", help="its address on its first user-defined network")
    parser.add_argument("--ip6", default=None, metavar="IPv6",
                        help="its IPv6 address on its first user-defined network (one made with --ipv6)")
    parser.add_argument("-p", "--publish", action="append", default=[], metavar="[HOSTIP:][HOSTPORT[-END]:]PORT[-END][/PROTO]",
                        help="publish a container port or range on the host (repeatable; tcp or udp; an IPv6 "
                             "HOSTIP in brackets, [::1]:8080:80; served by iptables DNAT, docs/network.md)")
    parser.add_argument("-P", "--publish-all", action="store_true",
                        help="publish the image's exposed ports on random host ports")
    parser.add_argument("--add-host", action="append", default=[], metavar="HOST:IP",
                        help="add a line to the container's /etc/hosts (repeatable)")
    parser.add_argument("--dns", action="append", default=[], metavar="IP",
                        help="a name server for the container's /etc/resolv.conf (repeatable); on a "
                             "user-defined network, where its embedded DNS server forwards other names")
    parser.add_argument("--dns-search", action="append", default=[], metavar="DOMAIN",
                        help="a search domain for /etc/resolv.conf (repeatable; '.' for none)")
    parser.add_argument("--dns-option", "--dns-opt", action="append", default=[], metavar="OPTION",
                        help="an options entry for /etc/resolv.conf, e.g. ndots:2 (repeatable)")
    resource_options(parser)
    parser.add_argument("--device", action="append", default=[], metavar="/dev/HOST[:/dev/CONTAINER[:rwm]]",
                        help="allow the container to use a host device (it may mknod it; repeatable)")
    parser.add_argument("--device-cgroup-rule", action="append", default=[], metavar="'TYPE MAJOR:MINOR RWM'",
                        help="allow devices by number in the devices cgroup, e.g. 'c 7:* rwm' (cgroup v1; "
                             "repeatable)")
    security_options(parser)
    mount_options(parser)
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
    if getattr(args, "device_cgroup_rule", None):
        resources["device_cgroup_rules"] = args.device_cgroup_rule
    return resources


def spec_from(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": args.image,
        "cmd": args.command,
        "env": env_entries(args.env, getattr(args, "env_file", None) or []),
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
    security_spec(args, spec)
    mount_spec(args, spec)
    labels = label_entries(getattr(args, "label_file", None) or [], getattr(args, "label", None) or [])
    if labels:
        spec["labels"] = labels
    if getattr(args, "init", None):
        spec["init"] = True
    if getattr(args, "init_path", None):
        spec["init_path"] = os.path.abspath(args.init_path)
    return spec


def security_options(parser: argparse.ArgumentParser) -> None:
    """The security flags (docs/security.md)."""
    parser.add_argument("--cap-add", action="append", default=[], metavar="CAP",
                        help="add a capability (CAP_NET_ADMIN or NET_ADMIN; ALL for every one; repeatable)")
    parser.add_argument("--cap-drop", action="append", default=[], metavar="CAP",
                        help="drop a capability (ALL for every one; repeatable)")
    parser.add_argument("--privileged", action="store_true",
                        help="every capability, no seccomp filter, no masked or read-only paths, every host device")
    parser.add_argument("--security-opt", action="append", default=[], metavar="OPTION",
                        help="seccomp=PROFILE.json|unconfined, no-new-privileges[=true|false] (repeatable)")
    parser.add_argument("--userns", default=None, metavar="host",
                        help="'host': no user namespace for this container when the daemon runs with "
                             "--userns-remap (its root is the host's root)")
    parser.add_argument("--uts", default=None, metavar="host",
                        help="'host': the host's UTS namespace, its hostname (the container cannot change it)")
    parser.add_argument("--group-add", action="append", default=[], metavar="GROUP",
                        help="another supplementary group for the process (name or id; repeatable)")
    parser.add_argument("--sysctl", action="append", default=[], metavar="KEY=VALUE",
                        help="a namespaced kernel parameter: net.*, kernel.msg*, kernel.shm*, kernel.sem, "
                             "fs.mqueue.* (repeatable)")


def security_spec(args: argparse.Namespace, spec: dict[str, Any]) -> None:
    """The security flags into the spec; a ``seccomp=FILE`` profile is read here, as docker's
    CLI does (the daemon gets its JSON)."""
    for flag, key in (("cap_add", "cap_add"), ("cap_drop", "cap_drop"), ("group_add", "group_add"),
                      ("sysctl", "sysctls")):
        if getattr(args, flag, None):
            spec[key] = list(getattr(args, flag))
    if getattr(args, "privileged", False):
        spec["privileged"] = True
    if getattr(args, "userns", None) is not None:
        spec["userns_mode"] = args.userns
    if getattr(args, "uts", None) is not None:
        spec["uts"] = args.uts
    options = []
    for entry in getattr(args, "security_opt", None) or []:
        key, separator, value = entry.partition("=")
        if not separator:
            key, separator, value = entry.partition(":")
        if key == "seccomp" and value and value != "unconfined":
            try:
                with open(value, encoding="utf-8") as file:
                    value = file.read()
            except OSError as exc:
                raise UsageError(f"invalid --security-opt seccomp={value}: {exc.strerror}") from None
            entry = f"seccomp={value}"
        options.append(entry)
    if options:
        spec["security_opt"] = options


def mount_options(parser: argparse.ArgumentParser) -> None:
    """Volumes and mounts (docs/volumes.md); the daemon parses them (supervisor/mounts.py)."""
    parser.add_argument("-v", "--volume", action="append", default=[], metavar="[HOST-DIR|NAME:]CONTAINER-DIR[:OPTS]",
                        help="a bind mount (HOST-DIR absolute; made if missing), a named volume (made on first "
                             "use) or an anonymous one (CONTAINER-DIR alone); OPTS: ro, rw, a propagation, nocopy "
                             "(repeatable)")
    parser.add_argument("--mount", action="append", default=[], metavar="type=bind|volume|tmpfs,...",
                        help="a mount in docker's long form: type=, source=, target=, readonly, bind-propagation=, "
                             "volume-nocopy, tmpfs-size=, tmpfs-mode= (repeatable)")
    parser.add_argument("--tmpfs", action="append", default=[], metavar="PATH[:OPTIONS]",
                        help="a tmpfs on PATH (default noexec,nosuid,nodev; size=, mode=...; repeatable)")
    parser.add_argument("--read-only", action="store_true",
                        help="mount the root filesystem read-only (volumes, tmpfs, /dev, /proc stay as they are)")
    parser.add_argument("--volumes-from", action="append", default=[], metavar="CONTAINER[:ro|rw]",
                        help="the volumes and binds of another container (repeatable)")
    parser.add_argument("--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]",
                        help="a resource limit (nofile, nproc, core, memlock, stack, ...; -1 unlimited; repeatable); "
                             "default nofile=1048576:1048576 as docker")
    parser.add_argument("--shm-size", default=None, metavar="SIZE", help="size of /dev/shm (default 64m)")


def mount_spec(args: argparse.Namespace, spec: dict[str, Any]) -> None:
    """The mount flags into the spec, as given (the daemon validates them)."""
    for flag, key in (("volume", "volumes"), ("mount", "mounts"), ("tmpfs", "tmpfs"), ("volumes_from", "volumes_from")):
        if getattr(args, flag, None):
            spec[key] = list(getattr(args, flag))
    if getattr(args, "read_only", False):
        spec["read_only"] = True
    if getattr(args, "ulimit", None):
        spec["ulimits"] = list(args.ulimit)
    if getattr(args, "shm_size", None) is not None:
        spec["shm_size"] = args.shm_size


def network_spec(args: argparse.Namespace, spec: dict[str, Any]) -> None:
    """The network flags into the spec (the daemon validates them)."""
    networks = getattr(args, "network", None) or []
    if networks:
        spec["network"] = networks[0]
    endpoint = {key: value for key, value in (("aliases", getattr(args, "network_alias", None)),
                                               ("ipv4", getattr(args, "ip", None)),
                                               ("ipv6", getattr(args, "ip6", None))) if value}
    user = [name for name in networks if name not in ("bridge", "host", "none") and not name.startswith("container:")]
    if endpoint and (not user or user[0] != networks[0]):  # docker: these flags are about the first network
        raise UsageError("--network-alias, --ip and --ip6 need a user-defined network as the first --network")
    if endpoint or len(networks) > 1:
        spec["endpoints"] = {name: (endpoint if name == networks[0] else {}) for name in user}
    for flag, key in (("publish", "publish"), ("add_host", "add_host"), ("dns", "dns"), ("dns_search", "dns_search"),
                      ("dns_option", "dns_option")):
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
    return key_values(entries, "--log-opt", example="max-size=10m")
