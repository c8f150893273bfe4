"""Opening a parallel run: find or create the run, split it into partitions, set it running.

The workers (``workers.py``) do the rest; this only prepares the run they share. Used by
``backfill run --workers N`` (local worker processes, or tasks with ``--enqueue``) and by
``start_parallel`` in the Python API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import DEFAULT_DB_ALIAS, connections

from .. import conf
from ..chunking import plan_partitions
from ..db import vendor_for
from ..exceptions import BackfillConfigurationError
from ..models import BackfillRun
from ..parameters import check_given
from .ledger import Ledger, Partitions
from .opening import Opening
from .options import RunOptions, resumed_run_settings
from .preconditions import check_requirements

if TYPE_CHECKING:
    from ..base import Backfill

State = BackfillRun.State

#: Partitions planned per worker: enough that a fast worker takes several while a slow one
#: walks its first, few enough that claims stay rare.
PARTITIONS_PER_WORKER = 4


@dataclass(frozen=True)
class ParallelRun:
    """The run workers share, and how it was opened."""

    run: BackfillRun
    #: "started" (new partitions), "resumed" (paused/failed, set running), "joined" (already
    #: running), or "already completed" (nothing to do).
    how: str


def check_workers(workers: int, using: str) -> None:
    """Refuse more than one worker on a database with a single writer (SQLite)."""
    if workers > 1 and vendor_for(connections[using]).single_writer:
        raise BackfillConfigurationError(
            f"Database {using!r} ({connections[using].vendor}) has one writer at a time: more "
            "than one worker would only wait on each other. Run with --workers 1, or use "
            "PostgreSQL or MySQL/MariaDB."
        )


def start_parallel(
    backfill_cls: type[Backfill],
    *,
    workers: int,
    max_workers: int | None = None,
    using: str = DEFAULT_DB_ALIAS,
    options: RunOptions | None = None,
) -> ParallelRun:
    """Find or create the backfill's run, split it into partitions for *workers* and set it
    running, for workers to claim. Raises ``BackfillConfigurationError`` for more than one
    worker on a database with a single writer (SQLite)."""
    options = options or RunOptions()
    if workers < 1 or (max_workers is not None and max_workers < 1):
        raise BackfillConfigurationError("workers and max_workers must be at least 1.")
    check_workers(workers, using)
    if vendor_for(connections[using]).single_writer:
        # Extra `backfill worker` processes or a task delivered twice would still be writers.
        max_workers = 1
    settings = conf.snapshot()
    check_given(backfill_cls.name, backfill_cls.parameters, options.parameters)
    check_requirements(backfill_cls, using)
    if options.reverse and not backfill_cls.is_reversible():
        raise BackfillConfigurationError(f"Backfill {backfill_cls.name} defines no reverse.")
    backfill = backfill_cls(using=using, reverse=options.reverse)
    if not backfill.get_walk().partitionable:
        raise BackfillConfigurationError(
            f"Backfill {backfill_cls.name} walks an input, which one process reads in order: "
            "run it without --workers (and not through the task backend)."
        )
    ledger = Ledger(using, settings.lease_seconds)
    partitions = Partitions(ledger)
    run, _ = Opening(backfill, ledger, options, settings).open_run()
    if run is None:
        latest = ledger.latest(backfill_cls.name, options.reverse)
        assert latest is not None
        return ParallelRun(latest, "already completed")
    run_settings = resumed_run_settings(run, backfill_cls, options, settings)
    if run.parallel:
        how = "joined" if run.state == State.RUNNING else "resumed"
        partitions.resume(run, run_settings, max_workers=max_workers)
        return ParallelRun(run, how)
    key = backfill_cls.get_key()
    horizon = key.load(run.horizon)
    ranges = [
        (None if lower is None else key.dump(lower), key.dump(upper))
        for lower, upper in plan_partitions(
            key, using, horizon, workers * PARTITIONS_PER_WORKER, run.rows_total or 0
        )
    ]
    partitions.start(run, ranges, workers=workers, max_workers=max_workers, settings=run_settings)
    if not ranges:  # an empty table: nothing to walk, complete at once
        partitions.complete(run)
    return ParallelRun(run, "started")
