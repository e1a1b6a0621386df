"""Waiting for what has no event to wait on (a kernel counter, another process's state):
poll the condition itself against a deadline. The deadline bounds a hang; it is not a timed
assertion."""

from __future__ import annotations

import time
from pathlib import Path


def wait_until(condition, what: str = "condition", timeout: float = 30.0):
    """Poll ``condition`` every 50 ms until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def process_gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for its parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
