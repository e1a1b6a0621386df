"""Layer directories for the image tests: a lower layer and an upper dir over it in overlayfs'
notation (a whiteout, an opaque directory, hard links, a symlink, a FIFO, xattrs). Making
them needs root (whiteouts are 0/0 devices, trusted.* xattrs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from supervisor.images.whiteouts import OPAQUE_XATTR


def whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def make_lower(base: Path) -> Path:
    lower = base / "lower"
    for directory in ("bin", "etc", "var/cache", "keep"):
        (lower / directory).mkdir(parents=True)
    (lower / "bin" / "sh").write_text("shell")
    (lower / "bin" / "vi").write_text("editor")
    (lower / "etc" / "passwd").write_text("root\n")
    (lower / "var" / "cache" / "a").write_text("a")
    (lower / "var" / "cache" / "b").write_text("b")
    return lower


def make_upper(base: Path) -> Path:
    upper = base / "upper"
    (upper / "bin").mkdir(parents=True)
    whiteout(upper / "bin" / "vi")
    (upper / "etc").mkdir()
    (upper / "etc" / "passwd").write_text("root\napp\n")
    (upper / "var" / "cache").mkdir(parents=True)
    os.setxattr(upper / "var" / "cache", OPAQUE_XATTR, b"y")
    (upper / "var" / "cache" / "c").write_text("c")
    (upper / "new").write_text("new")
    os.chown(upper / "new", 1000, 1000)
    os.chmod(upper / "new", 0o4751)
    os.setxattr(upper / "new", "user.note", b"hello")
    os.link(upper / "new", upper / "hard")
    os.symlink("/new", upper / "soft")
    os.mkfifo(upper / "fifo")
    os.utime(upper / "new", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    return upper
