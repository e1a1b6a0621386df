"""Live restore at daemon start: the containers the keeper held are adopted again.

Theory of operation
-------------------
The keeper (``runtime/keeper.py``) outlived the last daemon and handed back, for each
container it held, pid 1 (the keeper's child), the daemon's ends of its stdio, its output
spools, its published ports' sockets and, if pid 1 exited meanwhile, its exit code and time
(``core.held``). :func:`supervisor.lifecycle.reconcile.load_and_reconcile` kept every
"running" record the keeper holds aside (``core.restoring``); once the daemon's nursery runs,
:func:`resume` adopts each::

    check pid 1 (the keeper's child, same start time) ─▶ pidfd, mount namespace
    ─▶ cgroup opened, stats reader ─▶ network: leases, the held port sockets, DNAT rules,
       user networks' endpoints (its veths), names and embedded DNS server
    ─▶ log: store's last seqs, the spools' unstored output (logspool.unstored) ─▶ supervise()

``supervise`` then runs as after a start: a container that exited while no daemon ran is
drained and recorded with the keeper's exit code and time, its ``die`` published (the
monitor applies its restart policy). A container that cannot be adopted (pid 1 gone or not
the same process) is recorded as exited (255) with the reason, never silently; what another
dockyard version left is left alone (``reconcile.py``). One ``daemon.restore`` event lists
the three kinds.
"""

from __future__ import annotations

import os
import time
from typing import Any

from logs.format import DROPPED, STDOUT, STREAMS
from logs.reader import MORE
from logs.store import LogReader
from supervisor import health, stats
from supervisor.container import Container
from supervisor.errors import DockyardError
from supervisor.lifecycle import reconcile
from supervisor.lifecycle.start import supervise
from supervisor.logspool import Spool, capacity_for, unstored
from supervisor.runtime.keeperclient import HeldContainer, adopt
from supervisor.runtime.protocol import LaunchError


async def resume(core: Any) -> dict[str, list[str]]:
    """Adopt every container of ``core.restoring`` (module docstring); release what the
    keeper held for anything else. Returns the names by outcome, as ``daemon.restore`` says."""
    started = time.monotonic()
    outcome: dict[str, list[str]] = {"adopted": [], "exited": [], "not_adoptable": []}
    restoring, core.restoring = core.restoring, []
    for container in restoring:
        held: HeldContainer = core.held.pop(container.id)
        try:
            await adopt_one(core, container, held)
        except (LaunchError, DockyardError) as exc:
            held.close()
            await reconcile.reconcile_orphan(core, container, reason=f"cannot be adopted: {exc.message}")
            await core.keeper.release(container.id, held.pid)
            continue
        outcome["exited" if container.process.returncode is not None else "adopted"].append(container.name)
    for container_id, held in list(core.held.items()):  # no running record: a start never recorded
        held.close()
        if container_id not in core.left_alone:  # (a record of a later format: the keeper keeps holding it)
            await core.keeper.release(container_id, held.pid)
    core.held.clear()
    for container_id, reason in core.not_adopted.items():
        container = core.containers.get(container_id)
        name = container.name if container else core.left_alone.get(container_id, container_id)
        outcome["not_adoptable"].append(f"{name}: {reason}")
    core.not_adopted = {}
    core.log.info("containers restored", adopted=len(outcome["adopted"]), exited=len(outcome["exited"]),
                  not_adoptable=len(outcome["not_adoptable"]), seconds=round(time.monotonic() - started, 3))
    return outcome


async def adopt_one(core: Any, container: Container, held: HeldContainer) -> None:
    """Adopt one held container and start its supervising task.

    Raises:
        DockyardError: its network cannot be taken back (a network gone, a port).
    """
    process = adopt(held, core.keeper.pid, core.keeper.exit_status, container.spec.open_stdin,
                    hold_mounts=not container.spec.auto_remove)
    cgroup = core.cgroups.open(container.id)
    alive = process.returncode is None and process.pidfd >= 0
    network = await core.network.adopt(container, held, process.pid if alive else 0)
    held.close()  # what was not taken (nothing, normally)
    container.network = network
    container.process = process
    container.cgroup = cgroup
    if process.returncode is None:
        container.stats_reader = stats.StatsReader(cgroup, core.host_memory)
    container.last_sample = None
    container.health = health.HealthState() if container.healthcheck else None
    log = core.logs.open(container.id, container.spec.log_options)
    restored: dict[str, tuple[Spool, bytes]] = {}
    directory = core.logs.directory(container.id)
    last = {name: log.streams[code].last for name, code in STREAMS.items()}
    for name, fd in process.spools.items():
        spool = Spool(fd, capacity_for(log.options.max_buffer_size))  # an existing one keeps its own
        code = STREAMS[name]
        _, offset = unstored(spool, last[name], lambda after, code=code: stored_sizes(directory, code, after))
        recovered = spool.read_back(offset)
        log.use_spool(name, spool, offset)
        restored[name] = (spool, recovered)
    core.nursery.start_soon(supervise, core, container, process, restored)
    core.network.serve(network, core.nursery)


def stored_sizes(directory: os.PathLike, code: int, after: int):
    """The payload sizes of the stream's stored records after seq ``after``, in order
    (read from the last index entry before it: the unstored tail is at the store's end)."""
    reader = LogReader(directory)
    numbers = reader.segments()
    position = None
    for number in reversed(numbers):
        entries = reader.index(number)
        before = [entry for entry in entries
                  if (entry.last_stdout if code == STDOUT else entry.last_stderr) <= after]
        if before:
            position = (number, before[-1].offset)
            break
    if position is None:
        if not numbers:
            return
        position = reader.start()
    while True:
        page = reader.read(position)
        for record in page.records:
            if record.stream == code and record.seq > after and not record.flags & DROPPED:
                yield len(record.payload)
        if page.status != MORE or not page.records:
            return
        position = page.position

