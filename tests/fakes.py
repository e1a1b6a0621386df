"""Fakes of the lifecycle's kernel mechanics (supervisor/lifecycle/mechanics.py), for unit
tests without root: cgroups that are a set of names, a network that counts its leases, a
launcher whose process is an event, an image store of one image.

Each fake records what was done to it, so a test asserts what is left (a cgroup, a lease),
not which calls were made. :func:`make_lifecycle` builds a core with them around a real
record store and real log buffers under ``tmp_path``.
"""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path
from typing import Any

import trio

from supervisor.errors import DockyardError
from supervisor.lifecycle.core import Lifecycle
from supervisor.lifecycle.events import Events
from supervisor.locallogs import discard
from supervisor.logbuffer import LogBuffers
from supervisor.runtime.spawn import LaunchError
from supervisor.store import ContainerStore


class FakeLog:
    """A structlog-style logger that keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def log(event: str, **fields: Any) -> None:
            self.records.append((level, event, fields))
        return log


class FakeCgroup:
    version = 1
    cgroupfs_entries = ()

    def __init__(self, backend: FakeCgroups, name: str):
        self.backend = backend
        self.name = name
        self.applied: list[Any] = []

    @property
    def procs_files(self) -> tuple[str, ...]:
        return (f"/fake/cgroup/{self.name}/cgroup.procs",)

    def file(self, controller: str, name: str) -> str | None:
        return None

    def apply(self, resources: Any, devices: tuple[str, ...] | None = None) -> None:
        if self.backend.apply_error is not None:
            raise self.backend.apply_error
        self.applied.append(resources)

    def oom_kills(self) -> int:
        return 0

    def remove(self) -> None:
        self.backend.existing.discard(self.name)

    def kill_and_remove(self) -> None:
        if self.backend.frozen.get(self.name):  # as the real one: thawed, or nothing would die
            self.freeze(False)
        self.backend.existing.discard(self.name)

    def freeze(self, frozen: bool) -> None:
        """As the kernel: a signal sent to a frozen process is delivered once it is thawed."""
        if self.backend.freeze_error is not None:
            raise self.backend.freeze_error
        self.backend.frozen[self.name] = frozen
        process = self.backend.processes.get(self.name)
        if process is not None and not frozen:
            held, process.held_signals = process.held_signals, []
            for sig in held:
                trio.from_thread.run_sync(process.deliver, sig)  # called in a worker thread, as the real one


class FakeCgroups:
    """The containers' cgroups: ``existing`` holds the names of those that exist."""

    parent_path = "/fake/cgroup/dockyard"

    def __init__(self) -> None:
        self.existing: set[str] = set()
        self.apply_error: BaseException | None = None  # raised by the next apply()s
        self.frozen: dict[str, bool] = {}  # name -> its freezer's last state
        self.processes: dict[str, FakeProcess] = {}  # name -> the process launched in it
        self.freeze_error: BaseException | None = None  # raised by the next freeze()s

    def enter(self) -> None:
        pass

    def create(self, name: str) -> FakeCgroup:
        self.existing.add(name)
        return FakeCgroup(self, name)

    def open(self, name: str) -> FakeCgroup:
        return FakeCgroup(self, name)

    def check(self, resources: Any) -> None:
        pass

    def has_controller(self, controller: str) -> bool:
        return True

    def remove_parent(self) -> None:
        pass


@dataclasses.dataclass
class FakeAttachment:
    container_id: str
    init_layer: str
    etc_dir: str
    namespace: str = ""
    sync: bool = True
    mode: str = "bridge"
    pid: int = 0
    address: str = ""
    prefixlen: int = 0
    mac: str = ""
    endpoints: list = dataclasses.field(default_factory=list)


