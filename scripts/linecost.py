"""CPU of dockyard's own processes per 1000 lines of output written a line at a time
(issue 26; docs/logs.md "Output a line at a time").

Starts a private daemon (as the tests do: tests/conftest.py ``private_daemon``), runs a
container that writes LINES lines, one ``echo`` each with busybox ``usleep 1000`` between
them, and reads utime + stime (/proc/PID/stat, all threads) of the daemon and each of its
worker processes (its descendants outside the containers' cgroups) before and after: for
``run`` and ``idle`` from the moment the started container is let go (a file in a bind
mount) until a second after ``wait`` returned (the container's start is left out); for
``exec`` and ``attached`` around the whole command.

    .venv/bin/python scripts/linecost.py [--lines 5000] [--modes run,exec,idle] [--repeat 1]
                                         [--profile DIR]

Modes: ``run`` (``run -d`` + ``wait``: stored output, nobody reading live), ``attached``
(``run`` attached: stored and forwarded to the client), ``follow`` (``run -d`` with a ``logs
-f -t`` reading it: its latency is printed too), ``exec`` (``exec`` of the loop in a
running container: forwarded, not stored), ``idle`` (the same loop without ``echo``: the
floor a running container costs). ``--profile DIR`` records py-spy flame data of the daemon
and the workers during each mode (py-spy must be installed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import DOCKYARD, private_daemon  # noqa: E402
from tests.rootfs import build_rootfs_tar  # noqa: E402

LOOP = "i=0; while [ $i -lt {lines} ]; do {echo}usleep 1000; i=$((i+1)); done"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def role(pid: int, cgroup_parent: str) -> str | None:
    """A name for one of the daemon's processes; None for a container's."""
    try:
        if cgroup_parent in Path(f"/proc/{pid}/cgroup").read_text():
            return None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [a.decode(errors="replace") for a in argv if a]
    if "workers" in words[:-1]:  # python -m workers NAME ...
        return words[words.index("workers") + 1]
    tail = next((w for w in words if not w.startswith("-") and "python" not in w and not w.endswith("dockyard")), "")
    return Path(tail).name or "helper"


def processes(daemon_pid: int, cgroup_parent: str) -> dict[str, list[int]]:
    """Role -> pids: the daemon and its descendants outside the containers' cgroups."""
    found: dict[str, list[int]] = {"daemon": [daemon_pid]}
    todo = children(daemon_pid)
    while todo:
        pid = todo.pop()
        name = role(pid, cgroup_parent)
        if name is None:
            continue
        found.setdefault(name, []).append(pid)
        todo += children(pid)
    return found


