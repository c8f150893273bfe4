"""The kinds of backfill: ``RowBackfill`` (Python per row, one-statement writes),
``UpdateBackfill`` (database expressions) and ``SQLBackfill`` (raw SQL per chunk)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any, ClassVar

from django.core.exceptions import FieldDoesNotExist
from django.db import connections, models

from .base import Backfill, PreparedChunk
from .chunking import primary_key
from .db.base import column as db_column
from .exceptions import BackfillConfigurationError
from .writers import build_writes, execute_writes

_ROW_TYPES: dict[tuple[type[models.Model], tuple[str, ...]], type] = {}
# (backfill class, written fields) -> (record attnames, record type), for RowBackfill.load_rows.
_RECORD_LAYOUTS: dict[tuple[type, tuple[str, ...]], tuple[list[str], type]] = {}


def row_type(model: type[models.Model], attnames: Sequence[str]) -> type:
    """A slotted record type with the attributes *attnames* (the primary key's first) and a
    ``pk`` property: what ``RowBackfill.read_fields`` loads rows as. Records compare and hash
    by identity (model instances compare by primary key)."""
    key = (model, tuple(attnames))
    if key not in _ROW_TYPES:
        # A composite primary key's value is the tuple of its columns (the first attnames).
        parts = len(primary_key(model).fields)
        made = dataclasses.make_dataclass(
            f"{model.__name__}Row",
            [(name, Any) for name in attnames],
            namespace={"pk": property(attrgetter(*attnames[:parts]))},
            slots=True,
            eq=False,
        )
        # setdefault: a prefetch worker may get here at the same time; one type wins.
        return _ROW_TYPES.setdefault(key, made)
    return _ROW_TYPES[key]


def is_record(row: Any) -> bool:
    """Whether *row* is a ``read_fields`` record (not a model instance)."""
    return type(row) in _ROW_TYPES.values()


class RowBackfill(Backfill):
    """Python computes new values row by row; each chunk is written back in one statement.

    Set ``fields`` (the columns written) and implement ``transform(row)`` (and, for
    ``--reverse``, ``reverse_transform(row)``). Return False from either to leave a row as it
    is. Override ``transform_chunk(rows)`` when values depend on the whole chunk.

    Rows are model instances, unless ``read_fields`` names the columns ``transform`` reads:
    then they are plain records of those columns, the written ones and the primary key, which
    load several times faster (no model instances are built).
    """

    #: Columns written back; only these are updated.
    fields: ClassVar[Sequence[str]] = ()
    #: Columns written back by the reverse (default: ``fields``).
    reverse_fields: ClassVar[Sequence[str] | None] = None
    #: Columns ``transform`` reads. When set, each row is a lightweight record with these
    #: attributes, the written fields and ``pk`` (values as the ORM's ``values_list()`` gives
    #: them; a foreign key by its attname, ``author_id``), instead of a model instance.
    read_fields: ClassVar[Sequence[str]] = ()

    def transform(self, row: Any) -> bool | None:
        """Set the new values on *row*. Return False to skip it."""
        raise NotImplementedError(f"{type(self).__name__} must implement transform(row).")

    def reverse_transform(self, row: Any) -> bool | None:
        """Undo ``transform`` on *row*. Return False to skip it."""
        raise NotImplementedError(f"{type(self).__name__} has no reverse_transform(row).")

    def transform_chunk(self, rows: list[Any]) -> list[Any]:
        """Transform a chunk; return the rows to write."""
        return [row for row in rows if self.transform(row) is not False]

    def reverse_transform_chunk(self, rows: list[Any]) -> list[Any]:
        return [row for row in rows if self.reverse_transform(row) is not False]

    @classmethod
    def is_reversible(cls) -> bool:
        return (
            cls.reverse_transform is not RowBackfill.reverse_transform
            or cls.reverse_transform_chunk is not RowBackfill.reverse_transform_chunk
            or super().is_reversible()
        )

    @classmethod
    def row_attnames(cls, written: Sequence[str]) -> list[str]:
        """The attributes a ``read_fields`` record carries: the primary key first, then the
        read and *written* columns. Raises BackfillConfigurationError for a name that is
        not a concrete column of the model."""
        model = cls.get_model()
        cls.get_pk_field()
        names = [f.attname for f in primary_key(model).fields]
        for name in [*cls.read_fields, *written]:
            if name == "pk":
                continue
            try:
                field = model._meta.get_field(name)
            except FieldDoesNotExist as exc:
                raise BackfillConfigurationError(
                    f"Backfill {cls.name}: {model._meta.label} has no field {name!r}."
                ) from exc
            if not getattr(field, "concrete", False) or field.many_to_many:
                raise BackfillConfigurationError(
                    f"Backfill {cls.name}: {model._meta.label}.{name} is not a column, so it "
                    "cannot be read into a row record."
                )
            attname = field.attname  # type: ignore[union-attr]
            if attname not in names:
                names.append(attname)
        return names

    def load_rows(self, queryset: models.QuerySet[Any], written: Sequence[str]) -> list[Any]:
        """The chunk's rows: model instances, or records when ``read_fields`` is set."""
        if not self.read_fields:
            return list(queryset)
        key = (type(self), tuple(written))
        if key not in _RECORD_LAYOUTS:
            names = self.row_attnames(written)
            _RECORD_LAYOUTS.setdefault(key, (names, row_type(self.model_class, names)))
        names, make = _RECORD_LAYOUTS[key]
        rows = queryset.prefetch_related(None).values_list(*names)
        return [make(*values) for values in rows]

    def _transform(self, transform: Any, rows: list[Any]) -> list[Any]:
        try:
            changed: list[Any] = transform(rows)
            return changed
        except AttributeError as exc:
            if not self.read_fields or not is_record(getattr(exc, "obj", None)):
                raise
            raise BackfillConfigurationError(
                f"Backfill {self.name}: transform used {exc.name!r}, which a row record does "
                "not carry; add it to read_fields (records hold only the primary key, "
                "read_fields and fields)."
            ) from exc

    def process_window(self, queryset: models.QuerySet[Any]) -> int:
        changed = self._transform(self.transform_chunk, self.load_rows(queryset, self.fields))
        self.write_rows(changed, self.fields)
        return len(changed)

    def reverse_window(self, queryset: models.QuerySet[Any]) -> int:
        if not type(self).is_reversible():
            return super().reverse_window(queryset)
        fields = self.reverse_fields or self.fields
        changed = self._transform(self.reverse_transform_chunk, self.load_rows(queryset, fields))
        self.write_rows(changed, fields)
        return len(changed)

    @classmethod
    def can_prefetch(cls, reverse: bool = False) -> bool:
        # Not when a subclass replaced the window hooks: their reads and writes are unknown.
        if reverse:
            return cls.reverse_window is RowBackfill.reverse_window and (
                cls.reverse_transform is not RowBackfill.reverse_transform
                or cls.reverse_transform_chunk is not RowBackfill.reverse_transform_chunk
            )
        return cls.process_window is RowBackfill.process_window

    def prepare_window(self, queryset: models.QuerySet[Any]) -> PreparedChunk:
        """Load the chunk's rows and transform them (in the current direction); with the
        default ``write_rows()``, also build the statements that will write them."""
        fields = self._written_fields()
        transform = self.reverse_transform_chunk if self.reverse else self.transform_chunk
        rows = self._transform(transform, self.load_rows(queryset, fields))
        statements = None
        if type(self).write_rows is Backfill.write_rows:
            connection = connections[self.using]
            statements = build_writes(self.model_class, rows, fields, connection, self.window)
        return PreparedChunk(rows, statements)

    def write_prepared(self, prepared: PreparedChunk) -> int:
        if prepared.statements is not None:
            execute_writes(prepared.statements, self.using)
        else:
            self.write_rows(prepared.rows, self._written_fields())
        return len(prepared.rows)

    def _written_fields(self) -> Sequence[str]:
        """The columns written in the current direction."""
        return (self.reverse_fields or self.fields) if self.reverse else self.fields


class UpdateBackfill(Backfill):
    """Set-based: new values are database expressions, each chunk one ``UPDATE`` statement.

    Set ``updates = {"title": Trim("title"), ...}`` (or override ``get_updates()``); for
    ``--reverse``, ``reverse_updates`` / ``get_reverse_updates()``. No row enters Python.
    """

    updates: ClassVar[Mapping[str, Any]] = {}
    reverse_updates: ClassVar[Mapping[str, Any] | None] = None
    max_batch_size = 200_000
    #: A set-based chunk is one statement that locks rows from its start to its commit, so its
    #: default target is shorter than a row backfill's, whose rows are locked only while written.
    locks_rows_whole_chunk = True

    def get_updates(self) -> Mapping[str, Any]:
        """The ``field=expression`` assignments for ``QuerySet.update()``."""
        return self.updates

    def get_reverse_updates(self) -> Mapping[str, Any] | None:
        return self.reverse_updates

    @classmethod
    def is_reversible(cls) -> bool:
        return (
            cls.reverse_updates is not None
            or cls.get_reverse_updates is not UpdateBackfill.get_reverse_updates
            or super().is_reversible()
        )

    def process_window(self, queryset: models.QuerySet[Any]) -> int:
        return queryset.order_by().update(**self.get_updates())

    def reverse_window(self, queryset: models.QuerySet[Any]) -> int:
        updates = self.get_reverse_updates()
        if updates is None:
            return super().reverse_window(queryset)
        return queryset.order_by().update(**updates)


class _WindowCondition:
    """Formats as the chunk's primary key condition: ``{window}`` or ``{window:alias}``."""

    def __init__(self, backfill: SQLBackfill, params: dict[str, Any]) -> None:
        self.backfill = backfill
        self.params = params

    def __format__(self, alias: str) -> str:
        connection = connections[self.backfill.using]
        model = self.backfill.model_class
        window = self.backfill.window
        assert window is not None
        key = window.key or primary_key(model)
        q = connection.ops.quote_name
        table = alias or q(model._meta.db_table)
        columns = [f"{table}.{q(db_column(f))}" for f in key.fields]
        names = itertools.count()

        def mark(value: Any) -> str:
            name = f"window_{next(names)}"
            self.params[name] = value
            return f"%({name})s"

        return key.window_sql(connection, columns, window.lower, window.upper, mark)


class SQLBackfill(Backfill):
    """Raw SQL run once per chunk, for what the ORM cannot say.

    ``sql`` is one statement, or a dict by vendor (``"postgresql"``, ``"mysql"``,
    ``"sqlite"``). Write ``{window}`` (or ``{window:alias}`` when the table is aliased) where
    the chunk's primary key condition goes; the backfill's parameters are available as
    ``%(name)s``. Write a literal ``%`` as ``%%``. The statement's row count is reported.
    """

    sql: ClassVar[str | Mapping[str, str]] = ""
    reverse_sql: ClassVar[str | Mapping[str, str] | None] = None
    max_batch_size = 200_000
    locks_rows_whole_chunk = True  # one statement per chunk, as UpdateBackfill

    @classmethod
    def is_reversible(cls) -> bool:
        return cls.reverse_sql is not None or super().is_reversible()

    def get_sql(self, reverse: bool = False) -> str:
        """The statement for this database's vendor."""
        sql = self.reverse_sql if reverse else self.sql
        if isinstance(sql, Mapping):
            vendor = connections[self.using].vendor
            try:
                return sql[vendor]
            except KeyError:
                raise BackfillConfigurationError(
                    f"Backfill {self.name} has no SQL for {vendor} (has: {', '.join(sql)})."
                ) from None
        if not sql:
            raise BackfillConfigurationError(f"Backfill {self.name} sets no `sql`.")
        return sql

    def execute(self, sql: str) -> int:
        params: dict[str, Any] = dict(vars(self.params))
        statement = sql.format(window=_WindowCondition(self, params))
        with connections[self.using].cursor() as cursor:
            cursor.execute(statement, params)
            return max(int(cursor.rowcount), 0)

    def process_window(self, queryset: models.QuerySet[Any]) -> int:
        return self.execute(self.get_sql())

    def reverse_window(self, queryset: models.QuerySet[Any]) -> int:
        if self.reverse_sql is None:
            return super().reverse_window(queryset)
        return self.execute(self.get_sql(reverse=True))
