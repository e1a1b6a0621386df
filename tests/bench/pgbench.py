"""Issue 19's "done when" (``--only pgbench``): PostgreSQL's pgbench (4 clients, 2 threads,
the default TPC-B-like script) through ``-p 127.0.0.1::5432`` against the container's own
address, interleaved, with the daemon's CPU during the runs through the port. The server is
Debian's PostgreSQL 15 in a container made from the host's packages (``pgimage.py``),
its cluster on a tmpfs without fsync (the figure is about the network path). The client is
the host's pgbench; traffic stays on loopback and the daemon's bridge."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

from tests.bench import pgimage, procs
from tests.bench.stats import NOT_AVAILABLE, Figure, Measure, interleaved, ratio

NAME = "dockyard-bench-pgbench"
TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)


def pgbench_ports(bench) -> list[Figure]:
    """``pgbench_tps``: tps through the published port / to the container's address (target
    >= 0.9x), the daemon's CPU (% of one CPU, median of the runs through the port) in a note."""
    params = bench.params
    reps, seconds = params.ports_reps, 10.0 if params.ports_seconds >= 2 else 3.0
    figure = Figure("pgbench_tps", f"pgbench -c 4 -j 2 -T {seconds:g} through -p 127.0.0.1::5432",
                    ">= 0.9x the container address; the daemon's CPU near idle", "tps")
    tool = bench.tools.get("dockyard")
    why = pgimage.available() if tool is not None else "no dockyard daemon"
    if why:
        figure.status = f"{NOT_AVAILABLE}: {why}"
        bench.log(f"pgbench: {why}")
        return [figure] if tool is not None else []
    image = pgimage.build(bench.workspace.sub("pgbench"))
    tool.time(tool.remove([NAME]), timeout=60)
    try:
        imported = tool.time([*tool.cli(), "import", str(image), "bench-postgres"], timeout=300)
        run = tool.time([*tool.cli(), "run", "-d", "--name", NAME, "-u", "postgres", "--tmpfs",
                         "/data:size=512m,uid=999", "-p", "127.0.0.1::5432", "bench-postgres", "sh", "-c",
                         pgimage.SERVER], timeout=120)
        if not (imported.ok and run.ok):
            figure.status = f"{NOT_AVAILABLE}: {imported.stderr.strip()[-200:]} {run.stderr.strip()[-200:]}"
            return [figure]
        port = int(tool.time([*tool.cli(), "port", NAME, "5432"]).stdout.split()[0].rsplit(":", 1)[1])
        address = json.loads(tool.time([*tool.cli(), "inspect", NAME]).stdout)[0]["NetworkSettings"]["IPAddress"]
        targets = {"127.0.0.1:port": ("127.0.0.1", port), "container address": (address, 5432)}
        for host, target_port in targets.values():
            if not procs.wait_for(lambda: _ready(host, target_port), timeout=120, interval=0.2):
                figure.status = f"{NOT_AVAILABLE}: PostgreSQL does not answer on {host}:{target_port}"
                return [figure]
        initialised = subprocess.run(["pgbench", "-i", "-q", "-s", "1", "-h", "127.0.0.1", "-p", str(port),
                                      "-U", "postgres", "postgres"], capture_output=True, text=True, timeout=300)
        if initialised.returncode != 0:
            figure.status = f"{NOT_AVAILABLE}: pgbench -i: {initialised.stderr.strip()[-200:]}"
            return [figure]
        measures = {path: Measure(f"dockyard {path}", "tps") for path in targets}
        daemon_cpu = []
        bench.log(f"pgbench: {seconds:g} s x{reps} through {', '.join(targets)}")
        for _, path in interleaved(list(targets), reps):
            if bench.left() <= 0:
                break
            before = _cpu_seconds(tool.process.pid), time.monotonic()
            tps, error = _tps(*targets[path], seconds)
            measures[path].add(tps)
            if error:
                measures[path].note = error
            if path == "127.0.0.1:port":
                daemon_cpu.append(100 * (_cpu_seconds(tool.process.pid) - before[0]) / (time.monotonic() - before[1]))
        figure.dockyard = list(measures.values())
        figure.ratio = ratio(measures["127.0.0.1:port"].median, measures["container address"].median)
        figure.ratio_basis = "the published port / the container address"
        if daemon_cpu:
            cpu = sorted(daemon_cpu)[len(daemon_cpu) // 2]
            figure.notes.append(f"the daemon's CPU during the runs through the port: {cpu:.1f}% of one CPU (median)")
            figure.met = figure.ratio is not None and figure.ratio >= 0.9 and cpu < 5
        figure.commands = {"dockyard": f"pgbench -c 4 -j 2 -T {seconds:g} -h HOST -p PORT -U postgres postgres"}
    finally:
        tool.time(tool.remove([NAME]), timeout=60)
        tool.time([*tool.cli(), "rmi", "bench-postgres"], timeout=60)
    return [figure]


def _ready(host: str, port: int) -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", host, "-p", str(port)], timeout=30).returncode == 0


def _tps(host: str, port: int, seconds: float) -> tuple[float | None, str]:
    """pgbench's tps (without the connection time), or None and why."""
    result = subprocess.run(["pgbench", "-c", "4", "-j", "2", "-T", f"{seconds:g}", "-h", host, "-p", str(port),
                             "-U", "postgres", "postgres"], capture_output=True, text=True, timeout=seconds + 120)
    found = TPS.search(result.stdout)
    if result.returncode == 0 and found:
        return float(found[1]), ""
    return None, f"pgbench exited {result.returncode}: {(result.stderr or result.stdout).strip()[-300:]}"


def _cpu_seconds(pid: int) -> float:
    """User and system CPU of one process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

