"""Settings for django-backfills, read from ``settings.BACKFILLS`` with defaults."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Rows per chunk when neither the backfill nor the command line says otherwise.
    "BATCH_SIZE": 1000,
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
    # Seconds between plain progress lines when stdout is not a terminal.
    "PROGRESS_INTERVAL": 5.0,
}


def get(key: str) -> Any:
    """Return the BACKFILLS setting *key*, falling back to its default."""
    user: dict[str, Any] = getattr(settings, "BACKFILLS", {})
    return user.get(key, DEFAULTS[key])
