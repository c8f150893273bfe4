"""The Backfill base class users subclass in their apps' ``backfills.py``."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.db import DEFAULT_DB_ALIAS, connections, models

from .chunking import pk_target
from .db.base import Statement
from .db.base import column as db_column
from .exceptions import BackfillConfigurationError
from .parameters import Parameter
from .writers import as_instances, build_writes, execute_writes, write_rows

if TYPE_CHECKING:
    from .chunking import Window

# Primary key types whose values the database cannot order consistently for keyset paging.
UNORDERABLE_PK_TYPES = frozenset({"JSONField", "BinaryField"})


@dataclasses.dataclass
class PreparedChunk:
    """What ``prepare_window`` gives the runner (``RowBackfill``: the transformed rows and,
    when the backfill writes with the default ``write_rows()``, the statements that write them;
    None: ``write_prepared`` calls ``write_rows``)."""

    rows: list[Any]
    statements: list[Statement] | None = None


class Backfill:
    """A data change applied to a table in small, checkpointed, primary-key ordered chunks.

    Subclass it, set ``model`` (``"app_label.ModelName"`` or the class), narrow
    ``get_queryset()`` to the rows that need work, implement ``process_chunk()``, and decorate
    the class with ``@register``. The runner walks the table by primary key windows, applies
    ``get_queryset()`` inside each window and commits each chunk in one transaction together
    with the run's checkpoint.
    """

    #: Registry name, set by ``@register`` (default ``app_label.snake_case_class_name``);
    #: empty until the class is registered.
    name: ClassVar[str] = ""
    #: The model whose table is walked: ``"app_label.ModelName"`` or the model class.
    model: ClassVar[str | type[models.Model] | None] = None
    #: One line shown by ``backfill list``; defaults to the first line of the docstring.
    description: ClassVar[str | None] = None
    #: Migrations that must be applied before the backfill may run: ``[("blog", "0002_x")]``.
    requires: ClassVar[Sequence[tuple[str, str]]] = ()
    #: A fixed number of rows per chunk. None (the default) sizes chunks adaptively toward
    #: ``target_chunk_time``; ``--batch-size`` overrides either.
    batch_size: ClassVar[int | None] = None
    #: Seconds a chunk should take when sized adaptively (None: the TARGET_CHUNK_TIME setting,
    #: capped by SET_BASED_TARGET_CHUNK_TIME for kinds that lock rows for the whole chunk).
    target_chunk_time: ClassVar[float | None] = None
    #: True for kinds whose chunk is one statement holding its row locks from start to commit
    #: (an application write to a row in the window can wait for the whole chunk).
    locks_rows_whole_chunk: ClassVar[bool] = False
    #: Seconds to pause between chunks, giving the database room to breathe.
    sleep: ClassVar[float] = 0.0
    #: When True, a chunk that raises is split in halves (savepoints) until the failing rows
    #: are isolated; those are recorded as QuarantinedRow and the rest of the chunk commits.
    #: ``backfill errors NAME`` lists them, ``backfill retry-failed NAME`` reprocesses them.
    quarantine: ClassVar[bool] = False
    #: Upper bound for adaptive chunk sizes (None: the MAX_BATCH_SIZE setting). Kinds that
    #: load no rows into Python raise it, so their chunks can reach the target time.
    max_batch_size: ClassVar[int | None] = None
    #: Typed parameters given as ``--param key=value``: ``{"days": Parameter(int, default=30)}``.
    #: Read them as ``self.params.days``.
    parameters: ClassVar[Mapping[str, Parameter]] = {}
    #: Read (and transform) the next chunk on a second database connection while the current
    #: one is written, so the database's write and Python's work overlap. Only kinds that
    #: split reading from writing use it (``RowBackfill``), and only on PostgreSQL and
    #: MySQL/MariaDB outside an enclosing transaction; elsewhere chunks run one after the other.
    #: The reading and ``transform`` then happen in a worker thread, on a shallow copy of the
    #: backfill, before the previous chunk's write (waiting at most PREFETCH_MAX_AGE seconds
    #: once ready, else the chunk is read again), so
    #: ``transform`` must be a pure computation: a database write of its own would not be part
    #: of the chunk's transaction, and a chunk read ahead and then dropped is transformed again.
    prefetch: ClassVar[bool] = False

    def __init__(
        self,
        *,
        using: str = DEFAULT_DB_ALIAS,
        reverse: bool = False,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.using = using
        #: True while running the reverse (``backfill run NAME --reverse``).
        self.reverse = reverse
        #: The run's parameters, parsed and typed.
        self.params = SimpleNamespace(**(params or {}))
        #: The primary key window of the chunk being processed (set by the runner).
        self.window: Window | None = None

    # -- description -----------------------------------------------------------------------

    @classmethod
    def get_description(cls) -> str:
        """Return the one-line description shown in listings."""
        if cls.description:
            return cls.description
        doc = inspect.getdoc(cls)
        if not doc or cls.__doc__ is None:
            return ""
        return doc.strip().splitlines()[0]

    @classmethod
    def get_model(cls) -> type[models.Model]:
        """Resolve ``model`` to a model class, raising a clear error if it cannot."""
        if cls.model is None:
            raise BackfillConfigurationError(
                f"Backfill {cls.name or cls.__name__} does not set `model`."
            )
        if isinstance(cls.model, str):
            try:
                return apps.get_model(cls.model)
            except (LookupError, ValueError) as exc:
                raise BackfillConfigurationError(
                    f"Backfill {cls.name or cls.__name__}: model {cls.model!r} is not an "
                    f"installed model ({exc})."
                ) from exc
        return cls.model

    @classmethod
    def get_pk_field(cls) -> models.Field[Any, Any]:
        """Return the primary key field, refusing keys that cannot be ordered for paging."""
        model = cls.get_model()
        pk = model._meta.pk
        label = model._meta.label
        if pk is None:
            raise BackfillConfigurationError(f"{label} has no primary key.")
        if type(pk).__name__ == "CompositePrimaryKey":
            raise BackfillConfigurationError(
                f"{label} has a composite primary key; keyset chunking needs a single-column "
                "primary key."
            )
        target = pk_target(pk)
        if target.get_internal_type() in UNORDERABLE_PK_TYPES:
            raise BackfillConfigurationError(
                f"{label}'s primary key is a {target.get_internal_type()}, which the database "
                "cannot order for keyset chunking."
            )
        return pk

    @property
    def model_class(self) -> type[models.Model]:
        """The resolved model class."""
        return self.get_model()

    # -- hooks ---------------------------------------------------------------------------

    def get_queryset(self) -> models.QuerySet[Any]:
        """Return the rows that need work. Applied inside every chunk's primary key window."""
        return self.model_class._default_manager.all()

    def process_chunk(self, rows: list[Any]) -> None:
        """Change one chunk of rows. Runs inside the chunk's transaction."""
        raise NotImplementedError(f"{type(self).__name__} must implement process_chunk(rows).")

    def process_window(self, queryset: models.QuerySet[Any]) -> int:
        """Process the rows of one chunk and return how many were processed.

        The default loads the chunk's rows and hands them to ``process_chunk``. Override it
        to work on the queryset directly (for example ``queryset.update(...)``) and return the
        number of rows changed.
        """
        rows = list(queryset)
        if rows:
            self.process_chunk(rows)
        return len(rows)

    # -- reverse ------------------------------------------------------------------------

    @classmethod
    def is_reversible(cls) -> bool:
        """Whether ``--reverse`` can run this backfill."""
        # reverse_window overridden in user code (the kinds below override it themselves and
        # say through their own is_reversible() whether their reverse hooks are defined).
        owner = next(klass for klass in cls.__mro__ if "reverse_window" in vars(klass))
        return owner.__module__ != __name__ or (
            cls.process_reverse_chunk is not Backfill.process_reverse_chunk
        )

    def get_reverse_queryset(self) -> models.QuerySet[Any]:
        """Rows the reverse must undo (default: every row of the model)."""
        return self.model_class._default_manager.all()

    def process_reverse_chunk(self, rows: list[Any]) -> None:
        """Undo ``process_chunk`` for one chunk of rows (the ``RunPython`` reverse_code)."""
        raise NotImplementedError(f"{type(self).__name__} has no reverse.")

    def reverse_window(self, queryset: models.QuerySet[Any]) -> int:
        """Undo one chunk; by default loads the rows for ``process_reverse_chunk``."""
        rows = list(queryset)
        if rows:
            self.process_reverse_chunk(rows)
        return len(rows)

    # The runner goes through these two, so the same loop runs either direction.

    def chunk_queryset(self) -> models.QuerySet[Any]:
        """The queryset the runner filters to each window, for the current direction."""
        queryset = self.get_reverse_queryset() if self.reverse else self.get_queryset()
        return queryset.using(self.using)

    def run_window(self, queryset: models.QuerySet[Any]) -> int:
        """Process one chunk in the current direction; returns the rows processed."""
        return self.reverse_window(queryset) if self.reverse else self.process_window(queryset)

    # Prefetching splits run_window in two: the read-only half runs ahead on another connection.

    @classmethod
    def can_prefetch(cls, reverse: bool = False) -> bool:
        """Whether ``prepare_window`` + ``write_prepared`` do what ``run_window`` does in
        that direction (False here: a plain Backfill's ``process_chunk`` reads and writes)."""
        return False

    def prepare_window(self, queryset: models.QuerySet[Any]) -> PreparedChunk:
        """The read-only half of ``run_window``: load and compute, write nothing."""
        raise NotImplementedError(f"{type(self).__name__} cannot prefetch.")

    def write_prepared(self, prepared: PreparedChunk) -> int:
        """The writing half of ``run_window``, given what ``prepare_window`` returned;
        returns the rows processed. Runs inside the chunk's transaction."""
        raise NotImplementedError(f"{type(self).__name__} cannot prefetch.")

    # -- checks --------------------------------------------------------------------------

    def pre_check(self) -> str | None:
        """Return a reason to refuse to start (or raise CheckFailed); None to go ahead."""
        return None

    def post_check(self) -> str | None:
        """After the last chunk: return what is still wrong (or raise CheckFailed); None if
        the data is as intended. A problem marks the run failed; running it again re-checks."""
        return None

    def get_health_checks(self) -> list[Any]:
        """Extra health checks for this backfill: callables taking the backfill and returning
        a ``backfills.throttle.Health`` (or None/True when healthy, a reason string if not)."""
        return []

    # -- helpers -------------------------------------------------------------------------

    def bulk_update(self, rows: Iterable[Any], fields: Sequence[str]) -> int:
        """Write *fields* of *rows* back with Django's ``bulk_update`` (portable, slower)."""
        rows = as_instances(self.model_class, rows, fields)
        if not rows:
            return 0
        return self.model_class._base_manager.using(self.using).bulk_update(rows, fields)

    def write_rows(self, rows: Iterable[Any], fields: Sequence[str]) -> int:
        """Write *fields* of this chunk's *rows* back in one ``UPDATE ... FROM (VALUES ...)``
        statement (the fastest correct form on each database); see ``backfills.writers``.

        Only rows inside the current chunk's primary key window are written."""
        return write_rows(self.model_class, rows, fields, self.using, window=self.window)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} using={self.using!r}>"


