"""System checks: problems in declared backfills, reported by ``manage.py check``."""

from __future__ import annotations

from typing import Any

from django.core import checks

from .exceptions import BackfillConfigurationError
from .registry import registry


@checks.register("backfills")
def check_backfills(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """backfills.E001: the model cannot be resolved or walked; E002: no process hook;
    E003: a row backfill with ``read_fields`` names (there or in ``fields``) a non-column;
    W002: ``prefetch = True`` on a backfill that cannot read ahead."""
    from .base import Backfill, RowBackfill

    messages: list[checks.CheckMessage] = []
    for backfill_cls in registry:
        walkable = True
        try:
            backfill_cls.get_pk_field()
        except BackfillConfigurationError as exc:
            walkable = False
            messages.append(
                checks.Error(
                    str(exc),
                    hint="Point `model` at an installed model with a single-column, "
                    "orderable primary key (integer, UUID or string).",
                    obj=backfill_cls,
                    id="backfills.E001",
                )
            )
        if walkable and issubclass(backfill_cls, RowBackfill) and backfill_cls.read_fields:
            try:
                backfill_cls.row_attnames(
                    [*backfill_cls.fields, *(backfill_cls.reverse_fields or ())]
                )
            except BackfillConfigurationError as exc:
                messages.append(
                    checks.Error(
                        str(exc),
                        hint="List concrete fields of the model in `read_fields` and `fields`.",
                        obj=backfill_cls,
                        id="backfills.E003",
                    )
                )
        if backfill_cls.prefetch and not backfill_cls.can_prefetch():
            messages.append(
                checks.Warning(
                    f"Backfill {backfill_cls.name} sets prefetch = True, but its chunks are "
                    "read and written by one hook, so it runs without reading ahead.",
                    hint="Prefetching needs a RowBackfill that keeps RowBackfill's "
                    "process_window(); otherwise remove `prefetch`.",
                    obj=backfill_cls,
                    id="backfills.W002",
                )
            )
        overrides = (
            backfill_cls.process_chunk is not Backfill.process_chunk
            or backfill_cls.process_window is not Backfill.process_window
        )
        if not overrides:
            messages.append(
                checks.Error(
                    f"Backfill {backfill_cls.name} does not implement process_chunk().",
                    hint="Define process_chunk(self, rows) (or process_window(self, queryset)).",
                    obj=backfill_cls,
                    id="backfills.E002",
                )
            )
    return messages


@checks.register(checks.Tags.database)
def check_pending_backfills(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """backfills.W001: a backfill whose required migrations are applied never completed."""
    from django.db import DatabaseError, connections
    from django.db.migrations.recorder import MigrationRecorder

    from .models import BackfillRun

    messages: list[checks.CheckMessage] = []
    for alias in databases or ():
        try:
            recorder = MigrationRecorder(connections[alias])
            if not recorder.has_table():
                continue
            applied = recorder.applied_migrations()
            if ("backfills", "0001_initial") not in applied:
                continue
            completed = set(
                BackfillRun.objects.using(alias)
                .filter(state=BackfillRun.State.COMPLETED, reverse=False)
                .values_list("name", flat=True)
            )
        except DatabaseError:
            continue
        for backfill_cls in registry:
            if not backfill_cls.requires or backfill_cls.name in completed:
                continue
            if all(key in applied for key in backfill_cls.requires):
                messages.append(
                    checks.Warning(
                        f"Backfill {backfill_cls.name} can run on database {alias!r} (its "
                        "required migrations are applied) but has never completed there.",
                        hint=f"Run `manage.py backfill run {backfill_cls.name}"
                        f"{'' if alias == 'default' else f' --database {alias}'}`.",
                        obj=backfill_cls,
                        id="backfills.W001",
                    )
                )
    return messages
