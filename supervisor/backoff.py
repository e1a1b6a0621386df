"""Restart backoff as pure functions of (attempt, how long the last run lasted), so that the
policy is tested with numbers instead of clocks. Used for containers' restart policies and for
the daemon's own workers.

docker's rule: the first restart waits 100 ms, each further one twice as long, up to one
minute; once a run has lasted 10 seconds, the next failure counts as the first again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.1
    maximum: float = 60.0
    factor: float = 2.0
    reset_after: float = 10.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before restart number ``attempt`` (1 for the first)."""
        if attempt < 1:
            raise ValueError(f"restart attempt must be >= 1, not {attempt}")
        # min() before the power would overflow: 2.0 ** 1100 is an OverflowError.
        return min(self.maximum, self.initial * self.factor ** min(attempt - 1, 64))

    def next_attempt(self, attempt: int, ran_for: float) -> int:
        """The attempt number of the next restart, given the number of the previous one
        (0: none yet) and how long the process ran since then."""
        return 1 if ran_for >= self.reset_after else attempt + 1
