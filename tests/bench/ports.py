"""Published ports (issue 19): throughput and connection rate through a port published on
127.0.0.1, against the same to the container's own address, for dockyard (iptables DNAT in
the kernel) and podman (netavark) on the same machine.

The server in each container is busybox httpd serving a ``bulk_mb`` MB file and a small one
from a tmpfs; the client is this process (a socket per request, HTTP/1.0, read to EOF). The
paths alternate (:func:`interleaved`). Every loop is bounded (repetitions, seconds); the
traffic stays on loopback and the tools' own bridges."""

from __future__ import annotations

import json
import shlex
import socket
import time
from collections.abc import Callable

from tests.bench import procs
from tests.bench.stats import NOT_AVAILABLE, Figure, Measure, interleaved, ratio
from tests.bench.tools import CliTool, free_subnet

SERVER = ("dd if=/dev/zero of=/www/big bs=1M count={mb} 2>/dev/null && echo ok > /www/small "
          "&& exec httpd -f -p 80 -h /www")
NAME = "dockyard-bench-ports"


def published_ports(bench) -> list[Figure]:
    """Two figures: ``ports_bulk`` (MB/s of one bulk download) and ``ports_conns`` (short
    connections per second, one at a time); dockyard's published port against its own
    container address (target >= 0.9x), podman's both ways beside."""
    params = bench.params
    mb, reps, seconds = params.ports_mb, params.ports_reps, params.ports_seconds
    bulk = Figure("ports_bulk", f"{mb} MB through a published port on 127.0.0.1", ">= 0.9x the container address",
                  "MB/s")
    conns = Figure("ports_conns", f"short connections through a published port on 127.0.0.1 ({seconds:g} s runs)",
                   ">= 0.9x the container address", "conn/s")
    targets: dict[str, tuple[str, int]] = {}
    started: list[CliTool] = []
    try:
        for name in ("dockyard", "podman"):
            tool = bench.tools.get(name)
            if tool is None:
                continue
            found = _start(bench, tool, mb)
            if isinstance(found, str):
                bench.log(f"ports: {name} {found}")
                bench.missing[f"{name} ports"] = f"{NOT_AVAILABLE}: {found}"
                continue
            started.append(tool)
            (published, address) = found
            targets[f"{name} 127.0.0.1:port"] = published
            targets[f"{name} container address"] = address
        paths = list(targets)
        measures = {path: (Measure(path, "MB/s"), Measure(path, "conn/s")) for path in paths}
        bench.log(f"ports: {mb} MB and {seconds:g} s of connections x{reps} through {', '.join(paths)}")
        for _, path in interleaved(paths, reps):
            if bench.left() <= 0:
                break
            host, port = targets[path]
            measures[path][0].add(_bulk(host, port, mb * 1024 * 1024))
            measures[path][1].add(_rate(host, port, seconds))
        for index, figure in enumerate((bulk, conns)):
            figure.dockyard = [measures[p][index] for p in paths if p.startswith("dockyard")]
            figure.anchors = [measures[p][index] for p in paths if not p.startswith("dockyard")]
            mine = measures.get("dockyard 127.0.0.1:port")
            direct = measures.get("dockyard container address")
            if mine and direct:
                figure.ratio = ratio(mine[index].median, direct[index].median)
                figure.ratio_basis = "dockyard's published port / its container address"
                figure.met = figure.ratio is not None and figure.ratio >= 0.9
            podman, podman_direct = measures.get("podman 127.0.0.1:port"), measures.get("podman container address")
            if podman and podman_direct and podman_direct[index].median:
                figure.notes.append(f"podman: published port / container address = "
                                    f"{podman[index].median / podman_direct[index].median:.2f}")
            if mine and podman and podman[index].median:
                figure.notes.append(f"dockyard's published port / podman's = {mine[index].median / podman[index].median:.2f}")
            figure.commands = {tool.name: shlex.join(_run_argv(tool, mb)) for tool in started}
    finally:
        for tool in started:
            tool.time(tool.remove([NAME]), timeout=60)
        if "podman" in bench.tools:
            tool = bench.tools["podman"]
            tool.time([*tool.cli(), "network", "rm", "-f", NAME], timeout=60)
    return [bulk, conns]