_ROW_TYPES: dict[tuple[type[models.Model], tuple[str, ...]], type] = {}
# (backfill class, written fields) -> (record attnames, record type), for RowBackfill.load_rows.
_RECORD_LAYOUTS: dict[tuple[type, tuple[str, ...]], tuple[list[str], type]] = {}


def row_type(model: type[models.Model], attnames: Sequence[str]) -> type:
    """A slotted record type with the attributes *attnames* (the primary key's first) and a
    ``pk`` property: what ``RowBackfill.read_fields`` loads rows as. Records compare and hash
    by identity (model instances compare by primary key)."""
    key = (model, tuple(attnames))
    if key not in _ROW_TYPES:
        made = dataclasses.make_dataclass(
            f"{model.__name__}Row",
            [(name, Any) for name in attnames],
            namespace={"pk": property(attrgetter(attnames[0]))},
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
        pk = cls.get_pk_field()
        names = [pk.attname]
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
        pk = model._meta.pk
        assert pk is not None and self.backfill.window is not None
        q = connection.ops.quote_name
        column = f"{alias or q(model._meta.db_table)}.{q(db_column(pk))}"
        window = self.backfill.window
        self.params["window_upper"] = pk.get_db_prep_value(window.upper, connection)
        if window.lower is None:
            return f"{column} <= %(window_upper)s"
        self.params["window_lower"] = pk.get_db_prep_value(window.lower, connection)
        return f"({column} > %(window_lower)s AND {column} <= %(window_upper)s)"


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
