"""BackfillRun: one row per run of a backfill, holding its state, checkpoint and lease."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from django.db import models
from django.utils import timezone


class RunFigures:
    """Figures derived from a run's columns, shared by the row (``BackfillRun``) and the
    immutable copies events carry (``backfills.snapshot.RunSnapshot``)."""

    FINAL: ClassVar[frozenset[str]] = frozenset({"completed", "cancelled"})

    pk: Any
    name: str
    reverse: bool
    state: str
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
    last_chunk_size: int | None
    last_chunk_seconds: float | None
    time_running: float
    time_throttled: float
    throttle_reason: str
    cursor: str | None
    horizon: str | None
    parameters: dict[str, Any]
    owner_token: str | None
    owner_host: str
    owner_pid: int | None
    owned_since: dt.datetime | None
    heartbeat_at: dt.datetime | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    requested_state: str
    status_reason: str
    error_class: str
    error_message: str
    workers: int | None
    max_workers: int | None
    blocking_yields: int
    blocking_cancels: int
    blocking_max_wait: float

    @property
    def parallel(self) -> bool:
        """Whether the run is split into partitions walked by several workers."""
        return self.workers is not None

    @property
    def label(self) -> str:
        """The backfill's name, marked when this is a run of its reverse."""
        return f"{self.name} (reverse)" if self.reverse else self.name

    @property
    def shown_state(self) -> str:
        """The state as people should read it (``interrupted`` on a judged snapshot whose
        owner is gone)."""
        return self.state

    @property
    def is_final(self) -> bool:
        return self.state in self.FINAL

    @property
    def percent(self) -> float | None:
        """Share of the primary key range walked, 0-100; None while the total is unknown."""
        if self.state == "completed":
            return 100.0
        if not self.rows_total:
            return None
        return min(100.0, 100.0 * self.rows_scanned / self.rows_total)

    @property
    def rate(self) -> float | None:
        """Rows walked per second of working time; for a parallel run, of wall time since it
        started (its ``time_running`` adds up the seconds of every worker)."""
        if not self.rows_scanned:
            return None
        if self.parallel:
            elapsed = self.elapsed
            seconds = elapsed.total_seconds() if elapsed is not None else 0.0
        else:
            seconds = self.time_running
        return self.rows_scanned / seconds if seconds > 0 else None

    @property
    def eta_seconds(self) -> float | None:
        """Estimated seconds of work left, including the rests between chunks (the configured
        sleep, or the duty cycle's rest when that is longer)."""
        rate = self.rate
        if rate is None or self.rows_total is None or self.is_final:
            return None
        remaining = max(0, self.rows_total - self.rows_scanned)
        size = self.batch_size or self.last_chunk_size
        chunks_left = remaining / size if size else 0
        work = remaining / rate
        rest = chunks_left * self.sleep
        if self.max_duty and not self.parallel:  # a parallel run's rate already has its rests
            rest = max(rest, work * (1 - self.max_duty) / self.max_duty)
        return work + rest

    @property
    def elapsed(self) -> dt.timedelta | None:
        """Wall time from the first start to the finish (or to the last update)."""
        if self.started_at is None:
            return None
        end = self.finished_at or self.updated_at
        return end - self.started_at

    @property
    def last_error(self) -> str:
        """First line of the recorded error, prefixed by its class."""
        if not self.error_class:
            return ""
        first = (self.error_message or "").strip().splitlines()
        return f"{self.error_class}: {first[0]}" if first else self.error_class

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description of the run, used by ``backfill status --json``."""
        elapsed = self.elapsed
        return {
            "id": self.pk,
            "name": self.name,
            "reverse": self.reverse,
            "state": self.shown_state,
            "recorded_state": self.state,
            "percent": None if self.percent is None else round(self.percent, 2),
            "rows_scanned": self.rows_scanned,
            "rows_processed": self.rows_processed,
            "rows_failed": self.rows_failed,
            "rows_total": self.rows_total,
            "rows_total_exact": self.rows_total_exact,
            "chunks": self.chunks_done,
            "retries": self.retries,
            "batch_size": self.batch_size,
            "target_chunk_time": self.target_chunk_time,
            "sleep": self.sleep,
            "profile": self.profile,
            "max_duty": self.max_duty,
            "last_chunk_size": self.last_chunk_size,
            "last_chunk_seconds": self.last_chunk_seconds,
            "time_running": round(self.time_running, 3),
            "time_throttled": round(self.time_throttled, 3),
            "throttled": self.throttle_reason or None,
            "rate": None if self.rate is None else round(self.rate, 1),
            "elapsed_seconds": None if elapsed is None else round(elapsed.total_seconds(), 3),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
            "cursor": self.cursor,
            "horizon": self.horizon,
            "parameters": self.parameters,
            "owner": (
                {"host": self.owner_host, "pid": self.owner_pid} if self.owner_token else None
            ),
            "heartbeat_at": _iso(self.heartbeat_at),
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "updated_at": _iso(self.updated_at),
            "finished_at": _iso(self.finished_at),
            "requested_state": self.requested_state or None,
            "status_reason": self.status_reason or None,
            "error": (
                {"class": self.error_class, "message": self.error_message}
                if self.error_class
                else None
            ),
            "workers": self.workers,
            "max_workers": self.max_workers,
            "blocking": {
                "yields": self.blocking_yields,
                "cancels": self.blocking_cancels,
                "max_wait": round(self.blocking_max_wait, 3),
            },
        }


class BackfillRun(RunFigures, models.Model):
    """The checkpoint table.

    A chunk's writes and the update of ``cursor`` and the counters commit in one transaction,
    so the row always describes exactly the work that is committed.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        PAUSED = "paused"
        FAILED = "failed"
        COMPLETED = "completed"
        CANCELLED = "cancelled"

    #: States from which ``backfill run`` continues the same run.
    RESUMABLE = frozenset({State.PENDING, State.PAUSED, State.FAILED, State.RUNNING})
    #: States that end a run; starting again needs an explicit restart.
    FINAL: ClassVar[frozenset[str]] = frozenset({State.COMPLETED, State.CANCELLED})

    name = models.CharField(max_length=200, db_index=True)
    # A run of the backfill's reverse (`backfill run NAME --reverse`).
    reverse = models.BooleanField(default=False)
    # Equal to ``name`` (``name:reverse`` for a reverse run) while the run is not final and
    # NULL afterwards: a unique column that allows many NULLs gives "at most one live run per
    # name" on every database, including MySQL/MariaDB, which have no partial unique indexes.
    active_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    parameters = models.JSONField(default=dict, blank=True)

    # Checkpoint: the last primary key of the last committed chunk, as text (ints, UUIDs and
    # strings all round-trip through the pk field's to_python()).
    cursor = models.TextField(null=True, blank=True)
    # The highest primary key when the run was created; rows above it are not chased.
    horizon = models.TextField(null=True, blank=True)

    rows_total = models.BigIntegerField(null=True, blank=True)
    # False when rows_total comes from table statistics rather than a COUNT.
    rows_total_exact = models.BooleanField(default=True)
    rows_scanned = models.BigIntegerField(default=0)
    rows_processed = models.BigIntegerField(default=0)
    # Rows set aside by quarantine (Backfill.quarantine = True); see QuarantinedRow.
    rows_failed = models.BigIntegerField(default=0)
    chunks_done = models.IntegerField(default=0)
    retries = models.IntegerField(default=0)
    # Settings of the run, changeable while it runs (`backfill set`): a fixed chunk size (None:
    # adaptive toward target_chunk_time), the sleep between chunks. settings_version goes up
    # with every change so the owner notices it at its next chunk boundary.
    batch_size = models.IntegerField(null=True, blank=True)
    target_chunk_time = models.FloatField(null=True, blank=True)
    sleep = models.FloatField(default=0.0)
    # The profile (gentle/balanced/fast: the blocking guard's budget and limit) and the duty
    # cycle, the largest fraction of wall time spent working (None: all of it).
    profile = models.CharField(max_length=20, default="balanced")
    max_duty = models.FloatField(null=True, blank=True)
    settings_version = models.IntegerField(default=0)
    last_chunk_size = models.IntegerField(null=True, blank=True)
    last_chunk_seconds = models.FloatField(null=True, blank=True)
    # Seconds spent working on chunks (sleeps and throttling excluded): the basis of the rate.
    time_running = models.FloatField(default=0.0)
    # Seconds spent waiting on health checks, and why the run waits now ("" when it does not).
    time_throttled = models.FloatField(default=0.0)
    throttle_reason = models.TextField(blank=True, default="")

    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    # Lease: who works on the run now. Claimed with a conditional UPDATE, kept alive by a
    # heartbeat written with every chunk.
    owner_token = models.CharField(max_length=64, null=True, blank=True)
    owner_host = models.CharField(max_length=255, blank=True, default="")
    owner_pid = models.IntegerField(null=True, blank=True)
    owned_since = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    # Pause/cancel asked for from any host; the owner acts on it at its next chunk boundary.
    requested_state = models.CharField(max_length=20, blank=True, default="")
    status_reason = models.TextField(blank=True, default="")

    error_class = models.CharField(max_length=255, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    error_backtrace = models.TextField(blank=True, default="")

    # A parallel run (``run --workers N``) has no owner of its own: its partitions
    # (BackfillPartition) are claimed by workers, and its counters are the partitions' sums,
    # rolled up by the workers. ``workers`` is the number asked for (None: a serial run);
    # ``max_workers`` caps how many partitions are leased at once (None: no cap).
    workers = models.IntegerField(null=True, blank=True)
    max_workers = models.IntegerField(null=True, blank=True)
    # The shared health verdict: one worker asks the checks per interval, the others read it.
    health_checked_at = models.DateTimeField(null=True, blank=True)
    health_verdict = models.TextField(blank=True, default="")
    # Who started the run and from where: ``user@host`` from the command line, the user's
    # name from the admin, whatever code passed as ``started_by``.
    started_by = models.CharField(max_length=255, blank=True, default="")
    # The blocking guard: chunks whose locks kept application sessions waiting longer than
    # BLOCKING_BUDGET (the walk yielded after each), chunks it cancelled past BLOCKING_LIMIT,
    # and the longest wait it saw (seconds).
    blocking_yields = models.IntegerField(default=0)
    blocking_cancels = models.IntegerField(default=0)
    blocking_max_wait = models.FloatField(default=0.0)
    # When the run's history last got a sample (BackfillSample): the conditional UPDATE on it
    # decides which of several workers records the next one.
    sampled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        get_latest_by = "id"
        verbose_name = "backfill run"
        # The admin's actions, each behind its own permission (view is Django's own).
        permissions = [
            ("control_backfillrun", "Can pause, resume and cancel backfill runs"),
            (
                "tune_backfillrun",
                "Can change a backfill run's batch size, chunk time, sleep, profile and max duty",
            ),
            ("start_backfillrun", "Can start backfill runs"),
        ]

    def __str__(self) -> str:
        return f"{self.label} #{self.pk} ({self.state})"


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


class BackfillPartition(models.Model):
    """A primary-key range ``lower < pk <= upper`` of a parallel run, walked by one worker at
    a time.

    Like a serial run, a partition's chunk commits together with its checkpoint (``cursor`` and
    the counters), and that UPDATE is conditional on ``generation``: every claim increments
    it, so a worker that lost its lease (paused by the OS, cut off from the database) cannot
    commit a chunk its successor will also do.
    """

    class State(models.TextChoices):
        PENDING = "pending"  # nobody works on it (never claimed, or released)
        RUNNING = "running"  # leased: owner_* and heartbeat_at say by whom
        DONE = "done"  # walked up to ``upper``

    run = models.ForeignKey(BackfillRun, on_delete=models.CASCADE, related_name="partitions")
    number = models.IntegerField()
    # Exclusive lower bound (None: from the first row) and inclusive upper bound, as text.
    lower = models.TextField(null=True, blank=True)
    upper = models.TextField()
    cursor = models.TextField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    # The fencing token: incremented by every claim.
    generation = models.IntegerField(default=0)
    owner_token = models.CharField(max_length=64, null=True, blank=True)
    owner_host = models.CharField(max_length=255, blank=True, default="")
    owner_pid = models.IntegerField(null=True, blank=True)
    owned_since = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Asked by an idle worker: the owner hands the far half of its remainder back as a new
    # partition at its next chunk boundary.
    split_requested = models.BooleanField(default=False)

    rows_scanned = models.BigIntegerField(default=0)
    rows_processed = models.BigIntegerField(default=0)
    rows_failed = models.BigIntegerField(default=0)
    chunks_done = models.IntegerField(default=0)
    time_running = models.FloatField(default=0.0)
    last_chunk_size = models.IntegerField(null=True, blank=True)
    last_chunk_seconds = models.FloatField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="backfills_partition_number")
        ]
        indexes = [models.Index(fields=["run", "state"], name="backfills_partition_state")]

    def __str__(self) -> str:
        return f"partition {self.number} of run #{self.run_id} ({self.state})"

    @property
    def rate(self) -> float | None:
        """Rows walked per second of this partition's working time."""
        if self.time_running <= 0 or not self.rows_scanned:
            return None
        return self.rows_scanned / self.time_running

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description, part of ``backfill status --json``."""
        return {
            "number": self.number,
            "state": self.state,
            "lower": self.lower,
            "upper": self.upper,
            "cursor": self.cursor,
            "generation": self.generation,
            "owner": (
                {"host": self.owner_host, "pid": self.owner_pid} if self.owner_token else None
            ),
            "heartbeat_at": _iso(self.heartbeat_at),
            "rows_scanned": self.rows_scanned,
            "rows_processed": self.rows_processed,
            "rows_failed": self.rows_failed,
            "chunks": self.chunks_done,
            "rate": None if self.rate is None else round(self.rate, 1),
            "split_requested": self.split_requested,
        }


class QuarantinedRow(models.Model):
    """A row a quarantining backfill could not process: its key and the error, for retry."""

    run = models.ForeignKey(BackfillRun, on_delete=models.CASCADE, related_name="quarantined")
    name = models.CharField(max_length=200, db_index=True)
    row_pk = models.TextField()
    error_class = models.CharField(max_length=255)
    error_message = models.TextField(blank=True, default="")
    error_backtrace = models.TextField(blank=True, default="")
    attempts = models.IntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        permissions = [("retry_quarantinedrow", "Can retry quarantined rows")]

    def __str__(self) -> str:
        return f"{self.name} pk={self.row_pk}: {self.error_class}"

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "run": self.run_id,
            "name": self.name,
            "pk": self.row_pk,
            "error": {"class": self.error_class, "message": self.error_message},
            "attempts": self.attempts,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "resolved_at": _iso(self.resolved_at),
        }


class BackfillSample(models.Model):
    """One point of a run's history, for the admin's charts: the run's cumulative counters at
    one moment. Throughput and chunk duration between two samples are their differences, so
    thinning the history (dropping every other sample) keeps every remaining figure exact:
    a billion-row run keeps at most ``HISTORY_SAMPLES`` rows (``engine/ledger/history.py``)."""

    run = models.ForeignKey(BackfillRun, on_delete=models.CASCADE, related_name="samples")
    at = models.DateTimeField(default=timezone.now)
    rows_scanned = models.BigIntegerField(default=0)
    rows_processed = models.BigIntegerField(default=0)
    chunks_done = models.IntegerField(default=0)
    time_running = models.FloatField(default=0.0)
    time_throttled = models.FloatField(default=0.0)
    # Why the run was throttled when the sample was taken ("" when it was not).
    throttle_reason = models.TextField(blank=True, default="")
    # The slowest chunk since the previous sample, as far as the recorder saw it.
    max_chunk_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["run", "at", "id"]
        indexes = [models.Index(fields=["run", "at"], name="backfills_sample_run_at")]

    def __str__(self) -> str:
        return f"sample of run #{self.run_id} at {self.at:%Y-%m-%d %H:%M:%S}"


class BackfillAction(models.Model):
    """Who did what to a backfill and when: a start, pause, resume, cancel, settings change or
    quarantine retry, from the admin, the command line or code (``backfills.control``).

    The log outlives its runs: deleting a run keeps its actions (``run`` becomes NULL)."""

    class Via(models.TextChoices):
        ADMIN = "admin"
        COMMAND = "command", "command line"
        CODE = "code"

    run = models.ForeignKey(
        BackfillRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="actions"
    )
    name = models.CharField(max_length=200, db_index=True)
    action = models.CharField(max_length=30)
    by = models.CharField(max_length=255, blank=True, default="")
    via = models.CharField(max_length=10, choices=Via.choices, default=Via.CODE)
    # The control API's sentence for what it did ("Run #3 of ... is now paused.").
    message = models.TextField(blank=True, default="")
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "backfill action"

    def __str__(self) -> str:
        who = f" by {self.by}" if self.by else ""
        return f"{self.action} {self.name}{who} ({self.get_via_display()})"
