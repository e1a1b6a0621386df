"""The Engine API's figures (issue 20): the same docker CLI against dockyard's
<run>/docker.sock and against a private dockerd, interleaved; and `GET /containers/json`
requests per second on one kept-alive connection.

``scripts/bench.sh --only engine_api``. The measures and the commands go in the table like
the other rows; docs/api.md states what one run on a shared machine gave.
"""

from __future__ import annotations

import os
import shutil
import socket
import time

from tests.bench.figures import Bench, _commands, _latency_series, ratio
from tests.bench.stats import Figure, Measure


def _docker_client() -> str:
    return "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else (shutil.which("docker") or "docker")


def requests_per_second(path: str, target: str, count: int = 300) -> float:
    """``count`` GETs of ``target`` over one kept-alive connection to the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        request = f"GET {target} HTTP/1.1\r\nHost: docker\r\n\r\n".encode()
        started = time.perf_counter()
        for _ in range(count):
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            while len(body) < length:
                body += sock.recv(65536)
        return count / (time.perf_counter() - started)


def engine_api(bench: Bench) -> list[Figure]:
    """``docker run --rm base true`` through dockyard's API against the same CLI against dockerd."""
    measures = {name: bench.measure_for(name, "s") for name in ("dockyard", "docker")}
    commands = {}
    if "dockyard" in bench.tools:
        socket_path = bench.tools["dockyard"].run_dir / "docker.sock"
        commands["dockyard"] = [_docker_client(), "-H", f"unix://{socket_path}", "run", "--rm", "--network", "none",
                                "base", "true"]
    if "docker" in bench.tools:
        commands["docker"] = bench.tools["docker"].run_rm(network_none=True)
    bench.log(f"engine api: docker run --rm base true x{bench.params.reps} ({', '.join(commands)})")
    _latency_series(bench, commands, measures, bench.params.reps)
    figure = Figure("engine_api_run_rm", "`docker run --rm base true`, the docker CLI through the Engine API",
                    "<= 0.5x dockerd", "s", anchors=[measures["docker"]], dockyard=[measures["dockyard"]],
                    commands=_commands(commands))
    figure.ratio = ratio(measures["dockyard"].median, measures["docker"].median)
    figure.ratio_basis = "dockyard / dockerd"
    figure.met = None if figure.ratio is None else figure.ratio <= 0.5
    figures = [figure]
    if "dockyard" in bench.tools:
        rate = Measure(tool="dockyard", unit="requests/s")
        rate.add(requests_per_second(str(bench.tools["dockyard"].run_dir / "docker.sock"),
                                     "/v1.43/containers/json?all=1"))
        listing = Figure("engine_api_list", "`GET /containers/json` on one connection", "-", "requests/s",
                         dockyard=[rate])
        figures.append(listing)
    return figures
