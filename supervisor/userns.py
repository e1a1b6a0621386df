"""User namespaces on the daemon's side (``dockyard daemon --userns-remap``, docs/security.md):
which host ids a container's ids map to, from the subordinate id files; the ``dockyard``
user of ``--userns-remap default``; the files that must belong to the mapped root; and how
the image layers are seen under the mapping (idmapped mounts, else chowned copies).

The container's side (the namespace made and entered, the layers idmapped) is
``runtime/userns.py``; this module only decides and prepares.

Errors: :class:`RemapError` (a ``ValueError``: the daemon refuses to start with a message
that names the file, the user and the cause).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

DEFAULT_USER = "dockyard"  # docker's is dockremap
DEFAULT_SUBUID_FILE = "/etc/subuid"
DEFAULT_SUBGID_FILE = "/etc/subgid"
#: The size of the range ``default`` gives its user, and the lowest start (shadow's defaults).
DEFAULT_RANGE = 65536
FIRST_SUBORDINATE_ID = 100000
#: How the image layers are seen under a mapping (``dockyard info``).
IDMAPPED = "idmapped mounts"
CHOWNED_COPIES = "chowned copies"


class RemapError(ValueError):
    """``--userns-remap`` cannot be set up: the message names the file, user and cause."""


@dataclass(frozen=True)
class IdMapping:
    """The ids of a remapped container: ``(inside, outside, count)`` ranges, as uid_map has."""

    user: str
    group: str
    uid_map: tuple[tuple[int, int, int], ...]
    gid_map: tuple[tuple[int, int, int], ...]

    @property
    def root_uid(self) -> int:
        """The host uid of the container's root."""
        return _to_host(self.uid_map, 0)

    @property
    def root_gid(self) -> int:
        return _to_host(self.gid_map, 0)

    @property
    def key(self) -> str:
        """``UID.GID`` of the mapped root: the name of the mapping's directory (as docker's)."""
        return f"{self.root_uid}.{self.root_gid}"

    def host_uid(self, uid: int) -> int:
        return _to_host(self.uid_map, uid)

    def host_gid(self, gid: int) -> int:
        return _to_host(self.gid_map, gid)

    def container_uid(self, uid: int) -> int:
        """A host uid as the container sees it (65534, the overflow id, when unmapped)."""
        return _to_container(self.uid_map, uid)

    def container_gid(self, gid: int) -> int:
        return _to_container(self.gid_map, gid)

    def from_host(self, uid: int, gid: int) -> tuple[int, int]:
        """Host ids read from a remapped container's upper dir or volume as the container
        sees them; ids outside the mapping (an image layer's, 0-based on disk) are kept."""
        return _inside_or_same(self.uid_map, uid), _inside_or_same(self.gid_map, gid)

    def to_host(self, uid: int, gid: int) -> tuple[int, int]:
        """Container ids to the host's (the owners of what ``cp`` writes for the container)."""
        return self.host_uid(uid), self.host_gid(gid)

    def launch_maps(self) -> dict[str, tuple[str, ...]]:
        """The LaunchConfig's ``uid_map`` and ``gid_map``."""
        return {"uid_map": tuple(f"{a} {b} {c}" for a, b, c in self.uid_map),
                "gid_map": tuple(f"{a} {b} {c}" for a, b, c in self.gid_map)}

    def to_map(self) -> dict[str, Any]:
        return {"user": self.user, "group": self.group, "uid_map": [list(entry) for entry in self.uid_map],
                "gid_map": [list(entry) for entry in self.gid_map]}

    @classmethod
    def from_map(cls, data: dict[str, Any]) -> IdMapping:
        return cls(data["user"], data["group"], tuple(tuple(entry) for entry in data["uid_map"]),
                   tuple(tuple(entry) for entry in data["gid_map"]))


def _to_host(table: tuple[tuple[int, int, int], ...], inside: int) -> int:
    for start, outside, count in table:
        if start <= inside < start + count:
            return outside + inside - start
    raise RemapError(f"id {inside} is not mapped (the mapping covers {sum(entry[2] for entry in table)} ids)")


def _to_container(table: tuple[tuple[int, int, int], ...], host: int) -> int:
    for start, outside, count in table:
        if outside <= host < outside + count:
            return start + host - outside
    return 65534


def _inside_or_same(table: tuple[tuple[int, int, int], ...], host: int) -> int:
    for start, outside, count in table:
        if outside <= host < outside + count:
            return start + host - outside
    return host


def subordinate_ranges(text: str, name: str, number: int) -> list[tuple[int, int]]:
    """The ``(start, count)`` ranges of ``/etc/subuid`` (or subgid) text for a user named
    ``name`` or numbered ``number`` (both forms are valid there), in the file's order."""
    ranges = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) != 3 or line.lstrip().startswith("#") or fields[0] not in (name, str(number)):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if start >= 0 and count > 0:
            ranges.append((start, count))
    return ranges


