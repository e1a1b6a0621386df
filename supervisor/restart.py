"""Restart policies (``run --restart``) as pure functions: what a container's exit calls for.

docker's semantics, decided by :func:`decide` from the facts of one exit:

    policy          restarts after an exit when                     at daemon start
    no              never                                           never
    on-failure[:N]  the exit code is not 0, the user did not stop   as after an exit
                    it, and fewer than N restarts were made (N=0:
                    no limit)
    always          the user did not stop it                        always (a user's stop
                                                                    lasts until then)
    unless-stopped  the user did not stop it                        unless the user stopped it

A user's ``stop`` or ``kill`` is not a failure: the supervisor records it in the container
(``user_stopped``) and no policy restarts it. A user's ``start`` clears it, with the restart
count and the backoff (as docker does). The backoff (:mod:`supervisor.backoff`) waits 100 ms
before the first restart, doubles up to a minute, and starts over once a run lasted 10 s.

The monitor worker (workers/monitor.py) calls :func:`decide`; the supervisor carries out the
restart it asks for, at most once per exit (``Supervisor.schedule_restart``).
"""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.backoff import Backoff
from supervisor.errors import InvalidArgument

NO = "no"
ON_FAILURE = "on-failure"
ALWAYS = "always"
UNLESS_STOPPED = "unless-stopped"
NAMES = (NO, ON_FAILURE, ALWAYS, UNLESS_STOPPED)

#: docker's container backoff: 100 ms doubling up to 1 minute, reset after a 10 s run.
CONTAINER_BACKOFF = Backoff(initial=0.1, maximum=60.0, reset_after=10.0)


@dataclass(frozen=True)
class RestartPolicy:
    name: str = NO
    maximum_retries: int = 0  # on-failure only; 0: no limit

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise InvalidArgument(
                f"invalid restart policy {self.name!r}: use no, on-failure[:max-retries], always or unless-stopped",
                flag="--restart",
            )
        if type(self.maximum_retries) is not int or self.maximum_retries < 0:
            raise InvalidArgument(
                f"invalid restart policy: maximum retry count {self.maximum_retries!r} must be a whole number >= 0",
                flag="--restart",
            )
        if self.maximum_retries and self.name != ON_FAILURE:
            raise InvalidArgument(
                f"invalid restart policy: a maximum retry count cannot be used with {self.name!r}",
                flag="--restart",
            )

    @classmethod
    def parse(cls, text: str) -> RestartPolicy:
        """``no``, ``on-failure``, ``on-failure:3``, ``always``, ``unless-stopped`` ('' is no)."""
        if not isinstance(text, str):
            raise InvalidArgument("spec.restart: must be a string such as 'on-failure:3'", flag="--restart")
        name, colon, count = text.partition(":")
        if not colon:
            return cls(name or NO)
        if not count.isdigit():
            raise InvalidArgument(
                f"invalid restart policy {text!r}: the maximum retry count must be a whole number", flag="--restart"
            )
        return cls(name, int(count))

    def __str__(self) -> str:
        return f"{self.name}:{self.maximum_retries}" if self.maximum_retries else self.name

    def host_config(self) -> dict[str, object]:
        """``HostConfig.RestartPolicy`` of docker inspect."""
        return {"Name": self.name, "MaximumRetryCount": self.maximum_retries}


@dataclass(frozen=True)
class Exit:
    """The facts of one exit that a decision needs."""

    exit_code: int
    user_stopped: bool  # the user's stop or kill ended this run
    restart_count: int  # restarts made by the policy since the user last started it
    ran_for: float  # seconds between start and exit
    previous_attempt: int = 0  # backoff attempt of the last policy restart (0: none)
    ever_started: bool = True  # False: its first start failed (docker leaves it be)


@dataclass(frozen=True)
class Decision:
    restart: bool
    reason: str
    attempt: int = 0  # 1 for the first restart of a streak of short runs
    delay: float = 0.0  # seconds to wait before the restart


def decide(policy: RestartPolicy, exit: Exit, backoff: Backoff = CONTAINER_BACKOFF) -> Decision:
    """Whether ``exit`` calls for a restart under ``policy``, and after how long."""
    if policy.name == NO:
        return Decision(False, "the restart policy is no")
    if exit.user_stopped:
        return Decision(False, "the user stopped it")
    if not exit.ever_started:
        return Decision(False, "it never started")
    if policy.name == ON_FAILURE:
        if exit.exit_code == 0:
            return Decision(False, "it exited with code 0")
        if policy.maximum_retries and exit.restart_count >= policy.maximum_retries:
            return Decision(False, f"it was restarted {exit.restart_count} times, the most {policy} allows")
    attempt = backoff.next_attempt(exit.previous_attempt, exit.ran_for)
    return Decision(True, f"{policy} after exit code {exit.exit_code}", attempt, backoff.delay(attempt))


def forgets_user_stop_at_daemon_start(policy: RestartPolicy) -> bool:
    """docker's ``always``: a container the user stopped comes back when the daemon starts."""
    return policy.name == ALWAYS
