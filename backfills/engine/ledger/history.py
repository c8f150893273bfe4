"""A run's history (``BackfillSample``), for the admin's charts: its counters at moments.

The runner (serial) and each worker (parallel) offer a sample after their chunks; one is
recorded at most every ``HISTORY_SECONDS`` per run, decided by a conditional UPDATE on
``BackfillRun.sampled_at`` (several workers may offer at once; one wins). Samples hold
cumulative counters, so dropping any of them keeps every figure between the rest exact: when a
run has more than ``HISTORY_SAMPLES``, every other older sample goes, and the interval between
samples grows with the run's age, so a billion-row run keeps a few hundred rows.

Samples are observations, not checkpoints: one that fails to be written is skipped (logged),
never the run's work.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from ...models import BackfillRun, BackfillSample

if TYPE_CHECKING:
    from .runs import Ledger

logger = logging.getLogger("backfills")


class History:
    """Records samples of one process's runs on one database.

    *every* is the shortest interval between samples of a run (seconds), *keep* the most
    samples a run keeps (0: no history)."""

    def __init__(self, ledger: Ledger, every: float, keep: int) -> None:
        self.ledger = ledger
        self.every = max(0.0, every)
        self.keep = max(0, keep)
        #: Per run: when this process may offer its next sample (time.monotonic()), and the
        #: slowest chunk it saw since its last one.
        self._next: dict[int, float] = {}
        self._slowest: dict[int, float] = {}

    def chunk(self, run: BackfillRun, seconds: float) -> None:
        """After a committed chunk of *run* that took *seconds*: note it, and record a sample
        when one is due (a serial run's counters are current after each chunk)."""
        self.note(run.pk, seconds)
        self.offer(run)

    def note(self, run_id: int, seconds: float) -> None:
        """Remember a chunk of *seconds* as the slowest since the last sample if it was (a
        worker's run counters are current only after a roll-up: it offers samples then)."""
        if self.keep:
            self._slowest[run_id] = max(seconds, self._slowest.get(run_id, 0.0))

    def offer(self, run: BackfillRun, *, force: bool = False) -> bool:
        """Record a sample of *run*'s counters (as this object holds them) if one is due: at
        most every ``every`` seconds, and less often as the run ages (its age over ``keep``),
        whoever records it. *force* records one now (when the run stops or completes).
        Returns whether a sample was written."""
        if not self.keep or run.pk is None:
            return False
        now_mono = time.monotonic()
        if not force and now_mono < self._next.get(run.pk, 0.0):
            return False
        now = timezone.now()
        interval = self.interval(run, now)
        self._next[run.pk] = now_mono + interval
        try:
            return self._record(run, now, interval, force)
        except DatabaseError as exc:  # an observation: never fail the run's work for it
            logger.warning("history sample of run #%s skipped: %s", run.pk, exc)
            return False

    def interval(self, run: BackfillRun, now: dt.datetime) -> float:
        """Seconds between samples: ``every``, or the run's age over ``keep`` once larger."""
        started = run.started_at or run.created_at
        age = (now - started).total_seconds() if started else 0.0
        return max(self.every, age / self.keep) if self.keep else self.every

    def _record(self, run: BackfillRun, now: dt.datetime, interval: float, force: bool) -> bool:
        runs = self.ledger.runs.filter(pk=run.pk)
        if not force:
            runs = runs.filter(
                Q(sampled_at__isnull=True) | Q(sampled_at__lte=now - dt.timedelta(seconds=interval))
            )
        if not runs.update(sampled_at=now):
            return False  # another worker recorded this interval's sample
        slowest = self._slowest.pop(run.pk, None)
        reason = run.throttle_reason
        if run.parallel:
            # A parallel run's verdict is recorded on its row by whichever worker asked the
            # checks (and its time_throttled is not summed): read it there.
            reason = (
                self.ledger.runs.filter(pk=run.pk).values_list("throttle_reason", flat=True).first()
                or ""
            )
        BackfillSample.objects.using(self.ledger.using).create(
            run_id=run.pk,
            at=now,
            rows_scanned=run.rows_scanned,
            rows_processed=run.rows_processed,
            chunks_done=run.chunks_done,
            time_running=run.time_running,
            time_throttled=run.time_throttled,
            throttle_reason=reason,
            max_chunk_seconds=slowest,
        )
        if BackfillSample.objects.using(self.ledger.using).filter(run=run.pk).count() > self.keep:
            self.thin(run.pk)
        return True

    def thin(self, run_id: int) -> int:
        """Drop every other sample of the run but its first and last; each dropped sample's
        slowest chunk moves to the sample after it. Returns how many were dropped."""
        using = self.ledger.using
        samples = BackfillSample.objects.using(using).filter(run_id=run_id)
        with transaction.atomic(using=using):
            rows = list(samples.order_by("at", "id").values_list("id", "max_chunk_seconds"))
            dropped: list[int] = []
            raised: list[BackfillSample] = []
            for i in range(1, len(rows) - 1, 2):
                (gone, gone_max), (kept, kept_max) = rows[i], rows[i + 1]
                dropped.append(gone)
                if gone_max is not None and (kept_max is None or gone_max > kept_max):
                    raised.append(BackfillSample(id=kept, max_chunk_seconds=gone_max))
            if raised:
                BackfillSample.objects.using(using).bulk_update(raised, ["max_chunk_seconds"])
            samples.filter(id__in=dropped).delete()
        return len(dropped)