class FakeKernel:
    """Stands in for supervisor.network.links under UserNetworks: bridges and veths by name."""

    def __init__(self) -> None:
        self.bridges: set[str] = set()

    def ensure_user_bridge(self, name: str, *args: Any) -> int:
        self.bridges.add(name)
        return 1

    def remove_bridge(self, name: str) -> None:
        self.bridges.discard(name)

    def routes(self) -> list[tuple[str, str]]:
        return []

    def link_names(self) -> set[str]:
        return set(self.bridges)

    def stale_endpoints(self, bridges: list[str], keep: set[str]) -> list[str]:
        return []

    def delete_link(self, name: str) -> bool:
        return False

    def attach_endpoint(self, *args: Any) -> None:
        pass


class FakeIsolation:
    failures = 0

    async def apply(self, bridges: list[Any]) -> None:
        self.bridges = bridges

    async def stop(self) -> None:
        pass


class FakeNetwork:
    """Leases by container id; ``prepare_error``/``connect_error`` make the next ones fail.
    User-defined networks are the real UserNetworks over a fake kernel."""

    def __init__(self, base: Path):
        from supervisor.network.user import UserNetworks

        self.base = base
        self.leases: set[str] = set()
        self.prepare_error: BaseException | None = None
        self.connect_error: BaseException | None = None
        self.served: list[str] = []
        self.user = UserNetworks(str(base), "fake0", "172.31.0.0/16", kernel=FakeKernel(), isolation=FakeIsolation())

    def builtin(self) -> tuple[str, str, str]:
        return "fake0", "172.31.0.0/16", "172.31.0.1"

    def check(self, spec: Any) -> None:
        for name in spec.endpoints:
            self.user.get(name)

    async def connect_live(self, attachment: Any, network: str, config: dict[str, Any]) -> Any:
        endpoint = self.user.lease(attachment.container_id, network, config, f"eth{len(attachment.endpoints) + 1}")
        attachment.endpoints.append(endpoint)
        return endpoint

    async def disconnect_live(self, attachment: Any, network_id: str) -> None:
        for endpoint in [e for e in attachment.endpoints if e.network.id == network_id]:
            attachment.endpoints.remove(endpoint)
            await self.user.detach(endpoint)

    async def start(self, running: set[str]) -> None:
        self.leases &= running

    async def stop(self) -> None:
        pass

    async def prepare(self, container: Any, peer: Any = None, image_config: dict | None = None) -> FakeAttachment:
        if self.prepare_error is not None:
            raise self.prepare_error
        self.leases.add(container.id)
        return FakeAttachment(container.id, str(self.base / "init"), str(self.base / "etc"))

    async def connect(self, attachment: FakeAttachment, pid: int) -> None:
        if self.connect_error is not None:
            raise self.connect_error

    def serve(self, attachment: FakeAttachment, nursery: trio.Nursery) -> None:
        self.served.append(attachment.container_id)

    async def release(self, attachment: FakeAttachment | None) -> None:
        if attachment is not None:
            self.leases.discard(attachment.container_id)

    async def settle(self, container_id: str) -> None:
        pass


class FakeProcess:
    """A container's pid 1 that exits when signalled (128 + the signal) or :meth:`exit`."""

    def __init__(self, pid: int):
        self.pid = pid
        self.start_time = 1
        self.stdout = self.stderr = self.stdin = None
        self.tty = False
        self.returncode: int | None = None
        self.signals: list[int] = []
        self.frozen: Any = lambda: False  # whether its cgroup is frozen (FakeCgroups)
        self.held_signals: list[int] = []  # sent while frozen, delivered at the thaw
        self._exited = trio.Event()

    def exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.signals.append(int(sig))
        if self.frozen():
            self.held_signals.append(int(sig))
        else:
            self.deliver(sig)

    def deliver(self, sig: int) -> None:
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.exit(128 + int(sig))

    def take_mount_namespace(self) -> int:
        return -1

    def close(self) -> None:
        pass


