"""``dockyard-runtime``: the OCI runtime command line in runc's shape (docs/runtime.md).

Global options come before the command, as runc's: ``--root`` (default
/run/dockyard-runtime), ``--log FILE``, ``--log-format text|json`` (containerd and conmon
read the JSON lines ``{"level": "error", "msg": ..., "time": ...}``), ``--debug``,
``--systemd-cgroup`` (refused: no systemd cgroup driver). Go's flag syntax is accepted too
(``-pid-file X``, ``--pid-file=X``). A failure prints its message to stderr, logs it, and
exits with 1; ``run`` and a foreground ``exec`` exit with the process's code.
"""

from __future__ import annotations

import os
import sys

from supervisor.ociruntime import flags, prelude
from supervisor.ociruntime.errors import RuntimeCommandError
from supervisor.ociruntime.state import DEFAULT_ROOT, OCI_VERSION, StateStore, now_rfc3339

VERSION = "0.1.0"


class Logger:
    """runc's log: text or JSON lines to ``--log`` (stderr without one)."""

    def __init__(self, path: str = "", json_format: bool = False, debug: bool = False):
        self.path, self.json_format, self.debug_enabled = path, json_format, debug

    def log(self, level: str, message: str) -> None:
        if level == "debug" and not self.debug_enabled:
            return
        import json

        if self.json_format:
            line = json.dumps({"level": level, "msg": message, "time": now_rfc3339()})
        else:
            line = f'time="{now_rfc3339()}" level={level} msg={json.dumps(message)}'
        if self.path:
            try:
                with open(self.path, "a") as file:
                    file.write(line + "\n")
                return
            except OSError:
                pass
        print(line, file=sys.stderr)

    def error(self, message: str) -> None:
        """Logged, and the message alone on stderr (runc's ``fatal``: both, even when the log
        is stderr)."""
        self.log("error", message)
        print(message, file=sys.stderr)

    def warn(self, message: str) -> None:
        self.log("warning", message)


def build_parser() -> "argparse.ArgumentParser":
    import argparse  # not for the hot commands: supervisor/ociruntime/flags.py parses those

    parser = argparse.ArgumentParser(prog="dockyard-runtime", description="dockyard's OCI runtime (runc's command line)")
    parser.add_argument("--version", "-v", action="store_true", help="print the version")
    parser.add_argument("--root", default=DEFAULT_ROOT, help="where the containers' state is kept (default %(default)s)")
    parser.add_argument("--log", default="", help="log file (default: stderr)")
    parser.add_argument("--log-format", default="text", choices=("text", "json"), help="log format")
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    parser.add_argument("--systemd-cgroup", action="store_true", help="refused: no systemd cgroup driver")
    parser.add_argument("--rootless", default="auto", help="accepted for runc's callers; must be false or auto")
    parser.add_argument("--criu", default="", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, text: str) -> "argparse.ArgumentParser":
        return commands.add_parser(name, help=text, description=text)

    for name, text in (("create", "create a container from a bundle; its process waits for start"),
                       ("run", "create and start a container; wait for it unless --detach")):
        sub = command(name, text)
        sub.add_argument("--bundle", "-b", default=".", help="the bundle directory (default: .)")
        sub.add_argument("--pid-file", default="", help="write the container process's pid here")
        sub.add_argument("--console-socket", default="", help="AF_UNIX socket that receives the pty master")
        sub.add_argument("--no-pivot", action="store_true", help="chroot instead of pivot_root (root on a ramfs)")
        sub.add_argument("--no-new-keyring", action="store_true", help="accepted: no session keyring is made")
        sub.add_argument("--preserve-fds", type=int, default=0, help=argparse.SUPPRESS)
        if name == "run":
            sub.add_argument("--detach", "-d", action="store_true", help="do not wait for the container")
            sub.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
        sub.add_argument("id")
    command("start", "start a created container").add_argument("id")
    command("state", "print the state of a container (JSON)").add_argument("id")
    sub = command("kill", "send a signal to the container's process (default TERM)")
    sub.add_argument("--all", "-a", action="store_true", help="signal every process of the container's cgroup")
    sub.add_argument("id")
    sub.add_argument("signal", nargs="?", default="TERM")
    sub = command("delete", "delete a container (a running one only with --force)")
    sub.add_argument("--force", "-f", action="store_true", help="kill it first if it runs")
    sub.add_argument("id")
    sub = command("exec", "run a new process in a container")
    sub.add_argument("--process", "-p", default="", help="the process as an OCI process JSON file")
    sub.add_argument("--tty", "-t", action="store_true", help="give the process a terminal (needs --console-socket)")
    sub.add_argument("--console-socket", default="")
    sub.add_argument("--detach", "-d", action="store_true", help="do not wait for the process")
    sub.add_argument("--pid-file", default="")
    sub.add_argument("--cwd", default="")
    sub.add_argument("--env", "-e", action="append", default=[])
    sub.add_argument("--user", "-u", default="", help="UID[:GID]")
    sub.add_argument("--additional-gids", "-g", action="append", type=int, default=[])
    sub.add_argument("--cap", "-c", action="append", default=[])
    sub.add_argument("--no-new-privs", action="store_true")
    sub.add_argument("--preserve-fds", type=int, default=0, help=argparse.SUPPRESS)
    sub.add_argument("id")
    sub.add_argument("args", nargs=argparse.REMAINDER)
    sub = command("ps", "list the processes of a container")
    sub.add_argument("--format", "-f", default="table", choices=("table", "json"))
    sub.add_argument("id")
    sub.add_argument("ps_args", nargs=argparse.REMAINDER)
    sub = command("list", "list the containers")
    sub.add_argument("--format", "-f", default="table", choices=("table", "json"))
    sub.add_argument("--quiet", "-q", action="store_true")
    command("pause", "freeze every process of a container").add_argument("id")
    command("resume", "thaw a paused container").add_argument("id")
    sub = command("update", "change a container's resource limits")
    sub.add_argument("--resources", "-r", default="", help="an OCI linux.resources JSON file ('-': stdin)")
    sub.add_argument("--memory", type=int)
    sub.add_argument("--pids-limit", type=int)
    sub.add_argument("--cpu-shares", type=int)
    sub.add_argument("--cpu-quota", type=int)
    sub.add_argument("--cpu-period", type=int)
    sub.add_argument("--cpuset-cpus", default=None)
    sub.add_argument("id")
    sub = command("events", "print a container's figures (JSON lines)")
    sub.add_argument("--stats", action="store_true", help="print them once and exit")
    sub.add_argument("--interval", type=float, default=5.0, help="seconds between two (default 5)")
    sub.add_argument("id")
    command("features", "print what this runtime supports (JSON)")
    sub = command("spec", "write a starter config.json")
    sub.add_argument("--bundle", "-b", default=".")
    sub.add_argument("--rootless", action="store_true")
    for name in ("checkpoint", "restore"):
        command(name, "not supported").add_argument("rest", nargs=argparse.REMAINDER)
    return parser


