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
    W002: ``prefetch = True`` on a backfill that cannot read ahead; E007: ``chunk_by`` names
    columns that are not a unique, non-null key."""
    from .base import Backfill
    from .inputs import InputBackfill
    from .kinds import RowBackfill

    messages: list[checks.CheckMessage] = []
    for backfill_cls in registry:
        if issubclass(backfill_cls, InputBackfill):
            messages += _input_errors(backfill_cls)
            messages += _pacing_errors(backfill_cls)
            continue
        walkable = True
        try:
            backfill_cls.get_pk_field()
        except BackfillConfigurationError as exc:
            walkable = False
            messages.append(
                checks.Error(
                    str(exc),
                    hint="Point `model` at an installed model with an orderable primary key "
                    "(integer, UUID, string, or a CompositePrimaryKey of such columns).",
                    obj=backfill_cls,
                    id="backfills.E001",
                )
            )
        if walkable and backfill_cls.chunk_by:
            try:
                backfill_cls.get_key()
            except BackfillConfigurationError as exc:
                walkable = False
                messages.append(
                    checks.Error(
                        str(exc),
                        hint="Name NOT NULL columns in `chunk_by` that a unique field or a "
                        "UniqueConstraint (without a condition) makes unique together, or "
                        "remove `chunk_by` to walk the primary key.",
                        obj=backfill_cls,
                        id="backfills.E007",
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
        messages += _pacing_errors(backfill_cls)
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


def _input_errors(backfill_cls: type[Any]) -> list[checks.CheckMessage]:
    """backfills.E008: an input backfill without its hooks or (CSV) its columns."""
    from .base import Backfill
    from .inputs import CSVBackfill, InputBackfill

    problems: list[str] = []
    try:
        backfill_cls.check_walkable()
    except BackfillConfigurationError as exc:
        problems.append(str(exc))
    if issubclass(backfill_cls, CSVBackfill):
        if backfill_cls.process_rows is CSVBackfill.process_rows:
            problems.append(f"Backfill {backfill_cls.name} does not implement process_rows().")
    else:
        hooks = ["items_after", "cursor_of"]
        missing = [h for h in hooks if getattr(backfill_cls, h) is getattr(InputBackfill, h)]
        if (
            backfill_cls.process_items is InputBackfill.process_items
            and backfill_cls.process_chunk is Backfill.process_chunk
        ):
            missing.append("process_items")
        if missing:
            problems.append(
                f"Backfill {backfill_cls.name} does not implement {', '.join(missing)}()."
            )
    return [
        checks.Error(
            problem,
            hint="An InputBackfill implements items_after(cursor, limit), cursor_of(item) and "
            "process_items(items); a CSVBackfill declares `columns` and process_rows(rows).",
            obj=backfill_cls,
            id="backfills.E008",
        )
        for problem in problems
    ]


@checks.register(checks.Tags.database)
def check_pending_backfills(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """backfills.W001: a backfill whose required migrations are applied is not done: it never
    completed, or its latest run (in either direction) is not a completed forward run."""
    from django.db import DatabaseError, connections, transaction
    from django.db.migrations.recorder import MigrationRecorder

    from .control import backfill_state
    from .engine.preconditions import own_migrations

    messages: list[checks.CheckMessage] = []
    own = own_migrations()  # as `backfill run` requires them, not a hard-coded list
    for alias in databases or ():
        try:
            recorder = MigrationRecorder(connections[alias])
            if not recorder.has_table():
                continue
            applied = recorder.applied_migrations()
        except DatabaseError:
            continue
        if not all(key in applied for key in own):
            continue  # the run table is missing or older than this code: nothing to read yet
        for backfill_cls in registry:
            if not backfill_cls.requires:
                continue
            if not all(key in applied for key in backfill_cls.requires):
                continue
            try:
                # A savepoint, so a failed read cannot break a caller's transaction.
                with transaction.atomic(using=alias):
                    state = backfill_state(backfill_cls, using=alias)
            except DatabaseError:
                break
            if state.done:
                continue
            where = (
                "has never completed there"
                if state.run is None
                else f"is not done there: its latest run #{state.run.pk} is {state.state}"
            )
            messages.append(
                checks.Warning(
                    f"Backfill {backfill_cls.name} can run on database {alias!r} (its "
                    f"required migrations are applied) but {where}.",
                    hint=f"Run `manage.py backfill run {backfill_cls.name}"
                    f"{'' if alias == 'default' else f' --database {alias}'}`.",
                    obj=backfill_cls,
                    id="backfills.W001",
                )
            )
    return messages


def _pacing_errors(backfill_cls: Any) -> list[checks.CheckMessage]:
    """backfills.E005: the class's ``profile`` or ``max_duty`` is not one a run accepts."""
    from . import profiles

    errors: list[checks.CheckMessage] = []
    for check, value, where in (
        (profiles.check_name, backfill_cls.profile, "profile"),
        (profiles.check_duty, backfill_cls.max_duty, "max_duty"),
    ):
        try:
            if value is not None:
                check(value, f"{backfill_cls.__name__}.{where}")
        except BackfillConfigurationError as exc:
            errors.append(
                checks.Error(
                    str(exc),
                    hint="profile: gentle, balanced or fast; max_duty: a fraction in (0, 1].",
                    obj=backfill_cls,
                    id="backfills.E005",
                )
            )
    return errors


@checks.register("backfills")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """backfills.E006: the PROFILE or MAX_DUTY setting is not one a run accepts."""
    from . import conf, profiles

    errors: list[checks.CheckMessage] = []
    for check, key in ((profiles.check_name, "PROFILE"), (profiles.check_duty, "MAX_DUTY")):
        try:
            check(conf.get(key), f"BACKFILLS['{key}']")
        except BackfillConfigurationError as exc:
            errors.append(
                checks.Error(
                    str(exc),
                    hint="PROFILE: gentle, balanced or fast; MAX_DUTY: None or a fraction "
                    "in (0, 1].",
                    id="backfills.E006",
                )
            )
    return errors


@checks.register("backfills")
def check_task_backend(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """backfills.E004: TASK_BACKEND names no supported job system; W003: it names one that is
    not installed (``run --workers N --enqueue`` would fail)."""
    import importlib.util

    from . import conf

    backend = conf.get("TASK_BACKEND")
    needs = {
        "django": (("django.tasks", "django_tasks"), "Django 6, or the django-tasks backport"),
        "celery": (("celery",), "Celery"),
    }
    if backend not in needs:
        return [
            checks.Error(
                f"BACKFILLS['TASK_BACKEND'] is {backend!r}.",
                hint="Use 'django' (Django's task framework) or 'celery'.",
                id="backfills.E004",
            )
        ]
    modules, what = needs[backend]
    if not any(_importable(module, importlib.util.find_spec) for module in modules):
        return [
            checks.Warning(
                f"BACKFILLS['TASK_BACKEND'] is {backend!r}, but {what} is not installed: "
                "`backfill run --workers N --enqueue` cannot enqueue.",
                hint="Install it, or run workers with `backfill run --workers N` or "
                "`backfill worker`.",
                id="backfills.W003",
            )
        ]
    return []


def _importable(module: str, find_spec: Any) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