class FakeLauncher:
    """``ForkServer.launch``: calls ``prepare(pid)`` as the real one does, then returns a
    :class:`FakeProcess`; or raises ``error``. With ``gate`` set, it waits for the gate
    (``entered`` is set once it waits), so a test can act while a start is under way."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.gate: trio.Event | None = None
        self.entered = trio.Event()
        self.processes: list[FakeProcess] = []
        self.configs: list[Any] = []
        self.cgroups: FakeCgroups | None = None  # its processes' cgroups (their freezer)

    async def launch(self, config: Any, stdio: Any = None, prepare: Any = None, hold_mounts: bool = False) -> FakeProcess:
        self.configs.append(config)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        process = FakeProcess(10_000 + len(self.processes))
        if self.cgroups is not None:
            self.cgroups.processes[config.container_id] = process
            process.frozen = lambda: self.cgroups.frozen.get(config.container_id, False)
        if prepare is not None:
            await prepare(process.pid)
        self.processes.append(process)
        return process


@dataclasses.dataclass
class FakeImage:
    id: str = "sha256:" + "ab" * 32
    config: dict[str, Any] = dataclasses.field(default_factory=lambda: {"Cmd": ["true"]})
    layers: list[str] = dataclasses.field(default_factory=list)
    diff_ids: tuple[str, ...] = ()


class FakeImages:
    """An image store holding one image, by any name."""

    def __init__(self, base: Path):
        layer = base / "layer"
        layer.mkdir(exist_ok=True)
        self.image = FakeImage(layers=[str(layer)])

    def resolve(self, ref: str) -> FakeImage:
        return self.image

    def list(self) -> list[FakeImage]:
        return [self.image]


@dataclasses.dataclass
class Fakes:
    """A lifecycle core and everything around it, for one test."""

    core: Lifecycle
    cgroups: FakeCgroups
    network: FakeNetwork
    launcher: FakeLauncher
    store: ContainerStore
    events: list[tuple[str, dict[str, Any]]]
    log: FakeLog
    published: list[trio.Event]  # [the event set at the next publish]

    def actions(self, container_id: str) -> list[str]:
        """The actions of the events published about a container, in order."""
        return [data["action"] for topic, data in self.events if data.get("id") == container_id]

    def event(self, container_id: str, action: str) -> dict[str, str]:
        """The attributes of the last ``action`` event of a container."""
        found = [data for _, data in self.events if data.get("id") == container_id and data["action"] == action]
        assert found, f"no {action} event of {container_id}: {self.actions(container_id)}"
        return found[-1]["attributes"]

    async def wait_for_event(self, container_id: str, action: str) -> dict[str, str]:
        """Until a container's ``action`` event is published (a 10 s guard)."""
        with trio.fail_after(10):
            while action not in self.actions(container_id):
                await self.published[0].wait()
        return self.event(container_id, action)


def make_lifecycle(base: Path) -> Fakes:
    """A core with fakes; set ``fakes.core.nursery`` before a start."""
    events: list[tuple[str, dict[str, Any]]] = []
    published = [trio.Event()]
    log = FakeLog()

    def record(topic: str, data: dict[str, Any], channel: str) -> None:
        events.append((topic, data))
        published[0].set()
        published[0] = trio.Event()

    publisher = Events(record, None, log)
    store = ContainerStore(base / "containers")
    logs = LogBuffers(base, publish=publisher.publish, dropped=lambda *args: None, keep=discard)
    cgroups, network, launcher = FakeCgroups(), FakeNetwork(base), FakeLauncher()
    launcher.cgroups = cgroups
    core = Lifecycle(store=store, images=FakeImages(base), cgroups=cgroups, launcher=launcher, logs=logs,
                     events=publisher, log=log, network=network)
    return Fakes(core, cgroups, network, launcher, store, events, log, published)


class NetworkRefused(DockyardError):
    """What the real network raises when a veth cannot be moved (links.NetworkError)."""


def launch_error(reason: str, exit_code: int = 125) -> LaunchError:
    return LaunchError(f"cannot start: {reason}", exit_code=exit_code, reason=reason)