def _run_argv(tool: CliTool, mb: int) -> list[str]:
    argv = tool.run_detached(("sh", "-c", SERVER.format(mb=mb)))
    network = argv.index("--network")  # run_detached runs without a network: these need one
    del argv[network:network + 2]
    if tool.name == "podman":  # a network of its own: another podman here may hold podman0's 10.88.0.0/16
        argv[network:network] = ["--network", NAME]
    at = argv.index("base")
    argv[at:at] = ["--name", NAME, "-p", "127.0.0.1::80", "--tmpfs", f"/www:size={mb + 16}m"]
    return argv


def _start(bench, tool: CliTool, mb: int) -> tuple[tuple[str, int], tuple[str, int]] | str:
    """((127.0.0.1, published port), (container address, 80)), or why not."""
    tool.time(tool.remove([NAME]), timeout=60)
    if tool.name == "podman":
        created = tool.time([*tool.cli(), "network", "create", "--subnet", free_subnet(200), NAME], timeout=60)
        if not created.ok:
            return f"network create: {created.failure(['podman', 'network', 'create'])}"
    run = tool.time(_run_argv(tool, mb), timeout=120)
    if not run.ok:
        return f"run: {run.failure(['run'])}"
    port = tool.time([*tool.cli(), "port", NAME, "80/tcp"], timeout=30)
    inspect = tool.time([*tool.cli(), "inspect", NAME], timeout=30)
    if not (port.ok and inspect.ok):
        return f"port/inspect: {port.stderr.strip()[-200:]} {inspect.stderr.strip()[-200:]}"
    published = ("127.0.0.1", int(port.stdout.split()[0].rsplit(":", 1)[1]))
    settings = json.loads(inspect.stdout)[0]["NetworkSettings"]
    address = settings.get("IPAddress") or next(
        (n["IPAddress"] for n in (settings.get("Networks") or {}).values() if n.get("IPAddress")), "")
    if not address:
        return "no container address in inspect"
    for target in (published, (address, 80)):
        if not procs.wait_for(lambda: _get(*target, b"/small") == 3, timeout=30, interval=0.05):
            return f"nothing answers on {target[0]}:{target[1]}"
    return published, (address, 80)


def _get(host: str, port: int, path: bytes, buffer: bytearray | None = None) -> int | None:
    """The size of one HTTP/1.0 answer's body (read to EOF); None on an error or a status
    other than 200."""
    buffer = buffer if buffer is not None else bytearray(65536)
    try:
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(b"GET " + path + b" HTTP/1.0\r\n\r\n")
            total, first = 0, b""
            while count := sock.recv_into(buffer):
                if not first:
                    first = bytes(buffer[:count])
                total += count
    except OSError:
        return None
    if not first.startswith(b"HTTP/1.") or b" 200 " not in first.split(b"\r\n", 1)[0]:
        return None
    return total - (first.index(b"\r\n\r\n") + 4 if b"\r\n\r\n" in first else 0)


def _bulk(host: str, port: int, size: int) -> float | None:
    """MB/s (10^6) of one download of the big file."""
    started = time.perf_counter()
    got = _get(host, port, b"/big", bytearray(1 << 20))
    elapsed = time.perf_counter() - started
    return got / elapsed / 1e6 if got == size else None


def _rate(host: str, port: int, seconds: float, clock: Callable[[], float] = time.perf_counter) -> float | None:
    """Complete short requests per second, one after the other, for ``seconds``."""
    buffer = bytearray(4096)
    count, started = 0, clock()
    while clock() - started < seconds:
        if _get(host, port, b"/small", buffer) != 3:
            return None
        count += 1
    return count / (clock() - started)
