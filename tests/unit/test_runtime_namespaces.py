"""supervisor/runtime/namespaces.py without root: which namespaces a container gets and in
which order an exec joins them, and the start time that names a process for good. Entering
them needs root: tests/integration/test_runtime.py and test_interactive.py."""

from __future__ import annotations

import subprocess
import sys

from supervisor.runtime import libc, namespaces


def test_a_container_gets_every_namespace_but_the_users() -> None:
    assert namespaces.CONTAINER_NAMESPACES == (
        libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC | libc.CLONE_NEWNET | libc.CLONE_NEWPID
        | libc.CLONE_NEWCGROUP
    )


def test_an_exec_joins_the_mount_namespace_last() -> None:
    names = [name for name, _ in namespaces.EXEC_NAMESPACES]
    assert sorted(names) == ["cgroup", "ipc", "mnt", "net", "pid", "uts"]
    assert names[-1] == "mnt"  # entering it changes / and the cwd: /proc/<pid>/ns/* first


def test_the_start_time_survives_a_hostile_process_name() -> None:
    """Field 22 of /proc/<pid>/stat, found after the last ")": a name may hold ") x y"."""
    code = "import sys; open('/proc/self/comm', 'w').write(') 1 2 3 ('); print(open('/proc/self/stat').read()); sys.stdin.read()"
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as child:
        try:
            stat = child.stdout.readline()
            assert ") 1 2 3 (" in stat
            expected = int(stat.rpartition(")")[2].split()[19])
            assert namespaces.process_start_time(child.pid) == expected
        finally:
            child.stdin.close()
            child.wait(timeout=10)
