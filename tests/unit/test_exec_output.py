"""supervisor/exec.py: an exec's output on its way to attached clients (issue 26): lines that
come one at a time are gathered for a window and sent as one message; a lone line goes at
once; the two streams keep their order. Real pipes, trio's mock clock."""

from __future__ import annotations

import os

import trio
import trio.testing

from supervisor.exec import EXEC_WINDOW, ExecSpec, Execution


class Client:
    """An attachment that records what it is sent."""

    def __init__(self):
        self.sent = []

    async def send(self, stream, data):
        self.sent.append((stream, data))


def test_exec_output_a_line_at_a_time_goes_out_once_per_window_in_order():
    clock = trio.testing.MockClock()

    async def main():
        client = Client()
        execution = Execution(container=None, spec=ExecSpec(cmd=("sh",)), attachments=[client])
        pipes = {name: os.pipe() for name in ("stdout", "stderr")}
        streams = {name: trio.lowlevel.FdStream(fds[0]) for name, fds in pipes.items()}

        async def write(name, data):
            os.write(pipes[name][1], data)
            await trio.testing.wait_all_tasks_blocked()

        async with trio.open_nursery() as nursery:
            for name, stream in streams.items():
                nursery.start_soon(execution._pump, stream, name)
            await trio.testing.wait_all_tasks_blocked()
            await write("stdout", b"zero\n")  # a lone line: at once
            assert client.sent == [("stdout", b"zero\n")]
            await write("stdout", b"one\n")  # right after it: gathered for the window
            await write("stdout", b"two\n")
            clock.jump(EXEC_WINDOW * 0.9)
            await trio.testing.wait_all_tasks_blocked()
            assert len(client.sent) == 1
            clock.jump(EXEC_WINDOW * 0.1)
            await trio.testing.wait_all_tasks_blocked()
            assert client.sent[1:] == [("stdout", b"one\ntwo\n")]
            await write("stdout", b"three\n")  # gathered again ...
            await write("stderr", b"err\n")  # ... and sent before the other stream's line
            assert client.sent[2:] == [("stdout", b"three\n"), ("stderr", b"err\n")]
            clock.jump(EXEC_WINDOW)
            await trio.testing.wait_all_tasks_blocked()
            assert client.sent[4:] == []  # nothing twice
            nursery.cancel_scope.cancel()
        for name, (_, write_end) in pipes.items():
            os.close(write_end)
            await streams[name].aclose()

    trio.run(main, clock=clock)
