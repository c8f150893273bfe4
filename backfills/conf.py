"""Settings for django-backfills, read from ``settings.BACKFILLS`` with defaults."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Chunk sizing. A fixed size (--batch-size, Backfill.batch_size or BATCH_SIZE) turns
    # adaptation off; otherwise chunks start at INITIAL_BATCH_SIZE rows and follow
    # TARGET_CHUNK_TIME seconds, growing by at most BATCH_GROWTH per chunk, within bounds.
    "BATCH_SIZE": None,
    "INITIAL_BATCH_SIZE": 100,
    "MIN_BATCH_SIZE": 10,
    "MAX_BATCH_SIZE": 20_000,
    "BATCH_GROWTH": 1.2,
    "TARGET_CHUNK_TIME": 0.5,
    # The profile a run uses unless it or its class names one: "gentle", "balanced" (these
    # settings) or "fast"; see backfills.profiles. MAX_DUTY is balanced's duty cycle: the
    # largest fraction of wall time a run spends working (None: all of it).
    "PROFILE": "balanced",
    "MAX_DUTY": None,
    # UpdateBackfill/SQLBackfill chunks are one statement holding its row locks from start to
    # commit, so an application write can wait that long: their target is at most this.
    "SET_BASED_TARGET_CHUNK_TIME": 0.2,
    # Health throttling between chunks (None turns a check off); see backfills.throttle.
    "MAX_CPU_PERCENT": None,
    "CRITICAL_CPU_PERCENT": None,
    "MAX_MEMORY_PERCENT": 95.0,
    "MAX_REPLICA_LAG": 1.0,
    "CRITICAL_REPLICA_LAG": None,
    "REPLICA_DATABASES": [],
    "PAUSE_FILE": None,
    "HEALTH_CHECKS": [],
    # While healthy, the checks are asked again once this many seconds have passed (0: before
    # every chunk). While throttled they are asked after every wait.
    "HEALTH_CHECK_SECONDS": 1.0,
    # Longest wait between two health checks while throttled (the wait doubles up to it).
    "THROTTLE_MAX_WAIT": 5.0,
    # A run whose heartbeat is older than this is considered abandoned and may be taken over.
    "LEASE_SECONDS": 30.0,
    # How often a running process looks for pause/cancel requests made from other hosts.
    "CONTROL_POLL_SECONDS": 1.0,
    # Transient errors (deadlock, lock timeout, lost connection) are retried this many times.
    "MAX_RETRIES": 5,
    "RETRY_BASE_DELAY": 0.5,
    "RETRY_MAX_DELAY": 30.0,
    # Per-chunk limits, so a chunk never makes the application wait long behind it:
    # PostgreSQL `SET LOCAL lock_timeout/statement_timeout`; MySQL/MariaDB session
    # `innodb_lock_wait_timeout` (whole seconds, at least 1) and `max_statement_time` /
    # `max_execution_time`. On SQLite, lock waits are bounded by the connection's `timeout`.
    # Hitting either is a transient error: the chunk is retried. None disables a limit.
    "LOCK_TIMEOUT": 0.5,
    "STATEMENT_TIMEOUT": 5.0,
    # On SQLite, pause this fraction of each chunk's duration (at most 0.1 s) after it, so
    # other writers waiting for the database's single write lock get their turn.
    "SQLITE_GAP": 0.1,
    # Backfill.prefetch: a chunk read ahead is used only if it waited at most this many seconds
    # for the runner once ready (else it is read again, so a sleep or a throttled wait never
    # leaves the rows written this much older than without prefetching).
    "PREFETCH_MAX_AGE": 1.0,
    # Above this many rows (by table statistics) the total is estimated, not counted.
    "ESTIMATE_ABOVE": 1_000_000,
    # Seconds between plain progress lines when stdout is not a terminal.
    "PROGRESS_INTERVAL": 5.0,
    # Parallel runs handed to a job system (`run --workers N --enqueue`): "django" (Django's
    # task framework, or the django-tasks backport on Django 5.2) or "celery"; the queue's
    # name (None: the backend's default); and how long one task drains partitions before it
    # hands its partition back and enqueues itself again.
    "TASK_BACKEND": "django",
    "TASK_QUEUE": None,
    "TASK_MAX_SECONDS": 300.0,
    # A run's history, for the admin's charts: a sample of its counters at most every
    # HISTORY_SECONDS, and never more than HISTORY_SAMPLES per run (older samples are thinned,
    # which keeps every figure between the remaining ones exact). 0 samples: no history.
    "HISTORY_SECONDS": 5.0,
    # The blocking guard (PostgreSQL, MariaDB/MySQL): while a chunk is open, a second
    # connection looks for sessions waiting on the chunk's locks.
    # A wait over BLOCKING_BUDGET halves the next chunk and yields before it; a wait over
    # BLOCKING_LIMIT cancels the chunk at once (retried smaller). None turns either off.
    "BLOCKING_BUDGET": 0.1,
    "BLOCKING_LIMIT": 1.0,
    # Every 0.2 s while nobody waits (a look every 50 ms cost a row backfill 13% on 2 cores),
    # four times as often once someone does.
    "BLOCKING_POLL_SECONDS": 0.2,
    "HISTORY_SAMPLES": 240,
}


def get(key: str) -> Any:
    """Return the BACKFILLS setting *key*, falling back to its default."""
    user: dict[str, Any] = getattr(settings, "BACKFILLS", {})
    return user.get(key, DEFAULTS[key])


@dataclass(frozen=True)
class Settings:
    """The BACKFILLS settings as typed values, read once per run (``snapshot()``): a run does
    not look them up again in every chunk, and a change to ``settings`` mid-run cannot make one
    chunk disagree with the next."""

    batch_size: int | None
    initial_batch_size: int
    min_batch_size: int
    max_batch_size: int
    batch_growth: float
    target_chunk_time: float
    profile: str
    max_duty: float | None
    set_based_target_chunk_time: float
    max_cpu_percent: float | None
    critical_cpu_percent: float | None
    max_memory_percent: float | None
    max_replica_lag: float | None
    critical_replica_lag: float | None
    replica_databases: tuple[str, ...]
    pause_file: str | None
    health_checks: tuple[Any, ...]
    health_check_seconds: float
    throttle_max_wait: float
    lease_seconds: float
    control_poll_seconds: float
    max_retries: int
    retry_base_delay: float
    retry_max_delay: float
    lock_timeout: float | None
    statement_timeout: float | None
    sqlite_gap: float
    prefetch_max_age: float
    estimate_above: int
    progress_interval: float
    task_backend: str
    task_queue: str | None
    task_max_seconds: float
    history_seconds: float
    history_samples: int
    blocking_budget: float | None
    blocking_limit: float | None
    blocking_poll_seconds: float


def _typed(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if value is None or kind == "tuple[Any, ...]" or kind == "tuple[str, ...]":
        return tuple(value) if isinstance(value, list | tuple) else value
    if kind.startswith("int"):
        return int(value)
    if kind.startswith("float"):
        return float(value)
    return value


def snapshot() -> Settings:
    """Every BACKFILLS setting now, typed; what a run reads instead of ``get()``."""
    return Settings(**{f.name: _typed(f.name, get(f.name.upper())) for f in fields(Settings)})
