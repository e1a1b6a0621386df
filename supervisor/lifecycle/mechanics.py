"""The kernel mechanics the lifecycle core uses, as the narrow interfaces it sees.

The core (:mod:`supervisor.lifecycle.core`) decides; these do. Each is a
:class:`typing.Protocol`: the daemon passes the real classes (named below), a unit test
passes fakes (tests/fakes.py), so every decision of the lifecycle, a start's failure paths
included, runs without root.

=====================  ===============================================  ======================
interface              real class                                       what it touches
=====================  ===============================================  ======================
:class:`CgroupBackend`  ``supervisor.runtime.cgroups.CgroupV1``/``V2``   /sys/fs/cgroup
:class:`Launcher`       ``supervisor.runtime.spawn.ForkServer``          fork, namespaces, mounts
:class:`Network`        ``supervisor.network.manager.Network``           bridge, veths, leases
:class:`ImageResolver`  ``supervisor.images.store.ImageStore``           the image store
:class:`RecordStore`    ``supervisor.store.ContainerStore``              <root>/containers
=====================  ===============================================  ======================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import trio

from supervisor.resources import Resources


class Cgroup(Protocol):
    """One container's cgroup (in every hierarchy on v1)."""

    version: int

    @property
    def procs_files(self) -> tuple[str, ...]:
        """The ``cgroup.procs`` files the container's init stage joins."""

    def file(self, controller: str, name: str) -> str | None:
        """The path of one of its files (the stats reader), None when the host lacks it."""

    def apply(self, resources: Resources, devices: tuple[str, ...] | None = None) -> None:
        """Write the limits (raises OSError, or DockyardError for a limit it cannot give)."""

    def oom_kills(self) -> int:
        """How many processes the kernel killed in it for lack of memory."""

    def remove(self) -> None:
        """Remove it (empty)."""

    def kill_and_remove(self) -> None:
        """SIGKILL whatever is left in it (thawed first), then remove it."""

    def freeze(self, frozen: bool) -> None:
        """Freeze (pause) or thaw its processes, once settled (raises OSError)."""


class CgroupBackend(Protocol):
    """The cgroup that holds the containers' cgroups."""

    @property
    def parent_path(self) -> str: ...

    def enter(self) -> None:
        """Move the daemon into its own leaf first (a delegated v2 cgroup)."""

    def create(self, name: str) -> Cgroup: ...

    def open(self, name: str) -> Cgroup:
        """An existing cgroup by its container id (it may be gone)."""

    def check(self, resources: Resources) -> None:
        """Raise InvalidArgument for a limit this host cannot give."""

    def has_controller(self, controller: str) -> bool: ...

    def remove_parent(self) -> None: ...


class Launcher(Protocol):
    """Starts a container's (or an exec's) process: ``ForkServer.launch``."""

    async def launch(self, config: Any, stdio: Any = ..., prepare: Callable[[int], Awaitable[None]] | None = None,
                     hold_mounts: bool = False) -> Any:
        """The started process (``runtime.spawn.ContainerProcess``); raises LaunchError."""


class Network(Protocol):
    """The containers' network: a lease, /etc files and a veth per container."""

    async def start(self, running: set[str]) -> None:
        """Set the bridge up; clean up what a crashed daemon left (except ``running``)."""

    async def stop(self) -> None: ...

    def check(self, spec: Any) -> None:
        """At create: the user-defined networks the spec names exist (raises NotFound)."""

    async def prepare(self, container: Any, peer: Any = None, image_config: dict | None = None) -> Any:
        """Before a launch: the container's attachment (lease, ports, /etc files)."""

    async def connect(self, attachment: Any, pid: int) -> None:
        """Once pid 1 exists: its veth into its network namespace (raises DockyardError)."""

    def serve(self, attachment: Any, nursery: trio.Nursery) -> None:
        """While it runs: the attachment's tasks (published ports)."""

    async def release(self, attachment: Any) -> None:
        """Give the attachment back (None: nothing)."""

    async def settle(self, container_id: str) -> None:
        """Until no veth of the container is left (before it is removed)."""


class ImageResolver(Protocol):
    def resolve(self, ref: str) -> Any:
        """The ``images.store.Image`` a reference names (raises NotFound)."""

    def list(self) -> list[Any]:
        """Every image (``ps --filter ancestor=`` looks for the descendants of one)."""


class RecordStore(Protocol):
    """Where each container's record and files live."""

    def path(self, container_id: str) -> Path: ...

    def save(self, container_id: str, record: dict[str, Any]) -> None: ...

    def load_all(self) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
        """Every readable record, and (folder, reason) for each that is not."""
