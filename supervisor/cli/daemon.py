"""`dockyard daemon` and `dockyard worker`: the only commands that import the daemon's code
(trio, structlog, pyzmq), and only when they run."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .common import UsageError, fail


#: The commands :func:`register` adds (parser.py registers only the group a command line names).
COMMANDS = ("daemon", "worker")


def register(sub: Any) -> None:
    """Add this module's commands to the subparsers ``sub``."""
    p = sub.add_parser("daemon", help="run the supervisor daemon in the foreground")
    p.add_argument("--root", default=None, metavar="DIR", help="state directory (default $DOCKYARD_ROOT or /var/lib/dockyard)")
    p.add_argument("--run", dest="daemon_run", default=None, metavar="DIR",
                   help="run directory for the sockets (default $DOCKYARD_RUN or /run/dockyard)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TOML file with these settings (flags win); SIGHUP reloads log-level, stats-interval "
                        "and shutdown-timeout from it (docs/operations.md)")
    p.add_argument("--cgroup-parent", default=None, help="cgroup that holds this daemon's containers (default dockyard)")
    p.add_argument("--cgroup-root", default=None, metavar="DIR",
                   help="where the cgroup hierarchies are mounted (default /sys/fs/cgroup; docs/operations.md)")
    p.add_argument("--log-format", choices=["logfmt", "json"], default=None, help="format of the daemon's log on stderr")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None)
    p.add_argument("--stats-interval", type=float, default=None, metavar="SECONDS",
                   help="seconds between two samples of every container's resource usage (default 1; 0: off)")
    p.add_argument("--workers", default=None, metavar="NAMES",
                   help="comma-separated workers the daemon starts and keeps running (default: all, "
                        "logcollector,monitor,api; 'none': none, for workers run as their own units with "
                        "`dockyard worker`; without a log collector no output is stored)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="a registry to reach over plain HTTP or unverified TLS (repeatable; loopback always is)")
    p.add_argument("--default-pids-limit", type=int, default=None, metavar="N",
                   help="the pids limit of a container created without --pids-limit (default 4096; -1: none)")
    p.add_argument("--default-ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]",
                   help="a limit for containers that set no --ulimit of that name (repeatable; docker's nofile "
                        "default applies without one)")
    p.add_argument("--init", action="store_true", default=None,
                   help="run an init (tini) as pid 1 of every container created without --init (docker's)")
    p.add_argument("--init-path", default=None, metavar="PATH",
                   help="the init binary of --init (default: docker-init or tini-static from the PATH)")
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
    p.add_argument("--api", action="append", default=[], metavar="ADDRESS",
                   help="serve the Engine API there too, besides <run>/docker.sock: tcp://HOST:PORT (loopback "
                        "only, unless --tlsverify) or unix:///PATH (repeatable; docs/api.md)")
    tls_options(p)
    p.add_argument("--userns-remap", default=None, metavar="default|USER[:GROUP]",
                   help="run containers in a user namespace: their root is USER's first subordinate uid on the "
                        "host (/etc/subuid, /etc/subgid); 'default' creates the system user dockyard and its "
                        "range where missing (docs/security.md; a container opts out with --userns host)")
    p.add_argument("--userns-layers", choices=["auto", "idmapped", "copy"], default=None,
                   help="image layers under --userns-remap: idmapped mounts where the kernel takes them on "
                        "overlay, else a chowned copy per mapping (auto, the default); or insist on one")
    p.add_argument("--subuid-file", default=None, metavar="FILE",
                   help="the subordinate uids for --userns-remap (default /etc/subuid)")
    p.add_argument("--subgid-file", default=None, metavar="FILE",
                   help="the subordinate gids for --userns-remap (default /etc/subgid)")
    p.add_argument("--events-listen", default=None, metavar="tcp://ADDR:PORT",
                   help="serve the events socket there too, to remote subscribers whose CURVE public key was "
                        "added with `dockyard events-keys add` (encrypted, subscription-only; docs/events.md)")
    p.add_argument("--events-journal", type=int, default=None, metavar="N",
                   help="lifecycle events kept on disk for `events --since/--since-seq` (default 10000)")
    p.add_argument("--ip-masq", action="store_true",
                   help="masquerade traffic from the bridge subnet leaving through other interfaces (iptables)")
    p.add_argument("--live-restore", nargs="?", const="true", default=None, choices=("true", "false"),
                   metavar="true|false",
                   help="containers keep running when the daemon stops, dies or is upgraded, and the next daemon "
                        "adopts them, output included (default true; false: a stop stops them all). Under systemd "
                        "it needs KillMode=process (docs/operations.md)")
    p.add_argument("--userland-proxy", action="store_true",
                   help="serve published ports with the daemon's userland proxy instead of iptables DNAT "
                        "(the fallback when iptables is missing; docs/network.md)")
    p.set_defaults(handler=cmd_daemon, client=False)

    p = sub.add_parser("worker", help="run one of the daemon's workers on its own, in the foreground")
    p.add_argument("name", metavar="NAME", help="the worker (the daemon lists them in `info`)")
    p.add_argument("--root", default=None, metavar="DIR", help="the daemon's state directory (default $DOCKYARD_ROOT or /var/lib/dockyard)")
    p.add_argument("--run", dest="daemon_run", default=None, metavar="DIR",
                   help="the daemon's run directory (default $DOCKYARD_RUN or /run/dockyard)")
    p.add_argument("--log-format", choices=["logfmt", "json"], default="logfmt", help="format of the worker's log on stderr")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.add_argument("--api", action="append", default=[], metavar="ADDRESS",
                   help="the api worker: serve there too (tcp://HOST:PORT, loopback only unless --tlsverify, "
                        "or unix:///PATH; repeatable)")
    tls_options(p)
    p.set_defaults(handler=cmd_worker, client=False)


def tls_options(p: Any) -> None:
    """dockerd's TLS flags, for the Engine API's TCP addresses (docs/api.md, "TLS")."""
    p.add_argument("--tlsverify", action="store_true", default=None,
                   help="serve the API's TCP addresses over TLS, requiring a client certificate signed by "
                        "--tlscacert (needed for a non-loopback --api address)")
    p.add_argument("--tlscacert", default=None, metavar="FILE", help="the CA that signs the clients' certificates")
    p.add_argument("--tlscert", default=None, metavar="FILE", help="the API's certificate")
    p.add_argument("--tlskey", default=None, metavar="FILE", help="the API certificate's key")


def api_tls(verify: Any, cacert: Any, cert: Any, key: Any) -> tuple[str, ...]:
    """``(cacert, cert, key)`` for ``--tlsverify`` (absolute paths: the worker runs elsewhere),
    ``()`` without it. The files without --tlsverify are refused: dockyard serves TLS only with
    client certificates (dockerd's ``--tls`` alone would let anyone in)."""
    if not verify:
        given = [flag for flag, value in (("--tlscacert", cacert), ("--tlscert", cert), ("--tlskey", key)) if value]
        if given:
            raise UsageError(f"{', '.join(given)} without --tlsverify: the API is served over TLS only with client "
                             "certificates; add --tlsverify")
        return ()
    return tuple(os.path.abspath(path) if path else "" for path in (cacert, cert, key))


def cmd_daemon(args: argparse.Namespace) -> int:
    from supervisor import configfile
    from supervisor.config import DEFAULT_PIDS_LIMIT, Config, default_root, default_run_dir
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
        "cgroup-root": args.cgroup_root,
        "log-format": args.log_format, "log-level": args.log_level, "stats-interval": args.stats_interval,
        "workers": args.workers, "default-pids-limit": args.default_pids_limit,
        "max-connections": args.max_connections, "max-requests-in-flight": args.max_requests_in_flight,
        "subscriber-queue-bytes": args.subscriber_queue_bytes, "events-journal": args.events_journal,
        "events-listen": args.events_listen, "init": args.init, "init-path": args.init_path,
        "userns-remap": args.userns_remap, "subuid-file": args.subuid_file, "subgid-file": args.subgid_file,
        "userns-layers": args.userns_layers, "tlsverify": args.tlsverify, "tlscacert": args.tlscacert,
        "tlscert": args.tlscert, "tlskey": args.tlskey,
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
            cgroup_root=setting("cgroup-root", "/sys/fs/cgroup"),
            stats_interval=float(setting("stats-interval", 1.0)),
            shutdown_timeout=float(setting("shutdown-timeout", 30.0)),
            workers=tuple(workers) if workers is not None else None,
            insecure_registries=tuple(args.insecure_registry or setting("insecure-registries", [])),
            max_connections=setting("max-connections", 4096),
            max_requests_in_flight=setting("max-requests-in-flight", 1024),
            subscriber_queue_bytes=setting("subscriber-queue-bytes", 8 << 20),
            journal_events=setting("events-journal", 10_000),
            events_listen=checked_endpoint(setting("events-listen", None)),
            default_pids_limit=setting("default-pids-limit", DEFAULT_PIDS_LIMIT),
            default_ulimits=tuple(args.default_ulimit or setting("default-ulimits", [])),
            live_restore=(args.live_restore or str(setting("live-restore", "true")).lower()) == "true",
            api_addresses=tuple(args.api or setting("api", [])),
            api_tls=api_tls(setting("tlsverify", False), setting("tlscacert", None), setting("tlscert", None),
                            setting("tlskey", None)),
            init=bool(setting("init", False)),
            init_path=os.path.abspath(args.init_path) if args.init_path else settings.get("init-path", ""),
            userns_remap=setting("userns-remap", ""),
            subuid_file=setting("subuid-file", "/etc/subuid"),
            subgid_file=setting("subgid-file", "/etc/subgid"),
            userns_layers=setting("userns-layers", "auto"),
            **network_settings(args),
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    reloader = Reloader(os.path.abspath(args.config), dict(settings), given) if args.config is not None else None
    return daemon_main(config, setting("log-format", "logfmt"), setting("log-level", "info"), reloader)


def checked_endpoint(endpoint: str | None) -> str | None:
    """--events-listen, checked: tcp://ADDR:PORT (ValueError naming the flag otherwise)."""
    if endpoint is None:
        return None
    from bus.remote import RemoteError, check_endpoint

    try:
        check_endpoint(endpoint)
    except RemoteError as exc:
        raise ValueError(f"--events-listen: {exc}") from None
    return endpoint


def network_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The daemon's network flags as Config fields (only those given)."""
    settings: dict[str, Any] = {}
    if args.bridge_name is not None:
        settings["bridge_name"] = args.bridge_name
    if args.bridge_subnet is not None:
        settings["bridge_subnet"] = args.bridge_subnet
    if args.ip_masq:
        settings["ip_masq"] = True
    if args.userland_proxy:
        settings["userland_proxy"] = True
    return settings


def cmd_worker(args: argparse.Namespace) -> int:
    from supervisor.config import check_api_address, check_api_tls, default_root, default_run_dir
    from workers.runner import main as worker_main

    tls = api_tls(args.tlsverify, args.tlscacert, args.tlscert, args.tlskey)
    try:
        if tls:
            check_api_tls(*tls)
        for address in args.api:
            check_api_address(address, tls=bool(tls))
    except ValueError as error:
        raise UsageError(str(error)) from None

    return worker_main(args.name, args.root or default_root(), args.daemon_run or args.run_dir or default_run_dir(),
                       args.log_format, args.log_level, listen=tuple(args.api), tls=tls)
