"""The kernel's wait for a cgroup move, started early (:class:`AttachWarmUp`): a module of
its own, with nothing but ``os``, ``sys`` and ``_thread``, because ``bin/dockyard-runtime``
starts it before it imports anything else of the runtime (``prelude.py``).
"""

from __future__ import annotations

import os
import sys


def own_procs_files(text: str, base: str = "/sys/fs/cgroup") -> list[str]:
    """The ``cgroup.procs`` of this process's own cgroups, from /proc/self/cgroup's ``text``,
    under the usual mount points (``base/<controllers>``, the v2 tree at ``base/unified`` on
    a hybrid host or at ``base`` itself), in the order of the file."""
    files = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        path = parts[2].lstrip("/")
        for directory in ([parts[1].removeprefix("name=")] if parts[1] else ["unified", ""]):
            files.append(os.path.join(base, directory, path, "cgroup.procs"))
    return files


class AttachWarmUp:
    """Start the kernel's wait for a cgroup move now, in a thread, so that the container's
    own move (stage 0's, ``cgroupfiles.join_self``) finds it done. Only on a host whose
    cgroups are all v2: on v1 (and hybrid) hosts stage 0 moves itself through ``tasks``
    files, which spares the wait, and a warm-up would only hold ``cgroup_mutex`` through a
    grace period while the command makes its cgroups.

    Theory: every write to a ``cgroup.procs`` takes the kernel's one global
    ``cgroup_threadgroup_rwsem`` for writing, and the first writer after a quiet spell waits
    for an RCU grace period (``rcu_sync_enter``: 5-25 ms on this 2-CPU VM, no CPU), the
    longest single step of a ``run``. A writer that comes while that wait is under way
    waits only for its rest; one that comes within a grace period after the last writer
    left does not wait at all. ``create`` can move the container's process only once it
    has imported its modules, read the config, forked and made the cgroups (~5-10 ms of
    CPU after the interpreter's start), so this writes our own pid into our own cgroup (no move: the
    kernel sees the process is there already) from a thread as soon as the command is
    known (``run`` and ``create``: before the runtime's own imports, ``prelude.py``), and the
    wait runs while the command does that work. runc pays the same wait
    (its parent writes ``runc init``'s pid) and does not overlap it. Best effort: a cgroup
    we cannot write, or a kernel that behaves otherwise, only loses the overlap.

    The kernel holds ``cgroup_mutex`` during the wait, as for any move: the command's own
    cgroup mkdirs, if they come before it ends, wait for its rest (not longer than the
    move itself would have waited). When the container's move comes more than a grace
    period after this one ended, it waits in full as before: the host then sees one more
    such wait, the command none more.
    """

    def __init__(self, cgroup_text: str | None = None):
        self.path = ""
        self.finished = None
        try:
            if cgroup_text is None:
                with open("/proc/self/cgroup", "rb") as file:
                    cgroup_text = file.read().decode()
        except OSError:
            return
        if any(not line.startswith("0::") for line in cgroup_text.splitlines() if line):
            return  # a v1 hierarchy: nothing to warm up (class docstring)
        fd = -1
        for path in own_procs_files(cgroup_text):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except OSError:
                continue
            self.path = path
            break
        if fd < 0:
            return
        import _thread  # not threading: its import costs more than this saves in CPU

        self.finished = _thread.allocate_lock()
        self.finished.acquire()
        # The new thread needs the GIL, which this one holds while it imports and releases
        # only for moments (file reads) that the other thread rarely catches: without a short
        # switch interval it would start ~5 ms (the default interval) late. It is put back
        # once the write is done.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0001)
        _thread.start_new_thread(self._write, (fd, str(os.getpid()).encode(), interval))

    def _write(self, fd: int, pid: bytes, interval: float) -> None:
        try:
            os.write(fd, pid)
        except OSError:
            pass  # best effort (class docstring)
        finally:
            os.close(fd)
            sys.setswitchinterval(interval)
            self.finished.release()

    def wait(self, timeout: float) -> bool:
        """True once the write is done (tests: the command itself never waits for it)."""
        return self.finished is not None and self.finished.acquire(timeout=timeout)
