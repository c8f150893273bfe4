"""What must hold before a run starts: migrations applied, parameters valid, pre_check."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from django.db import connections
from django.db.migrations.recorder import MigrationRecorder

from ..db import vendor_for
from ..exceptions import CheckFailed, MigrationNotApplied, PreconditionFailed

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from ..base import Backfill
    from ..conf import Settings


def check_requirements(backfill_cls: type[Backfill], using: str) -> None:
    """Refuse to run before the backfill's required migrations (and ours) are applied."""
    backfill_cls.check_walkable()  # raises for models (or inputs) we cannot walk
    recorder = MigrationRecorder(connections[using])
    if not recorder.has_table():
        raise MigrationNotApplied(
            f"Database {using!r} has no migrations table; run `manage.py migrate` first."
        )
    applied = recorder.applied_migrations()
    if not set(own_migrations()) <= set(applied):
        raise MigrationNotApplied(
            f"The backfills tables are not installed on database {using!r}; "
            f"run `manage.py migrate backfills --database {using}`."
        )
    missing = [f"{app}.{name}" for app, name in backfill_cls.requires if (app, name) not in applied]
    if missing:
        raise MigrationNotApplied(
            f"Backfill {backfill_cls.name} requires migration(s) {', '.join(missing)}, not "
            f"applied on database {using!r}. Run `manage.py migrate` first."
        )


@functools.cache
def own_migrations() -> tuple[tuple[str, str], ...]:
    """Every migration this app ships, read from disk once."""
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    return tuple(sorted(key for key in loader.disk_migrations if key[0] == "backfills"))


def pre_check(backfill: Backfill) -> None:
    """Raise ``PreconditionFailed`` if the backfill's ``pre_check()`` refuses to start (never
    asked for a reverse run)."""
    try:
        problem = None if backfill.reverse else backfill.pre_check()
    except CheckFailed as exc:
        problem = str(exc)
    if problem:
        raise PreconditionFailed(f"Backfill {backfill.name} refused to start: {problem}")


def apply_chunk_timeouts(connection: BaseDatabaseWrapper, settings: Settings | None = None) -> None:
    """Bound how long the open chunk may wait for locks or run one statement (LOCK_TIMEOUT,
    STATEMENT_TIMEOUT), the way *connection*'s vendor can."""
    if settings is None:
        from .. import conf

        settings = conf.snapshot()
    vendor_for(connection).apply_chunk_timeouts(
        connection, settings.lock_timeout, settings.statement_timeout
    )
