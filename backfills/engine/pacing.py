"""Time between chunks: rate-limited chores (``Ticker``) and sleeps that wake on a stop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..profiles import duty_rest

if TYPE_CHECKING:
    from ..models import BackfillRun


class Ticker:
    """Says when *every* seconds have passed (maintenance_tasks' ``Ticker``): the heartbeat,
    the control poll and the health checks each run on one, not on inline arithmetic."""

    def __init__(
        self, every: float, *, due_now: bool = False, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every = every
        self.clock = clock
        self.next = float("-inf") if due_now else clock() + every

    def due(self) -> bool:
        """Whether the interval has passed (``reset()`` starts the next one)."""
        return self.clock() >= self.next

    def reset(self) -> None:
        """Start the next interval now."""
        self.next = self.clock() + self.every


def interruptible_sleep(
    seconds: float,
    *,
    stopped: Callable[[], bool],
    heartbeat: Callable[[], None] | None = None,
    beat_every: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Sleep *seconds* in short naps, returning early once ``stopped()``; call *heartbeat*
    every *beat_every* seconds meanwhile (a long sleep must not lose the lease)."""
    deadline = clock() + seconds
    beat = Ticker(beat_every, clock=clock)
    while not stopped():
        left = deadline - clock()
        if left <= 0:
            return
        sleep(min(left, 0.1))
        if heartbeat is not None and beat.due():
            heartbeat()
            beat.reset()


def rest_after(seconds: float, run: BackfillRun) -> float:
    """How long to rest after a chunk that worked *seconds*: the run's sleep, or its duty
    cycle's rest when that is longer (the two are not added: either gives the database room)."""
    return max(run.sleep, duty_rest(seconds, run.max_duty))
