"""The compiled BPF of a bundle's ``linux.seccomp``, kept on disk under ``--root``
(``<root>/seccomp-cache/<sha256>.bpf``): compiling podman's default profile takes
35-50 ms and imports json and typing, more than runc's whole ``run``; the daemon keeps its
programs in memory (``supervisor/seccomp.py``), a one-shot command can only keep them on
disk. The key is the SHA-256 of the profile (keys sorted) and of the compiler's identity
(the machine, and the size and mtime of the three modules that compile), so that a changed
compiler never reuses an old program. The directory is root's (0700, as the state).
"""

from __future__ import annotations

import os

from supervisor.ociruntime.state import write_small_atomic
from supervisor.runtime import jsonlite

CACHE_DIR = "seccomp-cache"
#: The modules whose code decides the program, relative to the package's parent directory.
COMPILER_SOURCES = ("supervisor/seccomp.py", "supervisor/runtime/seccomp_bpf.py", "supervisor/ociruntime/seccomp.py")


def compiler_identity() -> str:
    base = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parts = [os.uname().machine]
    for relative in COMPILER_SOURCES:
        info = os.stat(os.path.join(base, relative))
        parts.append(f"{relative}:{info.st_size}:{info.st_mtime_ns}")
    return "\n".join(parts)


def cache_path(root: str, document: dict) -> str:
    import hashlib

    digest = hashlib.sha256(jsonlite.dumps(document, sort_keys=True).encode())
    digest.update(b"\0" + compiler_identity().encode())
    return os.path.join(root, CACHE_DIR, digest.hexdigest() + ".bpf")


def compile_cached(root: str, document: dict, compile_profile) -> bytes:
    """``compile_profile(document)``, or the program it gave before for the same profile.

    Raises:
        whatever ``compile_profile`` raises (an invalid profile is never cached).
    """
    path = cache_path(root, document)
    try:
        with open(path, "rb") as file:
            program = file.read()
        if program and len(program) % 8 == 0:  # whole sock_filter instructions
            return program
    except OSError:
        pass
    program = compile_profile(document)
    try:
        os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
        write_small_atomic(path, program, 0o600)
    except OSError:
        pass  # only a cache: the program is used all the same
    return program
