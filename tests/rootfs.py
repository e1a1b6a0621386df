"""Build the busybox-static root filesystem that tests, the demo and benchmarks use."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

BUSYBOX = "/bin/busybox"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
"""
GROUP = """root:x:0:
daemon:x:1:
tty:x:5:
app:x:1000:
nogroup:x:65534:
"""


def build_rootfs(target: Path, busybox: str = BUSYBOX) -> Path:
    """Lay out a minimal root filesystem at ``target``: busybox and its applets in /bin,
    /etc/passwd and /etc/group, and empty mount points (/proc, /sys, /dev, /tmp)."""
    if not os.path.exists(busybox):
        raise FileNotFoundError(f"{busybox} is missing: apt-get install busybox-static")
    target.mkdir(parents=True, exist_ok=True)
    for directory in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/app", "var", "usr/bin"):
        (target / directory).mkdir(parents=True, exist_ok=True)
    os.chmod(target / "tmp", 0o1777)
    shutil.copy2(busybox, target / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = target / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (target / "etc" / "passwd").write_text(PASSWD)
    (target / "etc" / "group").write_text(GROUP)
    os.chown(target / "home" / "app", 1000, 1000) if os.geteuid() == 0 else None
    return target


def build_rootfs_tar(target: Path, busybox: str = BUSYBOX) -> Path:
    """A tar of :func:`build_rootfs`, as ``docker export`` would write it (relative paths)."""
    staging = target.with_suffix(".d")
    build_rootfs(staging, busybox)
    with tarfile.open(target, "w") as tar:
        for entry in sorted(staging.iterdir()):
            tar.add(entry, arcname=entry.name)
    shutil.rmtree(staging)
    return target


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A tar in memory from hand-made members, for tests of hostile archives."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, payload in members:
            if payload is not None:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def snapshot(root: Path, exclude: Path | None = None) -> dict[str, tuple]:
    """Every entry under ``root`` (not under ``exclude``): type, mode, link count, content."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if exclude is not None and (path == exclude or exclude in path.parents):
                continue
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                content = path.read_bytes()
            elif stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            else:
                content = None
            entries[str(path.relative_to(root))] = (
                stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_nlink, content
            )
    return entries