def id_map(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int, int], ...]:
    """Container ids from 0 up, over the ranges one after another (docker's order: by start)."""
    table = []
    inside = 0
    for start, count in sorted(ranges):
        table.append((inside, start, count))
        inside += count
    return tuple(table)


def next_free_start(text: str, size: int = DEFAULT_RANGE) -> int:
    """The start of a range of ``size`` after every range of the file (and not below 100000)."""
    end = FIRST_SUBORDINATE_ID
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            end = max(end, int(fields[1]) + int(fields[2]))
    return end


def parse_remap(value: str) -> tuple[str, str]:
    """``default``, ``USER``, ``USER:GROUP``, ``UID[:GID]`` as (user, group) names.

    Raises:
        RemapError: an unknown user or group.
    """
    if value == "default":
        return DEFAULT_USER, DEFAULT_USER
    user_part, _, group_part = value.partition(":")
    if not user_part:
        raise RemapError(f"--userns-remap {value!r}: a user name or id is needed")
    try:
        entry = pwd.getpwuid(int(user_part)) if user_part.isdigit() else pwd.getpwnam(user_part)
    except (KeyError, OverflowError):
        raise RemapError(f"--userns-remap {value!r}: no user {user_part!r} on this host") from None
    group = group_part or entry.pw_name
    try:
        group_entry = grp.getgrgid(int(group)) if group.isdigit() else grp.getgrnam(group)
    except (KeyError, OverflowError):
        if group_part:
            raise RemapError(f"--userns-remap {value!r}: no group {group!r} on this host") from None
        group_entry = grp.getgrgid(entry.pw_gid)  # a user without a group of its name: its primary one
    return entry.pw_name, group_entry.gr_name


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise RemapError(f"--userns-remap: cannot read {path}: {exc.strerror}") from None


def resolve(value: str, subuid_file: str = DEFAULT_SUBUID_FILE, subgid_file: str = DEFAULT_SUBGID_FILE,
            add_user: Callable[[str], None] | None = None) -> IdMapping:
    """The mapping of ``--userns-remap VALUE``. With ``default``, the ``dockyard`` user (a
    system user without login, made by ``add_user``; :func:`add_system_user` by default) and
    its 65536 subordinate ids are created first where missing, as dockerd does for
    ``dockremap``.

    Raises:
        RemapError: an unknown user, or no subordinate ids for it.
    """
    if value == "default":
        ensure_default_user(subuid_file, subgid_file, add_user or add_system_user)
    user, group = parse_remap(value)
    uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    uids = subordinate_ranges(read_text(subuid_file), user, uid)
    gids = subordinate_ranges(read_text(subgid_file), group, gid)
    if not uids:
        raise RemapError(f"--userns-remap {value!r}: {subuid_file} gives user {user!r} no subordinate uids "
                         f"(add a line such as {user}:{FIRST_SUBORDINATE_ID}:{DEFAULT_RANGE})")
    if not gids:
        raise RemapError(f"--userns-remap {value!r}: {subgid_file} gives group {group!r} no subordinate gids "
                         f"(add a line such as {group}:{FIRST_SUBORDINATE_ID}:{DEFAULT_RANGE})")
    return IdMapping(user, group, id_map(uids), id_map(gids))


def add_system_user(name: str) -> None:
    """A system user and its group, no home, no login shell (``useradd --system``)."""
    try:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", "--comment", "dockyard user namespaces", name],
                       check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise RemapError(f"--userns-remap default: cannot create the user {name!r}: useradd is missing") from None
    except subprocess.CalledProcessError as exc:
        raise RemapError(f"--userns-remap default: useradd {name}: {exc.stderr.strip()}") from None


def ensure_default_user(subuid_file: str, subgid_file: str, add_user: Callable[[str], None],
                        lookup: Callable[[str], Any] = pwd.getpwnam) -> None:
    """The ``dockyard`` user and group, and a range of 65536 ids for each in the subordinate id
    files, where missing (idempotent: a second call changes nothing). ``lookup`` finds a
    user's passwd entry (``pwd.getpwnam``)."""
    try:
        entry = lookup(DEFAULT_USER)
    except KeyError:
        add_user(DEFAULT_USER)
        try:
            entry = lookup(DEFAULT_USER)
        except KeyError:
            raise RemapError(f"--userns-remap default: the user {DEFAULT_USER!r} was not created") from None
    for path, number in ((subuid_file, entry.pw_uid), (subgid_file, entry.pw_gid)):
        text = read_text(path)
        if subordinate_ranges(text, DEFAULT_USER, number):
            continue
        line = f"{DEFAULT_USER}:{next_free_start(text)}:{DEFAULT_RANGE}\n"
        if text and not text.endswith("\n"):
            text += "\n"
        _write_file(path, text + line)


