"""Resource usage of running containers, read from their cgroups: the figures of
``dockyard stats`` and of the ``stats.<id>`` events.

Theory of operation
-------------------
The supervisor samples every running container once per ``Config.stats_interval``, in one
pass, in its own thread: no process is spawned and no thread per container. A
:class:`StatsReader` opens a container's few cgroup files once (at its first sample) and
then re-reads each with one ``pread`` at offset 0, which makes the kernel regenerate the
file: five system calls per container per sample on v1, five on v2.

    figure            v1 file                               v2 file
    cpu_usage_ns      cpuacct.usage                         cpu.stat usage_usec * 1000
    memory_usage      memory.usage_in_bytes                 memory.current
    memory_limit      memory.limit_in_bytes                 memory.max ("max": unlimited)
    pids              pids.current                          pids.current
    block_read/write  blkio.throttle.io_service_bytes       io.stat rbytes / wbytes

As with docker, an unlimited memory limit is shown as the host's memory, and ``cpu_percent``
is the CPU time used between two samples over the wall time between them: 100 is one CPU
busy all the time, 200 two CPUs. Unlike docker, ``memory_usage`` includes the page cache
(docker subtracts inactive_file, which takes a read and parse of memory.stat).

The parsing functions are pure, so the unit tests feed them file contents.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

#: figure -> (controller, file) per cgroup version
STAT_FILES = {
    1: {
        "cpu": ("cpuacct", "cpuacct.usage"),
        "memory": ("memory", "memory.usage_in_bytes"),
        "memory_limit": ("memory", "memory.limit_in_bytes"),
        "pids": ("pids", "pids.current"),
        "io": ("blkio", "blkio.throttle.io_service_bytes"),
    },
    2: {
        "cpu": ("cpu", "cpu.stat"),
        "memory": ("memory", "memory.current"),
        "memory_limit": ("memory", "memory.max"),
        "pids": ("pids", "pids.current"),
        "io": ("io", "io.stat"),
    },
}
READ_SIZE = 65536
#: v1's "no limit": PAGE_COUNTER_MAX pages, rounded; anything this large is no limit.
UNLIMITED_V1 = 1 << 62


@dataclass(frozen=True)
class Sample:
    """One reading of a container's cgroup. ``time`` is monotonic seconds."""

    time: float
    cpu_usage_ns: int = 0
    memory_usage: int = 0
    memory_limit: int = 0
    pids: int = 0
    block_read: int = 0
    block_write: int = 0


# --- parsing (pure) ------------------------------------------------------------------------


def parse_int(text: bytes) -> int:
    """A file holding one number; ``max`` (v2's no limit) is 0."""
    value = text.strip()
    if not value or value == b"max":
        return 0
    return int(value)


def parse_cpu(version: int, text: bytes) -> int:
    """CPU time in nanoseconds: cpuacct.usage (v1, ns) or cpu.stat's usage_usec (v2)."""
    if version == 1:
        return parse_int(text)
    for line in text.splitlines():
        key, _, value = line.partition(b" ")
        if key == b"usage_usec":
            return int(value) * 1000
    return 0


def parse_memory_limit(version: int, text: bytes, host_memory: int) -> int:
    """The limit in bytes, or the host's memory when there is none (as docker shows it)."""
    limit = parse_int(text)
    if limit == 0 or (version == 1 and limit >= UNLIMITED_V1):
        return host_memory
    return min(limit, host_memory) if host_memory else limit


def parse_io(version: int, text: bytes) -> tuple[int, int]:
    """(read bytes, written bytes) over every device.

    v1 ``blkio.throttle.io_service_bytes``: ``8:0 Read 4096`` lines and a ``Total`` line.
    v2 ``io.stat``: ``8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0`` lines.
    """
    read = written = 0
    for line in text.splitlines():
        words = line.split()
        if version == 1:
            if len(words) == 3:
                if words[1] == b"Read":
                    read += int(words[2])
                elif words[1] == b"Write":
                    written += int(words[2])
        else:
            for word in words[1:]:
                key, _, value = word.partition(b"=")
                if key == b"rbytes":
                    read += int(value)
                elif key == b"wbytes":
                    written += int(value)
    return read, written


def host_memory(meminfo: str) -> int:
    """MemTotal of /proc/meminfo, in bytes."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_percent(previous: Sample | None, current: Sample) -> float:
    """Percent of one CPU used between two samples (docker's CPU %)."""
    if previous is None or current.time <= previous.time:
        return 0.0
    used = max(0, current.cpu_usage_ns - previous.cpu_usage_ns)
    return used / ((current.time - previous.time) * 1e9) * 100.0


def record(container_id: str, name: str, current: Sample, previous: Sample | None) -> dict[str, Any]:
    """The data of a ``stats.<id>`` event and of a ``container.stats`` row."""
    limit = current.memory_limit
    return {
        "id": container_id,
        "name": name,
        "time": time.time(),
        "cpu_usage_ns": current.cpu_usage_ns,
        "cpu_percent": round(cpu_percent(previous, current), 2),
        "memory_usage": current.memory_usage,
        "memory_limit": limit,
        "memory_percent": round(current.memory_usage / limit * 100.0, 2) if limit else 0.0,
        "pids": current.pids,
        "block_read_bytes": current.block_read,
        "block_write_bytes": current.block_write,
    }


# --- reading (I/O) -------------------------------------------------------------------------


class StatsReader:
    """Reads one container's figures, keeping its cgroup files open between samples.

    Args:
        cgroup: a :class:`supervisor.runtime.cgroups.Cgroup`.
        host_memory: bytes, shown as the limit of a container without one.
    """

    def __init__(self, cgroup: Any, host_memory: int = 0):
        self.cgroup = cgroup
        self.version = cgroup.version
        self.host_memory = host_memory
        self._fds: dict[str, int] | None = None

    def _open(self) -> dict[str, int]:
        fds = {}
        for figure, (controller, name) in STAT_FILES[self.version].items():
            path = self.cgroup.file(controller, name)
            if path is None:
                continue
            try:
                fds[figure] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue  # a controller this host lacks: that figure stays 0
        return fds

    def _read(self, figure: str) -> bytes | None:
        assert self._fds is not None
        fd = self._fds.get(figure)
        if fd is None:
            return None
        try:
            return os.pread(fd, READ_SIZE, 0)
        except OSError:  # the cgroup went away under us (ENODEV)
            return None

    def read(self, now: float | None = None) -> Sample:
        if self._fds is None:
            self._fds = self._open()
        version = self.version
        cpu = self._read("cpu")
        memory = self._read("memory")
        limit = self._read("memory_limit")
        pids = self._read("pids")
        io = self._read("io")
        block_read, block_write = parse_io(version, io) if io else (0, 0)
        return Sample(
            time=time.monotonic() if now is None else now,
            cpu_usage_ns=parse_cpu(version, cpu) if cpu else 0,
            memory_usage=parse_int(memory) if memory else 0,
            memory_limit=parse_memory_limit(version, limit, self.host_memory) if limit else self.host_memory,
            pids=parse_int(pids) if pids else 0,
            block_read=block_read,
            block_write=block_write,
        )

    def close(self) -> None:
        for fd in (self._fds or {}).values():
            os.close(fd)
        self._fds = {}
