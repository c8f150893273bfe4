"""Events the runner emits. Consumers (progress displays, logs, tests) subscribe to them.

The runner knows nothing of how they are shown; the displays know nothing of the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .snapshot import RunSnapshot


@dataclass(frozen=True)
class Event:
    """Base class: every event carries a snapshot of the run taken when it was sent."""

    run: RunSnapshot


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
    #: Rows the retried chunk will span (halved after repeated timeouts).
    next_size: int = 0


@dataclass(frozen=True)
class Yielding(Event):
    """Application sessions waited on the last chunk's locks longer than BLOCKING_BUDGET: the
    runner waits ``pause`` seconds and makes the next chunk ``next_size`` rows."""

    sessions: int
    max_wait: float
    pause: float
    next_size: int


@dataclass(frozen=True)
class Throttled(Event):
    """A health check said "not now"; the runner waits ``wait`` seconds before asking again."""

    reason: str
    wait: float


@dataclass(frozen=True)
class ThrottleCleared(Event):
    """Every health check is happy again after ``waited`` seconds."""

    waited: float


@dataclass(frozen=True)
class SettingsChanged(Event):
    """``backfill set`` changed the run's settings; ``changes`` maps field to new value."""

    changes: dict[str, Any]


@dataclass(frozen=True)
class RunPaused(Event):
    """The run stopped at a chunk boundary and can be resumed."""

    reason: str
    #: True when a critical health threshold stopped it.
    critical: bool = False


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
