"""Helper process: time OCI runtime commands on request.

Reads one JSON line ``{"argv": [...]}`` per command on stdin, runs it to completion and
answers ``{"seconds": ..., "cpu_seconds": ..., "returncode": ..., "stderr": ...}`` on stdout
(``cpu_seconds``: user+system time of the command and the children it reaped, from
``RUSAGE_CHILDREN``: less sensitive to a loaded machine than the wall time). Started by
:class:`tests.bench.tools.OciTimer`, directly for runc and, for crun, inside
``unshare --mount`` with ``--umount /sys/fs/cgroup/unified`` (only in that namespace).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--umount", action="append", default=[], help="unmount this path first (private mount ns)")
    args = parser.parse_args()
    for path in args.umount:
        result = subprocess.run(["umount", path], capture_output=True, text=True)
        if result.returncode != 0:
            print(f"umount {path}: {result.stderr.strip()}", flush=True)
            return 1
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        result = subprocess.run(request["argv"], stdin=subprocess.DEVNULL, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        answer = {"seconds": seconds, "cpu_seconds": cpu, "returncode": result.returncode, "stderr": result.stderr[-2000:]}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
