"""The fork server: one long-lived, single-threaded process per supervisor that forks the
init stage of every container, so that no container pays for a Python start-up.

Why
---
A fresh ``python -I -S`` per container would cost ~20 ms of interpreter start-up and ~8 ms
of imports (ctypes above all) before the first namespace call. This process pays that
once: it is exec'd fresh by the supervisor (``python -I -S forkserver.py``: a new process
that never had a thread, so it may fork and go on running Python), imports the init
stage (``init_stage.py`` and the modules of its steps, as top-level modules beside this
file) and loads libc, then waits. A fork of it is ready to run stage 0 at once
(``init_stage.run_init_stage``; the handshake is in ``protocol.py``). The supervisor itself has
threads (trio, pyzmq) and must never fork and go on.

Theory of operation
-------------------
fd 3 is the control socket (AF_UNIX, SOCK_SEQPACKET; the supervisor holds the other
end); 0 and 1 are /dev/null, 2 is the supervisor's stderr. Every other inherited fd is
closed at start. The server sends ``READY`` once, then serves requests: one message
``REQUEST`` carrying 6 fds (SCM_RIGHTS): the container's stdin, stdout, stderr, the read
end of the config pipe, the write end of the status pipe, and one end of a fresh
per-launch *reply socket* (SOCK_SEQPACKET) whose other end the launch keeps.

::

    supervisor (trio)             fork server                 stage 0 (forked)        pid 1
    -----------------             -----------                 ----------------        -----
    sendmsg(REQUEST, 6 fds) ----> recvmsg; fork ------------> send {"pid": own pid}
    close its copies              close fds 0-4 of the        + its own pidfd on the
    write config, close  -------- launch; poll the child's    reply socket, close it;
                                  pidfd                       dup2 fds onto 0-4; then
    <-- {"pid": N} + pidfd ------------------------------------ init_stage.run_init_stage():
                                                              read config, cgroups,
                                                              unshare, fork ----------> (protocol.py)
    <-- {"pid": <pid 1>}\\n on the status pipe ---------------- report, _exit(0)
                                  pidfd readable: waitpid
    <-- {"exit": status} -------- on the reply socket, close it
    adopt pid 1 (our child now)                                                         execve
    <-- EOF / {"error": ...} on the status pipe (exactly as without the server) --------

Why each step:

- stage 0 reports its own pid and pidfd (not the server after fork): the supervisor then
  knows every stage 0 it caused, even if the server dies the moment after forking, and
  holds it by a pidfd that cannot name a recycled pid (to SIGKILL it on cancellation).
- the server replies ``{"exit": status}`` only after it has reaped stage 0, and the
  supervisor reads the status pipe only after that reply, as it reaps stage 0 itself on
  the direct path: pid 1 is re-parented when stage 0 exits (before stage 0 becomes a
  zombie), so by then pid 1 is the supervisor's child and the adoption check holds. This
  server must not be a child subreaper (the flag is not inherited through fork/exec, and
  it never sets it), or pid 1 would become *its* child.
- it polls the control socket and one pidfd per live stage 0: no SIGCHLD handler, no
  blocking on one child; a reply that cannot be sent (the launch was cancelled) is
  dropped.
- it keeps no container fd: the five are closed as soon as the fork is done, the reply
  socket when stage 0 is reaped.
- EOF on the control socket (the supervisor closed it, or died) ends the server once its
  live children are reaped. SIGINT is ignored (a Ctrl-C meant for the daemon must not
  kill it; stage 0 resets every ignored signal before execve, as for python's SIGPIPE).
- if fork fails, the error goes on the status pipe as one JSON line with 125 and the
  reply is ``{"exit": 125}``, as if stage 0 had failed.

If the server dies, each launch in flight reads EOF on its reply socket and fails with a
LaunchError (125); the supervisor reaps the server (its child), after which any stage 0
still alive is the supervisor's child too, and is killed and reaped by that launch. The
next launch starts a new server.

Like the init stage's modules this file imports only C modules of the standard library
beside them (no ``socket``, ``signal``, ``json``: they import ``re`` and ``enum``).
"""

import fcntl
import os
import select
import struct
import sys

import _signal
import _socket

if __package__:  # imported by the supervisor, for the constants below
    from supervisor.runtime import init_stage, libc, nsenter
