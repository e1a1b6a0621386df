"""``--init``: a tiny init as the container's pid 1 (docker's ``docker-init``, which is tini).

A process that runs as pid 1 gets no default signal actions (a SIGTERM it does not handle
does nothing) and inherits every orphan of the container, which it must reap. Most programs
were not written for that. With ``--init`` the container's pid 1 is tini instead: it starts
the command as its child, forwards every signal it gets to it, reaps the zombies, and exits
with the command's exit code (128 + N when a signal N ended it).

How: the host's init binary (``--init-path``, else the daemon's, else ``docker-init`` or
``tini-static`` found in the daemon's PATH: Debian's ``tini`` package) is bind-mounted
read-only at :data:`INIT_TARGET`, ``/dev/init``, and the command becomes
``/dev/init -- COMMAND...``. docker mounts it at ``/sbin/docker-init``; dockyard uses the
container's own /dev (a tmpfs the init stage mounts) so that nothing is created in the
image's layer: not in a ``diff`` or a ``commit``, not refused by ``--read-only``, and not
hidden by an image whose /sbin is a symlink (Debian 12's). The init must be a static binary:
the image may have no C library (tini-static is; Debian's dynamic ``tini`` is not chosen by
default).

The binary is found and checked at create, and its canonical path kept in the spec
(``init_path``), as podman keeps it; the init stage opens it again at each start without
following a symlink (supervisor/runtime/rootfs.py), so a file swapped since is refused.
"""

from __future__ import annotations

import os
import shutil
import stat

from supervisor.errors import InvalidArgument

#: Where the init appears in the container.
INIT_TARGET = "/dev/init"
#: The names looked for in the daemon's PATH when neither the container nor the daemon names one.
DEFAULT_NAMES = ("docker-init", "tini-static")
#: Searched after the daemon's PATH (docker's libexec directories, Debian's /usr/bin).
EXTRA_PATH = ("/usr/local/libexec/docker", "/usr/libexec/docker", "/usr/local/bin", "/usr/bin")


def find(given: str, default: str = "") -> str:
    """The canonical path of the init binary: ``given`` (``--init-path``), else ``default``
    (the daemon's ``--init-path``), else the first of :data:`DEFAULT_NAMES` found.

    Raises:
        InvalidArgument: the file named is missing, not a regular file or not executable;
            or none was found (naming what was looked for and the package that has it).
    """
    path = given or default
    flag = "--init-path" if given else "the daemon's --init-path"
    if not path:
        search = os.pathsep.join([os.environ.get("PATH", ""), *EXTRA_PATH])
        for name in DEFAULT_NAMES:
            found = shutil.which(name, path=search)
            if found:
                return check(found, "--init")
        raise InvalidArgument(f"--init: no init binary found: none of {', '.join(DEFAULT_NAMES)} is in the daemon's "
                              "PATH (Debian's tini package has tini-static); give one with --init-path",
                              flag="--init")
    return check(path, flag)


def check(path: str, flag: str) -> str:
    """``path`` made canonical, if it is an executable regular file.

    Raises:
        InvalidArgument: naming the flag, the path and what is wrong.
    """
    canonical = os.path.realpath(path)
    try:
        info = os.stat(canonical)
    except OSError as exc:
        raise InvalidArgument(f"invalid {flag} {path}: {exc.strerror}", flag="--init-path", path=path) from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidArgument(f"invalid {flag} {path}: not a regular file", flag="--init-path", path=path)
    if not info.st_mode & 0o111:
        raise InvalidArgument(f"invalid {flag} {path}: not executable", flag="--init-path", path=path)
    return canonical


def stage_entry(path: str) -> str:
    """The launch config's ``mounts`` line (protocol.py) that binds the init read-only."""
    return "\t".join(("bind", path, INIT_TARGET, "ro", ""))


def command(argv: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The command pid 1 runs with ``--init``: tini, ``--``, then the container's command."""
    return (INIT_TARGET, "--", *argv)
