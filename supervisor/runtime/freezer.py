"""A cgroup's freezer: every process of a container stopped and resumed at once
(``dockyard pause``/``unpause``, ``dockyard-runtime pause``/``resume``).

The two versions of cgroups freeze differently:

=========  ==============================  ====================================================
version    written                          settled when
=========  ==============================  ====================================================
v1         ``freezer.state``: FROZEN,       ``freezer.state`` reads the value back (FREEZING
           THAWED                            in between: a task in an uninterruptible sleep
                                             holds it there; the write is repeated, as runc)
v2         ``cgroup.freeze``: 1, 0          ``cgroup.events`` says ``frozen 1`` (``frozen 0``)
=========  ==============================  ====================================================

Neither has an event a process can wait on for the v1 state (v2's ``cgroup.events`` could be
polled with inotify, but a freeze settles in microseconds when nothing holds it), so
:func:`set_frozen` reads the file back every 10 ms up to a timeout. It blocks: the daemon
calls it in a worker thread. Both the supervisor (``runtime/cgroups/cgroup.py``) and the OCI
runtime (``ociruntime/cgroups.py``) use this one module; it imports the standard library only.
"""

from __future__ import annotations

import os
import time

FREEZE_TIMEOUT = 5.0  # seconds for the freezer to settle
POLL_INTERVAL = 0.01


def freezer_file(version: int) -> tuple[str, str]:
    """The ``(controller, file)`` that freezes a cgroup of ``version``."""
    return ("", "cgroup.freeze") if version == 2 else ("freezer", "freezer.state")


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path) as file:
        return file.read()


def _settled(path: str, version: int, frozen: bool) -> bool:
    if version == 2:
        events = _read(os.path.join(os.path.dirname(path), "cgroup.events"))
        return f"frozen {1 if frozen else 0}" in events.splitlines()
    return _read(path).strip() == ("FROZEN" if frozen else "THAWED")


def set_frozen(path: str, version: int, frozen: bool, timeout: float = FREEZE_TIMEOUT) -> None:
    """Freeze (or thaw) the cgroup whose freezer file is ``path``; return once it has settled.

    Raises:
        OSError: the file is missing or refused the write (its message names the file).
        TimeoutError: the freezer did not settle in ``timeout`` seconds (the cgroup is left
            as the kernel has it: FREEZING on v1).
    """
    value = ("1" if frozen else "0") if version == 2 else ("FROZEN" if frozen else "THAWED")
    deadline = time.monotonic() + timeout
    while True:
        try:
            _write(path, value)
            if _settled(path, version, frozen):
                return
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write {value} to {path}: {os.strerror(exc.errno or 0)}", path) from None
        if time.monotonic() > deadline:
            state = "frozen" if frozen else "thawed"
            raise TimeoutError(f"the freezer of {os.path.dirname(path)} was not {state} after {timeout:g} s")
        time.sleep(POLL_INTERVAL)  # no event to wait on (module docstring)


def is_frozen(path: str, version: int) -> bool:
    """Whether the cgroup whose freezer file is ``path`` is frozen or freezing (False when the
    file is missing: no freezer, or the cgroup is gone)."""
    try:
        state = _read(path).strip()
    except OSError:
        return False
    return state == "1" if version == 2 else state in ("FROZEN", "FREEZING")
