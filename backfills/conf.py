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
    # Seconds between plain progress lines when stdout is not a terminal.
    "PROGRESS_INTERVAL": 5.0,
}


def get(key: str) -> Any:
    """Return the BACKFILLS setting *key*, falling back to its default."""
    user: dict[str, Any] = getattr(settings, "BACKFILLS", {})
    return user.get(key, DEFAULTS[key])
