"""Keyset iteration over a table's primary key: pk windows, never OFFSET over the table.

A window is ``(lower, upper]``: ``lower`` is the checkpoint cursor (None before the first
chunk) and ``upper`` the n-th primary key after it, found on the primary key index alone. The
backfill's filter is applied inside the window, so a chunk scans at most n rows however few
of them need work, and the cost of a chunk does not grow with the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connections, models

from .db import vendor_for


@dataclass(frozen=True)
class Window:
    """One chunk's primary key range ``lower < pk <= upper`` and how many rows it spans."""

    lower: Any
    upper: Any
    size: int

    def filter(self, queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
        """Restrict *queryset* to this window."""
        if self.lower is not None:
            queryset = queryset.filter(pk__gt=self.lower)
        return queryset.filter(pk__lte=self.upper)


def pk_target(pk: models.Field[Any, Any]) -> models.Field[Any, Any]:
    """The field whose values a primary key holds: itself, or for a one-to-one primary key
    the target's primary key."""
    target = getattr(pk, "target_field", None) if pk.is_relation else None
    return target if isinstance(target, models.Field) else pk


def table_queryset(model: type[models.Model], using: str) -> models.QuerySet[Any]:
    """Every row of the model's table, unfiltered, on *using*."""
    return model._base_manager.using(using).all()


def find_horizon(model: type[models.Model], using: str) -> Any:
    """The highest primary key in the table now (None for an empty table)."""
    # ORDER BY pk DESC LIMIT 1 rather than MAX(pk): a backward index scan on every backend,
    # and PostgreSQL has no max(uuid).
    return table_queryset(model, using).order_by("-pk").values_list("pk", flat=True).first()


def count_range(model: type[models.Model], using: str, lower: Any, upper: Any) -> int:
    """Rows with ``lower < pk <= upper``: the total a run walks."""
    if upper is None:
        return 0
    return Window(lower, upper, 0).filter(table_queryset(model, using)).count()


def next_window(
    model: type[models.Model], using: str, cursor: Any, horizon: Any, size: int
) -> Window | None:
    """The next window of at most *size* rows after *cursor*, or None when the walk is done."""
    if horizon is None:
        return None
    pks = table_queryset(model, using).filter(pk__lte=horizon)
    if cursor is not None:
        pks = pks.filter(pk__gt=cursor)
    pks = pks.order_by("pk").values_list("pk", flat=True)
    # OFFSET here is bounded by one chunk and runs on the pk index: it finds the window's
    # upper bound without fetching the chunk's keys.
    bound = list(pks[size - 1 : size])
    if bound:
        return Window(cursor, bound[0], size)
    # Fewer than `size` rows remain: the last window reaches the horizon.
    remaining = pks.count()
    if remaining == 0:
        return None
    return Window(cursor, horizon, remaining)


def estimate_total(
    model: type[models.Model], using: str, horizon: Any, exact: bool, estimate_above: int
) -> tuple[int, bool]:
    """Rows up to *horizon* and whether that is exact: a COUNT when cheap or asked for, the
    vendor's table statistics above *estimate_above* rows, where a COUNT would scan the whole
    table."""
    if horizon is None:
        return 0, True
    if not exact:
        connection = connections[using]
        estimate = vendor_for(connection).table_estimate(connection, model._meta.db_table)
        if estimate is not None and estimate > estimate_above:
            return estimate, False
    return count_range(model, using, None, horizon), True
