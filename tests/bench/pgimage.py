"""A PostgreSQL image made from the host's own Debian packages (no registry needed): the
server's binaries and their shared libraries (``ldd``), its share directory, the UTC zone,
a static busybox for the shell, and a ``postgres`` user. ``tar`` is imported with
``dockyard import``; the container initialises a cluster on a tmpfs and serves it
(:data:`SERVER`), trusting every client (a benchmark's throw-away database)."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")
SHARE = Path("/usr/share/postgresql/15")
LIB = Path("/usr/lib/postgresql/15/lib")  # $libdir: plpgsql, the snowball dictionaries, ...
PROGRAMS = ("postgres", "initdb", "pg_ctl")
#: The container's command: a cluster on /data (a tmpfs), every host trusted, no fsync (the
#: figures are about the network path, not the disk), listening on every address.
SERVER = (
    "export PATH=/usr/lib/postgresql/15/bin:/bin && initdb -D /data/pg -U postgres --auth=trust -E UTF8 --locale=C >/dev/null && "
    "echo 'host all all 0.0.0.0/0 trust' >> /data/pg/pg_hba.conf && "
    "echo 'host all all ::/0 trust' >> /data/pg/pg_hba.conf && "
    "exec postgres -D /data/pg -c listen_addresses='*' -c fsync=off -c synchronous_commit=off "
    "-c unix_socket_directories=/tmp -c max_connections=50"
)


def available() -> str:
    """Why the image cannot be made here ("" if it can)."""
    missing = [str(BIN / name) for name in PROGRAMS if not (BIN / name).exists()]
    missing += [name for name in ("busybox", "ldd", "pgbench", "pg_isready") if shutil.which(name) is None]
    return f"missing {', '.join(missing)} (apt-get install postgresql-15 busybox-static)" if missing else ""


def libraries(programs: list[Path]) -> list[Path]:
    """The shared libraries ``ldd`` names for ``programs`` (the loader included)."""
    output = subprocess.run(["ldd", *map(str, programs)], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in output.splitlines():
        words = line.split()
        if line.endswith(":"):  # "/usr/lib/.../initdb:", the header of a program's list
            continue
        path = words[2] if "=>" in words and len(words) > 2 else words[0] if words else ""
        if path.startswith("/"):
            found.add(Path(path))
    return sorted(found)


def build(directory: Path) -> Path:
    """The image's tar in ``directory`` (made once; kept for the next run)."""
    tar = directory / "postgres-rootfs.tar"
    if tar.exists():
        return tar
    programs = [BIN / name for name in PROGRAMS]
    partial = tar.with_suffix(".partial")
    with tarfile.open(partial, "w") as archive:
        for name in ("tmp", "data", "etc", "bin", "root"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            archive.addfile(info)
        for path in [*programs, *libraries(programs), SHARE, LIB, Path("/usr/share/zoneinfo/UTC"),
                     Path("/usr/share/zoneinfo/Etc/UTC")]:
            archive.add(str(path.resolve()), arcname=str(path).lstrip("/"))
        archive.add(shutil.which("busybox"), arcname="bin/busybox")
        for applet in ("sh", "echo", "cat", "ls", "id", "chown", "mkdir", "su"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            archive.addfile(info)
        for name, text in (("etc/passwd", "root:x:0:0::/root:/bin/sh\npostgres:x:999:999::/data:/bin/sh\n"),
                           ("etc/group", "root:x:0:\npostgres:x:999:\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    partial.rename(tar)
    return tar
