"""Named profiles: how hard a run pushes, in one word instead of hand-tuned flags.

A profile sets the target chunk time (and the shorter one of kinds whose single statement holds
its row locks for the whole chunk), the blocking guard's budget and limit, and a duty cycle: the
largest fraction of wall time the run spends working (after a chunk of ``d`` seconds it rests
``d * (1 - duty) / duty``, like gh-ost's ``--nice-ratio`` and pt-archiver's ``--sleep-coef``).

- ``balanced`` (the default) is the settings: ``TARGET_CHUNK_TIME``,
  ``SET_BASED_TARGET_CHUNK_TIME``, ``BLOCKING_BUDGET``, ``BLOCKING_LIMIT``, ``MAX_DUTY``.
- ``gentle`` is for a busy primary: short chunks, a tight guard, working half of the time.
- ``fast`` is for a quiet database or a maintenance window: long chunks, a guard that yields
  only to waits longer than a chunk should take.

Precedence, for each value: what this invocation gives (``--target-chunk-time``, ``--max-duty``,
then ``--profile``), then the backfill class (``target_chunk_time``, ``max_duty``, then
``profile``), then the ``PROFILE`` setting. ``BLOCKING_BUDGET = None`` turns the guard off under
every profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .exceptions import BackfillConfigurationError

if TYPE_CHECKING:
    from .conf import Settings

BALANCED = "balanced"


@dataclass(frozen=True)
class Profile:
    """The values one profile sets. ``None`` in ``max_duty`` means no duty cycle (work all the
    time); ``None`` in ``blocking_limit`` means the guard never cancels a chunk."""

    name: str
    target_chunk_time: float
    set_based_target_chunk_time: float
    blocking_budget: float | None
    blocking_limit: float | None
    max_duty: float | None

    def target(self, locks_rows_whole_chunk: bool) -> float:
        """The target chunk time for a backfill kind (never more than the set-based target for
        kinds whose one statement holds its row locks from start to commit)."""
        if locks_rows_whole_chunk:
            return min(self.target_chunk_time, self.set_based_target_chunk_time)
        return self.target_chunk_time


#: The fixed profiles; ``balanced`` is read from the settings (``profile()``).
FIXED: dict[str, Profile] = {
    "gentle": Profile(
        "gentle",
        target_chunk_time=0.1,
        set_based_target_chunk_time=0.05,
        blocking_budget=0.05,
        blocking_limit=0.25,
        max_duty=0.5,
    ),
    # The budget is the chunk time: with 1 s chunks, a writer to a random row waits up to
    # about that long, and a 0.25 s budget made fast yield (and halve) after most chunks,
    # slower than balanced (0.77-0.86x in make bench); it yields only to longer waits.
    "fast": Profile(
        "fast",
        target_chunk_time=1.0,
        set_based_target_chunk_time=0.4,
        blocking_budget=1.0,
        blocking_limit=2.0,
        max_duty=None,
    ),
}

NAMES: tuple[str, ...] = ("gentle", BALANCED, "fast")


def check_name(name: object, where: str = "profile") -> str:
    """*name* if it names a profile, else a ``BackfillConfigurationError`` listing them."""
    if name not in NAMES:
        raise BackfillConfigurationError(
            f"{where} must be one of {', '.join(NAMES)}, got {name!r}."
        )
    return str(name)


def check_duty(value: object, where: str = "max_duty") -> float | None:
    """*value* as a duty cycle: a number in (0, 1], or None; 1 means no duty cycle."""
    if value is None:
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 < value <= 1
    ):
        raise BackfillConfigurationError(
            f"{where} must be a fraction of the time in (0, 1], got {value!r}."
        )
    return None if value == 1 else float(value)


def profile(name: str, settings: Settings) -> Profile:
    """The profile called *name*; ``balanced`` is the settings' values."""
    if name == BALANCED:
        return Profile(
            BALANCED,
            target_chunk_time=settings.target_chunk_time,
            set_based_target_chunk_time=settings.set_based_target_chunk_time,
            blocking_budget=settings.blocking_budget,
            blocking_limit=settings.blocking_limit,
            max_duty=check_duty(settings.max_duty, "BACKFILLS['MAX_DUTY']"),
        )
    return FIXED[check_name(name)]


def blocking(name: str, settings: Settings) -> tuple[float | None, float | None]:
    """The guard's (budget, limit) under profile *name*; no budget while the
    ``BLOCKING_BUDGET`` setting is None (the guard's off switch, for every profile)."""
    if settings.blocking_budget is None:
        return None, None
    chosen = profile(name, settings)
    return chosen.blocking_budget, chosen.blocking_limit


def duty_rest(seconds: float, max_duty: float | None) -> float:
    """How long to rest after a chunk that worked *seconds*, so that working is at most
    *max_duty* of the wall time (0 without a duty cycle)."""
    if max_duty is None or max_duty >= 1 or seconds <= 0:
        return 0.0
    return seconds * (1 - max_duty) / max_duty
