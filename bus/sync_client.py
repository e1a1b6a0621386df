"""The synchronous bus client, the CLI's: :class:`Client` and what its requests, streams and
subscriptions return.

Importing this module loads msgpack and bus.codec, not pyzmq and not trio: the CLI starts
fast. Requests go over :mod:`bus.zmtp` (a small ZMTP DEALER); pyzmq is imported by
subscriptions only.

Requests
    A DEALER connected to ``<run_dir>/control.sock`` sends one frame per request,
    ``request.<op>`` with ``seq`` = a request id that grows by one per client. A reply (or
    stream message) whose ``seq`` is not an outstanding request id is stale (its request
    timed out) and is dropped. Every wait is polled in short slices, so Ctrl-C works and a
    client never hangs on a daemon that is gone.

Subscriptions
    A SUB socket connected to ``<run_dir>/events.sock`` subscribes to the prefixes and to
    ``sync.<token>``, then asks the daemon ``bus.sync {token}``; the reply comes once the
    daemon's XPUB has seen the token, that is once every subscription made before it is in
    effect (see bus/publisher.py). ``subscribe`` returns only after that, so an event
    published after it returns is not missed (unless the subscriber falls behind by more
    than the high-water marks; then ``seq`` shows the gap, see codec.GapDetector).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from bus import codec
from bus.codec import Envelope
from bus.connect import POLL_SLICE, SYNC_TIMEOUT, FilterGaps, check_daemon, check_prefixes, events, locate, same_daemon, subscriber
from bus.errors import DaemonUnavailable, RequestTimeout
from bus.zmtp import ZmtpDealer, ZmtpError

if TYPE_CHECKING:
    import zmq

__all__ = ["Client", "Pending", "Stream", "Subscription"]


class Client:
    """Synchronous bus client. Not thread-safe; one request or stream at a time.

    Args:
        run_dir: the daemon's run dir (default: :func:`default_run_dir`).
        source: the ``source`` of the envelopes this client sends.
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, *, source: str | None = None):
        locate(self, run_dir, source)
        self._context: zmq.Context | None = None
        self._dealer: ZmtpDealer | None = None
        self._daemon_inode = 0
        self._last_id = 0
        self._open_stream: Stream | None = None
        self._closed = False

    # requests

    def request(self, op: str, args: dict[str, Any] | None = None, *, timeout: float | None = 30.0) -> Any:
        """Send one request and return the reply's result (``timeout`` None: wait as long as
        the daemon is there, interruptibly).

        Raises:
            RemoteError: the daemon answered with an error (``code`` says which).
            RequestTimeout: no reply within ``timeout`` seconds.
            DaemonUnavailable: no daemon at the control socket, or it went away.
        """
        request_id = self._send(op, args, 30.0 if timeout is None else timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            envelope = self._receive(request_id, op, deadline, timeout)
            if not codec.is_stream(envelope):
                return codec.unwrap_reply(envelope)

    def send_request(self, op: str, args: dict[str, Any] | None = None, *, timeout: float | None = 30.0) -> Pending:
        """Send one request now and take its reply later (:meth:`Pending.result`): the caller
        works while the daemon answers (``logs`` keeps its next page in flight this way).
        Take each reply before sending the next request: replies to requests that are not
        the one being waited for are dropped as stale."""
        request_id = self._send(op, args, 30.0 if timeout is None else timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        return Pending(self, op, request_id, deadline, timeout)

    def stream(self, op: str, args: dict[str, Any] | None = None, *, timeout: float | None = None) -> Stream:
        """Send a streaming request. Iterate the returned :class:`Stream` for the stream
        payloads; its ``result`` (and StopIteration.value) is the reply's result; an error
        reply raises RemoteError from the iteration.

        ``timeout`` bounds the silence between two messages (None: wait for ever, still
        interruptible). The request is sent before this returns.
        """
        if self._open_stream is not None and not self._open_stream.done:
            raise RuntimeError("a stream is still open on this client: finish or close it first")
        request_id = self._send(op, args, timeout if timeout is not None else 30.0)
        self._open_stream = Stream(self, op, request_id, timeout)
        return self._open_stream

    def _send(self, op: str, args: dict[str, Any] | None, timeout: float) -> int:
        if self._open_stream is not None and not self._open_stream.done:
            raise RuntimeError("a stream is still open on this client: finish or close it first")
        dealer = self._control_socket()
        self._last_id += 1
        frame = codec.encode(codec.request(op, self._last_id, args if args is not None else {}, self.source))
        try:
            dealer.send(frame, timeout)
        except TimeoutError:  # the daemon does not read its socket
            raise RequestTimeout(op, timeout) from None
        except OSError as exc:
            self._drop_dealer()
            raise DaemonUnavailable(self.control_path, f"the connection broke: {exc}") from None
        return self._last_id

    def _receive(self, request_id: int, op: str, deadline: float | None, timeout: float | None) -> Envelope:
        """The next stream message or reply for request_id."""
        dealer = self._dealer
        assert dealer is not None
        while True:
            if deadline is None:
                wait = POLL_SLICE
            else:
                wait = min(POLL_SLICE, deadline - time.monotonic())
                if wait <= 0:
                    raise RequestTimeout(op, timeout or 0.0)
            try:
                ready = dealer.poll(wait)
            except ZmtpError as exc:
                self._drop_dealer()
                raise DaemonUnavailable(self.control_path, f"the daemon went away before it answered {op!r}: {exc}") from None
            if not ready:
                if not same_daemon(self.control_path, self._daemon_inode):
                    self._drop_dealer()
                    raise DaemonUnavailable(self.control_path, f"the daemon went away before it answered {op!r}")
                continue
            frames = dealer.recv()
            if len(frames) != 1:
                continue  # not a reply of this protocol
            envelope = codec.decode(frames[0])
            if envelope.seq == request_id:
                return envelope
            # A late answer to a request that timed out: drop it.

    def _control_socket(self) -> ZmtpDealer:
        if self._closed:
            raise RuntimeError("this client is closed")
        if self._dealer is None:
            self._daemon_inode = check_daemon(self.control_path)
            try:
                self._dealer = ZmtpDealer(self.control_path)
            except OSError as exc:
                raise DaemonUnavailable(self.control_path, f"cannot connect: {exc}") from None
        return self._dealer

    def _drop_dealer(self) -> None:
        if self._dealer is not None:
            self._dealer.close()
            self._dealer = None

    def _zmq_context(self) -> zmq.Context:
        import zmq

        if self._context is None:
            self._context = zmq.Context()
        return self._context

    # subscriptions

    def subscribe(self, prefixes: Sequence[str], *, timeout: float | None = None) -> Subscription:
        """Subscribe to events whose topic starts with one of ``prefixes`` (``[""]``: all).

        Returns once the subscription is in effect at the daemon (bus.sync handshake): every
        event published after that is delivered. Iterating the :class:`Subscription` yields
        envelopes; it ends when ``timeout`` seconds pass without one (None: never).
        """
        import zmq

        topics = check_prefixes(prefixes)
        if self._closed:
            raise RuntimeError("this client is closed")
        check_daemon(self.events_path)
        sub, token = subscriber(self._zmq_context(), self.events_path, topics)
        try:
            self.request("bus.sync", {"token": token}, timeout=SYNC_TIMEOUT)
            sub.setsockopt(zmq.UNSUBSCRIBE, f"sync.{token}".encode())
        except BaseException:
            sub.close(linger=0)
            raise
        return Subscription(sub, timeout)

    # lifetime

    def close(self) -> None:
        """Close every socket of this client (subscriptions included)."""
        self._closed = True
        self._drop_dealer()
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Pending:
    """A request sent by :meth:`Client.send_request`; :meth:`result` waits for its reply."""

    def __init__(self, client: Client, op: str, request_id: int, deadline: float | None, timeout: float | None):
        self._client = client
        self.op = op
        self.request_id = request_id
        self._deadline = deadline
        self._timeout = timeout

    def result(self) -> Any:
        """The reply's result; raises like :meth:`Client.request`."""
        while True:
            envelope = self._client._receive(self.request_id, self.op, self._deadline, self._timeout)
            if not codec.is_stream(envelope):
                return codec.unwrap_reply(envelope)


class Stream(Iterator[dict]):
    """The stream payloads of one request, then its result (see Client.stream)."""

    def __init__(self, client: Client, op: str, request_id: int, timeout: float | None):
        self.op = op
        self.request_id = request_id
        self.timeout = timeout
        self.result: Any = None
        self.done = False
        self._client = client

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> dict:
        if self.done:
            raise StopIteration(self.result)
        deadline = time.monotonic() + self.timeout if self.timeout is not None else None
        try:
            envelope = self._client._receive(self.request_id, self.op, deadline, self.timeout)
        except BaseException:
            self.done = True
            raise
        if codec.is_stream(envelope):
            return envelope.data
        self.done = True
        self.result = codec.unwrap_reply(envelope)
        raise StopIteration(self.result)

    def close(self) -> None:
        """Stop listening; what the daemon still sends for this request is dropped."""
        self.done = True

    # Both ways, for attached sessions (supervisor/attach.py has the protocol): the caller
    # multiplexes the socket with its own fds (select on fileno()), sends stream messages
    # of its own and takes the daemon's without blocking.

    def fileno(self) -> int:
        """The fd of the connection to the daemon, to select on."""
        dealer = self._client._dealer
        if dealer is None:
            raise RuntimeError("the connection to the daemon is closed")
        return dealer.fileno()

    def send(self, payload: dict[str, Any], timeout: float = 30.0) -> None:
        """Send a ``stream.<op>`` message of this request to the daemon.

        Raises:
            RequestTimeout: the daemon did not take it within ``timeout`` seconds.
            DaemonUnavailable: the connection broke.
        """
        client = self._client
        dealer = client._dealer
        if dealer is None or self.done:
            raise RuntimeError(f"the stream of {self.op!r} is finished")
        frame = codec.encode(codec.stream(self.op, self.request_id, payload, client.source))
        try:
            dealer.send(frame, timeout)
        except TimeoutError:
            raise RequestTimeout(self.op, timeout) from None
        except OSError as exc:
            client._drop_dealer()
            self.done = True
            raise DaemonUnavailable(client.control_path, f"the connection broke: {exc}") from None

    def receive_nowait(self) -> dict | None:
        """The next stream payload if one has arrived, None if none has. At the reply:
        StopIteration (its ``value`` is the result), or RemoteError for an error reply.

        Raises:
            DaemonUnavailable: the daemon went away.
        """
        if self.done:
            raise StopIteration(self.result)
        client = self._client
        dealer = client._dealer
        assert dealer is not None
        while True:
            try:
                if not dealer.poll(0):
                    return None
            except ZmtpError as exc:
                client._drop_dealer()
                self.done = True
                raise DaemonUnavailable(client.control_path, f"the daemon went away during {self.op!r}: {exc}") from None
            frames = dealer.recv()
            if len(frames) != 1:
                continue
            envelope = codec.decode(frames[0])
            if envelope.seq != self.request_id:
                continue
            if codec.is_stream(envelope):
                return envelope.data
            self.done = True
            self.result = codec.unwrap_reply(envelope)
            raise StopIteration(self.result)


class Subscription(Iterator[Envelope]):
    """Events of a subscription, in the order published. ``bad_frames`` counts messages
    that were not envelopes (skipped)."""

    def __init__(self, sub: zmq.Socket, timeout: float | None):
        self.timeout = timeout
        self.bad_frames = 0
        self.filter_gaps = FilterGaps()  # a filtered subscription's missed events
        self._sub = sub
        self._received: list[Envelope] = []  # the rest of a batch (bus/batches.py), reversed

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> Envelope:
        if self._received:
            return self._received.pop()
        import zmq

        deadline = time.monotonic() + self.timeout if self.timeout is not None else None
        sub = self._sub
        while True:
            try:
                # recv() frame by frame: recv_multipart costs pyzmq several times more.
                frames = [sub.recv(zmq.NOBLOCK)]
                while sub.get(zmq.RCVMORE):
                    frames.append(sub.recv(zmq.NOBLOCK))
            except zmq.Again:
                if deadline is None:
                    wait = POLL_SLICE
                else:
                    wait = min(POLL_SLICE, deadline - time.monotonic())
                    if wait <= 0:
                        raise StopIteration from None
                sub.poll(max(1, int(wait * 1000)), zmq.POLLIN)
                continue
            except zmq.ZMQError as exc:
                if exc.errno in (zmq.ENOTSOCK, zmq.ETERM):
                    raise StopIteration from None  # closed
                raise
            received = events(frames)
            if received is None:
                self.bad_frames += 1
                continue
            topic, envelopes, bad = received
            self.bad_frames += bad
            self.filter_gaps.seen(topic)
            if len(envelopes) == 1:
                return envelopes[0]
            if envelopes:
                envelopes.reverse()
                self._received = envelopes
                return envelopes.pop()

    def close(self) -> None:
        self._sub.close(linger=0)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
