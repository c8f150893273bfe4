"""Immutable copies of a run's figures, for events, displays and the control API.

An event carries a ``RunSnapshot`` taken when it was sent, not the live ``BackfillRun`` the
engine keeps changing afterwards: a listener that stores events (a test, a log pipeline, a
queue) sees each as it was.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Any

from .models import RunFigures

if TYPE_CHECKING:
    from .models import BackfillRun


@dataclasses.dataclass(frozen=True)
class RunSnapshot(RunFigures):
    """A run's columns at one moment, with the same derived figures as ``BackfillRun``."""

    id: int
    name: str
    reverse: bool
    state: str
    parameters: dict[str, Any]
    cursor: str | None
    horizon: str | None
    rows_total: int | None
    rows_total_exact: bool
    rows_scanned: int
    rows_processed: int
    rows_failed: int
    chunks_done: int
    retries: int
    batch_size: int | None
    target_chunk_time: float | None
    sleep: float
    profile: str
    max_duty: float | None
    settings_version: int
    last_chunk_size: int | None
    last_chunk_seconds: float | None
    time_running: float
    time_throttled: float
    throttle_reason: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    owner_token: str | None
    owner_host: str
    owner_pid: int | None
    owned_since: dt.datetime | None
    heartbeat_at: dt.datetime | None
    requested_state: str
    status_reason: str
    error_class: str
    error_message: str
    error_backtrace: str
    workers: int | None = None
    max_workers: int | None = None
    blocking_yields: int = 0
    blocking_cancels: int = 0
    blocking_max_wait: float = 0.0
    #: True when the run reads ``running`` but its owner is gone (pid dead on this host, or
    #: heartbeat past the lease): shown as ``interrupted`` until someone takes it over.
    interrupted: bool = False

    @property
    def pk(self) -> int:
        return self.id

    @property
    def shown_state(self) -> str:
        return "interrupted" if self.interrupted else self.state

    @classmethod
    def of(cls, run: BackfillRun, *, interrupted: bool = False) -> RunSnapshot:
        """A copy of *run*'s columns now."""
        values = {name: getattr(run, name) for name in _COPIED}
        values["parameters"] = dict(run.parameters or {})
        return cls(**values, interrupted=interrupted)


#: The columns ``RunSnapshot.of`` copies, listed once (it runs for every event of a run).
_COPIED = tuple(f.name for f in dataclasses.fields(RunSnapshot) if f.name != "interrupted")
