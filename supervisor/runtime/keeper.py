"""The keeper: one long-lived process per run dir that forks every container's init stage
(as the fork server does), is the parent of every container's pid 1, and holds the
daemon's ends of each container's stdio and output spools, so that containers outlive the
daemon (live restore, docs/architecture.md "Live restore").

Theory of operation
-------------------
The daemon starts it once (``python -I -S keeper.py SOCKET LOCK``, in a session of its own)
and it stays: it listens on ``<run>/keeper.sock`` (AF_UNIX, SOCK_SEQPACKET, mode 0600) and
serves one daemon connection at a time; a new connection replaces the old one (the daemon
lock makes sure there is only one daemon). It is a **child subreaper**, so when a stage 0
it forked exits, the container's pid 1 becomes *its* child: it reaps it, and keeps the exit
status and time until a daemon has taken them. It never reads a container's output: the
pipes stay open in it, so a container writing while no daemon runs fills its pipe and then
blocks, and loses nothing.

::

    daemon                                   keeper
    ------                                   ------
    connect; {"op": "hello", "version": 1} -> {"op": "hello", "version", "pid", "held": N}
                                          <- N x {"op": "held", id, pid, start_time, names,
                                                  exit (or None), finished} + fds (SCM_RIGHTS)
    b"launch" + 6 fds (forkserver.py) ------> fork stage 0 (the fork server's handshake)
    {"op": "hold", id, pid, ...} + fds -----> keeps them (the daemon's ends: output pipes or
                                              the pty master, stdin, the output spools)
                                          <- {"op": "exit", pid, status, time} for every child
                                              it reaps (pid 1s, a failed launch's pid 1)
    {"op": "release", id, pid} -------------> closes what it held for that run of the container
    {"op": "stop"} -------------------------> (a daemon that stops without live restore) from
                                              now on, exit once no held container runs
    EOF (the daemon exited or died) -------- keeps everything; exits only if it holds nothing

Messages are ``marshal`` (version 4) dicts: this file, like the fork server, imports only C
modules of the standard library (no ``json``: it imports ``re``).

The keeper's lock (``flock`` on LOCK) keeps a second keeper off the same run dir.
"""

import fcntl
import marshal
import os
import select
import sys
import time

import _signal
import _socket

if __package__:
    from supervisor.runtime import forkserver, libc
else:  # run as a script: -I keeps the script's directory off sys.path
    sys.path.insert(0, __file__.rpartition("/")[0] or ".")
    import forkserver
    import libc

#: The protocol's version: a daemon refuses a keeper that speaks another one (the keeper
#: cannot be upgraded without ending its containers; the daemon says so and keeps them).
VERSION = 1
READY_FD = 3  # the daemon's pipe: "ready" once the socket listens, then closed
MAX_MESSAGE = 4096
MAX_FDS = 8
#: Exits of children nobody held (a launch's pid 1 before its ``hold``), kept this many.
RECENT_EXITS = 256


def encode(message: dict) -> bytes:
    return marshal.dumps(message, 4)


def decode(data: bytes) -> dict:
    message = marshal.loads(data)
    if type(message) is not dict:
        raise ValueError("not a dict")
    return message


class Held:
    """What the keeper holds for one container: its pid 1 and the daemon's fds."""

    def __init__(self, container_id: str, pid: int, start_time: int, names: list, fds: list, extra: dict):
        self.id = container_id
        self.extra = extra  # kept for the daemon as it is (its published ports)
        self.pid = pid
        self.start_time = start_time
        self.names = names
        self.fds = fds
        self.exit = None  # exit code once reaped (128 + signal for a signal)
        self.finished = None  # unix time of the reaping

    def describe(self) -> dict:
        return {"op": "held", "id": self.id, "pid": self.pid, "start_time": self.start_time, "names": self.names,
                "exit": self.exit, "finished": self.finished, "extra": self.extra}

    def close(self) -> None:
        forkserver._close(self.fds)
        self.fds = []


