"""Django signals sent as a run progresses, so projects can notify or log.

Each is sent with ``sender`` = the Backfill class, ``run`` = a ``RunSnapshot`` (an immutable
copy of the run's row when the event was sent: read it, do not save it) and ``event`` = the
runner event (see ``backfills.events``) carrying the details, e.g.::

    @receiver(backfills.signals.run_failed)
    def page_someone(sender, run, event, **kwargs):
        notify(f"{run.name} failed: {run.last_error}")

A receiver that raises is logged and does not stop the run (``send_robust``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

from .events import (
    ChunkCommitted,
    Event,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunPaused,
    RunStarted,
)

logger = logging.getLogger("backfills")

run_started = Signal()
chunk_committed = Signal()
run_paused = Signal()
run_cancelled = Signal()
run_completed = Signal()
run_failed = Signal()

_SIGNALS: dict[type[Event], Signal] = {
    RunStarted: run_started,
    ChunkCommitted: chunk_committed,
    RunPaused: run_paused,
    RunCancelled: run_cancelled,
    RunCompleted: run_completed,
    RunFailed: run_failed,
}


def signal_listener(sender: type[Any]) -> Any:
    """A runner listener that re-sends its events as the signals above."""

    def listener(event: Event) -> None:
        signal = _SIGNALS.get(type(event))
        if signal is None or not signal.receivers:
            return
        for receiver, result in signal.send_robust(sender, run=event.run, event=event):
            if isinstance(result, Exception):
                logger.error(
                    "receiver %r of %s raised", receiver, type(event).__name__, exc_info=result
                )

    return listener
