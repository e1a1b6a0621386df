"""The container's terminal (``-t``): a pseudo-terminal of the container's own devpts, made
inside the container, its master handed back to the supervisor over a console socket (as
runc does with ``--console-socket``).

Why inside: a pty opened by the supervisor lives in the host's devpts, so ``tty`` in the
container named a device (/dev/pts/7 of the host) that its /dev/pts does not have, and the
host's pty numbers showed through. Here pid 1 opens ``ptmx`` of the devpts instance it has
just mounted (``newinstance,ptmxmode=0666``: ``rootfs.mount_system``), so the first
terminal of a container is /dev/pts/0 in it, and /dev/console is bound to it.

::

    supervisor (spawn.py, stdio.py)          pid 1 (init_stage.container)
    -------------------------------          ----------------------------
    socketpair: one end kept, the            fd 0: the console socket ("terminal": true
    other is the stage's fd 0                in the config; fds 1 and 2 are /dev/null)
                                             mount devpts (rootfs.mount_system)
                                             open <dev>/pts/ptmx, unlock, TIOCGPTPEER
                                             sendmsg("terminal", SCM_RIGHTS master) on fd 0
                                             close the master and the socket
                                             slave onto fds 0, 1, 2; setsid; TIOCSCTTY
                                             bind the slave on <dev>/console
                                             ... execve closes the status pipe
    EOF on the status pipe: the master is
    queued on its end already (sent before
    execve): recvmsg, close the socket, read
    and write the master as before

An exec with ``-t`` (``nsenter.become``) does the same in the container's mount namespace
(``/dev/pts/ptmx``, after it joined it), without the /dev/console bind: its terminal is a pts
of the container's devpts too. A user other than root gets the slave chowned to it before
the privileges are dropped (runc's ``fixStdioPermissions``).

Imported by the init stage under ``python -I -S``: the standard library's C modules only
(see ``libc.py``).
"""

import fcntl
import os
import stat
import struct

import _socket

if __package__:  # imported as supervisor.runtime.console
    from supervisor.runtime import libc
else:  # in the fork server: a top-level module beside forkserver.py
    import libc

CONSOLE_SOCKET_FD = 0  # the stage's fd 0 when the config says "terminal": true
MESSAGE = b"terminal"  # the console socket's one message, with the master as SCM_RIGHTS
TIOCSCTTY = 0x540E  # asm-generic/ioctls.h (x86_64 and aarch64)
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441  # Linux 4.13: the slave of a master, without a path lookup
TIOCSWINSZ = 0x5414
PTMX_DEVICE = (5, 2)  # any devpts instance's ptmx


def open_pty(pts: str) -> "tuple[int, int]":
    """A new (master, slave) pair of the devpts mounted at ``pts``, both O_CLOEXEC.

    Raises:
        InitError(125): ``<pts>/ptmx`` is not a ptmx device, or the kernel refused.
    """
    ptmx = pts + "/ptmx"
    try:
        master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise libc.InitError(f'open the terminal "{ptmx}": {libc.strerror(exc.errno)}') from None
    try:
        info = os.fstat(master)
        if not stat.S_ISCHR(info.st_mode) or (os.major(info.st_rdev), os.minor(info.st_rdev)) != PTMX_DEVICE:
            raise libc.InitError(f'open the terminal "{ptmx}": not a pseudo-terminal multiplexer')
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        try:
            slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:  # before Linux 4.13: by its number, in the same devpts
            number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"))[0]
            slave = os.open(f"{pts}/{number}", os.O_RDWR | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        os.close(master)
        raise libc.InitError(f'open a terminal in "{pts}": {libc.strerror(exc.errno)}') from None
    except libc.InitError:
        os.close(master)
        raise
    return master, slave


def pty_name(master: int) -> str:
    """The slave's path in the container (``/dev/pts/N``), as runc names it to a console socket."""
    try:
        return "/dev/pts/%d" % struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"))[0]
    except OSError as exc:
        raise libc.InitError(f"read the terminal's number: {libc.strerror(exc.errno)}") from None


def set_size(slave: int, rows: int, columns: int) -> None:
    try:
        fcntl.ioctl(slave, TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    except OSError as exc:
        raise libc.InitError(f"set the terminal's size: {libc.strerror(exc.errno)}") from None


def send_master(master: int, socket_fd: int = CONSOLE_SOCKET_FD, message: bytes = MESSAGE,
                to: str = "the supervisor") -> None:
    """Send ``master`` on the console socket (fd 0, or ``socket_fd``: the OCI runtime's
    ``--console-socket``, whose message is the slave's name), then close both here: the
    container keeps no master of its own terminal."""
    console = _socket.socket(fileno=socket_fd)
    try:
        console.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", master))])
    except OSError as exc:
        raise libc.InitError(f"send the terminal to {to}: {libc.strerror(exc.errno)}") from None
    finally:
        console.close()
        os.close(master)


def make_controlling(slave: int) -> None:
    """The slave on fds 0, 1 and 2, then a new session with it as the controlling terminal, so
    that ctrl-c, job control and SIGWINCH work."""
    try:
        for target in (0, 1, 2):
            os.dup2(slave, target)  # inheritable: the payload's stdio
        if slave > 2:
            os.close(slave)
        os.setsid()
        fcntl.ioctl(0, TIOCSCTTY, 0)
    except OSError as exc:
        raise libc.InitError(f"make the terminal the controlling terminal: {libc.strerror(exc.errno)}") from None


def bind_console(dev: str) -> None:
    """Bind the terminal on fd 0 onto ``<dev>/console`` (a fresh tmpfs: plain paths are safe)."""
    console = dev + "/console"
    try:
        os.close(os.open(console, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666))
    except OSError as exc:
        raise libc.InitError(f'create "/dev/console": {libc.strerror(exc.errno)}') from None
    libc.mount("/proc/self/fd/0", console, None, libc.MS_BIND, None, 'bind the terminal on "/dev/console"')


def set_up_terminal(dev: str, console: bool) -> None:
    """With ``"terminal": true``: a pty of the devpts at ``<dev>/pts``, its master sent to the
    supervisor, its slave the controlling terminal on fds 0-2 and, with ``console``, bound on
    ``<dev>/console`` (pid 1; not an exec)."""
    master, slave = open_pty(dev + "/pts")
    try:
        send_master(master)
    except libc.InitError:
        os.close(slave)
        raise
    make_controlling(slave)
    if console:
        bind_console(dev)


def give_terminal(uid: int) -> None:
    """The terminal on fd 0 to the payload's user (its group stays ``tty``), so that a user
    other than root may reopen it (``/dev/tty``, ``$(tty)``), as runc does."""
    if uid == 0:
        return
    try:
        os.fchown(0, uid, -1)
    except OSError as exc:
        raise libc.InitError(f"give the terminal to user {uid}: {libc.strerror(exc.errno)}") from None
