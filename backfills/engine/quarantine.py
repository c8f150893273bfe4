"""Quarantine: isolate the rows a chunk cannot process, record them, retry them later."""

from __future__ import annotations

import json
import logging
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
        if self.key is not None and not primary_key(self.key.model).single:
            # A composite primary key: Django writes pk__in as one OR per row on SQLite, which
            # fails past about a thousand rows ("Expression tree is too large": halving would
            # get there, after failed attempts); a key range is one condition at any size.
            return self._bisect_range(queryset, list(self.key.values(queryset)), None)
        pks = list(queryset.values_list("pk", flat=True))
        return self._bisect(queryset, pks)

    def _bisect_range(
        self, queryset: QuerySet[Any], keys: list[Any], lower: Any
    ) -> tuple[int, int]:
        """Like ``_bisect``, on the rows whose walk key is in ``(lower, keys[-1]]``."""
        assert self.key is not None
        part = queryset if lower is None else self.key.after(queryset, lower, self.using)
        part = self.key.upto(part, keys[-1], self.using)
        try:
            with transaction.atomic(using=self.using):
                return self.backfill.run_window(part), 0
        except Exception as exc:
            if _not_quarantinable(exc):
                raise
            if len(keys) == 1:
                pk = keys[0] if self.key.is_pk else primary_key(self.key.model).of(part.get())
                quarantine_row(self.run, self.using, pk, exc)
                return 0, 1
        middle = len(keys) // 2
        left = self._bisect_range(queryset, keys[:middle], lower)
        right = self._bisect_range(queryset, keys[middle:], keys[middle - 1])
        return left[0] + right[0], left[1] + right[1]

    def _bisect(self, queryset: QuerySet[Any], pks: list[Any]) -> tuple[int, int]:
        try:
            with transaction.atomic(using=self.using):
                return self.backfill.run_window(queryset.filter(pk__in=pks)), 0
        except Exception as exc:
            if _not_quarantinable(exc):
                raise
            if len(pks) == 1:
                quarantine_row(self.run, self.using, pks[0], exc)
                return 0, 1
        middle = len(pks) // 2
        left = self._bisect(queryset, pks[:middle])
        right = self._bisect(queryset, pks[middle:])
        return left[0] + right[0], left[1] + right[1]

    def process_items(self, items: list[Any]) -> tuple[int, int]:
        """(processed, quarantined) for an input walk's chunk, bisected like rows; a failing
        item is recorded under ``describe_item`` (a CSV file's line number)."""
        from ..inputs import InputBackfill

        backfill = self.backfill
        assert isinstance(backfill, InputBackfill)
        try:
            with transaction.atomic(using=self.using):
                return backfill.process_items(items), 0
        except Exception as exc:
            if _not_quarantinable(exc):
                raise
            if len(items) == 1:
                quarantine_row(self.run, self.using, backfill.describe_item(items[0]), exc)
                return 0, 1
        middle = len(items) // 2
        left = self.process_items(items[:middle])
        right = self.process_items(items[middle:])
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
