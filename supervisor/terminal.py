"""The CLI's end of an attached session (``run`` without -d, ``start -a``, ``attach``,
``exec``): the user's terminal on one side, the daemon's stream on the other.

The protocol is in ``supervisor/attach.py``. This side keeps to it with one ``select``
loop over three fds: the connection to the daemon, stdin (only while fewer than
``STDIN_WINDOW`` input chunks wait for their ack, so a fast producer waits for the
container), and a self-pipe that signals write to (``signal.set_wakeup_fd``):

- output chunks are written to stdout/stderr as they come, and a credit goes back for
  every ``CREDIT_BATCH`` of them written, so a slow terminal holds the daemon back;
- with ``-t`` the terminal is in raw mode (every key goes to the container's pty, whose line
  discipline echoes and edits) and is restored however the session ends; SIGWINCH sends
  the new size; the detach keys (ctrl-p ctrl-q by default) end the session and leave the
  container running;
- without ``-t``, ctrl-c and the other signals a user sends the CLI are forwarded to the
  container (docker's ``--sig-proxy``); end of stdin closes the container's stdin.

Pure parts, unit tested: :func:`parse_detach_keys` and :class:`DetachScanner`.
Only the standard library: the CLI stays light.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import termios
import tty as _tty
from typing import Any

#: docker's default detach keys.
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
#: Output chunks the daemon may have on the way to us.
OUTPUT_WINDOW = 32
#: Output chunks written before a credit for them goes back.
CREDIT_BATCH = 8
#: Input chunks on the way to the daemon before we wait for an ack (attach.STDIN_WINDOW).
STDIN_WINDOW = 8
#: The most stdin bytes read at once (one chunk).
INPUT_CHUNK = 32 * 1024
#: Signals forwarded to the container without a terminal (docker's sig-proxy).
PROXIED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
#: With a terminal, these end the CLI (the terminal restored) and leave the container be.
LEAVING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

_CTRL_NAMES = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


class TerminalError(Exception):
    """A usage problem of the terminal (bad detach keys, no TTY for -t)."""


def parse_detach_keys(text: str) -> bytes:
    """docker's ``--detach-keys`` syntax: comma-separated keys, each a single character or
    ``ctrl-X`` (X a letter or one of ``@ [ \\ ] ^ _``). "" is the default, ctrl-p,ctrl-q.

    Raises:
        TerminalError: a key that is neither.
    """
    text = text or DEFAULT_DETACH_KEYS
    keys = bytearray()
    for part in text.split(","):
        if len(part) == 1 and part.isascii():
            keys.append(ord(part))
            continue
        name = part.lower()
        if name.startswith("ctrl-") and len(part) == 6:
            char = name[5]
            if "a" <= char <= "z":
                keys.append(ord(char) - ord("a") + 1)
                continue
            if char in _CTRL_NAMES:
                keys.append(_CTRL_NAMES[char])
                continue
        raise TerminalError(f"invalid detach keys {text!r}: {part!r} is not a character or ctrl-<value>")
    return bytes(keys)


class DetachScanner:
    """Finds the detach sequence in the keys typed, sans-IO. Bytes that may start the
    sequence are held back until the next key tells; if it does not continue it, they are
    sent on, with it (as docker does)."""

    def __init__(self, keys: bytes):
        self.keys = keys
        self._held = 0  # how many of keys are matched and held back

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to send on, detached). After a detach the rest of ``data`` is dropped."""
        if not self.keys:
            return data, False
        out = bytearray()
        for byte in data:
            if byte == self.keys[self._held]:
                self._held += 1
                if self._held == len(self.keys):
                    self._held = 0
                    return bytes(out), True
                continue
            if self._held:
                out += self.keys[: self._held]
                self._held = 0
                if byte == self.keys[0]:
                    self._held = 1
                    continue
            out.append(byte)
        return bytes(out), False


def window_size(fd: int) -> tuple[int, int] | None:
    """(rows, columns) of the terminal on ``fd``, or None if it is not one."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    if not size.lines or not size.columns:  # a terminal that does not know its size
        return None
    return size.lines, size.columns


class RawMode:
    """``with RawMode(fd):`` the terminal in raw mode, restored on the way out, however it
    is left (exceptions, ctrl-c, a signal that ends the session)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.saved: list | None = None

    def __enter__(self) -> RawMode:
        self.saved = termios.tcgetattr(self.fd)
        _tty.setraw(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


def _noop(signum: int, frame: Any) -> None:
    pass  # the wake-up fd carries the signal into the loop


class _Signals:
    """Signals delivered into the select loop through a self-pipe, while the session runs."""

    def __init__(self, signals: tuple[int, ...]):
        self.signals = signals
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.write_end, False)
        os.set_blocking(self.read_end, False)
        self._saved_handlers: dict[int, Any] = {}
        self._saved_fd = -1

    def __enter__(self) -> _Signals:
        self._saved_fd = signal.set_wakeup_fd(self.write_end, warn_on_full_buffer=False)
        for number in self.signals:
            self._saved_handlers[number] = signal.signal(number, _noop)
        return self

    def take(self) -> list[int]:
        try:
            return list(os.read(self.read_end, 512))
        except BlockingIOError:
            return []

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._saved_handlers.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(self._saved_fd)
        os.close(self.read_end)
        os.close(self.write_end)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[written:]


