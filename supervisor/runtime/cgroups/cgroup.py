"""One container's cgroup, on either version: its directories, its files, writing its limits
and device rules, reading its OOM count and processes, killing and removing it. What
differs between the versions is data (its ``paths`` and ``controllers``, from the backend
in ``v1.py`` or ``v2.py``) and the table of files (``limits.py``); the helpers both
backends use to make and check their directories are here too.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from supervisor.errors import InvalidArgument
from supervisor.resources import FLAGS, STANDARD_DEVICES, Resources
from supervisor.runtime import cgroupfiles, freezer
from supervisor.runtime.cgroups.limits import v1_limit_writes, v2_limit_writes

#: Files a kernel may lack; a write to one is skipped (docker's default memsw without swap).
OPTIONAL_FILES = ("memory.memsw.limit_in_bytes", "memory.swap.max")
#: Controllers whose absence only means "no such limit here" (a v1 host may not mount them).
OPTIONAL_CONTROLLERS = ("devices",)
#: What a v1 hierarchy's name is made of (``memory``, ``cpu,cpuacct``, ``name=systemd``).
HIERARCHY_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_=,")


@dataclass(frozen=True)
class Cgroup:
    """One container's cgroup: a directory in each hierarchy.

    ``controllers`` maps a controller to its directory (v1: one per hierarchy; v2: every
    controller to the one directory)."""

    name: str
    paths: tuple[str, ...]
    version: int = 1
    controllers: tuple[tuple[str, str], ...] = ()

    @property
    def procs_files(self) -> tuple[str, ...]:
        return tuple(os.path.join(path, "cgroup.procs") for path in self.paths)

    @property
    def cgroupfs_entries(self) -> tuple[str, ...]:
        """What the container's /sys/fs/cgroup shows (``LaunchConfig.cgroupfs``, mounted by
        ``runtime/cgroupfs.py``): v2, a cgroup2 mount in its cgroup namespace; v1, per
        hierarchy ``NAME<TAB>DIR``: this cgroup's directory, under the hierarchy's own name
        (``cpu,cpuacct`` for a co-mount reached through its ``cpu`` link)."""
        if self.version == 2:
            return ("cgroup2",)
        entries = []
        for path in self.paths:  # <root>/<controller>/<parent>/<name>
            hierarchy = os.path.basename(os.path.realpath(os.path.dirname(os.path.dirname(path))))
            if hierarchy and set(hierarchy) <= HIERARCHY_CHARACTERS:
                entries.append(f"{hierarchy}\t{os.path.realpath(path)}")
        return tuple(entries)

    def file(self, controller: str, name: str) -> str | None:
        """The path of ``name`` of ``controller``, None when that controller is not mounted."""
        for known, path in self.controllers:
            if known == controller:
                return os.path.join(path, name)
        if self.version == 2 and self.paths:
            return os.path.join(self.paths[0], name)
        return None

    # --- limits -----------------------------------------------------------------------

    def limit_writes(self, resources: Resources) -> list[tuple[str, str, str]]:
        """The ``(controller, file, value)`` writes that set ``resources``, in order."""
        return v2_limit_writes(resources) if self.version == 2 else v1_limit_writes(resources)

    def device_writes(self, allowed: tuple[str, ...]) -> list[tuple[str, str, str]]:
        """Deny every device but the standard ones and ``allowed`` rules (v1 only)."""
        if self.version == 2:
            return []
        rules = [("devices", "devices.deny", "a")]
        rules += [("devices", "devices.allow", rule) for rule in (*STANDARD_DEVICES, *allowed)]
        return rules

    def apply(self, resources: Resources, devices: tuple[str, ...] | None = None) -> None:
        """Write the limits (and, given ``devices``, the device rules) into the cgroup.

        A missing optional file (memsw without swap accounting, in docker's default of
        twice the memory) is skipped; on v1, memory and memory+swap are written in the
        order the kernel accepts (memory <= memsw at every step).

        Raises:
            OSError: the kernel refused a value; its message names the file and value.
        """
        writes = self.limit_writes(resources)
        if devices is not None:
            writes += self.device_writes(devices)
        index = 0
        while index < len(writes):
            controller, name, value = writes[index]
            following = writes[index + 1] if index + 1 < len(writes) else None
            try:
                self._write(controller, name, value)
            except OSError as exc:
                # v1: raising memory above the current memsw needs memsw raised first.
                if exc.errno == errno.EINVAL and name == "memory.limit_in_bytes" and following and following[1] == "memory.memsw.limit_in_bytes":
                    self._write(*following)
                    self._write(controller, name, value)
                    index += 2
                    continue
                raise
            index += 1

    def _write(self, controller: str, name: str, value: str) -> None:
        path = self.file(controller, name)
        if path is None:
            if controller in OPTIONAL_CONTROLLERS:
                return
            raise OSError(errno.ENOENT, f"cannot set {name} of cgroup {self.name}: the {controller} controller is not mounted")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        except FileNotFoundError:
            if name in OPTIONAL_FILES:
                return
            raise OSError(errno.ENOENT, f"cannot set {name} of cgroup {self.name}: the file is missing", path) from None
        try:
            os.write(fd, value.encode())
        except OSError as exc:
            raise OSError(exc.errno, f"cannot set {name} of cgroup {self.name} to {value!r}: {os.strerror(exc.errno)}", path) from None
        finally:
            os.close(fd)

    def oom_kills(self) -> int:
        """How many processes the OOM killer killed in this cgroup (0 if unknown)."""
        if self.version == 2:
            path = self.file("memory", "memory.events")
        else:
            path = self.file("memory", "memory.oom_control")
        if path is None:
            return 0
        try:
            with open(path) as file:
                for line in file:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            pass
        return 0

    # --- the freezer (pause) --------------------------------------------------------------

    def freeze(self, frozen: bool) -> None:
        """Freeze (``pause``) or thaw every process of the cgroup; return once the kernel has
        settled (supervisor/runtime/freezer.py; blocking: the daemon calls it in a thread).

        Raises:
            OSError: no freezer (the v1 controller is not mounted), the write was refused, or
                it did not settle (TimeoutError); the message names the cgroup.
        """
        controller, name = freezer.freezer_file(self.version)
        path = self.file(controller, name)
        if path is None or not os.path.exists(path):
            raise OSError(errno.ENOENT, f"cannot {'freeze' if frozen else 'thaw'} cgroup {self.name}: "
                          "the freezer controller is not mounted")
        try:
            freezer.set_frozen(path, self.version, frozen)
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot {'freeze' if frozen else 'thaw'} cgroup {self.name}: {exc.strerror or exc}",
                            path) from None

    def frozen(self) -> bool:
        """Whether the cgroup is frozen (or freezing); False without a freezer."""
        path = self.file(*freezer.freezer_file(self.version))
        return path is not None and freezer.is_frozen(path, self.version)

    def pids(self) -> list[int]:
        """The processes in the cgroup, in every hierarchy, as pids of our pid namespace."""
        found: set[int] = set()
        for path in self.procs_files:
            try:
                with open(path) as file:
                    found.update(int(line) for line in file if line.strip())
            except FileNotFoundError:
                continue
        return sorted(found)

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to every process in the cgroup."""
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def remove(self, timeout: float = 5.0) -> None:
        """rmdir the cgroup in every hierarchy. A missing directory is fine; EBUSY (processes
        still exiting) is retried until ``timeout`` seconds have passed.

        Raises:
            OSError: a directory could not be removed.
        """
        deadline = time.monotonic() + timeout
        for path in self.paths:
            try:
                cgroupfiles.remove_directory(path, deadline)
            except OSError as exc:
                reason = f"cannot remove cgroup {self.name}: {os.strerror(exc.errno)}"
                raise OSError(exc.errno, reason, path) from None

    def kill_and_remove(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the cgroup, then rmdir it in every hierarchy. A process
        forked while this runs (EBUSY) is killed in the next round, until ``timeout``.

        Raises:
            OSError: a directory could not be removed.
        """
        deadline = time.monotonic() + timeout
        delay = 0.001
        if self.frozen():  # a frozen process dies only once thawed (v1): a paused container's end
            self.freeze(False)
        while True:
            self.kill_all(signal.SIGKILL)
            try:
                self.remove(timeout=0)
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)  # the killed processes are still exiting
            delay = min(delay * 2, 0.05)


def check_swap(resources: Resources, has_accounting: bool, name: str) -> None:
    explicit = resources.memory_swap not in (0, 2 * resources.memory)  # not docker's default
    if explicit and not has_accounting:
        raise InvalidArgument(
            f"cannot set --memory-swap: this host has no swap accounting ({name} is missing); "
            "leave --memory-swap out",
            flag=FLAGS["memory_swap"],
        )


def check_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\x00" in name:
        raise InvalidArgument(f"cgroup name {name!r} is not a single path component")


def make_dirs(base: str, parts: tuple[str, ...]) -> list[str]:
    """mkdir base/parts[0]/parts[1]... ; returns the directories created, in order."""
    created = []
    path = base
    for part in parts:
        path = os.path.join(path, part)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            continue
        created.append(path)
    return created


@contextmanager
def removed_on_error() -> Iterator[list[str]]:
    """A list for the directories a backend's ``create`` makes (``make_dirs``' results):
    if the block raises OSError, they are removed again, newest first, and it goes on."""
    created: list[str] = []
    try:
        yield created
    except OSError:
        remove_dirs(created)
        raise


def remove_dirs(paths: list[str]) -> None:
    for path in reversed(paths):
        try:
            os.rmdir(path)
        except OSError:
            pass

