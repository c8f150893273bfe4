"""Quarantine: isolate the rows a chunk cannot process, record them, retry them later."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import connections, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from ..chunking import Key, primary_key
from ..exceptions import BackfillConfigurationError
from ..models import BackfillRun, QuarantinedRow
from ..parameters import from_json
from ..transient import is_transient
from .ledger import error_fields

if TYPE_CHECKING:
    from ..base import Backfill, PreparedChunk
    from ..conf import Settings

logger = logging.getLogger("backfills")


def _not_quarantinable(exc: BaseException) -> bool:
    # Transient errors retry the whole chunk; a mistake in the backfill itself fails every row
    # alike and fails the run instead.
    return is_transient(exc) or isinstance(exc, BackfillConfigurationError)


class Isolator:
    """Processes a chunk; if it raises, bisects it in savepoints until the failing rows are
    isolated. The rows that succeed commit with the checkpoint, together with the records of
    the failing ones."""

    def __init__(self, backfill: Backfill, run: BackfillRun, key: Key | None = None) -> None:
        self.backfill = backfill
        self.run = run
        self.using = backfill.using
        #: The walk's key, to bisect by key ranges where ``pk__in`` would not do (below).
        self.key = key

    def process(
        self, queryset: QuerySet[Any], prepared: PreparedChunk | None = None
    ) -> tuple[int, int]:
        """(processed, quarantined) for the chunk; halves are read and processed again here,
        whether or not the chunk was prefetched."""
        try:
            with transaction.atomic(using=self.using):
                if prepared is not None:
                    return self.backfill.write_prepared(prepared), 0
                return self.backfill.run_window(queryset), 0
        except Exception as exc:
            if _not_quarantinable(exc):
                raise
            failed = exc
        key = self.key
        if key is not None and not primary_key(key.model).single:
            # A composite primary key: Django writes pk__in as one OR per row on SQLite, which
            # fails past about a thousand rows ("Expression tree is too large"); a key range is
            # one condition at any size. Each row is the range (previous key, its key].
            keys = list(key.values(queryset))
            spans = list(zip([None, *keys[:-1]], keys, strict=True))

            def rows(part: list[tuple[Any, Any]]) -> QuerySet[Any]:
                lower, upper = part[0][0], part[-1][1]
                within = queryset if lower is None else key.after(queryset, lower, self.using)
                return key.upto(within, upper, self.using)

            def pk_of(span: tuple[Any, Any]) -> Any:
                return span[1] if key.is_pk else primary_key(key.model).of(rows([span]).get())

            return self._isolate(
                spans, lambda part: self.backfill.run_window(rows(part)), pk_of, failed
            )
        pks = list(queryset.values_list("pk", flat=True))
        return self._isolate(
            pks, lambda part: self.backfill.run_window(queryset.filter(pk__in=part)), None, failed
        )

    def process_items(self, items: list[Any]) -> tuple[int, int]:
        """(processed, quarantined) for an input walk's chunk, bisected like rows; a failing
        item is recorded under ``describe_item`` (a CSV file's line number)."""
        from ..inputs import InputBackfill

        backfill = self.backfill
        assert isinstance(backfill, InputBackfill)
        return self._isolate(items, backfill.process_items, backfill.describe_item)

    def _isolate(
        self,
        items: list[Any],
        run: Callable[[list[Any]], int],
        label: Callable[[Any], Any] | None,
        failed: Exception | None = None,
    ) -> tuple[int, int]:
        """Process *items* with *run* in a savepoint; if that fails (or *failed* says it did),
        bisect until the failing items are alone, and quarantine each under ``label(item)``
        (the item itself by default)."""
        if failed is None:
            try:
                with transaction.atomic(using=self.using):
                    return run(items), 0
            except Exception as exc:
                if _not_quarantinable(exc):
                    raise
                failed = exc
        if not items:  # nothing to blame: the error is the chunk's, not a row's
            raise failed
        if len(items) == 1:
            quarantine_row(self.run, self.using, label(items[0]) if label else items[0], failed)
            return 0, 1
        middle = len(items) // 2
        left = self._isolate(items[:middle], run, label)
        right = self._isolate(items[middle:], run, label)
        return left[0] + right[0], left[1] + right[1]


def quarantine_row(run: BackfillRun, using: str, pk: Any, exc: BaseException) -> None:
    """Record (or update) the failure of one row; called inside the chunk's transaction."""
    now = timezone.now()
    fields: dict[str, Any] = {**error_fields(exc), "updated_at": now}
    rows = QuarantinedRow.objects.using(using)
    text = json.dumps([str(v) for v in pk]) if isinstance(pk, tuple) else str(pk)
    existing = rows.filter(name=run.name, row_pk=text, resolved_at__isnull=True)
    if not existing.update(attempts=F("attempts") + 1, **fields):
        rows.create(run=run, name=run.name, row_pk=text, created_at=now, **fields)
    logger.warning(
        "backfill %s quarantined pk=%s: %s: %s", run.label, pk, fields["error_class"], exc
    )


def retry_quarantined(
    backfill_cls: type[Backfill], using: str = "default", settings: Settings | None = None
) -> tuple[list[QuarantinedRow], list[QuarantinedRow]]:
    """Process each unresolved quarantined row again, one transaction per row, with the
    parameters of the backfill's latest forward run.

    Returns (resolved, still_failing). A row that no longer matches ``get_queryset()`` is
    resolved: nothing is left to do for it.
    """
    from .. import conf
    from .preconditions import apply_chunk_timeouts, check_requirements

    settings = settings or conf.snapshot()
    check_requirements(backfill_cls, using)
    latest = (
        BackfillRun.objects.using(using)
        .filter(name=backfill_cls.name, reverse=False)
        .order_by("-id")
        .first()
    )
    params = from_json(backfill_cls.parameters, latest.parameters if latest else {})
    backfill = backfill_cls(using=using, params=params)
    from ..inputs import InputBackfill

    if issubclass(backfill_cls, InputBackfill):
        raise BackfillConfigurationError(
            f"Backfill {backfill_cls.name} reads an input: its quarantined items (lines of a "
            "file) cannot be read again one by one. Fix the input and run it again with "
            "--restart, or apply those items by hand."
        )
    backfill_cls.get_pk_field()
    pk_key = primary_key(backfill_cls.get_model())
    resolved: list[QuarantinedRow] = []
    failing: list[QuarantinedRow] = []
    pending = QuarantinedRow.objects.using(using).filter(
        name=backfill_cls.name, resolved_at__isnull=True
    )
    for row in pending:
        queryset = backfill.chunk_queryset().filter(pk=pk_key.load(row.row_pk))
        try:
            with transaction.atomic(using=using):
                apply_chunk_timeouts(connections[using], settings)
                backfill.run_window(queryset)
                row.resolved_at = row.updated_at = timezone.now()
                row.save(using=using, update_fields=["resolved_at", "updated_at"])
            resolved.append(row)
        except Exception as exc:
            if is_transient(exc):
                raise
            for key, value in error_fields(exc).items():
                setattr(row, key, value)
            row.attempts += 1
            row.updated_at = timezone.now()
            row.save(using=using)
            failing.append(row)
    return resolved, failing