class Session:
    """One attached session, from the CLI's side. ``run()`` returns the daemon's final
    result ({exit_code} or {detached: true}, or {left: signal} when a signal ended it here).

    Args:
        stream: a started ``bus.client.Stream`` whose request carried ``window=OUTPUT_WINDOW``.
        tty: the process has a terminal: raw mode, resize, detach keys.
        interactive: send our stdin to the process (``-i``).
        detach_keys: the parsed detach sequence (tty sessions only).
    """

    def __init__(self, stream: Any, *, tty: bool, interactive: bool, detach_keys: bytes = b"\x10\x11",
                 sig_proxy: bool = True, stdin: int = 0, stdout: int = 1, stderr: int = 2):
        self.stream = stream
        self.tty = tty
        self.sig_proxy = sig_proxy
        self.interactive = interactive
        self.scanner = DetachScanner(detach_keys if tty and interactive else b"")
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.in_flight = 0
        self.consumed = 0
        self.stdin_open = interactive

    def run(self) -> dict[str, Any]:
        raw = self.tty and self.interactive and os.isatty(self.stdin)
        if self.tty:
            watched = LEAVING_SIGNALS + (signal.SIGWINCH,)
        else:  # without the proxy, ctrl-c is KeyboardInterrupt: the CLI ends, the container not
            watched = PROXIED_SIGNALS if self.sig_proxy else ()
        with _Signals(watched) as signals:
            if raw:
                with RawMode(self.stdin):
                    return self._loop(signals)
            return self._loop(signals)

    def _terminal_size(self) -> tuple[int, int] | None:
        return window_size(self.stdin) or window_size(self.stdout)

    def _loop(self, signals: _Signals) -> dict[str, Any]:
        stream = self.stream
        if self.tty and (size := self._terminal_size()):
            stream.send({"resize": list(size)})
        while True:
            result = self._take_output()
            if result is not None:
                return result
            readers = [stream.fileno(), signals.read_end]
            if self.stdin_open and self.in_flight < STDIN_WINDOW:
                readers.append(self.stdin)
            ready, _, _ = select.select(readers, [], [], 1.0)
            if signals.read_end in ready:
                for number in signals.take():
                    if number == signal.SIGWINCH:
                        if size := self._terminal_size():
                            stream.send({"resize": list(size)})
                    elif self.tty:  # the session ends here; the container runs on
                        stream.send({"detach": True})
                        return {"left": number}
                    else:
                        stream.send({"signal": number})
            if self.stdin in ready and self.stdin_open:
                self._forward_input()

    def _take_output(self) -> dict[str, Any] | None:
        stream = self.stream
        while True:
            try:
                payload = stream.receive_nowait()
            except StopIteration as done:
                return done.value if isinstance(done.value, dict) else {}
            if payload is None:
                break
            data = payload.get("data")
            if isinstance(data, bytes):
                _write_all(self.stderr if payload.get("stream") == "stderr" else self.stdout, data)
                self.consumed += 1
            elif "stdin_ack" in payload:
                self.in_flight = max(0, self.in_flight - int(payload["stdin_ack"]))
        if self.consumed >= CREDIT_BATCH:
            stream.send({"credit": self.consumed})
            self.consumed = 0
        return None

    def _forward_input(self) -> None:
        try:
            data = os.read(self.stdin, INPUT_CHUNK)
        except OSError:
            data = b""  # a terminal that hung up: end of input
        if not data:
            self.stdin_open = False
            self.stream.send({"eof": True})
            return
        data, detached = self.scanner.feed(data)
        if data:
            self.stream.send({"stdin": data})
            self.in_flight += 1
        if detached:
            self.stdin_open = False
            self.stream.send({"detach": True})


def check_terminal(tty: bool, interactive: bool, stdin: int = 0) -> None:
    """docker's rule: ``-i -t`` needs a terminal on stdin."""
    if tty and interactive and not os.isatty(stdin):
        raise TerminalError("the input device is not a TTY")


def attached(client: Any, op: str, args: dict[str, Any], *, tty: bool, interactive: bool, detach_keys: str = "",
             sig_proxy: bool = True) -> dict[str, Any]:
    """Start the streaming request ``op`` as a session and run it to its end."""
    keys = parse_detach_keys(detach_keys)
    check_terminal(tty, interactive)
    stream = client.stream(op, {**args, "window": OUTPUT_WINDOW})
    try:
        return Session(stream, tty=tty, interactive=interactive, detach_keys=keys, sig_proxy=sig_proxy).run()
    finally:
        stream.close()
        sys.stdout.flush()
