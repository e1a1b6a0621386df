"""The daemon's config file (``dockyard daemon --config FILE``): TOML, keys named as the
daemon's flags. A flag given on the command line wins over the file.

    # /etc/dockyard/daemon.toml
    root = "/var/lib/dockyard"
    run = "/run/dockyard"
    cgroup-parent = "dockyard"
    log-format = "json"
    log-level = "info"          # reloadable
    stats-interval = 1.0        # reloadable
    shutdown-timeout = 30       # reloadable
    workers = ["logcollector", "monitor"]   # the default; [] for none
    default-pids-limit = 4096   # -1: none
    default-ulimits = ["nproc=4096:8192"]   # as --default-ulimit
    init = true                 # as --init
    init-path = "/usr/bin/tini-static"      # as --init-path
    userns-remap = "default"    # or "USER[:GROUP]" (docs/security.md)
    api = ["tcp://127.0.0.1:2375"]          # as --api, the Engine API's extra addresses

On SIGHUP the daemon reads the file again and applies the keys in :data:`RELOADABLE`; a
changed key outside it is reported in the log (it needs a restart) and keeps its value. A
file that does not parse or has a bad value changes nothing: the error is logged and the
daemon carries on with what it had.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from supervisor.errors import InvalidArgument

LOG_FORMATS = ("logfmt", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
#: key -> (accepted types, what it must be)
KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "root": ((str,), "a path"),
    "run": ((str,), "a path"),
    "cgroup-parent": ((str,), "a cgroup name"),
    "cgroup-root": ((str,), "a path"),
    "log-format": ((str,), f"one of {', '.join(LOG_FORMATS)}"),
    "log-level": ((str,), f"one of {', '.join(LOG_LEVELS)}"),
    "stats-interval": ((int, float), "seconds >= 0"),
    "shutdown-timeout": ((int, float), "seconds >= 0"),
    "workers": ((list,), "a list of worker names"),
    "insecure-registries": ((list,), "a list of HOST[:PORT]"),
    "default-pids-limit": ((int,), "a positive number of processes, or -1 for none"),
    "max-connections": ((int,), "a whole number >= 1"),
    "max-requests-in-flight": ((int,), "a whole number >= 1"),
    "subscriber-queue-bytes": ((int,), "a whole number >= 1"),
    "events-journal": ((int,), "a whole number >= 2"),
    "events-listen": ((str,), "tcp://ADDR:PORT"),
    "default-ulimits": ((list,), "a list of NAME=SOFT[:HARD]"),
    "init": ((bool,), "true or false"),
    "init-path": ((str,), "an absolute path"),
    "userns-remap": ((str,), "default or USER[:GROUP]"),
    "subuid-file": ((str,), "a path"),
    "subgid-file": ((str,), "a path"),
    "userns-layers": ((str,), "auto, idmapped or copy"),
    "live-restore": ((bool,), "true or false"),
    "api": ((list,), "a list of tcp://HOST:PORT or unix:///PATH"),
    "tlsverify": ((bool,), "true or false"),
    "tlscacert": ((str,), "a path"),
    "tlscert": ((str,), "a path"),
    "tlskey": ((str,), "a path"),
}
RELOADABLE = frozenset({"log-level", "stats-interval", "shutdown-timeout"})


def load(path: str | Path) -> dict[str, Any]:
    """The file's settings, checked. Raises InvalidArgument naming the file and the key."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise InvalidArgument(f"cannot read config file {path}: {exc.strerror}", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"config file {path} is not valid TOML: {exc}", path=str(path)) from None
    for key, value in data.items():
        if key not in KEYS:
            raise InvalidArgument(f"config file {path}: unknown key {key!r} (known: {', '.join(KEYS)})", path=str(path))
        kinds, what = KEYS[key]
        bad = not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
        if not bad and key == "log-format":
            bad = value not in LOG_FORMATS
        elif not bad and key == "log-level":
            bad = value not in LOG_LEVELS
        elif not bad and key in ("stats-interval", "shutdown-timeout"):
            bad = not value >= 0
        elif not bad and key == "default-pids-limit":
            bad = not (value == -1 or value > 0)
        elif not bad and key in ("max-connections", "max-requests-in-flight", "subscriber-queue-bytes"):
            bad = value < 1
        elif not bad and key == "events-journal":
            bad = value < 2
        elif not bad and key == "default-ulimits":
            bad = not all(isinstance(entry, str) for entry in value)
        elif not bad and key in ("workers", "api"):
            bad = not all(isinstance(name, str) for name in value)
        if bad:
            raise InvalidArgument(f"config file {path}: {key} must be {what}, not {value!r}", path=str(path))
    return data


def changes(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the reloadable settings that changed, the names of changed keys that need a restart)."""
    changed = {key for key in set(old) | set(new) if old.get(key) != new.get(key)}
    apply = {key: new.get(key) for key in changed & RELOADABLE}
    return apply, sorted(changed - RELOADABLE)
