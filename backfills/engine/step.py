"""One chunk: find its window, process it, commit it with the checkpoint; retry if the moment
was bad. Returns a ``StepResult`` (or None once the walk reaches the horizon)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connections, transaction

from .. import profiles
from ..chunking import Window
from ..sizing import ChunkSizer
from .guard import NOTHING, Blocking, BlockingGuard
from .preconditions import apply_chunk_timeouts
from .quarantine import Isolator
from .retry import Retry, RetryPolicy

if TYPE_CHECKING:
    from django.db import models

    from ..base import Backfill, PreparedChunk
    from ..conf import Settings
    from ..prefetch import Prefetcher
    from .ledger import ChunkLease

logger = logging.getLogger("backfills")


@dataclass(frozen=True)
class StepResult:
    """A committed chunk: its window, rows processed and quarantined, and the seconds it took
    (commit included)."""

    window: Window
    processed: int
    failed: int
    seconds: float
    #: Application sessions that waited on this chunk's locks (the blocking guard).
    blocking: Blocking = NOTHING


class ChunkStep:
    """Runs chunks of one run, each in one transaction with its checkpoint."""

    def __init__(
        self,
        backfill: Backfill,
        lease: ChunkLease,
        settings: Settings,
        sizer: ChunkSizer,
        *,
        policy: RetryPolicy,
        on_retry: Callable[[Retry, BaseException], None],
        prefetcher: Prefetcher | None = None,
        guard: BlockingGuard | None = None,
    ) -> None:
        self.backfill = backfill
        self.guard = guard
        self.lease = lease
        self.using = lease.using
        self.settings = settings
        self.sizer = sizer
        self.policy = policy
        self.on_retry = on_retry
        self.prefetcher = prefetcher
        #: What the run walks: its table in key order, or an input's items.
        self.walk = backfill.get_walk()
        self.isolator = (
            Isolator(backfill, lease.run, self.walk.key) if type(backfill).quarantine else None
        )
        #: Set when a stop was asked for: do not read another chunk ahead.
        self.stopping: Callable[[], bool] = lambda: False

    def __call__(self, cursor: Any, horizon: Any, limit: int | None) -> StepResult | None:
        """Commit the next chunk after *cursor* (at most *limit* rows), retrying transient
        errors; None when the walk has reached the horizon."""
        attempts = self.policy.attempts()
        while True:
            started = time.perf_counter()
            if self.guard is not None:
                self.guard.last = NOTHING  # an attempt that fails before its chunk opens
            size = self.sizer.size if limit is None else max(1, min(self.sizer.size, limit))
            try:
                if attempts.failures:
                    committed = self._committed_meanwhile()
                    if committed is not None:
                        return committed
                taken = (
                    self.prefetcher.take(cursor, size)
                    if self.prefetcher and not attempts.failures
                    else None
                )
                # Inside the retry loop: a dropped connection can surface here too.
                window, prepared = taken or (
                    self.walk.next_window(cursor, horizon, size),
                    None,
                )
                if window is None:
                    return None
                self._read_ahead(window, horizon, limit)
                return self._commit(window, prepared, started)
            except Exception as exc:
                retry = attempts.after(exc)
                if retry is None:
                    raise
                cancelled = self.guard is not None and self.guard.last.cancelled
                if cancelled:
                    self._blocked(self.guard.last if self.guard else NOTHING)
                if cancelled:
                    self.sizer.back_off()
                elif retry.shrink:
                    self.sizer.halve()
                logger.warning(
                    "backfill %s chunk after %r: transient %s (attempt %d), retrying in %.2fs",
                    self.lease.label,
                    cursor,
                    type(exc).__name__,
                    retry.attempt,
                    retry.delay,
                )
                self.on_retry(retry, exc)
                connection = connections[self.using]
                if connection.connection is not None and not connection.is_usable():
                    connection.close()
                self.lease.count_retry()

    def _read_ahead(self, window: Window, horizon: Any, limit: int | None) -> None:
        if self.prefetcher is None or self.stopping():
            return
        following = self.sizer.size if limit is None else limit - window.size
        if following > 0:
            self.prefetcher.submit(window.upper, horizon, min(self.sizer.size, following))

    def _commit(self, window: Window, prepared: PreparedChunk | None, started: float) -> StepResult:
        """Process *window* (from the rows *prepared* ahead, if given) and commit it with the
        checkpoint."""
        cursor = self.dump_pk(window.upper)
        connection = connections[self.using]
        watching = (
            self.guard.watch(connection, *profiles.blocking(self.lease.run.profile, self.settings))
            if self.guard is not None
            else nullcontext()
        )
        with watching, transaction.atomic(using=self.using):
            apply_chunk_timeouts(connections[self.using], self.settings)
            self.backfill.window = window
            if window.items is not None:
                processed, failed = self._items(window.items)
            else:
                processed, failed = self._rows(window, prepared)
            # The checkpoint records the time up to its own write.
            seconds = time.perf_counter() - started
            at = self.lease.checkpoint(window, cursor, processed, failed, seconds)
        self.lease.checkpointed(window, cursor, processed, failed, seconds, at)
        blocking = self.guard.last if self.guard is not None else NOTHING
        if blocking.over_budget:
            self._blocked(blocking)
        # Sizing and the display also count the commit, which is part of what a chunk costs.
        return StepResult(window, processed, failed, time.perf_counter() - started, blocking)

    def _rows(self, window: Window, prepared: PreparedChunk | None) -> tuple[int, int]:
        """(processed, quarantined) for a table walk's chunk: the window's rows, or the rows
        *prepared* ahead."""
        queryset: models.QuerySet[Any] = window.ordered(self.backfill.chunk_queryset())
        if self.isolator is not None:
            return self.isolator.process(queryset, prepared)
        if prepared is not None:
            return self.backfill.write_prepared(prepared), 0
        return self.backfill.run_window(queryset), 0

    def _items(self, items: list[Any]) -> tuple[int, int]:
        """(processed, quarantined) for an input walk's chunk of *items*."""
        from ..inputs import InputBackfill

        backfill = self.backfill
        assert isinstance(backfill, InputBackfill)
        if self.isolator is not None:
            return self.isolator.process_items(items)
        return backfill.process_items(items), 0

    def settle(self, done: StepResult) -> int:
        """Size the next chunk after *done*: as the sizer says, halved when application
        sessions waited on *done*'s locks longer than the budget (it grows back additively from
        there: ``ChunkSizer.back_off``). Returns the next size."""
        size = self.sizer.observe(done.window.size, done.seconds)
        if done.blocking.over_budget:
            size = self.sizer.back_off()
        return size

    def _blocked(self, blocking: Blocking) -> None:
        """Count and log the waits a chunk imposed (the run's counters; never fails it)."""
        logger.info("backfill %s: yielding: %s", self.lease.label, blocking.describe())
        try:
            self.lease.ledger.record_blocking(self.lease.run, blocking)
        except Exception as exc:  # an observation
            logger.warning("backfill %s: blocking not recorded: %s", self.lease.label, exc)

    def _committed_meanwhile(self) -> StepResult | None:
        """The chunk whose attempt failed, if its transaction did commit: an error reported for
        the COMMIT itself (a connection lost just after sending it) does not mean the server
        rolled it back. Read from the checkpoint, never done twice."""
        run = self.lease.position
        row = self.lease.read_back()
        if row is None:
            return None
        window = Window(
            self.load_pk(run.cursor),
            self.load_pk(row["cursor"]),
            row["rows_scanned"] - run.rows_scanned,
            self.walk.key,
        )
        processed = row["rows_processed"] - run.rows_processed
        failed = row["rows_failed"] - run.rows_failed
        self.lease.adopt()
        logger.warning(
            "backfill %s: the chunk up to %r committed although its commit reported an error; "
            "going on from its checkpoint",
            run.label,
            window.upper,
        )
        return StepResult(window, processed, failed, run.last_chunk_seconds or 0.0)

    def dump_pk(self, value: Any) -> str:
        """A cursor as the checkpoint stores it (``Walk.dump``)."""
        return self.walk.dump(value)

    def load_pk(self, text: str | None) -> Any:
        """A stored checkpoint's cursor (``Walk.load``)."""
        return self.walk.load(text)