#: Long options that Go's flag package also takes with one dash (``-pid-file``).
LONG_OPTIONS = ("root", "log", "log-format", "debug", "systemd-cgroup", "rootless", "bundle", "pid-file",
                "console-socket", "no-pivot", "no-new-keyring", "detach", "force", "all", "process", "tty",
                "format", "resources", "stats", "interval", "cwd", "env", "user", "preserve-fds", "criu",
                "no-new-privs", "additional-gids", "cap", "quiet", "version", "help", "keep")


def normalize(argv: list[str]) -> list[str]:
    """Go-style single-dash long options to argparse's double dash, up to ``--``."""
    result = []
    for index, arg in enumerate(argv):
        if arg == "--":
            return result + argv[index:]
        if arg.startswith("-") and not arg.startswith("--") and arg[1:].split("=", 1)[0] in LONG_OPTIONS:
            arg = "-" + arg
        result.append(arg)
    return result


def main(argv: list[str] | None = None) -> int:
    prelude.ensure_stdio()
    argv = sys.argv[1:] if argv is None else argv
    arguments = flags.parse(argv, DEFAULT_ROOT) or build_parser().parse_args(normalize(argv))
    logger = Logger(arguments.log, arguments.log_format == "json", arguments.debug)
    if arguments.command in ("run", "create", "exec") and not prelude.warmed_up:  # they move a process
        from supervisor.ociruntime.warmup import AttachWarmUp                       # into a cgroup

        AttachWarmUp()
    if arguments.version:
        print(f"dockyard-runtime version {VERSION}\nspec: {OCI_VERSION}")
        return 0
    try:
        if arguments.systemd_cgroup:
            raise RuntimeCommandError("--systemd-cgroup is not supported: dockyard-runtime has only the cgroupfs "
                                      "driver (podman: --cgroup-manager cgroupfs; containerd: SystemdCgroup = false)")
        if arguments.command is None:
            build_parser().print_help()
            return 0
        from supervisor.ociruntime import commands

        return commands.dispatch(arguments, StateStore(arguments.root), logger) or 0
    except RuntimeCommandError as exc:
        logger.error(exc.message)
        return exc.exit_code if exc.exit_code != 0 else 1
    except KeyboardInterrupt:
        return 130


def exit_with_main() -> None:
    """``dockyard-runtime``'s entry (bin/dockyard-runtime): main, stdio flushed, then
    ``os._exit``: the interpreter's teardown (modules, GC) is ~5 ms of a short command and
    there is nothing left to clean (every file is closed, the lock released). The cyclic
    garbage collector is off (bin/dockyard-runtime turns it off before the imports; here
    again for a script installed before it did)."""
    import gc

    gc.disable()
    try:
        code = main()
    except SystemExit as exc:  # argparse: --help, a usage error
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    prelude.discard()  # a stage 0 forked at start-up that no command took
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1  # stdout closed or full: as Python's own exit does (120 there)
    os._exit(code)


if __name__ == "__main__":
    exit_with_main()
