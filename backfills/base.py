"""The Backfill base class users subclass in their apps' ``backfills.py``."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from django.apps import apps
from django.db import DEFAULT_DB_ALIAS, models

from .exceptions import BackfillConfigurationError

# Primary key types whose values the database cannot order consistently for keyset paging.
UNORDERABLE_PK_TYPES = frozenset({"JSONField", "BinaryField"})


class Backfill:
    """A data change applied to a table in small, checkpointed, primary-key ordered chunks.

    Subclass it, set ``model`` (``"app_label.ModelName"`` or the class), narrow
    ``get_queryset()`` to the rows that need work, implement ``process_chunk()``, and decorate
    the class with ``@register``. The runner walks the table by primary key windows, applies
    ``get_queryset()`` inside each window and commits each chunk in one transaction together
    with the run's checkpoint.
    """

    #: Registry name; defaults to ``app_label.snake_case_class_name``.
    name: ClassVar[str | None] = None
    #: The model whose table is walked: ``"app_label.ModelName"`` or the model class.
    model: ClassVar[str | type[models.Model] | None] = None
    #: One line shown by ``backfill list``; defaults to the first line of the docstring.
    description: ClassVar[str | None] = None
    #: Migrations that must be applied before the backfill may run: ``[("blog", "0002_x")]``.
    requires: ClassVar[Sequence[tuple[str, str]]] = ()
    #: A fixed number of rows per chunk. None (the default) sizes chunks adaptively toward
    #: ``target_chunk_time``; ``--batch-size`` overrides either.
    batch_size: ClassVar[int | None] = None
    #: Seconds a chunk should take when sized adaptively (None: the TARGET_CHUNK_TIME setting).
    target_chunk_time: ClassVar[float | None] = None
    #: Seconds to pause between chunks, giving the database room to breathe.
    sleep: ClassVar[float] = 0.0
    #: When True, a chunk that raises is split in halves (savepoints) until the failing rows
    #: are isolated; those are recorded as QuarantinedRow and the rest of the chunk commits.
    #: ``backfill errors NAME`` lists them, ``backfill retry-failed NAME`` reprocesses them.
    quarantine: ClassVar[bool] = False

    def __init__(self, *, using: str = DEFAULT_DB_ALIAS) -> None:
        self.using = using

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
        target = pk.target_field if pk.is_relation else pk
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

    def get_health_checks(self) -> list[Any]:
        """Extra health checks for this backfill: callables taking the backfill and returning
        a ``backfills.throttle.Health`` (or None/True when healthy, a reason string if not)."""
        return []

    # -- helpers -------------------------------------------------------------------------

    def bulk_update(self, rows: Iterable[models.Model], fields: Sequence[str]) -> int:
        """Write *fields* of *rows* back in as few statements as the database allows."""
        rows = list(rows)
        if not rows:
            return 0
        return self.model_class._base_manager.using(self.using).bulk_update(rows, fields)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} using={self.using!r}>"