class Keeper:
    def __init__(self, listener: _socket.socket):
        self.listener = listener
        self.connection = None
        self.poller = select.poll()
        self.stage0: dict = {}  # pid: reply socket (forkserver's launch handshake)
        self.held: dict = {}  # container id: Held
        self.by_pid: dict = {}  # pid 1: Held
        self.recent: dict = {}  # pid: (exit, time) of children nobody held
        self.stopping = False  # the daemon stopped without live restore: exit once none runs
        wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_read = wake_read
        _signal.signal(_signal.SIGCHLD, lambda signum, frame: None)
        _signal.set_wakeup_fd(self.wake_write)
        self.poller.register(listener.fileno(), select.POLLIN)
        self.poller.register(wake_read, select.POLLIN)

    def serve(self) -> None:
        while self.connection is not None or self.stage0 or not self._served or self.holding():
            for fd, _ in self.poller.poll():
                if fd == self.listener.fileno():
                    self.accept()
                elif fd == self.wake_read:
                    self.reap()
                elif self.connection is not None and fd == self.connection.fileno():
                    self.receive()
            self.reap()

    _served = False

    def holding(self) -> bool:
        """Whether to stay without a daemon: for what it holds (only running ones once a
        daemon said it stops without live restore)."""
        if self.stopping:
            return any(held.exit is None for held in self.held.values())
        return bool(self.held)

    def accept(self) -> None:
        fd, _ = self.listener._accept()  # accept4(SOCK_CLOEXEC)
        connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, fd)
        if self.connection is not None:  # the daemon that had it is gone (or going)
            self.drain_connection()  # what it sent before it went still counts (a hold)
        self.connection = connection
        self._served = True
        self.poller.register(connection.fileno(), select.POLLIN)

    def drain_connection(self) -> None:
        """Take every message the connection still has queued, then drop it."""
        self.connection.setblocking(False)
        while self.connection is not None:
            try:
                ready = select.select([self.connection], [], [], 0)[0]
            except (OSError, ValueError):
                break
            if not ready:
                break
            self.receive()
        if self.connection is not None:
            self.drop_connection()

    def drop_connection(self) -> None:
        self.poller.unregister(self.connection.fileno())
        self.connection.close()
        self.connection = None

    def send(self, message: dict, fds: list = ()) -> None:
        if self.connection is None:
            return
        try:
            if fds:
                self.connection.sendmsg([encode(message)], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                                             b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))])
            else:
                self.connection.send(encode(message))
        except OSError:
            self.drop_connection()

    def receive(self) -> None:
        try:
            data, ancdata, flags, _ = self.connection.recvmsg(
                MAX_MESSAGE, _socket.CMSG_SPACE(MAX_FDS * 4), _socket.MSG_CMSG_CLOEXEC)
        except OSError:
            data, ancdata, flags = b"", [], 0
        fds = forkserver._received_fds(ancdata)
        if not data and not fds:  # EOF: the daemon exited or died; keep what is held
            self.drop_connection()
            return
        if data == forkserver.REQUEST:
            self.launch(fds, flags)
            return
        try:
            message = decode(data)
            op = message["op"]
        except (ValueError, TypeError, EOFError, KeyError):
            forkserver._close(fds)
            return
        if op == "hello":
            forkserver._close(fds)
            self.send({"op": "hello", "version": VERSION, "pid": os.getpid(), "held": len(self.held)})
            for held in list(self.held.values()):
                self.send(held.describe(), held.fds)
        elif op == "hold":
            self.hold(message, fds)
        elif op == "release":  # only the run it names: a restart may have replaced it
            forkserver._close(fds)
            held = self.held.get(message.get("id"))
            if held is not None and held.pid == message.get("pid"):
                del self.held[held.id]
                self.by_pid.pop(held.pid, None)
                held.close()
        elif op == "stop":
            forkserver._close(fds)
            self.stopping = True
        else:
            forkserver._close(fds)

    def hold(self, message: dict, fds: list) -> None:
        old = self.held.pop(message["id"], None)
        if old is not None:  # a restart of the container: the last run's are done
            self.by_pid.pop(old.pid, None)
            old.close()
        held = Held(message["id"], message["pid"], message["start_time"], message["names"], fds,
                    message.get("extra") or {})
        self.held[held.id] = held
        self.by_pid[held.pid] = held
        exited = self.recent.pop(held.pid, None)
        if exited is not None:  # it exited before the daemon said to hold it
            held.exit, held.finished = exited

    def launch(self, fds: list, flags: int) -> None:
        """The fork server's launch (forkserver.Server.accept), with the stage 0 reaped by
        :meth:`reap` like every child."""
        if len(fds) != forkserver.REQUEST_FDS or flags & (_socket.MSG_CTRUNC | _socket.MSG_TRUNC):
            forkserver._close(fds)
            return
        reply = _socket.socket(fileno=fds[5])
        try:
            pid = os.fork()
        except OSError as exc:
            line = forkserver.init_stage.status_error(f"fork the init stage: {libc.strerror(exc.errno)}",
                                                      libc.EXIT_RUNTIME)
            try:
                os.write(fds[4], line)
            except OSError:
                pass
            forkserver._close(fds[:5])
            forkserver.Server.send_exit(reply, libc.EXIT_RUNTIME)
            return
        if pid == 0:
            _signal.set_wakeup_fd(-1)
            _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
            forkserver._start_stage0(fds)
        forkserver._close(fds[:5])
        reply.setblocking(False)
        self.stage0[pid] = reply

    def reap(self) -> None:
        try:
            while os.read(self.wake_read, 4096):
                pass
        except OSError:
            pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            reply = self.stage0.pop(pid, None)
            if reply is not None:
                forkserver.Server.send_exit(reply, code)
                continue
            now = time.time()
            held = self.by_pid.get(pid)
            if held is not None:
                held.exit, held.finished = code, now
            else:
                if len(self.recent) >= RECENT_EXITS:
                    self.recent.pop(next(iter(self.recent)))
                self.recent[pid] = (code, now)
            self.send({"op": "exit", "pid": pid, "status": code, "time": now})


def listen(path: str) -> _socket.socket:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    old = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(8)
    return listener


def main() -> None:
    socket_path, lock_path = sys.argv[1], sys.argv[2]
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    os.closerange(READY_FD + 1, 1 << 20)
    lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.write(READY_FD, b"busy")
        return
    os.ftruncate(lock, 0)
    os.pwrite(lock, b"%d\n" % os.getpid(), 0)
    libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
    libc.preload()
    listener = listen(socket_path)
    keeper = Keeper(listener)
    os.write(READY_FD, forkserver.READY)
    os.close(READY_FD)
    keeper.serve()
    os.unlink(socket_path)


if __name__ == "__main__":
    main()
