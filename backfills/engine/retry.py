"""Which failed chunks are tried again, after how long, and when to try a smaller one.

Pure decisions, no database: the step tells ``Attempts`` what went wrong and does what it says.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ..transient import is_timeout, is_transient


@dataclass(frozen=True)
class RetryPolicy:
    """Transient errors retry with exponential back-off (jittered to 50-100%), at most
    ``max_retries`` times a chunk."""

    max_retries: int
    base_delay: float
    max_delay: float
    jitter: Callable[[float, float], float] = random.uniform

    def attempts(self) -> Attempts:
        """A fresh count for one chunk."""
        return Attempts(self)


@dataclass(frozen=True)
class Retry:
    """Try the chunk again: the attempt's number, the wait before it, and whether to halve
    the chunk first (the same window keeps timing out)."""

    attempt: int
    delay: float
    shrink: bool


class Attempts:
    """The failures of one chunk so far."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self.timeouts = 0

    def after(self, exc: BaseException) -> Retry | None:
        """What to do after *exc*: a ``Retry``, or None to give up (re-raise)."""
        self.failures += 1
        if not is_transient(exc) or self.failures > self.policy.max_retries:
            return None
        shrink = False
        if is_timeout(exc):
            self.timeouts += 1
            shrink = self.timeouts >= 2
        backoff = self.policy.base_delay * 2 ** (self.failures - 1)
        delay = min(self.policy.max_delay, backoff) * self.policy.jitter(0.5, 1.0)
        return Retry(self.failures, delay, shrink)
