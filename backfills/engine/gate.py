"""Before each chunk: should the run stop, and is now a good time?

``StopGate.check()`` answers in order: a signal asked us to stop; this invocation's quota
(``--max-chunks``, ``--limit``) is used up; another process asked for a pause or cancel (polled
every CONTROL_POLL_SECONDS); the health checks say "not now" (asked every
HEALTH_CHECK_SECONDS; the gate then waits, visibly, until they say "go" or the run must stop).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..models import BackfillRun
from ..throttle import Health, HealthCheck, evaluate
from .pacing import Ticker

if TYPE_CHECKING:
    from ..base import Backfill

logger = logging.getLogger("backfills")

State = BackfillRun.State


@dataclass(frozen=True)
class Stop:
    """Why the loop ends before its next chunk, and the state the run is left in."""

    state: str
    reason: str
    critical: bool = False


class ThrottleHooks(Protocol):
    """What a health wait does besides deciding: record, show, sleep, look for stops."""

    def throttled(self, reason: str, wait: float, changed: bool) -> None: ...
    def sleep(self, seconds: float) -> None: ...
    def stop_requested(self) -> Stop | None: ...
    def cleared(self, waited: float, healthy: bool) -> None: ...


class HealthGate:
    """Asks the health checks and, while any says "not now", waits with a doubling back-off
    (0.25 s up to *max_wait*). No database of its own: the hooks record and show the wait."""

    def __init__(
        self,
        checks: Sequence[HealthCheck],
        backfill: Backfill,
        *,
        max_wait: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.checks = list(checks)
        self.backfill = backfill
        self.max_wait = max_wait
        self.clock = clock

    def __bool__(self) -> bool:
        return bool(self.checks)

    def verdict(self) -> Health:
        return evaluate(self.checks, self.backfill)

    def wait(self, hooks: ThrottleHooks) -> Stop | None:
        """Return once the checks say "go" (None) or the run must stop (a ``Stop``)."""
        verdict = self.verdict()
        if verdict.ok:
            return None
        started = self.clock()
        wait = 0.25
        reason = ""
        try:
            while True:
                if verdict.is_critical:
                    return Stop(State.PAUSED, f"critical: {verdict.reason}", critical=True)
                changed = verdict.reason != reason
                reason = verdict.reason
                hooks.throttled(reason, wait, changed)
                hooks.sleep(wait)
                stop = hooks.stop_requested()
                if stop is not None:
                    return stop
                wait = min(wait * 2, self.max_wait)
                verdict = self.verdict()
                if verdict.ok:
                    return None
        finally:
            hooks.cleared(self.clock() - started, verdict.ok)


class StopGate:
    """The checks before each chunk, in the order the module docstring gives."""

    def __init__(
        self,
        *,
        max_chunks: int | None,
        limit: int | None,
        poll: Callable[[], Stop | None],
        poll_every: float,
        health: HealthGate,
        health_every: float,
        hooks: ThrottleHooks,
    ) -> None:
        self.max_chunks = max_chunks
        self.limit = limit
        self.poll = poll
        self.health = health
        self.hooks = hooks
        self.poll_ticker = Ticker(poll_every)
        # Health is asked before the first chunk, then at most every HEALTH_CHECK_SECONDS (a
        # replica-lag query before every 50 ms chunk would cost a round trip each).
        self.health_ticker = Ticker(health_every, due_now=True)
        self.reason: str | None = None
        self.signum: int | None = None

    def start(self) -> None:
        """The loop begins: the next poll is an interval away, health is asked at once."""
        self.poll_ticker.reset()
        self.health_ticker.next = float("-inf")

    def request_stop(self, reason: str, signum: int | None = None) -> None:
        """Stop after the chunk in progress commits (safe to call from a signal handler)."""
        if self.reason is None:
            self.reason = reason
            self.signum = signum

    @property
    def stopping(self) -> bool:
        return self.reason is not None

    def requested(self, chunks_here: int = 0, rows_here: int = 0) -> Stop | None:
        """A stop asked for by a signal, or this invocation's quota used up."""
        if self.reason is not None:
            return Stop(State.PAUSED, self.reason)
        if self.max_chunks is not None and chunks_here >= self.max_chunks:
            return Stop(State.PAUSED, f"partial run: stopped after --max-chunks {chunks_here}")
        if self.limit is not None and rows_here >= self.limit:
            return Stop(State.PAUSED, f"partial run: stopped after --limit {self.limit} rows")
        return None

    def check(self, chunks_here: int, rows_here: int) -> Stop | None:
        """Whether to stop before the next chunk; waits here while unhealthy."""
        stop = self.requested(chunks_here, rows_here)
        if stop is None and self.poll_ticker.due():
            stop = self.poll()
            self.poll_ticker.reset()
        if stop is None and self.health and self.health_ticker.due():
            stop = self.health.wait(self.hooks)
            self.health_ticker.reset()
        return stop
