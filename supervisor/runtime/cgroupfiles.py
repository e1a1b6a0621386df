"""The file operations on a cgroup that every user of cgroups does the same way: the daemon's
backends (``cgroups/``), the init stage (``namespaces.py``) and the OCI runtime
(``supervisor/ociruntime/cgroups.py``, ``launch.py``).

- a value is written in one write(2): the kernel takes one value per write;
- a process joins a cgroup by its pid written into the cgroup's ``cgroup.procs``; a
  process of one thread moves itself on a v1 hierarchy by "0" written into ``tasks``
  (:func:`join_self`: no grace period);
- a cgroup's directory is removed once its last process has left: rmdir says EBUSY until
  then, and the kernel offers no event for it, so the rmdir is retried until a deadline.

Errors are ``OSError``, naming the file: each caller turns them into its own layer's error.

Imported by the init stage under ``python -I -S`` and on the OCI runtime's start path:
``os``, ``errno`` and ``time`` only, nothing of our package (so no dual import).
"""

import errno
import os
import time


def write(path: str, value: str) -> None:
    """Write ``value`` into the cgroup file ``path``, in one write(2).

    Raises:
        OSError: the open or the write failed.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def join(procs_files, pid: int) -> None:  # no typing import in the stage
    """Move process ``pid`` into each cgroup: its pid written into each ``cgroup.procs`` of
    ``procs_files``, in order.

    Raises:
        OSError: of the first file that refused, ``filename`` that file.
    """
    value = str(pid)
    for path in procs_files:
        try:
            write(path, value)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, path) from None


def join_self(procs_files) -> None:
    """Move this process, which must have a single thread (a fresh fork: the init stage's
    stage 0), into each cgroup of ``procs_files`` (their ``cgroup.procs`` paths), in order.

    Theory: a write to ``cgroup.procs`` takes the kernel's global threadgroup lock for
    writing, and the first writer after a quiet spell waits for an RCU grace period with
    ``cgroup_mutex`` held (5-25 ms on a 2-CPU VM, during which no cgroup can be made or
    mounted anywhere). A thread that moves only itself ("0" written into a v1 ``tasks``
    file) takes no such lock (the kernel's ``cgroup_procs_write_start`` skips it for that
    case, commit "cgroup: Optimize single thread migration"): ~0.4 ms from Python, open
    and write included, against 6-15 ms on this 6.18 kernel. With one thread, moving it
    moves the process. cgroup v2 has no ``tasks`` file (``cgroup.threads`` only in
    threaded subtrees): there the pid goes into ``cgroup.procs``, and the wait is paid
    (``supervisor/ociruntime/warmup.py`` overlaps it). A kernel without the optimization
    takes the lock for ``tasks`` too: the same cost as before, and the same outcome.

    Raises:
        OSError: of the first file that refused, ``filename`` that file.
    """
    pid = ""
    for path in procs_files:
        tasks = os.path.join(os.path.dirname(path), "tasks")
        try:
            write(tasks, "0")
            continue
        except FileNotFoundError:
            pass  # cgroup v2
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, tasks) from None
        pid = pid or str(os.getpid())
        try:
            write(path, pid)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, path) from None


def remove_directory(path: str, deadline: float, on_busy=None, delay: float = 0.001,
                     max_delay: float = 0.05) -> None:
    """rmdir the cgroup directory ``path``; a missing one is fine. While the kernel says
    EBUSY (its processes are still leaving), ``on_busy()`` (say, kill them again) and retry
    after ``delay`` seconds, doubled each time up to ``max_delay``, until
    ``time.monotonic()`` passes ``deadline``.

    Raises:
        OSError: an error other than EBUSY, or EBUSY at the deadline.
    """
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise
        if on_busy is not None:
            on_busy()
        time.sleep(delay)  # the kernel offers no event for "the last process left"
        delay = min(delay * 2, max_delay)
