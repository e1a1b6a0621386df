"""The first steps of ``run`` and ``create``, taken by ``bin/dockyard-runtime`` before it
imports the rest of the runtime (docs/runtime.md, "Fourth pass" and "Fifth pass").

Theory of operation: a ``run`` of a small bundle is mostly waiting and start-up. The
interpreter starts (~10 ms of CPU), the runtime imports its modules (~4 ms) and reads the
bundle, stage 0 imports the init stage's (~3 ms), and on cgroup v2 the first write to a
``cgroup.procs`` waits for an RCU grace period (5-25 ms, no CPU: ``warmup.py``; on v1
stage 0 moves itself through ``tasks`` files, without it). Done one after another, as they
were, they add up; here they overlap on the machine's CPUs:

1. on a host whose cgroups are all v2, the kernel's wait starts at once
   (:class:`warmup.AttachWarmUp`, a thread; on v1 stage 0 moves itself without one);
2. ``run`` imports libc (``ctypes_lite``), which it needs for its child subreaper and
   stage 0 for its syscalls, so that the fork shares it (``create`` needs none: stage 0
   imports it);
3. stage 0 is forked (:class:`launch.InitStage`): it imports the init stage's modules
   and waits for its config while this process imports the runtime and reads the bundle;
   ``create`` takes it (:func:`take_stage`) and sends the config; stage 0 unshares while
   the cgroups are made, then moves itself into them and forks the container's process.

Anything else (another command, ``--help``, a flag argparse must see) does nothing here.
A stage no command took is killed and reaped before the process exits (:func:`discard`).
"""

from __future__ import annotations

import os

from supervisor.ociruntime import flags

_stage = None  # the InitStage forked by start(), until create() takes it
warmed_up = False  # start() began the cgroup warm-up (cli.main does it otherwise)


def ensure_stdio() -> None:
    """fds 0-2 open (/dev/null for a closed one), so that no pipe of ours lands on them."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def start(argv: list[str]) -> None:
    """For ``run`` and ``create``: start the cgroup warm-up, import libc, fork stage 0."""
    global _stage, warmed_up
    ensure_stdio()
    arguments = flags.parse(argv, "")
    if arguments is None or arguments.version or arguments.systemd_cgroup or arguments.command not in ("run", "create"):
        return
    from supervisor.ociruntime.warmup import AttachWarmUp

    AttachWarmUp()
    warmed_up = True
    if arguments.command == "run" and not arguments.detach:
        from supervisor.runtime import libc  # noqa: F401 - for both: run's subreaper and the stage

    from supervisor.ociruntime.errors import RuntimeCommandError
    from supervisor.ociruntime.launch import InitStage

    try:
        _stage = InitStage()
    except RuntimeCommandError:
        pass  # create forks one itself, and reports the failure


def take_stage(console_socket: str = ""):
    """The stage 0 forked at start-up, or a new one (none was forked: the runtime's
    functions called from Python, a test; or the process has a terminal, whose console
    socket stage 0 must be given as it is forked).

    Raises:
        RuntimeCommandError: a new stage 0 could not be forked or the console socket not
            connected.
    """
    global _stage
    stage, _stage = _stage, None
    if stage is not None and not console_socket:
        return stage
    if stage is not None:
        stage.abandon()
    from supervisor.ociruntime.launch import InitStage

    return InitStage(console_socket)


def discard() -> None:
    """The stage 0 forked at start-up, if no command took it, killed and reaped."""
    global _stage
    stage, _stage = _stage, None
    if stage is not None:
        stage.abandon()
