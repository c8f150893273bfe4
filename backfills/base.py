"""The Backfill base class users subclass in their apps' ``backfills.py``."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.db import DEFAULT_DB_ALIAS, models

from .chunking import Key, TableWalk, Walk, primary_key, value_field
from .db.base import Statement
from .exceptions import BackfillConfigurationError
from .parameters import Parameter
from .writers import as_instances, write_rows

if TYPE_CHECKING:
    from .chunking import Window


def is_unique_together(model: type[models.Model], names: Sequence[str]) -> bool:
    """Whether the fields *names* of *model* are unique together: one of them is unique on its
    own (the primary key included), or a unique constraint without a condition (or
    ``unique_together``) covers a subset of them."""
    meta = model._meta
    wanted = set(names)
    for name in names:
        field = meta.get_field(name)
        if getattr(field, "unique", False) or getattr(field, "primary_key", False):
            return True
    pk = meta.pk
    if isinstance(pk, models.CompositePrimaryKey) and set(pk.field_names) <= wanted:
        return True
    for together in meta.unique_together:
        if set(together) <= wanted:
            return True
    return any(set(c.fields) <= wanted for c in meta.total_unique_constraints)


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
    #: Seconds a chunk should take when sized adaptively (None: the profile's, i.e. the
    #: TARGET_CHUNK_TIME setting under ``balanced``, capped by SET_BASED_TARGET_CHUNK_TIME for
    #: kinds that lock rows for the whole chunk).
    target_chunk_time: ClassVar[float | None] = None
    #: "gentle", "balanced" or "fast" (None: the PROFILE setting); see ``backfills.profiles``.
    profile: ClassVar[str | None] = None
    #: The largest fraction of wall time a run works, in (0, 1] (None: the profile's).
    max_duty: ClassVar[float | None] = None
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
    #: Walk the table in the order of these columns instead of the primary key: one name, or
    #: several (``("tenant_id", "id")``). They must be unique together and NOT NULL (check
    #: ``backfills.E007``). A model with a ``CompositePrimaryKey`` is walked on its whole key
    #: without this.
    chunk_by: ClassVar[str | Sequence[str] | None] = None

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
        """Return the primary key field (a ``CompositePrimaryKey`` for a key of several
        columns), refusing keys that cannot be ordered for paging."""
        model = cls.get_model()
        pk = model._meta.pk
        label = model._meta.label
        if pk is None:
            raise BackfillConfigurationError(f"{label} has no primary key.")
        for part in primary_key(model).fields:
            target = value_field(part)
            if target.get_internal_type() in UNORDERABLE_PK_TYPES:
                raise BackfillConfigurationError(
                    f"{label}'s primary key is a {target.get_internal_type()}, which the "
                    "database cannot order for keyset chunking."
                )
        return pk

    @classmethod
    def get_key(cls) -> Key:
        """The key the runner walks the table in: ``chunk_by``'s columns, else the primary
        key (all its columns for a ``CompositePrimaryKey``). Raises
        BackfillConfigurationError for ``chunk_by`` columns that are not a unique, non-null
        key of the model."""
        model = cls.get_model()
        cls.get_pk_field()
        if not cls.chunk_by:
            return primary_key(model)
        names = (cls.chunk_by,) if isinstance(cls.chunk_by, str) else tuple(cls.chunk_by)
        label = model._meta.label
        fields: list[models.Field[Any, Any]] = []
        for name in names:
            try:
                field = model._meta.get_field(name)
            except FieldDoesNotExist:
                raise BackfillConfigurationError(
                    f"Backfill {cls.name}: chunk_by names {name!r}, which is not a field of "
                    f"{label}."
                ) from None
            if not isinstance(field, models.Field) or not field.concrete or field.many_to_many:
                raise BackfillConfigurationError(
                    f"Backfill {cls.name}: chunk_by names {label}.{name}, which is not a column."
                )
            if field.null:
                raise BackfillConfigurationError(
                    f"Backfill {cls.name}: chunk_by column {label}.{name} is nullable; a walk "
                    "key must be NOT NULL (rows with NULL would be skipped)."
                )
            if value_field(field).get_internal_type() in UNORDERABLE_PK_TYPES:
                raise BackfillConfigurationError(
                    f"Backfill {cls.name}: chunk_by column {label}.{name} cannot be ordered."
                )
            fields.append(field)
        if not is_unique_together(model, [f.name for f in fields]):
            raise BackfillConfigurationError(
                f"Backfill {cls.name}: chunk_by {names!r} is not unique on {label}; a walk key "
                "must be unique (a unique field, or a UniqueConstraint / unique_together on "
                "exactly these columns), or rows sharing a value could be skipped or repeated."
            )
        return Key(model, tuple(fields), origin="chunk_by")

    @classmethod
    def check_walkable(cls) -> None:
        """Raise BackfillConfigurationError when the runner cannot walk this backfill's
        input (its model's key, ``chunk_by``)."""
        cls.get_key()

    def get_walk(self) -> Walk:
        """What a run of this backfill steps through: its table, in key order."""
        return TableWalk(type(self).get_key(), self.using)

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
