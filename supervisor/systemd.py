"""systemd without libsystemd: the notify protocol and socket activation, spoken directly.

Notify (sd_notify(3))
    systemd passes ``$NOTIFY_SOCKET``, the path of a unix datagram socket (a leading ``@``
    means the abstract namespace). A message is one datagram of newline-separated
    ``KEY=VALUE`` lines. The daemon sends::

        READY=1 + STATUS=...          once the bus listens and the state is reconciled
        STATUS=3 containers, ...      when the counts change
        WATCHDOG=1                    every WATCHDOG_USEC/2 when the unit has WatchdogSec=
        RELOADING=1 + MONOTONIC_USEC  on SIGHUP, then READY=1 once the config is reloaded
        STOPPING=1                    when it starts to shut down

Socket activation (sd_listen_fds(3))
    With ``$LISTEN_PID`` = our pid, descriptors 3 .. 3+``$LISTEN_FDS``-1 are listening
    sockets, named by ``$LISTEN_FDNAMES`` (colon-separated, from ``FileDescriptorName=``).
    The daemon takes ``control`` and ``events`` (by name, or else by the socket's path:
    ``control.sock``, ``events.sock``) and hands them to ZeroMQ (ZMQ_USE_FD).

The variables are removed from the environment once read, so that workers and containers
do not inherit them (a child that sent READY=1 would confuse systemd).
"""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

from supervisor.errors import DockyardError

SD_LISTEN_FDS_START = 3
#: The names the daemon's two sockets have in a socket unit (FileDescriptorName=).
SOCKET_NAMES = {"control": "control.sock", "events": "events.sock"}


class SystemdError(DockyardError):
    code = "invalid_argument"


@dataclass
class Notifier:
    """Sends sd_notify messages; does nothing when there is no $NOTIFY_SOCKET."""

    address: str | None = None
    sent: int = 0
    failed: int = 0  # datagrams not sent: no socket, or its queue full (counted, never fatal)

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        environ = os.environ if environ is None else environ
        return cls(environ.pop("NOTIFY_SOCKET", None) or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; False if it could not be sent."""
        if self.address is None:
            return False
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]
        payload = "\n".join(lines).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                # Never block the daemon's loop: a unix datagram send blocks while the
                # receiver's queue is full (net.unix.max_dgram_qlen, often 10 messages).
                sock.sendto(payload, socket.MSG_DONTWAIT, address)
            except OSError:
                self.failed += 1
                return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload (systemd 253) match the reload to our answer.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")


def watchdog_interval(environ: MutableMapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """How often (seconds) to send WATCHDOG=1: half of $WATCHDOG_USEC, or None without one
    (or when $WATCHDOG_PID names another process)."""
    environ = os.environ if environ is None else environ
    usec = environ.pop("WATCHDOG_USEC", None)
    watchdog_pid = environ.pop("WATCHDOG_PID", None)
    if not usec:
        return None
    if watchdog_pid and watchdog_pid.isdigit() and int(watchdog_pid) != (os.getpid() if pid is None else pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        raise SystemdError(f"WATCHDOG_USEC={usec!r} is not a number of microseconds") from None
    if value <= 0:
        return None
    return value / 2 / 1_000_000


def listen_fds(environ: MutableMapping[str, str] | None = None, pid: int | None = None) -> list[tuple[int, str]]:
    """The (fd, name) pairs passed by socket activation, or [] if none were passed to us.
    Marks each descriptor close-on-exec."""
    environ = os.environ if environ is None else environ
    listen_pid = environ.pop("LISTEN_PID", None)
    count = environ.pop("LISTEN_FDS", None)
    names = environ.pop("LISTEN_FDNAMES", None)
    if not listen_pid or not count:
        return []
    if not listen_pid.isdigit() or int(listen_pid) != (os.getpid() if pid is None else pid):
        return []  # meant for another process (we were exec'd by the one it was for)
    if not count.isdigit():
        raise SystemdError(f"LISTEN_FDS={count!r} is not a number")
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))
    labels = names.split(":") if names else []
    labels += ["unknown"] * (len(fds) - len(labels))
    for fd in fds:
        os.set_inheritable(fd, False)
    return list(zip(fds, labels))


def bus_sockets(passed: list[tuple[int, str]], run_dir: os.PathLike[str] | str) -> dict[str, int]:
    """Map socket-activated descriptors to the bus's ``control`` and ``events`` sockets.

    A descriptor is taken by its name (``FileDescriptorName=control``), or else by the file
    name of the unix socket it is bound to. Each must be a listening unix stream socket bound
    to ``<run_dir>/control.sock`` or ``<run_dir>/events.sock``: clients find the daemon there.

    Raises:
        SystemdError: a descriptor that is not such a socket, or bound elsewhere.
    """
    found: dict[str, int] = {}
    for fd, name in passed:
        try:
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            raise SystemdError(f"socket activation: descriptor {fd} ({name}): {exc.strerror}") from None
        if not stat.S_ISSOCK(mode):
            raise SystemdError(f"socket activation: descriptor {fd} ({name}) is not a socket")
        sock = socket.socket(fileno=fd)
        try:
            family, kind, path = sock.family, sock.type, sock.getsockname()
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        finally:
            sock.detach()
        if family != socket.AF_UNIX or kind != socket.SOCK_STREAM or not listening:
            raise SystemdError(
                f"socket activation: descriptor {fd} ({name}) must be a listening unix stream socket "
                f"(ListenStream=/path in the socket unit)"
            )
        path = os.fsdecode(path) if path else ""
        role = name if name in SOCKET_NAMES else next(
            (key for key, filename in SOCKET_NAMES.items() if os.path.basename(path) == filename), None)
        if role is None:
            raise SystemdError(
                f"socket activation: descriptor {fd} ({name}, {path or 'unbound'}) is neither the control "
                f"nor the events socket: name it with FileDescriptorName=control or events"
            )
        expected = os.path.join(os.fspath(run_dir), SOCKET_NAMES[role])
        if os.path.realpath(path) != os.path.realpath(expected):
            raise SystemdError(
                f"socket activation: the {role} socket is bound to {path}, but clients of this daemon "
                f"look for it at {expected}: make ListenStream= and --run agree"
            )
        if role in found:
            raise SystemdError(f"socket activation: two descriptors for the {role} socket")
        found[role] = fd
    return found


class StatusReporter:
    """Keeps systemd's STATUS= line current: :meth:`poke` after a change, :meth:`run` sends
    the new text (if it differs), at most ``per_second`` times a second."""

    def __init__(self, notifier: Notifier, text: Callable[[], str], per_second: float = 10.0):
        import trio

        self.notifier = notifier
        self.text = text
        self.gap = 1.0 / per_second
        self.last = ""
        self._changed = trio.Event()

    def poke(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        import trio

        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            text = self.text()
            if text != self.last:
                self.notifier.status(text)
                self.last = text
            await trio.sleep(self.gap)


async def keep_watchdog_fed(notifier: Notifier, interval: float) -> None:
    """WATCHDOG=1 every ``interval`` seconds (half of WATCHDOG_USEC): as long as the trio
    loop runs, systemd knows the daemon is alive."""
    import trio

    while True:
        notifier.watchdog()
        await trio.sleep(interval)
