"""The state of ``dockyard-runtime``'s containers: one directory per container under
``--root`` (``<root>/<id>/state.json``, written atomically by :func:`write_small_atomic`, and
``exec.fifo`` between ``create`` and ``start``), a lock per container (``flock`` on its
directory) that serializes concurrent commands on it, and the status of the spec's state,
derived each time from the kernel rather than stored:

    stopped   pid 1 is gone (or a zombie, or its pid now names another process)
    created   pid 1 lives and exec.fifo still exists: it waits for ``start``
    paused    the container's freezer cgroup is FROZEN (v1; cgroup.freeze 1 on v2)
    running   otherwise
"""

from __future__ import annotations

import errno
import fcntl
import os

from supervisor.ociruntime.errors import RuntimeCommandError
from supervisor.runtime import freezer, jsonlite

OCI_VERSION = "1.0.2"
STATE_FILE = "state.json"
FIFO_NAME = "exec.fifo"
DEFAULT_ROOT = "/run/dockyard-runtime"


def now_rfc3339() -> str:
    """Now in UTC, RFC 3339 with microseconds (``time``, not ``datetime``: a shorter start-up)."""
    import time

    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%06dZ" % int(now % 1 * 1_000_000)


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat, or None when the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


class StateStore:
    """The containers under one ``--root``."""

    def __init__(self, root: str = DEFAULT_ROOT):
        self.root = root

    def directory(self, container_id: str) -> str:
        return os.path.join(self.root, container_id)

    def fifo(self, container_id: str) -> str:
        return os.path.join(self.root, container_id, FIFO_NAME)

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if os.path.isfile(os.path.join(self.root, name, STATE_FILE)))

    def make(self, container_id: str) -> None:
        """The container's directory, new.

        Raises:
            RuntimeCommandError: a container of that id exists.
        """
        os.makedirs(self.root, 0o700, exist_ok=True)
        try:
            os.mkdir(self.directory(container_id), 0o711)
        except FileExistsError:
            raise RuntimeCommandError(f"container with id exists: {container_id}") from None

    def locked(self, container_id: str, must_exist: bool = True) -> ContainerLock:
        """Hold the container's lock (flock on its directory) for the block.

        Raises:
            RuntimeCommandError: on entering: the container does not exist.
        """
        return ContainerLock(self, container_id, must_exist)

    def load(self, container_id: str) -> dict:
        """Raises:
            RuntimeCommandError: the container does not exist."""
        try:
            with open(os.path.join(self.directory(container_id), STATE_FILE), "rb") as file:
                return jsonlite.loads(file.read())
        except (FileNotFoundError, NotADirectoryError):
            raise RuntimeCommandError(f'container "{container_id}" does not exist') from None
        except ValueError as exc:
            raise RuntimeCommandError(f'container "{container_id}": its state file is corrupt: {exc}') from None

    def save(self, record: dict) -> None:
        data = jsonlite.dumps(record).encode()
        write_small_atomic(os.path.join(self.directory(record["id"]), STATE_FILE), data, 0o600)

    def remove(self, container_id: str) -> None:
        """The container's directory and its files gone (shutil only for a subdirectory,
        which dockyard-runtime never makes: its import costs every ``run`` ~2 ms)."""
        directory = self.directory(container_id)
        try:
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            raise IsADirectoryError(errno.EISDIR, "a subdirectory", entry.path)
                        os.unlink(entry.path)
                os.rmdir(directory)
            except IsADirectoryError:
                import shutil

                shutil.rmtree(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise RuntimeCommandError(f'cannot remove the state of container "{container_id}": {exc}') from None


def write_small_atomic(path: str, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` (permissions ``mode``) by a rename, without fsync: what
    ``logs.atomic.write_atomic(durable=False)`` does, without its pathlib and typing imports
    (~5 ms of every ``run``). The temporary file is ``.<name>.<pid>.tmp`` beside ``path``.

    Raises:
        OSError: nothing was replaced and no temporary file is left.
    """
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


class ContainerLock:
    """:meth:`StateStore.locked`'s context manager (a class: ``contextlib`` imports
    ``collections`` and ``functools``, ~3 ms of every ``run``)."""

    def __init__(self, store: StateStore, container_id: str, must_exist: bool):
        self.store, self.container_id, self.must_exist = store, container_id, must_exist
        self.fd = -1

    def __enter__(self) -> None:
        directory = self.store.directory(self.container_id)
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise RuntimeCommandError(f'container "{self.container_id}" does not exist') from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.must_exist and not os.path.exists(os.path.join(directory, STATE_FILE)):
                raise RuntimeCommandError(f'container "{self.container_id}" does not exist')
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def __exit__(self, *exc_info: object) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def status_of(record: dict, store: StateStore) -> str:
    """The container's status now (the table in this module's docstring)."""
    pid = record.get("pid") or 0
    if not pid or process_start_time(pid) != record.get("start_time"):
        return "stopped"
    if os.path.exists(store.fifo(record["id"])):
        return "created"
    paths = record.get("cgroup_paths") or {}
    version = 2 if set(paths) == {""} else 1
    controller, name = freezer.freezer_file(version)
    if paths.get(controller) and freezer.is_frozen(os.path.join(paths[controller], name), version):
        return "paused"
    return "running"


def spec_state(record: dict, status: str) -> dict:
    """The spec's state document (``state ID``), with runc's extra fields."""
    return {
        "ociVersion": OCI_VERSION,
        "id": record["id"],
        "pid": record.get("pid", 0) if status != "stopped" else 0,
        "status": status,
        "bundle": record.get("bundle", ""),
        "rootfs": record.get("rootfs", ""),
        "created": record.get("created", ""),
        "owner": record.get("owner", ""),
        "annotations": record.get("annotations") or {},
    }


def hook_state(record: dict, status: str) -> dict:
    """The state given to hooks on their stdin: the spec's fields only."""
    return {
        "ociVersion": OCI_VERSION,
        "id": record["id"],
        "status": status,
        "pid": record.get("pid", 0),
        "bundle": record.get("bundle", ""),
        "annotations": record.get("annotations") or {},
    }