else:  # run as a script: -I keeps the script's directory off sys.path
    sys.path.insert(0, __file__.rpartition("/")[0] or ".")
    import init_stage
    import libc
    import nsenter

CONTROL_FD = 3
READY = b"ready"
REQUEST = b"launch"
REQUEST_FDS = 6  # stdin, stdout, stderr, config read end, status write end, reply socket
MAX_MESSAGE = 256


def _received_fds(ancdata: list) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            count = len(payload) // 4
            fds.extend(struct.unpack(f"{count}i", payload[: count * 4]))
    return fds


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _start_stage0(fds: list[int]) -> None:
    """In the forked child: report own pid and pidfd, put the launch's fds on 0-4, run the
    init stage. Never returns."""
    try:
        pid = os.getpid()
        pidfd = os.pidfd_open(pid)
        reply = _socket.socket(fileno=fds[5])
        reply.sendmsg([b'{"pid": %d}' % pid], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", pidfd))])
        # High copies first, so that no dup2 below clobbers a source (received fds may be 4).
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5) for fd in fds[:5]]
        for target, fd in enumerate(high):
            os.dup2(fd, target)  # inheritable: a plain fd of the stage, as after posix_spawn
    except OSError:
        os._exit(libc.EXIT_RUNTIME)  # the server reports the exit status; nothing else can
    init_stage.run_init_stage(join=nsenter.run)  # closes every fd above 4: the control and reply sockets, pidfds


class Server:
    def __init__(self) -> None:
        self.control = _socket.socket(fileno=CONTROL_FD)
        self.poller = select.poll()
        self.children: dict[int, tuple[int, _socket.socket]] = {}  # pidfd: (pid, reply socket)
        self.accepting = True

    def serve(self) -> None:
        self.control.send(READY)
        self.poller.register(CONTROL_FD, select.POLLIN)
        while self.accepting or self.children:
            for fd, _ in self.poller.poll():
                if fd == CONTROL_FD:
                    self.accept()
                else:
                    self.reap(fd)

    def accept(self) -> None:
        data, ancdata, flags, _ = self.control.recvmsg(
            MAX_MESSAGE, _socket.CMSG_SPACE(REQUEST_FDS * 4), _socket.MSG_CMSG_CLOEXEC
        )
        fds = _received_fds(ancdata)
        if not data and not fds:  # EOF: the supervisor is done, or gone
            self.accepting = False
            self.poller.unregister(CONTROL_FD)
            return
        if data != REQUEST or len(fds) != REQUEST_FDS or flags & (_socket.MSG_CTRUNC | _socket.MSG_TRUNC):
            _close(fds)  # not from our supervisor's code: the launch (if any) reads EOF
            return
        reply = _socket.socket(fileno=fds[5])
        try:
            pid = os.fork()
        except OSError as exc:
            line = init_stage.status_error(f"fork the init stage: {libc.strerror(exc.errno)}", libc.EXIT_RUNTIME)
            try:
                os.write(fds[4], line)
            except OSError:
                pass
            _close(fds[:5])
            self.send_exit(reply, libc.EXIT_RUNTIME)
            return
        if pid == 0:
            _start_stage0(fds)
        _close(fds[:5])
        reply.setblocking(False)  # a reply nobody reads is dropped, never waited for
        pidfd = os.pidfd_open(pid)  # not reaped yet: it names this child
        self.children[pidfd] = (pid, reply)
        self.poller.register(pidfd, select.POLLIN)

    def reap(self, pidfd: int) -> None:
        pid, reply = self.children.pop(pidfd)
        self.poller.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)  # it has exited: the pidfd said so
        code = os.waitstatus_to_exitcode(status)
        self.send_exit(reply, 128 - code if code < 0 else code)

    @staticmethod
    def send_exit(reply: _socket.socket, code: int) -> None:
        try:
            reply.send(b'{"exit": %d}' % code, _socket.MSG_NOSIGNAL)
        except OSError:
            pass  # the launch was cancelled and closed its end
        reply.close()


def main() -> None:
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    os.closerange(CONTROL_FD + 1, 1 << 20)  # whatever the supervisor had open without O_CLOEXEC
    libc.preload()
    Server().serve()


if __name__ == "__main__":
    main()
