"""supervisor/runtime/process.py without root: a container's pid 1 held by a pidfd, waited
for and signalled, from one task or two (launched through a scripted stage 0)."""

from __future__ import annotations

import signal
from pathlib import Path

import trio

from tests.runtime_helpers import assert_no_child, launch_scripted, with_child


async def test_container_process_wait_and_signal(tmp_path: Path, subreaper: None) -> None:
    body = """\
        sleep 60 4>&- &
        echo "{\\"pid\\": $!}" >&4
    """
    process = await launch_scripted(tmp_path, body)
    try:
        with open(f"/proc/{process.pid}/stat") as stat:
            assert int(stat.read().rpartition(")")[2].split()[19]) == process.start_time
        process.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            codes = [await process.wait(), await process.wait()]
        assert codes == [137, 137]
        process.send_signal(signal.SIGTERM)  # exited: no error
        assert_no_child(process.pid)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        process.close()


async def test_container_process_wait_from_two_tasks(tmp_path: Path, subreaper: None) -> None:
    process = await launch_scripted(tmp_path, with_child("exit 5"))
    codes: list[int] = []

    async def waiter() -> None:
        codes.append(await process.wait())

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                nursery.start_soon(waiter)
        assert codes == [5, 5]
    finally:
        process.close()
