"""Migration operations that tie schema changes to completed backfills."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError
from django.db import DatabaseError, migrations, transaction


class BackfillNotCompleted(CommandError):
    """Raised by RequireBackfill during ``migrate``; a CommandError, so no traceback."""


class RequireBackfill(migrations.operations.base.Operation):
    """Stop ``migrate`` until the named backfill has completed on this database.

    Put it first in the schema migration that depends on the data (the one that makes the
    backfilled column NOT NULL, say). It passes when a run of the backfill has completed, or
    when no row needs work (a fresh or empty database). It changes no schema and no state.
    """

    reversible = True
    reduces_to_sql = False

    def __init__(self, name: str) -> None:
        self.name = name

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", [self.name], {})

    def describe(self) -> str:
        return f"Require backfill {self.name} to have completed"

    @property
    def migration_name_fragment(self) -> str:
        return "require_" + self.name.replace(".", "_")

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        alias = schema_editor.connection.alias
        if _completed(self.name, alias) or _nothing_to_do(self.name, alias):
            return
        raise BackfillNotCompleted(
            f"Migration {app_label} needs backfill {self.name} to have completed on database "
            f"{alias!r} first. Run:\n\n    python manage.py backfill run {self.name}"
            f"{'' if alias == 'default' else f' --database {alias}'}\n\nthen migrate again."
        )

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        pass


def _completed(name: str, alias: str) -> bool:
    from .models import BackfillRun

    try:
        with transaction.atomic(using=alias):
            return (
                BackfillRun.objects.using(alias)
                .filter(name=name, reverse=False, state=BackfillRun.State.COMPLETED)
                .exists()
            )
    except DatabaseError:  # the backfills tables are not migrated yet
        return False


def _nothing_to_do(name: str, alias: str) -> bool:
    from .registry import registry

    backfill_cls = registry.get(name)
    backfill = backfill_cls(using=alias)
    try:
        # A savepoint: on PostgreSQL a failed query must not abort the migration's transaction.
        with transaction.atomic(using=alias):
            return not backfill.get_queryset().using(alias).exists()
    except DatabaseError:
        # The current model and this migration's schema disagree: rely on the run table.
        return False
