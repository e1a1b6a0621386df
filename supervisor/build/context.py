"""The build context: COPY/ADD sources resolved safely, and the checksum
of copied files the cache compares (no trio, no bus).

A source is a path relative to the context's root; ``..`` that climbs out of it, and a
symlink on the way that points out of it, are refused (docker silently clamps ``..`` at the
root; dockyard refuses, so a Dockerfile never copies what its author did not mean to).
Symlinks *inside* a copied directory are copied as symlinks, as docker does.

Errors::

    BuildError(InvalidArgument)   a source that is missing, outside the context, or unsupported
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import stat
from pathlib import Path

from supervisor.errors import InvalidArgument


class BuildError(InvalidArgument):
    """A build that cannot go on: bad Dockerfile content, a bad source, a failed step."""


def resolve_in_context(root: Path, source: str) -> Path:
    """The host path of the context-relative ``source``, checked to stay inside ``root``.

    Raises:
        BuildError: ``..`` climbs out of the context, or a symlink leads out of it.
    """
    normal = posixpath.normpath("/" + source) if not source.startswith("/") else posixpath.normpath(source)
    if ".." in source.split("/") and posixpath.normpath(source).startswith(".."):
        raise BuildError(f"source `{source}` is outside the build context (`..` climbs out of it)")
    candidate = root / normal.lstrip("/")
    real = Path(os.path.realpath(candidate))
    root_real = Path(os.path.realpath(root))
    if real != root_real and root_real not in real.parents:
        raise BuildError(f"source `{source}` is outside the build context (a symlink leads to {real})")
    return candidate


def expand_sources(root: Path, sources: list[str], instruction: str) -> list[Path]:
    """The host paths of COPY/ADD ``sources``, globs expanded (sorted), each checked.

    Raises:
        BuildError: a source outside the context, or one that matches nothing.
    """
    found: list[Path] = []
    for source in sources:
        if "://" in source:
            raise BuildError(f"{instruction}: remote sources are not supported (offline builder): `{source}`")
        if any(char in source for char in "*?["):
            relative = posixpath.normpath(source.lstrip("/"))
            if relative.startswith(".."):
                raise BuildError(f"source `{source}` is outside the build context (`..` climbs out of it)")
            matches = sorted(path for path in all_paths(root)
                             if path.count("/") == relative.count("/") and fnmatch.fnmatchcase(path, relative))
            if not matches:
                raise BuildError(f"{instruction}: no source files were specified: `{source}` matches nothing")
            found.extend(resolve_in_context(root, match) for match in matches)
            continue
        path = resolve_in_context(root, source)
        if not os.path.lexists(path):
            raise BuildError(f"{instruction}: `{source}` not found in the build context")
        found.append(path)
    return found


def all_paths(root: Path) -> list[str]:
    paths = []
    for directory, dirnames, filenames in os.walk(root):
        relative = os.path.relpath(directory, root)
        for name in [*dirnames, *filenames]:
            paths.append(name if relative == "." else f"{relative}/{name}")
    return paths


def tree_checksum(root: Path) -> str:
    """sha256 over every entry under ``root``: its path, type, mode, owner, size, content or
    link target (not the times, as docker's classic builder)."""
    digest = hashlib.sha256()
    for directory, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            path = os.path.join(directory, name)
            info = os.lstat(path)
            relative = os.path.relpath(path, root)
            digest.update(f"{relative}\0{info.st_mode:o}\0{info.st_uid}:{info.st_gid}\0".encode())
            if stat.S_ISLNK(info.st_mode):
                digest.update(os.readlink(path).encode())
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as source:
                    while chunk := source.read(1 << 20):
                        digest.update(chunk)
            digest.update(b"\n")
    return "sha256:" + digest.hexdigest()


def drop_excluded_build_files(root: Path, dockerfile: str | None) -> list[str]:
    """Remove ``.dockerignore`` and the Dockerfile from the unpacked context ``root`` when
    ``.dockerignore`` excludes them, as docker's daemon does: clients always send both
    (the daemon needs them), so only here can ``COPY .`` be kept from copying them.

    Args:
        root: the unpacked context.
        dockerfile: the Dockerfile's path relative to ``root`` (None: only ``.dockerignore``).

    Returns:
        The context-relative paths removed.
    """
    from supervisor.build.ignore import ignored, parse_dockerignore

    try:
        patterns = parse_dockerignore((root / ".dockerignore").read_text(encoding="utf-8", errors="replace"))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return []
    removed = []
    for name in [".dockerignore", *([posixpath.normpath(dockerfile)] if dockerfile else [])]:
        if name.startswith(("/", "../")) or name in ("..", ".") or not ignored(name, patterns):
            continue
        path = root / name
        try:
            resolve_in_context(root, posixpath.dirname(name) or ".")  # no symlinked directory on the way out
            if path.is_symlink() or path.is_file():
                path.unlink()
                removed.append(name)
        except (BuildError, OSError):
            continue    # a path that leads out of the context or is gone: nothing of the context to remove
    return removed
