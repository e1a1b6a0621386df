"""The container state machine: every status and every legal move, in one table.

Everything that changes a container's status goes through :func:`advance`; the lifecycle code
asks the predicates (``can_start`` ...) and never compares status strings.

    create ──▶ CREATED ──start──▶ RUNNING ──exit──▶ EXITED ──start──▶ RUNNING
                  │                  ▲                 │
                  │                  └──start_failed───┤ (an exec error leaves it EXITED)
                  └──────remove──▶ REMOVING ◀──remove──┘
                                      │
                                      └──remove_failed──▶ DEAD ──remove──▶ REMOVING

    RUNNING ──pause──▶ PAUSED ──unpause──▶ RUNNING      PAUSED ──exit──▶ EXITED

PAUSED is docker's: every process of the container frozen (its cgroup's freezer), its pid 1
still there. It counts as running (``running``, docker's ``State.Running``): a stop or a kill
of a paused container thaws it (lifecycle/pausing.py), a remove needs ``force``.
"""

from __future__ import annotations

import enum

from supervisor.errors import InvalidState


class Status(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    PAUSED = "paused"
    REMOVING = "removing"
    DEAD = "dead"

    def can_start(self) -> bool:
        return (self, "start") in _TABLE

    def can_kill(self) -> bool:
        return self.running

    def can_pause(self) -> bool:
        return (self, "pause") in _TABLE

    def can_unpause(self) -> bool:
        return (self, "unpause") in _TABLE

    def can_remove(self, force: bool = False) -> bool:
        return (self, "remove") in _TABLE or (force and self.running)

    @property
    def running(self) -> bool:
        """Its process exists: running or paused (docker's ``State.Running``)."""
        return self is Status.RUNNING or self is Status.PAUSED


# (status, event) -> next status. Nothing else is a legal move.
_TABLE: dict[tuple[Status, str], Status] = {
    (Status.CREATED, "start"): Status.RUNNING,
    (Status.EXITED, "start"): Status.RUNNING,
    (Status.CREATED, "start_failed"): Status.EXITED,
    (Status.EXITED, "start_failed"): Status.EXITED,
    (Status.RUNNING, "exit"): Status.EXITED,
    (Status.RUNNING, "pause"): Status.PAUSED,
    (Status.PAUSED, "unpause"): Status.RUNNING,
    (Status.PAUSED, "exit"): Status.EXITED,
    (Status.CREATED, "remove"): Status.REMOVING,
    (Status.EXITED, "remove"): Status.REMOVING,
    (Status.DEAD, "remove"): Status.REMOVING,
    (Status.REMOVING, "remove_failed"): Status.DEAD,
}

EVENTS = frozenset(event for _, event in _TABLE)


def advance(container: str, status: Status, event: str) -> Status:
    """The status after ``event``; raises InvalidState naming the container and the move."""
    if event not in EVENTS:
        raise ValueError(f"unknown state machine event {event!r}")
    try:
        return _TABLE[(status, event)]
    except KeyError:
        raise InvalidState(container, event.replace("_", " "), status.value) from None