def snapshot(daemon_pid: int, cgroup_parent: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for name, pids in processes(daemon_pid, cgroup_parent).items():
        for pid in pids:
            try:
                totals[name] = totals.get(name, 0.0) + cpu_seconds(pid)
            except OSError:
                pass
    return totals


class Follower:
    """``logs -f -t`` of a container: the time each line is printed minus its ts (the read of
    its record's first line), in ms."""

    def __init__(self, daemon, name: str):
        import threading

        self.process = subprocess.Popen([DOCKYARD, "logs", "-f", "-t", name], env=daemon.env,
                                        stdout=subprocess.PIPE)
        self.latencies: list[float] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        from datetime import datetime

        for line in self.process.stdout:
            now = time.time()
            stamp = line.split(b" ", 1)[0].decode().replace("Z", "+00:00")
            self.latencies.append((now - datetime.fromisoformat(stamp).timestamp()) * 1000)

    def finish(self, lines: int) -> None:
        self.process.wait(60)
        self.thread.join(10)
        got = sorted(self.latencies)
        assert len(got) == lines, f"logs -f printed {len(got)} lines of {lines}"
        print(f"follow: logs -f latency p50 {got[len(got) // 2]:.1f} ms, p99 {got[len(got) * 99 // 100]:.1f} ms, "
              f"max {got[-1]:.1f} ms", flush=True)


def measure(daemon, mode: str, lines: int, settle: float) -> tuple[dict[str, float], float, int | None]:
    """CPU seconds per process role spent while the loop ran (and ``settle`` s after), the
    wall time of the loop, and the records its output became (None: not stored)."""
    pid = daemon.process.pid
    loop = LOOP.format(lines=lines, echo="" if mode == "idle" else "echo line $i; ")
    go = Path(tempfile.mkdtemp(prefix="dy-linecost-go-"))
    if mode == "exec":
        name = daemon.out("run", "-d", "base", "sleep", "1000").strip()
        time.sleep(settle)
    elif mode in ("run", "idle", "follow"):  # started first, so that the figures leave the start out
        name = daemon.out("run", "-d", "-v", f"{go}:/go", "base", "sh", "-c",
                          f"while [ ! -e /go/go ]; do usleep 10000; done; {loop}").strip()
        time.sleep(settle)
    before = snapshot(pid, daemon.cgroup_parent)
    start = time.monotonic()
    if mode in ("exec", "attached"):
        command = ["exec", name] if mode == "exec" else ["run", "--name", f"attached-{time.monotonic_ns()}", "base"]
        result = subprocess.run([sys.executable, "-m", "supervisor.cli", *command, "sh", "-c", loop],
                                env=daemon.env, stdout=subprocess.PIPE, check=True)
        assert result.stdout.count(b"\n") == lines, result.stdout[-200:]
        name = command[2] if mode == "attached" else name
    else:
        follower = None
        if mode == "follow":
            follower = Follower(daemon, name)
            time.sleep(settle)  # its first request is there: it reads live from the first line on
        (go / "go").touch()
        daemon.out("wait", name)
        if follower is not None:
            follower.finish(lines)
    wall = time.monotonic() - start
    time.sleep(settle)
    after = snapshot(pid, daemon.cgroup_parent)
    records = None
    if mode in ("run", "attached", "follow"):
        stored = daemon.out("logs", name).count("\n")
        assert stored == lines, f"stored {stored} lines of {lines}"
        from bus.client import Client

        with Client(daemon.run_dir) as client:
            status = client.request("logs.status", {"container": name})["containers"][0]
        records = sum(stream["last"] for stream in status["streams"].values())
    if mode == "exec":
        daemon.out("rm", "-f", name)
    else:
        daemon.out("rm", name)
    (go / "go").unlink(missing_ok=True)
    go.rmdir()
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}, wall, records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--modes", default="run,exec,idle")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds waited after the loop (acks, stats)")
    parser.add_argument("--profile", type=Path, help="py-spy records of the daemon and collector during `run`")
    parser.add_argument("--daemon-arg", action="append", default=[], help="one more `dockyard daemon` flag")
    options = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="dy-linecost-"))
    tar = build_rootfs_tar(base / "busybox.tar")
    with private_daemon(base / "d", tar, *options.daemon_arg) as daemon:
        time.sleep(options.settle)
        for mode in options.modes.split(","):
            for _ in range(options.repeat):
                spies = []
                if options.profile:
                    options.profile.mkdir(parents=True, exist_ok=True)
                    for name, pids in processes(daemon.process.pid, daemon.cgroup_parent).items():
                        if name in ("daemon", "logcollector", "monitor"):
                            spies.append(subprocess.Popen(
                                ["py-spy", "record", "-r", "250", "-f", "raw", "-o", str(options.profile / f"{mode}-{name}.txt"),
                                 "-p", str(pids[0])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                    time.sleep(1.0)
                cpu, wall, records = measure(daemon, mode, options.lines, options.settle)
                for spy in spies:
                    spy.send_signal(2)
                    spy.wait()
                per = {k: v * 1000 / options.lines * 1000 for k, v in sorted(cpu.items())}
                total = sum(per.values())
                shown = " ".join(f"{k} {v:.0f}" for k, v in per.items())
                print(f"{mode}: {options.lines} lines in {wall:.1f} s ({options.lines / wall:.0f}/s); "
                      + (f"{records} records; " if records is not None else "")
                      + f"ms CPU per 1000 lines: {shown}; all {total:.0f}; "
                      f"share of one core {100 * sum(cpu.values()) / (wall + options.settle):.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
