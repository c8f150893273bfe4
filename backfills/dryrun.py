"""``backfill run NAME --dry-run``: a few real chunks inside a transaction that rolls back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from django.db import connections, models, transaction

from . import conf
from .base import Backfill
from .chunking import TableWalk, Walk, count_range, find_horizon, next_window
from .db import vendor_for
from .engine.runner import check_requirements
from .parameters import parse_parameters


class _Rollback(Exception):
    pass


@dataclass
class DryRunReport:
    """What a dry run saw: samples of changed rows, the chunk query's plan, a projection."""

    name: str
    #: The primary key it started after (None: the first row).
    cursor: Any = None
    chunks: int = 0
    rows_walked: int = 0
    rows_processed: int = 0
    seconds: float = 0.0
    #: Rows from the start point up to the horizon: what a run from there would walk.
    rows_total: int = 0
    explain: str = ""
    #: (pk, {field: (before, after)}) for sampled rows whose values changed.
    changes: list[tuple[Any, dict[str, tuple[Any, Any]]]] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        return self.rows_walked / self.seconds if self.seconds > 0 else None

    @property
    def projected_seconds(self) -> float | None:
        rate = self.rate
        return None if rate is None else self.rows_total / rate


def dry_run(
    backfill_cls: type[Backfill],
    *,
    using: str = "default",
    chunks: int = 3,
    batch_size: int = 1000,
    sample: int = 5,
    reverse: bool = False,
    parameters: dict[str, Any] | None = None,
    cursor: Any = None,
    horizon: Any = None,
) -> DryRunReport:
    """Process up to *chunks* chunks, then roll everything back.

    It starts after *cursor* (a primary key, or its text as a run's checkpoint stores it) and
    stops at *horizon* (likewise), so a dry run of an unfinished run samples what resuming
    it would do; by default it starts at the first row and walks to the highest key now."""
    check_requirements(backfill_cls, using)
    values = parse_parameters(backfill_cls.name or "", backfill_cls.parameters, parameters or {})
    backfill = backfill_cls(using=using, reverse=reverse, params=values)
    backfill.params = SimpleNamespace(**values)
    walk = backfill.get_walk()
    if not isinstance(walk, TableWalk):
        return _dry_run_input(backfill, walk, using, chunks, batch_size, cursor)
    model = backfill_cls.get_model()
    key = walk.key
    cursor = None if cursor is None else key.load(cursor)
    report = DryRunReport(name=backfill_cls.name or "", cursor=cursor)
    columns = [f.attname for f in model._meta.concrete_fields if not f.primary_key]
    try:
        with transaction.atomic(using=using):
            horizon = find_horizon(key, using) if horizon is None else key.load(horizon)
            report.rows_total = count_range(key, using, cursor, horizon)
            for _ in range(chunks):
                window = next_window(key, using, cursor, horizon, batch_size)
                if window is None:
                    break
                queryset = window.ordered(backfill.chunk_queryset())
                if not report.explain:
                    report.explain = _explain(queryset)
                picked = list(queryset.values_list("pk", flat=True)[:sample])
                before = _snapshot(model, using, picked, columns)
                started = time.perf_counter()
                with _chunk(using):
                    backfill.window = window
                    report.rows_processed += backfill.run_window(queryset)
                report.seconds += time.perf_counter() - started
                after = _snapshot(model, using, picked, columns)
                for pk in picked:
                    old, new = before.get(pk, {}), after.get(pk)
                    if new is None:
                        report.changes.append((pk, {"(row)": ("present", "deleted")}))
                        continue
                    diff = {c: (old.get(c), new[c]) for c in columns if old.get(c) != new[c]}
                    if diff:
                        report.changes.append((pk, diff))
                report.chunks += 1
                report.rows_walked += window.size
                cursor = window.upper
            raise _Rollback
    except _Rollback:
        pass
    return report


@contextmanager
def _chunk(using: str) -> Iterator[None]:
    """One chunk's transaction (a savepoint in the dry run's) under the chunks' timeouts."""
    connection = connections[using]
    with transaction.atomic(using=using):
        vendor_for(connection).apply_chunk_timeouts(
            connection, conf.get("LOCK_TIMEOUT"), conf.get("STATEMENT_TIMEOUT")
        )
        yield


def _dry_run_input(
    backfill: Backfill, walk: Walk, using: str, chunks: int, batch_size: int, cursor: Any
) -> DryRunReport:
    """A dry run of an input walk: its first chunks processed, then rolled back (the changed
    rows are not sampled: the writes can go anywhere)."""
    cursor = walk.load(cursor)
    report = DryRunReport(name=backfill.name or "", cursor=cursor)
    horizon = walk.horizon()
    report.rows_total = walk.total(horizon, True, 0)[0]
    try:
        with transaction.atomic(using=using):
            for _ in range(chunks):
                window = walk.next_window(cursor, horizon, batch_size)
                if window is None or window.items is None:
                    break
                started = time.perf_counter()
                with _chunk(using):
                    backfill.window = window
                    report.rows_processed += _items(backfill, window.items, report)
                report.seconds += time.perf_counter() - started
                report.chunks += 1
                report.rows_walked += window.size
                cursor = window.upper
            raise _Rollback
    except _Rollback:
        pass
    return report


def _items(backfill: Backfill, items: list[Any], report: DryRunReport) -> int:
    """Process a dry run's chunk of items; with ``quarantine`` the failing ones are listed in
    the report's changes (as the run would quarantine them) and the others processed."""
    from .inputs import InputBackfill

    assert isinstance(backfill, InputBackfill)
    if not type(backfill).quarantine:
        return backfill.process_items(items)
    processed = 0
    for item in items:
        try:
            with transaction.atomic(using=backfill.using):
                processed += backfill.process_items([item])
        except Exception as exc:
            report.changes.append((backfill.describe_item(item), {"quarantined": ("", str(exc))}))
    return processed


def _snapshot(
    model: type[models.Model], using: str, pks: list[Any], columns: list[str]
) -> dict[Any, dict[str, Any]]:
    rows = model._base_manager.using(using).filter(pk__in=pks).values("pk", *columns)
    return {row.pop("pk"): row for row in rows}


def _explain(queryset: models.QuerySet[Any]) -> str:
    try:
        return queryset.explain()
    except Exception as exc:  # some backends cannot explain every query
        return f"(no plan: {type(exc).__name__}: {exc})"
