"""The daemon's worker manager with real processes, and the backoff it shares with restart
policies."""

from __future__ import annotations

import os
import signal
import sys

import pytest
import structlog
import trio

from supervisor.backoff import Backoff
from supervisor.workers import WorkerManager


def test_backoff_doubles_from_100ms_up_to_a_minute():
    backoff = Backoff()
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.8]
    assert backoff.delay(10) == 51.2
    assert backoff.delay(11) == 60.0
    assert backoff.delay(10_000) == 60.0
    with pytest.raises(ValueError):
        backoff.delay(0)


def test_backoff_resets_after_a_long_enough_run():
    backoff = Backoff()
    assert backoff.next_attempt(0, ran_for=0.5) == 1
    assert backoff.next_attempt(5, ran_for=9.99) == 6
    assert backoff.next_attempt(5, ran_for=10.0) == 1


def sleeper() -> list[str]:
    return [sys.executable, "-c", "import time; time.sleep(60)"]


class Events(list):
    def __call__(self, action: str, name: str, attributes: dict[str, str]) -> None:
        self.append((action, name, attributes))


async def test_a_worker_that_dies_is_restarted_and_stop_ends_it():
    events = Events()
    manager = WorkerManager({"w": sleeper()}, emit=events, log=structlog.get_logger(),
                            backoff=Backoff(initial=0.01, maximum=0.01))
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        first = manager.status()["w"]["pid"]
        assert first and manager.status()["w"]["running"]
        os.kill(first, signal.SIGKILL)
        with trio.fail_after(10):
            while manager.status()["w"]["pid"] in (None, first):
                await trio.sleep(0.01)
        second = manager.status()["w"]["pid"]
        assert manager.status()["w"]["restarts"] == 1
        assert manager.status()["w"]["last_exit"] == -signal.SIGKILL
        await manager.stop(timeout=5)
    assert [action for action, _, _ in events] == ["start", "die", "restart", "start", "die"]
    assert events[0][2] == {"pid": str(first)} and events[3][2] == {"pid": str(second)}
    assert events[2][2]["attempt"] == "1"
    assert not manager.status()["w"]["running"]
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)


async def test_a_worker_in_its_restart_delay_has_no_pid():
    """issue 15 item 8: `kill -9 $(dockyard info | jq .workers.NAME.pid)` must not get 0 (its
    own process group) while the worker waits to be restarted."""
    restarting = trio.Event()

    def emit(action: str, name: str, attributes: dict[str, str]) -> None:
        if action == "restart":
            restarting.set()

    manager = WorkerManager({"w": sleeper()}, emit=emit, log=structlog.get_logger(),
                            backoff=Backoff(initial=60.0, maximum=60.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        os.kill(manager.status()["w"]["pid"], signal.SIGKILL)
        with trio.fail_after(10):
            await restarting.wait()
        status = manager.status()["w"]
        assert status["pid"] is None and not status["running"]
        await manager.stop(timeout=5)
    assert manager.status()["w"]["pid"] is None


async def test_a_worker_that_ignores_sigterm_is_killed_after_the_timeout():
    stubborn = [sys.executable, "-c",
                "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(60)"]
    manager = WorkerManager({"w": stubborn}, emit=Events(), log=structlog.get_logger())
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await trio.sleep(0.5)  # let it install its handler
        await manager.stop(timeout=0.2)
    assert manager.status()["w"]["last_exit"] == -signal.SIGKILL


async def test_a_command_that_cannot_start_is_retried_not_fatal():
    events = Events()
    manager = WorkerManager({"w": ["/nonexistent/worker"]}, emit=events, log=structlog.get_logger(),
                            backoff=Backoff(initial=0.01, maximum=0.01))
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        with trio.fail_after(10):
            while manager.status()["w"]["restarts"] < 3:
                await trio.sleep(0.01)
        await manager.stop()
    assert all(action in ("die", "restart") for action, _, _ in events)
    assert manager.status()["w"]["last_exit"] == 127


async def test_cancelling_the_manager_kills_its_workers():
    manager = WorkerManager({"w": sleeper()}, emit=Events(), log=structlog.get_logger())
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        pid = manager.status()["w"]["pid"]
        nursery.cancel_scope.cancel()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


PARENT = """
import subprocess, sys, threading
child = {}
def spawn():  # from a thread that ends once the child is set up, as trio's cached threads do
    child["p"] = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(__import__("os").getpid())],
                                  stdout=subprocess.PIPE)
    child["p"].stdout.readline()
thread = threading.Thread(target=spawn)
thread.start()
thread.join()
print(child["p"].pid, flush=True)
sys.stdin.readline()  # until the test closes our stdin
"""

CHILD = """
import sys, trio
from workers import runner
pidfd = runner.open_parent(int(sys.argv[1]))
print("ready", flush=True)
trio.run(runner.parent_exited, pidfd)
"""


def test_a_worker_outlives_the_thread_that_started_it_and_ends_with_its_daemon():
    """The daemon starts workers from a trio thread that ends after 10 s idle: the worker
    must not end with that thread (PR_SET_PDEATHSIG did), only with the daemon process."""
    import subprocess

    from tests.polling import process_gone, wait_until

    with subprocess.Popen([sys.executable, "-c", PARENT, CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__)))) as parent:
        child = int(parent.stdout.readline())
        # The spawning thread has ended; give a thread-bound death signal time to arrive.
        trio.run(trio.sleep, 0.5)
        assert not process_gone(child)
        parent.stdin.close()
        parent.wait(timeout=10)
    wait_until(lambda: process_gone(child), timeout=10, what=f"worker {child} ending with its parent")


def test_a_worker_whose_daemon_is_gone_refuses_to_start():
    import subprocess

    done = subprocess.run([sys.executable, "-m", "workers", "monitor", "--root", "/nonexistent", "--run",
                           "/nonexistent", "--parent-pid", "999999999"], capture_output=True, text=True, timeout=30,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert done.returncode != 0
    assert "the daemon (pid 999999999) is gone" in done.stderr
