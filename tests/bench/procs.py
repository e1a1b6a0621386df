"""Timed subprocesses, process trees and PSS, read from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Timed:
    """One command's result: wall time from spawn to exit, exit code, output."""

    seconds: float
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failure(self, argv: Sequence[str]) -> str:
        tail = (self.stderr or self.stdout).strip().splitlines()[-3:]
        return f"`{' '.join(argv)}` exited {self.returncode}: {' | '.join(tail)}"


def timed(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 60.0) -> Timed:
    """Run ``argv`` to completion and time it (perf_counter around spawn..exit).

    A command that outlives ``timeout`` is killed with its whole process group and reported
    with return code -9 (it never leaves a stray process behind).
    """
    start = time.perf_counter()
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        start_new_session=True,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process.pid)
        stdout, stderr = process.communicate()
        return Timed(time.perf_counter() - start, -9, stdout, f"timed out after {timeout:.0f} s\n{stderr}")
    return Timed(time.perf_counter() - start, process.returncode, stdout, stderr)


@dataclass(frozen=True)
class Counted:
    """A command whose (large) stdout was counted, not kept."""

    seconds: float
    returncode: int
    stdout_bytes: int
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def counted(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 600.0) -> Counted:
    """Like :func:`timed`, for commands that print hundreds of MB: stdout is read and
    counted as it comes; stderr goes to a temp file."""
    import tempfile
    import threading

    start = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
                                   env=dict(env) if env is not None else None, start_new_session=True)
        timer = threading.Timer(timeout, kill_group, (process.pid,))
        timer.start()
        total = 0
        try:
            while chunk := process.stdout.read1(1 << 20):
                total += len(chunk)
            process.wait()
        finally:
            timer.cancel()
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    return Counted(time.perf_counter() - start, process.returncode, total, stderr)


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def concurrently(commands: Sequence[Sequence[str]], *, env: Mapping[str, str] | None = None,
                 timeout: float = 120.0, workers: int | None = None) -> tuple[float, list[Timed]]:
    """Run ``commands`` at once (or ``workers`` at a time) and return the wall time until the
    last one exited, with every result in order."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers or max(1, len(commands))) as pool:
        results = list(pool.map(lambda argv: timed(argv, env=env, timeout=timeout), commands))
    return time.perf_counter() - start, results


# --- /proc ------------------------------------------------------------------------------


def pss_kib(pid: int) -> int | None:
    """Proportional set size of ``pid`` in KiB (shared pages divided among their users)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    comm: str
    cmdline: str


def process_table() -> dict[int, Proc]:
    """Every process now: pid -> Proc (processes that vanish while read are skipped)."""
    table: dict[int, Proc] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue
        # comm may hold spaces and parentheses: it ends at the last ')'.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        table[pid] = Proc(pid, ppid, comm, cmdline.strip())
    return table


def descendants(table: Mapping[int, Proc], root: int) -> set[int]:
    """Every pid below ``root`` in ``table`` (not ``root`` itself)."""
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: set[int] = set()
    stack = list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


def mentioning(table: Mapping[int, Proc], needles: Iterable[str], comm: str | None = None) -> dict[str, list[int]]:
    """needle -> pids whose command line contains it (and whose comm is ``comm``, if given)."""
    needles = list(needles)
    found: dict[str, list[int]] = {needle: [] for needle in needles}
    for proc in table.values():
        if comm is not None and proc.comm != comm:
            continue
        for needle in needles:
            if needle in proc.cmdline:
                found[needle].append(proc.pid)
    return found


def total_pss_mb(pids: Iterable[int]) -> float:
    return sum(pss_kib(pid) or 0 for pid in pids) / 1024


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; returns its last value.

    Used only against outside processes that offer no notification (a socket appearing,
    a daemon answering); everything else waits on the process itself.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
