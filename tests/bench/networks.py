"""Issue 19's figures of user-defined networks (``--only networks``): the embedded DNS
server's answer latency for a container name, from inside a container's network namespace,
and what ``network create`` and ``run --network NAME`` cost against the default bridge."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

from tests.bench import procs
from tests.bench.figures import Bench, _commands, _latency_series
from tests.bench.stats import Figure, Measure, ratio

DNS_QUERIES = 2000

#: Run with the daemon's Python inside the client container's network namespace (nsenter -n):
#: timed UDP round trips to 127.0.0.11 for one container name, as a resolver makes them.
DNS_PROBE = r"""
import json, socket, sys, time
import dns.message
name, count = sys.argv[1], int(sys.argv[2])
wire = dns.message.make_query(name, "A").to_wire()
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(2)
sock.connect(("127.0.0.11", 53))
samples, failures = [], 0
for i in range(count + 100):
    start = time.perf_counter()
    sock.send(wire)
    try:
        reply = sock.recv(512)
    except OSError:
        failures += 1
        continue
    if i >= 100:
        samples.append(time.perf_counter() - start)
    if dns.message.from_wire(reply).answer == []:
        failures += 1
print(json.dumps({"samples": samples, "failures": failures}))
"""


def _network(tool) -> tuple[str, str]:
    """A network name and a /24 of 10.219.0.0/16 that the daemon accepts (no overlap)."""
    for _ in range(20):
        name, subnet = f"bench-{secrets.token_hex(3)}", f"10.219.{secrets.randbelow(256)}.0/24"
        if procs.timed([tool.executable, "network", "create", "--subnet", subnet, name], env=tool.env).ok:
            return name, subnet
    raise RuntimeError("no free /24 of 10.219.0.0/16 for the bench network")


def user_networks(bench: Bench) -> list[Figure]:
    tool = bench.tools.get("dockyard")
    if tool is None:
        return []
    figures = []
    name, _ = _network(tool)
    try:
        figures.append(_dns_latency(bench, tool, name))
        figures.append(_network_start_cost(bench, tool, name))
    finally:
        procs.timed([tool.executable, "rm", "-f", "bench-dns-db", "bench-dns-client"], env=tool.env)
        procs.timed([tool.executable, "network", "rm", name], env=tool.env)
    return figures


def _dns_latency(bench: Bench, tool, network: str) -> Figure:
    measure = Measure(tool="dockyard", unit="ms")
    for container in ("bench-dns-db", "bench-dns-client"):
        procs.timed([tool.executable, "run", "-d", "--name", container, "--network", network, "base", "sleep", "1000"],
                    env=tool.env)
    pid = json.loads(procs.timed([tool.executable, "inspect", "bench-dns-client"], env=tool.env).stdout)[0]["State"]["Pid"]
    argv = ["nsenter", "-t", str(pid), "-n", sys.executable, "-c", DNS_PROBE, "bench-dns-db", str(DNS_QUERIES)]
    bench.log(f"networks: {DNS_QUERIES} DNS queries for a container name from inside a container")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if result.returncode == 0:
        probe = json.loads(result.stdout)
        measure.samples = [seconds * 1000 for seconds in probe["samples"]]
        measure.failures = probe["failures"]
        ordered = sorted(measure.samples)
        measure.note = f"p90 {ordered[len(ordered) * 9 // 10]:.3f} ms, p99 {ordered[len(ordered) * 99 // 100]:.3f} ms; " if ordered else ""
    else:
        measure.note = result.stderr.strip()[-200:]
    measure.note += (f"{DNS_QUERIES} UDP queries one after another, from the client container's network "
                     "namespace to 127.0.0.11 (the daemon's socket there)")
    figure = Figure("dns_latency", "embedded DNS: an A answer for a container name, from inside a container",
                    "< 1 ms median (issue 19)", "ms", dockyard=[measure],
                    commands={"dockyard": f"nsenter -t PID -n python -c PROBE bench-dns-db {DNS_QUERIES}"})
    figure.met = None if measure.median is None else measure.median < 1
    return figure


def _network_start_cost(bench: Bench, tool, network: str) -> Figure:
    names = ["default bridge", "user network"]
    measures = {name: Measure(tool=f"dockyard ({name})", unit="s") for name in names}
    commands = {"default bridge": tool.run_rm(network_none=False),
                "user network": [tool.executable, "run", "--rm", "--network", network, "base", "true"]}
    # _latency_series interleaves by tool name: the two networks stand in as two "tools".
    bench.tools.setdefault("default bridge", tool)
    bench.tools.setdefault("user network", tool)
    try:
        bench.log(f"networks: run --rm, default bridge against --network {network} x{bench.params.reps}")
        _latency_series(bench, commands, measures, bench.params.reps)
    finally:
        del bench.tools["default bridge"], bench.tools["user network"]
    create = Measure(tool="dockyard (network create + rm)", unit="s")
    for _ in range(max(3, bench.params.reps // 4)):
        made = procs.timed([tool.executable, "network", "create", "--subnet", "10.220.0.0/24", "bench-create"],
                           env=tool.env)
        create.add(made.seconds if made.ok else None)
        procs.timed([tool.executable, "network", "rm", "bench-create"], env=tool.env)
    figure = Figure("network_run", "`run --rm --network NAME base true` against the default bridge; "
                    "`network create`", "not set: a cost to know (issue 19)", "s",
                    anchors=[measures["default bridge"]], dockyard=[measures["user network"], create],
                    commands=_commands({**commands, "network create": [tool.executable, "network", "create",
                                                                       "--subnet", "10.220.0.0/24", "bench-create"]}))
    figure.ratio = ratio(measures["user network"].median, measures["default bridge"].median)
    figure.ratio_basis = "user network / default bridge"
    return figure
