"""Write computed values back in one statement per chunk: an UPDATE joined to a VALUES list.

Django's ``bulk_update`` builds ``SET f = CASE WHEN pk=1 THEN ... WHEN pk=2 ... END`` with a
WHEN per row and field, which the database evaluates row by row (quadratic in the chunk size).
Joining the table to a list of ``(pk, value, ...)`` rows is a single hash or index join:

- PostgreSQL: ``UPDATE t SET f = v.f FROM unnest(%s::int[], %s::text[]) AS v(pk, f)
  WHERE t.pk = v.pk``: one array per column, typed from each field's column type;
- SQLite 3.33+: the same with ``UPDATE ... FROM (VALUES ...)`` (columns ``column1``, ...);
- MariaDB/MySQL: ``UPDATE t JOIN (SELECT %s AS pk, %s AS f UNION ALL SELECT ...) v ON ...``.

Only the named fields are written. Values are prepared as each field's ``get_db_prep_save()``
prepares them for ``Model.save()`` (``save_preparer`` skips the calls that would return a value
unchanged). *rows* are model instances or ``RowBackfill.read_fields`` records.

Given the chunk's primary key window, the statement also says ``pk > lower AND pk <= upper``:
without it PostgreSQL plans a VALUES list of more than a few thousand rows as a hash join over a
sequential scan of the whole table, so a chunk's cost would grow with the table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from django.db import connections, models
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models.fields import AutoFieldMixin, Field

from .chunking import primary_key
from .db import vendor_for
from .db.base import Statement
from .db.base import column as db_column

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from .chunking import Window


def as_instances(
    model: type[models.Model], rows: Iterable[Any], fields: Sequence[str]
) -> list[models.Model]:
    """*rows* as model instances (for Django's ``bulk_update``): records built by
    ``RowBackfill.read_fields`` become instances holding their primary key and *fields*."""
    rows = list(rows)
    if not rows or isinstance(rows[0], models.Model):
        return rows
    attnames = [model._meta.get_field(name).attname for name in fields]  # type: ignore[union-attr]
    return [
        model(pk=row.pk, **{attname: getattr(row, attname) for attname in attnames}) for row in rows
    ]


def write_rows(
    model: type[models.Model],
    rows: Iterable[Any],
    fields: Sequence[str],
    using: str,
    window: Window | None = None,
) -> int:
    """UPDATE *fields* of *rows* (by primary key) and return how many rows matched.

    *window*, when given, must contain every row's primary key; it bounds the scan.
    """
    rows = list(rows)
    if not rows:
        return 0
    statements = build_writes(model, rows, fields, connections[using], window)
    if statements is None:  # another backend: Django's portable path
        instances = as_instances(model, rows, fields)
        return model._base_manager.using(using).bulk_update(instances, list(fields))
    return execute_writes(statements, using)


def build_writes(
    model: type[models.Model],
    rows: list[Any],
    fields: Sequence[str],
    connection: BaseDatabaseWrapper,
    window: Window | None = None,
) -> list[Statement] | None:
    """The statements ``write_rows`` runs, built without touching the database (so a
    prefetching worker can build them with its own connection's settings); None for a backend
    without a one-statement form."""
    if not fields:
        raise ValueError("write_rows() needs at least one field name.")
    meta = model._meta
    written: list[Field[Any, Any]] = []
    for name in fields:
        field = meta.get_field(name)
        if (
            not isinstance(field, Field)
            or not field.concrete
            or field.primary_key
            or field.many_to_many
        ):
            raise ValueError(f"{meta.label}.{field.name} cannot be written by write_rows().")
        written.append(field)
    vendor = vendor_for(connection)
    if not vendor.writes_in_one_statement:
        return None
    if not rows:
        return []
    # Rows are matched on the primary key (all its columns); the window's key may be another.
    keys = primary_key(model).fields
    per_statement = vendor.rows_per_update(connection, len(written) + len(keys), len(rows))
    preparers = [(f.attname, save_preparer(f, connection)) for f in (*keys, *written)]
    bound: list[Any] = []
    condition = ""
    if window is not None:
        walked = window.key or primary_key(model)
        columns = [
            vendor.update_pk_column(connection, meta.db_table, db_column(f)) for f in walked.fields
        ]

        def mark(value: Any) -> str:
            bound.append(value)
            return "%s"

        condition = " AND " + walked.window_sql(
            connection, columns, window.lower, window.upper, mark
        )
    statements = []
    for start in range(0, len(rows), per_statement):
        batch = rows[start : start + per_statement]
        values = [[prep(getattr(row, attname)) for attname, prep in preparers] for row in batch]
        sql, params = vendor.update_from_values(connection, meta.db_table, keys, written, values)
        statements.append((sql + condition, [*params, *bound]))
    return statements


def execute_writes(statements: list[Statement], using: str) -> int:
    """Run statements from ``build_writes`` on *using*; returns the rows matched."""
    matched = 0
    with connections[using].cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)
            matched += cursor.rowcount
    return matched


def save_preparer(field: Any, connection: Any) -> Callable[[Any], Any]:
    """``field.get_db_prep_save(value, connection)`` as a one-argument function that skips the
    calls for values it would return unchanged: ``str``/``None`` for Django's own text fields,
    ``int`` for its integer fields when the backend neither adapts nor validates them. Any
    other field class, override or value takes the full path, so the result is always the
    same (a test compares both on every backend); in a row backfill's write these calls cost
    about as much as the database's own UPDATE work."""
    kind, ops = type(field), type(connection.ops)

    def full(value: Any) -> Any:
        return field.get_db_prep_save(value, connection)

    if kind.get_db_prep_save is not Field.get_db_prep_save:
        return full
    passthrough: tuple[type, ...] = ()
    if (
        isinstance(field, (models.CharField, models.TextField))
        and kind.get_db_prep_value is Field.get_db_prep_value
        and kind.get_prep_value
        in (models.CharField.get_prep_value, models.TextField.get_prep_value)
        and kind.to_python in (models.CharField.to_python, models.TextField.to_python)
    ):
        passthrough = (str, type(None))
    elif (
        isinstance(field, models.IntegerField)
        and kind.get_prep_value is models.IntegerField.get_prep_value
        and (
            (
                kind.get_db_prep_value is models.IntegerField.get_db_prep_value
                and ops.adapt_integerfield_value is BaseDatabaseOperations.adapt_integerfield_value
            )
            or (
                kind.get_db_prep_value is AutoFieldMixin.get_db_prep_value
                and ops.validate_autopk_value is BaseDatabaseOperations.validate_autopk_value
            )
        )
    ):
        passthrough = (int,)
    if not passthrough:
        return full

    def fast(value: Any) -> Any:
        return value if type(value) in passthrough else field.get_db_prep_save(value, connection)

    return fast
