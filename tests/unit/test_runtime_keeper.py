"""supervisor/runtime/keeper.py and keeperclient.py: the keeper process and its hand-over,
with a real keeper process (no container: the held fds are a pipe of the test's)."""

from __future__ import annotations

import os

import trio

from supervisor.runtime.keeperclient import KeeperClient


async def test_the_keeper_hands_what_it_holds_to_the_next_daemon(tmp_path):
    first = KeeperClient(tmp_path, python=os.environ.get("PYTHON", __import__("sys").executable))
    assert await first.connect() == []
    read_end, write_end = os.pipe()
    pid = os.getpid()  # any live process stands for pid 1 here
    await first._send({"op": "hold", "id": "c1", "pid": pid, "start_time": 42, "names": ["stdout"],
                       "extra": {"ports": []}}, [read_end])
    os.close(read_end)  # only the keeper holds the read end now
    keeper = first.pid
    await first.aclose()  # the daemon goes away: the keeper stays, it holds c1
    os.write(write_end, b"written while no daemon ran\n")  # no EPIPE: the pipe is held open

    second = KeeperClient(tmp_path, python=first.python)
    with trio.fail_after(60):
        held = await second.connect()
    assert second.pid == keeper
    assert [(h.id, h.pid, h.start_time, h.exit, sorted(h.fds)) for h in held] == [("c1", pid, 42, None, ["stdout"])]
    assert os.read(held[0].take("stdout"), 100) == b"written while no daemon ran\n"
    await second.release("c1", pid)
    await second.stop_when_idle()
    await second.aclose()  # holding nothing: the keeper exits
    with trio.fail_after(60):
        while is_keeper(keeper):
            await trio.sleep(0.05)  # polls the keeper's exit, bounded
    os.waitpid(keeper, 0)  # the first client started it: it is this process's child
    os.close(write_end)
    assert not (tmp_path / "keeper.sock").exists()


def is_keeper(pid: int) -> bool:
    """A running keeper (a zombie, or another process, is not)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"keeper.py" in cmdline.read()
    except OSError:
        return False


async def test_a_keeper_of_another_protocol_version_is_left_alone_and_one_of_ours_runs_beside_it(tmp_path):
    import socket

    from supervisor.runtime import keeper as keeper_module

    # An older (or newer) dockyard's keeper: it answers the hello with another version (and
    # would hand its containers over in a format this daemon does not know).
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(tmp_path / "keeper.sock"))
    listener.listen(1)
    (tmp_path / "keeper.lock").write_text("4242\n")
    client = KeeperClient(tmp_path, python=os.environ.get("PYTHON", __import__("sys").executable))

    async def other_version() -> None:
        connection, _ = await trio.to_thread.run_sync(listener.accept)
        with connection:
            connection.recv(4096)
            connection.send(keeper_module.encode({"op": "hello", "version": 99, "pid": 4242, "held": 1}))
            connection.send(keeper_module.encode({"op": "held", "id": "c1", "pid": 1, "start_time": 1}))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_version)
            with trio.fail_after(60):
                held = await client.connect()
        assert held == []
        assert (client.incompatible.pid, client.incompatible.version) == (4242, 99)
        assert "speaks protocol 99, this daemon 1" in client.incompatible.message
        assert client.socket_path == str(tmp_path / "keeper-v1.sock") and client.pid not in (0, 4242)
        assert is_keeper(client.pid)
    finally:
        listener.close()
        ours = client.pid
        await client.stop_when_idle()
        await client.aclose()  # holding nothing: our keeper exits (reaped: this process started it)
    assert not is_keeper(ours)
    assert not (tmp_path / "keeper-v1.sock").exists()
