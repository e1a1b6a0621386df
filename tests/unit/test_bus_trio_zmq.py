"""pyzmq under trio (bus/trio_zmq.py): one waiter, wake-ups, the message source descriptor.

No root needed; inproc and loopback sockets. trio.fail_after is only a hang guard, never an
assertion about speed.
"""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
import zmq

from bus.trio_zmq import AsyncSocket

from tests.bus_harness import GUARD


async def test_async_socket_allows_one_waiter_and_close_wakes_it() -> None:
    context = zmq.Context()
    raw = context.socket(zmq.PULL)
    raw.setsockopt(zmq.LINGER, 0)
    wrapped = AsyncSocket(raw)
    outcome: list[BaseException] = []

    async def waiter() -> None:
        try:
            await wrapped.recv()
        except trio.ClosedResourceError as exc:
            outcome.append(exc)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await wrapped.wait()
            wrapped.close()
    finally:
        context.term()
    assert len(outcome) == 1


async def test_a_send_that_drains_the_mailbox_wakes_the_receiver() -> None:
    """The lost wake-up, built step by step: a reply lands in the DEALER's mailbox (its fd
    turns readable) and, before the parked receiver runs, another task sends on the same
    DEALER; libzmq processes the mailbox inside that send and the fd is quiet again. Only
    the re-check after the send (AsyncSocket.touched) wakes the receiver."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    dealer = context.socket(zmq.DEALER)
    for raw in (router, dealer):
        raw.setsockopt(zmq.LINGER, 0)
    router.bind("inproc://drain")
    dealer.connect("inproc://drain")
    server_side, client_side = AsyncSocket(router), AsyncSocket(dealer)
    received: list[list[bytes]] = []
    woke = trio.Event()
    try:
        assert client_side.send_nowait([b"hello"])
        peer, _ = await server_side.recv()
        async with trio.open_nursery() as nursery:

            async def receiver() -> None:
                received.append(await client_side.recv())
                woke.set()

            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()  # the receiver is parked on the fd
            # libzmq processes commands inside send() at most once a millisecond or so;
            # let that throttle run out so the send below does process the mailbox.
            await trio.sleep(0.02)
            assert server_side.send_nowait([peer, b"reply"])  # inproc: straight into the mailbox
            assert client_side.send_nowait([b"second"])  # drains the mailbox, fd goes quiet
            with trio.fail_after(GUARD / 3):  # without the re-check: sleeps for ever
                await woke.wait()
    finally:
        server_side.close()
        client_side.close()
        context.term()
    assert received == [[b"reply"]]


async def test_async_socket_sends_from_other_tasks_do_not_strand_the_receiver() -> None:
    """One task waits on a DEALER while other tasks send on it; every send drains the
    mailbox fd, so without the re-check the receiver could sleep with replies queued."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    dealer = context.socket(zmq.DEALER)
    for raw in (router, dealer):
        raw.setsockopt(zmq.LINGER, 0)
    router.bind("inproc://strand")
    dealer.connect("inproc://strand")
    echo, client_side = AsyncSocket(router), AsyncSocket(dealer)
    total = 5_000
    try:
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:

                async def echo_back() -> None:
                    for _ in range(total):
                        assert echo.send_nowait(await echo.recv())

                async def sender(offset: int) -> None:
                    for i in range(offset, total, 4):
                        while not client_side.send_nowait([str(i).encode()]):
                            await trio.sleep(0.001)
                        if i % 7 == 0:
                            await trio.lowlevel.checkpoint()

                nursery.start_soon(echo_back)
                for offset in range(4):
                    nursery.start_soon(sender, offset)
                received = set()
                for _ in range(total):
                    received.add(int((await client_side.recv())[0]))
    finally:
        echo.close()
        client_side.close()
        context.term()
    assert received == set(range(total))


def test_message_source_descriptor_is_reported() -> None:
    """ZMQ_SRCFD (deprecated in libzmq, still implemented) is what ties a routing id to its
    connection; a libzmq without it must fail here, not silently stop cancelling."""
    context = zmq.Context()
    try:
        router = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send(b"hello")
        assert router.poll(GUARD * 1000)
        frames, fd = AsyncSocket(router).recv_from_nowait()
        assert frames[1] == b"hello" and fd > 2
        assert socket.socket(fileno=fd).detach() == fd  # a real socket of this process
        dealer.close()
        router.close()
    finally:
        context.term()
