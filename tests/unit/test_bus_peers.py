"""The connection table (bus/peers.py), without sockets."""

from __future__ import annotations

from bus.peers import Peers


def test_peers_keep_at_most_the_bound_and_a_quarter_per_process() -> None:
    peers = Peers(max_connections=8, max_in_flight=2)
    assert [peers.accepted(fd, pid=100) for fd in (10, 11, 12)] == [True, True, False]
    assert [peers.accepted(fd, pid=200 + fd) for fd in range(20, 28)] == [True] * 6 + [False] * 2
    assert peers.stats.connections == 8 and peers.stats.connections_refused == 3
    assert peers.disconnected(12) == set()  # a refused one leaving changes no count
    assert peers.seen(b"client", 10)
    assert peers.disconnected(10) == {b"client"} and not peers.connected(b"client")
    assert peers.stats.connections == 7
    assert peers.accepted(10, pid=100)  # the fd reused by a new connection of the same process
    assert peers.accepted(30, pid=300, refusable=False)  # over the bound, but cannot be closed
    assert not peers.is_refused(30) and peers.seen(b"other", 30)


def test_peers_cap_requests_in_flight_per_client() -> None:
    peers = Peers(max_connections=4, max_in_flight=2)
    assert [peers.begin(b"a") for _ in range(3)] == [True, True, False]
    assert peers.begin(b"b")
    peers.end(b"a")
    assert peers.begin(b"a") and peers.in_flight() == 3 and peers.in_flight(b"a") == 2
