"""Migration operations that tie schema changes to completed backfills."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.management.base import CommandError
from django.db import DatabaseError, migrations, transaction

if TYPE_CHECKING:
    from .control import BackfillState


class BackfillNotCompleted(CommandError):
    """Raised by RequireBackfill during ``migrate``; a CommandError, so no traceback."""


class RequireBackfill(migrations.operations.base.Operation):
    """Stop ``migrate`` until the named backfill has completed on this database.

    Put it first in the schema migration that depends on the data (the one that makes the
    backfilled column NOT NULL, say). It passes when the backfill's latest run (in either
    direction) is a completed forward run, or when no row needs work (a fresh or empty
    database), asked with the latest run's parameters. It changes no schema and no state.
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
        state = _state(self.name, alias)
        if state is not None and state.done:
            return
        if _nothing_to_do(self.name, alias, state):
            return
        latest = (
            ""
            if state is None or state.run is None
            else f" (its latest run #{state.run.pk} is {state.state})"
        )
        raise BackfillNotCompleted(
            f"Migration {app_label} needs backfill {self.name} to have completed on database "
            f"{alias!r} first{latest}. Run:\n\n    python manage.py backfill run {self.name}"
            f"{'' if alias == 'default' else f' --database {alias}'}\n\nthen migrate again."
        )

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        pass


def _state(name: str, alias: str) -> BackfillState | None:
    """The backfill's state on *alias*: its latest run in either direction (None: the
    backfills tables are not migrated yet, so no run can have completed)."""
    from .control import backfill_state

    try:
        # A savepoint: on PostgreSQL a failed query must not abort the migration's transaction.
        with transaction.atomic(using=alias):
            return backfill_state(name, using=alias)
    except DatabaseError:
        return None


def _nothing_to_do(name: str, alias: str, state: BackfillState | None) -> bool:
    """Whether no row needs work, asked with the parameters of the latest run (or the declared
    defaults); False when that cannot be told."""
    from .parameters import ParameterError, from_json
    from .registry import registry

    backfill_cls = registry.get(name)
    stored = state.run.parameters if state is not None and state.run is not None else {}
    try:
        params = from_json(backfill_cls.parameters, stored or {})
    except ParameterError:
        return False
    if any(
        params[key] is None and parameter.required
        for key, parameter in backfill_cls.parameters.items()
    ):
        return False  # a required parameter without a value: no queryset to ask
    backfill = backfill_cls(using=alias, params=params)
    try:
        # A savepoint: on PostgreSQL a failed query must not abort the migration's transaction.
        with transaction.atomic(using=alias):
            return not backfill.get_queryset().using(alias).exists()
    except DatabaseError:
        # The current model and this migration's schema disagree: rely on the run table.
        return False
