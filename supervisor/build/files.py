"""COPY and ADD: the files a step adds, laid out in a scratch directory that becomes the
step's layer (no trio, no bus; the builder runs these in a thread).

The scratch directory mirrors the image's root: ``dest`` in the image is ``work/dest``.
Parent directories the step creates take the metadata of the image's directory of the same
name when it has one (so ``COPY x /home/user/`` leaves ``/home/user`` as it was), else
0755 and owned by the ``--chown`` owner (root without it), as docker.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
from pathlib import Path

from supervisor.build.context import BuildError
from supervisor.images.tarsafe import extract


def destination(dest: str, workdir: str) -> str:
    """The absolute image path of a COPY destination (relative to WORKDIR), keeping a trailing /."""
    absolute = dest if dest.startswith("/") else posixpath.join(workdir or "/", dest)
    trailing = absolute.endswith("/") or dest in (".", "./") or absolute.endswith("/.")
    normal = posixpath.normpath(absolute)
    return normal.rstrip("/") + "/" if trailing else normal


def image_entry(layers: tuple[str, ...], path: str) -> os.stat_result | None:
    """lstat of ``path`` in the topmost layer that has it (layers top first)."""
    for layer in layers:
        candidate = os.path.join(layer, path.lstrip("/"))
        if os.path.lexists(candidate):
            return os.lstat(candidate)
    return None


def make_parents(work: Path, path: str, layers: tuple[str, ...], owner: tuple[int, int] = (0, 0)) -> Path:
    """Create ``path`` (absolute in the image) and its parents in ``work``; return it. A
    directory the image lacks is created 0755 and owned by ``owner`` (``--chown``'s, as docker)."""
    current = work
    walked = ""
    for part in [part for part in path.split("/") if part]:
        walked += "/" + part
        current = current / part
        if current.is_dir() and not current.is_symlink():
            continue
        if os.path.lexists(current):
            raise BuildError(f"cannot copy to {path}: {walked} is not a directory")
        below = image_entry(layers, walked)
        if below is not None and not stat.S_ISDIR(below.st_mode):
            raise BuildError(f"cannot copy to {path}: {walked} is not a directory in the image")
        os.mkdir(current)
        mode, uid, gid = (stat.S_IMODE(below.st_mode), below.st_uid, below.st_gid) if below else (0o755, *owner)
        os.chown(current, uid, gid)
        os.chmod(current, mode)
    return current


def copy_sources(work: Path, sources: list[Path], dest: str, layers: tuple[str, ...], *, owner: tuple[int, int],
                 mode: int | None, extract_tars: bool, instruction: str) -> None:
    """Lay ``sources`` (host paths) out under ``work`` as COPY/ADD ``dest`` puts them.

    A directory source copies its contents; several sources need a directory ``dest``
    (ending with ``/``); ADD (``extract_tars``) unpacks a local tar archive into ``dest``.
    """
    into_directory = dest.endswith("/") or len(sources) > 1
    if len(sources) > 1 and not dest.endswith("/"):
        raise BuildError(f"{instruction}: when using several sources the destination must be a directory "
                         f"and end with a /")
    for source in sources:
        if source.is_dir() and not source.is_symlink():
            target = make_parents(work, dest, layers, owner)
            copy_tree(source, target, owner, mode)
        elif extract_tars and tarfile.is_tarfile(source):
            target = make_parents(work, dest, layers, owner)
            with open(source, "rb") as archive:
                extract(archive, target)
        else:
            if into_directory:
                parent = make_parents(work, dest, layers, owner)
                target = parent / source.name
            else:
                parent = make_parents(work, posixpath.dirname(dest), layers, owner)
                target = parent / posixpath.basename(dest)
                if target.is_dir() and not target.is_symlink():
                    target = target / source.name
                elif (below := image_entry(layers, dest)) is not None and stat.S_ISDIR(below.st_mode):
                    target = make_parents(work, dest, layers, owner) / source.name
            copy_entry(source, target, owner, mode)


def copy_entry(source: Path, target: Path, owner: tuple[int, int], mode: int | None) -> None:
    if os.path.lexists(target) and not target.is_dir():
        os.unlink(target)
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
    elif source.is_file():
        shutil.copyfile(source, target)
        shutil.copystat(source, target)
    else:
        raise BuildError(f"cannot copy {source.name}: only files, directories and symlinks are copied")
    os.lchown(target, *owner)
    if mode is not None and not target.is_symlink():
        os.chmod(target, mode)


def copy_tree(source: Path, target: Path, owner: tuple[int, int], mode: int | None) -> None:
    for directory, dirnames, filenames in os.walk(source):
        relative = os.path.relpath(directory, source)
        here = target if relative == "." else target / relative
        for name in sorted(dirnames):
            path = Path(directory) / name
            if path.is_symlink():
                copy_entry(path, here / name, owner, mode)
                continue
            (here / name).mkdir(exist_ok=True)
            shutil.copystat(path, here / name)
            os.lchown(here / name, *owner)
            if mode is not None:
                os.chmod(here / name, mode)
        for name in sorted(filenames):
            copy_entry(Path(directory) / name, here / name, owner, mode)
        dirnames[:] = [name for name in dirnames if not (Path(directory) / name).is_symlink()]


def lookup_owner(spec: str, layers: tuple[str, ...], instruction: str) -> tuple[int, int]:
    """``--chown=USER[:GROUP]`` as ids, names looked up in the image's /etc/passwd and /etc/group."""
    user, _, group = spec.partition(":")

    def resolve(name: str, database: str) -> tuple[int, int | None]:
        if name.isdigit():
            return int(name), None
        entry = image_entry(layers, database)
        path = next((os.path.join(layer, database.lstrip("/")) for layer in layers
                     if os.path.lexists(os.path.join(layer, database.lstrip("/")))), None)
        if entry is None or path is None or not stat.S_ISREG(entry.st_mode):
            raise BuildError(f"{instruction}: unable to find `{name}`: the image has no {database}")
        with open(path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 4 and fields[0] == name:
                    return int(fields[2]), int(fields[3]) if database == "/etc/passwd" else None
        raise BuildError(f"{instruction}: unable to find `{name}` in the image's {database}")

    uid, primary = resolve(user, "/etc/passwd")
    if group:
        gid, _ = resolve(group, "/etc/group")
    else:
        gid = primary if primary is not None else uid
    return uid, gid
