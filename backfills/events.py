"""Events the runner emits. Consumers (progress displays, logs, tests) subscribe to them.

The runner knows nothing of how they are shown; the displays know nothing of the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import BackfillRun


@dataclass(frozen=True)
class Event:
    """Base class: every event carries the run as the runner knows it at that moment."""

    run: BackfillRun


@dataclass(frozen=True)
class RunStarted(Event):
    """The run was claimed; ``resumed`` is True when it continues from a checkpoint."""

    resumed: bool
    took_over: bool = False


@dataclass(frozen=True)
class ChunkCommitted(Event):
    """A chunk and its checkpoint committed."""

    window_size: int
    processed: int
    seconds: float
    #: Rows of this chunk set aside by quarantine.
    failed: int = 0


@dataclass(frozen=True)
class Retrying(Event):
    """A chunk hit a transient error and will be retried after ``delay`` seconds."""

    attempt: int
    delay: float
    error: BaseException


@dataclass(frozen=True)
class RunPaused(Event):
    """The run stopped at a chunk boundary and can be resumed."""

    reason: str


@dataclass(frozen=True)
class RunCancelled(Event):
    """The run was cancelled on request; it is final."""

    reason: str


@dataclass(frozen=True)
class RunCompleted(Event):
    """Every window up to the horizon is committed."""


@dataclass(frozen=True)
class RunFailed(Event):
    """A chunk raised a non-transient error; the run is recorded as failed."""

    error: BaseException


Listener = Callable[[Event], None]