def _write_file(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".dockyard-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as exc:
        os.unlink(temporary)
        raise RemapError(f"--userns-remap default: cannot write {path}: {exc.strerror}") from None


# --- the daemon's files under a mapping --------------------------------------------------------


def reachable_by(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory from / to ``path`` that ``uid``:``gid`` (without capabilities on
    the host) cannot pass through, or None. The container's pid 1 reaches its root, its /etc
    files and its volumes by their paths, as the mapped root."""
    current = Path("/")
    for part in (Path("/"), *path.absolute().parents[::-1][1:], path.absolute()):
        current = part
        try:
            info = current.stat()
        except FileNotFoundError:
            return None
        if info.st_uid == uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid == gid:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            return current
    return None


def open_directory(path: Path) -> None:
    """Let others pass through ``path`` (add o+x, as dockerd makes its root 0711 under remap)."""
    mode = path.stat().st_mode & 0o7777
    if not mode & 0o001:
        path.chmod(mode | 0o011)


def chown_tree_root(path: Path, mapping: IdMapping) -> None:
    """``path`` (not what is under it) owned by the mapped root."""
    os.chown(path, mapping.root_uid, mapping.root_gid)


def shift_tree(path: Path, mapping: IdMapping) -> None:
    """Every entry under ``path`` (itself included) chowned from container ids to the mapped
    host ids; setuid/setgid bits (which chown clears) are put back. Links are not followed."""
    def shift(entry: str) -> None:
        info = os.lstat(entry)
        os.lchown(entry, mapping.host_uid(info.st_uid), mapping.host_gid(info.st_gid))
        if info.st_mode & 0o6000 and not stat.S_ISLNK(info.st_mode):
            os.chmod(entry, info.st_mode & 0o7777)

    shift(str(path))
    for directory, subdirs, files in os.walk(path):
        for name in (*subdirs, *files):
            shift(os.path.join(directory, name))


# --- the image layers under a mapping ----------------------------------------------------------


def layer_copy(layer: str, mapping: IdMapping, cache: Path) -> str:
    """A copy of ``layer`` with its owners shifted to the mapping (the fallback when the kernel
    or the filesystem refuses idmapped mounts), made once per mapping and layer and kept under
    ``cache`` (``<root>/userns/<UID.GID>/layers``); the copy is renamed into place whole.

    Raises:
        OSError: the copy or the chown failed (nothing is left behind).
    """
    target = cache / Path(layer).name
    if target.is_dir():
        return str(target)
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = Path(tempfile.mkdtemp(dir=cache, prefix=".partial-"))
    try:
        # cp -a keeps links, devices (the 0/0 whiteouts), hard links and trusted.* xattrs (opaque dirs).
        result = subprocess.run(["cp", "-a", "--reflink=auto", f"{layer}/.", str(partial)],
                                capture_output=True, text=True)
        if result.returncode:
            raise OSError(f"copy the layer {layer} for the mapping {mapping.key}: {result.stderr.strip()}")
        os.chmod(partial, os.stat(layer).st_mode & 0o7777)
        shift_tree(partial, mapping)
        try:
            partial.rename(target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(partial)  # another start made the same copy meanwhile: keep that one
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return str(target)


PROBE = """
import os, sys
sys.path.insert(0, sys.argv[1])
import libc, userns
base, uid_map, gid_map = sys.argv[2], [sys.argv[3]], [sys.argv[4]]
lower, upper, work, merged = (base + "/" + name for name in ("lower", "upper", "work", "merged"))
try:
    fd = userns.make_user_namespace(uid_map, gid_map)
    libc.unshare(libc.CLONE_NEWNS)
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE, None, "make the mounts private")
    userns.idmap_in_place(lower, fd)
    libc.mount("overlay", merged, "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}",
               "mount an overlay on an idmapped layer")
    print(os.stat(merged + "/file").st_uid)
except libc.InitError as exc:
    print(exc.message)
    sys.exit(1)
"""


def probe_idmapped_overlay(scratch: Path, mapping: IdMapping) -> tuple[bool, str]:
    """Whether this kernel and the image store's filesystem take an idmapped lower layer
    under an overlay: tried once, in a throw-away process and mount namespace, on a file
    owned by host root that must show as the mapped root. Returns (works, why not)."""
    shutil.rmtree(scratch, ignore_errors=True)
    for name in ("lower", "upper", "work", "merged"):
        (scratch / name).mkdir(parents=True, mode=0o755)
    (scratch / "lower" / "file").touch()
    runtime = str(Path(__file__).parent / "runtime")
    uid_line = "0 {} {}".format(*mapping.uid_map[0][1:])
    gid_line = "0 {} {}".format(*mapping.gid_map[0][1:])
    try:
        result = subprocess.run([sys.executable, "-I", "-S", "-c", PROBE, runtime, str(scratch), uid_line, gid_line],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"the probe could not run: {exc}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    output = result.stdout.strip() or result.stderr.strip()[-300:]
    if result.returncode == 0 and output == str(mapping.root_uid):
        return True, ""
    return False, output or f"the probe exited {result.returncode}"
