"""Helpers of the runtime's tests: a launch config, and the fork server driven with a
scripted stage 0 (``tests/fake_forkserver.py``), so that the supervisor's side of the
handshake can be tested without root. The fixtures built on them (``subreaper``,
``fork_server``) are in ``tests/conftest.py``."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from supervisor.runtime.spawn import FORK_SERVER_SCRIPT, ContainerProcess, ForkServer, LaunchConfig

ID = "0123456789abcdef" * 4
RUNTIME_DIR = os.path.dirname(FORK_SERVER_SCRIPT)
FAKE_FORK_SERVER = Path(__file__).parent / "fake_forkserver.py"


def make_config(**overrides: object) -> LaunchConfig:
    values: dict = dict(
        container_id=ID, lower=("/l/top", "/l/base"), upper="/c/upper", work="/c/work", rootfs="/c/merged",
        argv=("sh", "-c", "echo hi"), env=("PATH=/bin", "A=b=c"),
    )
    values.update(overrides)
    return LaunchConfig(**values)


def fake_init(tmp_path: Path, body: str, name: str = "fake-python") -> str:
    """An executable shell script ``name`` in ``tmp_path`` with ``body``."""
    script = tmp_path / name
    script.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return str(script)


def scripted_server(tmp_path: Path, stage0: str) -> ForkServer:
    """A ForkServer whose stage 0 is the executable ``stage0`` instead of the init stage."""
    python = fake_init(tmp_path, f"exec {sys.executable} -I -S {FAKE_FORK_SERVER} {RUNTIME_DIR} {stage0}\n", "server")
    return ForkServer(python=python)


async def launch_scripted(tmp_path: Path, body: str, config: LaunchConfig | None = None) -> ContainerProcess:
    """Launch ``config`` with a stage 0 running the shell script ``body``; the server is
    stopped again before this returns (the container, if any, is our child)."""
    return await launch_with(tmp_path, fake_init(tmp_path, body, "stage0"), config)


async def launch_with(tmp_path: Path, stage0: str, config: LaunchConfig | None = None) -> ContainerProcess:
    async with scripted_server(tmp_path, stage0) as server:
        return await server.launch(config or make_config())


def with_child(child_script: str, after: str = "") -> str:
    """A fake stage 0 that forks a "container" (``child_script``), reports its pid, runs
    ``after`` and exits. The child waits for stage 0 to be gone (EOF on a fifo) before it
    runs, so that stage 0 (a shell) cannot reap it first, as the real one never does."""
    return f"""\
        fifo="$(dirname "$0")/stage0-gone"; mkfifo "$fifo"
        sh -c 'read line < "$0"; {child_script}' "$fifo" 4>&- &
        exec 6>"$fifo"
        echo "{{\\"pid\\": $!}}" >&4
        {after}
    """


def assert_no_child(pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def assert_no_children() -> None:
    """No child of ours is left, running or unreaped."""
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def open_fds(pid: int) -> list[int]:
    return sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))


def children_of(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            found += [int(child) for child in children.read().split()]
    return found
