"""A minimal ZMTP 3.0 DEALER over a unix socket, for the synchronous client (the CLI).

Why: importing pyzmq costs about 65 ms, more than everything else a `dockyard run --rm`
does on the client side. The CLI only needs one DEALER talking to the daemon's ROUTER
(requests, streamed output, replies), and that wire protocol is small and fixed: ZMTP 3.0
(RFC 23/ZMTP) with the NULL mechanism. The daemon's side stays libzmq; subscriptions
(``Client.subscribe``) still use pyzmq. The unit tests talk to a real libzmq ROUTER.

Wire summary::

    greeting   ff 00*8 7f | 03 00 | "NULL" + 00*16 | 00 (as-server) | 00*31     64 bytes, both ways
    handshake  command READY {Socket-Type: DEALER}                          both ways
    frame      flags (bit0 MORE, bit1 LONG, bit2 COMMAND) | size (1 or 8 bytes, BE) | body

A DEALER's message to a ROUTER is its frames as they are (the ROUTER adds the peer's
identity on its side), and the ROUTER's reply arrives without the identity frame.
"""

from __future__ import annotations

import _socket
import select

GREETING = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31
MORE, LONG, COMMAND = 0x01, 0x02, 0x04
#: The largest frame accepted from the daemon (the codec refuses bigger ones anyway).
MAX_FRAME = 64 * 1024 * 1024
#: A frame this big whose body has not all come is received into a buffer of its own.
BIG_FRAME = 256 * 1024


class ZmtpError(ConnectionError):
    """The peer broke the protocol, or went away."""


def encode_frame(body: bytes, flags: int = 0) -> bytes:
    size = len(body)
    if size > 255:
        return bytes((flags | LONG,)) + size.to_bytes(8, "big") + body
    return bytes((flags, size)) + body


def ready_command(socket_type: bytes) -> bytes:
    name = b"Socket-Type"
    body = b"\x05READY" + bytes((len(name),)) + name + len(socket_type).to_bytes(4, "big") + socket_type
    return encode_frame(body, COMMAND)


def check_greeting(greeting: bytes) -> None:
    if len(greeting) != 64 or greeting[0] != 0xFF or greeting[9] != 0x7F:
        raise ZmtpError("the peer did not send a ZMTP greeting")
    if greeting[10] < 3:
        raise ZmtpError(f"the peer speaks ZMTP {greeting[10]}.{greeting[11]}, 3.0 or newer is needed")
    if greeting[12:32].rstrip(b"\x00") != b"NULL":
        raise ZmtpError(f"the peer wants security mechanism {greeting[12:32].rstrip(bytes(1))!r}, not NULL")


class FrameReader:
    """Sans-IO: feed bytes, take whole messages (lists of frames) and commands out."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._frames: list[bytes] = []
        self.messages: list[list[bytes]] = []
        self.commands: list[bytes] = []
        # A big frame whose header came: its body is received straight into ``_body`` (no
        # copies through the buffer); ``_filled`` bytes of it are in, ``_flags`` its flags.
        self._body: bytearray | None = None
        self._filled = 0
        self._flags = 0

    def body_view(self) -> memoryview | None:
        """Where the next bytes go, for recv_into, when a big frame is being received (then
        call :meth:`body_received`); None: receive and :meth:`feed` as usual."""
        if self._body is None:
            return None
        return memoryview(self._body)[self._filled :]

    def body_received(self, count: int) -> None:
        self._filled += count
        if self._body is not None and self._filled == len(self._body):
            body, self._body = self._body, None
            self._frame(self._flags, body)

    def _frame(self, flags: int, body: bytes | bytearray) -> None:
        if flags & COMMAND:
            self.commands.append(bytes(body))
            return
        self._frames.append(body)  # type: ignore[arg-type]  # a bytearray for a big frame
        if not flags & MORE:
            self.messages.append(self._frames)
            self._frames = []

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        self._parse()

    def _parse(self) -> None:
        buffer = self._buffer
        while len(buffer) >= 2:
            flags = buffer[0]
            if flags & LONG:
                if len(buffer) < 9:
                    return
                size, start = int.from_bytes(buffer[1:9], "big"), 9
            else:
                size, start = buffer[1], 2
            if size > MAX_FRAME:
                raise ZmtpError(f"frame of {size} bytes is over the limit of {MAX_FRAME}")
            if len(buffer) < start + size:
                if size >= BIG_FRAME:
                    # The body goes to its own bytearray, the rest of it straight from the
                    # socket (body_view): each byte is copied once, by the kernel.
                    body = bytearray(size)
                    have = len(buffer) - start
                    body[:have] = memoryview(buffer)[start:]
                    buffer.clear()
                    self._body, self._filled, self._flags = body, have, flags
                return
            with memoryview(buffer) as view:  # one copy, not two (a slice of a bytearray is one)
                body = bytes(view[start : start + size])
            del buffer[: start + size]
            self._frame(flags, body)


class ZmtpDealer:
    """One DEALER connection to a libzmq ROUTER on a unix socket. Not thread-safe."""

    def __init__(self, path: str, timeout: float = 5.0):
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self._sock = sock
        self._reader = FrameReader()
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(GREETING + ready_command(b"DEALER"))
            greeting = b""
            while len(greeting) < 64:
                chunk = sock.recv(64 - len(greeting))
                if not chunk:
                    raise ZmtpError("the peer closed the connection during the greeting")
                greeting += chunk
            check_greeting(greeting)
            while not self._reader.commands:
                self._fill(timeout)
            ready = self._reader.commands.pop(0)
            if not ready.startswith(b"\x05READY"):
                raise ZmtpError(f"the peer refused the handshake: {ready[:80]!r}")
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise

    def send(self, frame: bytes, timeout: float = 5.0) -> None:
        self._sock.settimeout(timeout)
        try:
            self._sock.sendall(encode_frame(frame))
        finally:
            self._sock.setblocking(False)

    def poll(self, timeout: float) -> bool:
        """True when a whole message is ready to be taken by :meth:`recv`."""
        if self._reader.messages:
            return True
        readable, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
        if readable:
            self._fill(0)
            self._reader.commands.clear()  # none are defined after the handshake in 3.0
        return bool(self._reader.messages)

    def recv(self) -> list[bytes]:
        """The next whole message; call after :meth:`poll` said True."""
        return self._reader.messages.pop(0)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def _fill(self, timeout: float) -> None:
        view = self._reader.body_view()
        if view is not None:
            with view:
                try:
                    count = self._sock.recv_into(view)
                except BlockingIOError:
                    return
                except TimeoutError:
                    raise ZmtpError(f"no answer from the peer within {timeout:g} s") from None
            if not count:
                raise ZmtpError("the peer closed the connection")
            self._reader.body_received(count)
            return
        try:
            data = self._sock.recv(1 << 20)
        except BlockingIOError:
            return
        except TimeoutError:
            raise ZmtpError(f"no answer from the peer within {timeout:g} s") from None
        if not data:
            raise ZmtpError("the peer closed the connection")
        self._reader.feed(data)
