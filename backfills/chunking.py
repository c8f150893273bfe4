"""Keyset iteration over a table's primary key: pk windows, never OFFSET over the table.

A window is ``(lower, upper]``: ``lower`` is the checkpoint cursor (None before the first
chunk) and ``upper`` the n-th primary key after it, found on the primary key index alone. The
backfill's filter is applied inside the window, so a chunk scans at most n rows however few
of them need work, and the cost of a chunk does not grow with the table.
"""

from __future__ import annotations

import uuid
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


# -- partitions of a parallel run --------------------------------------------------------------

#: A partition's key range: (exclusive lower bound or None for "from the first row", inclusive
#: upper bound).
KeyRange = tuple[Any, Any]


def _as_number(field: models.Field[Any, Any], value: Any, using: str) -> int | None:
    """*value* as an integer on a line where keys sort as numbers (integer keys, UUIDs where
    the database orders them so), or None when the key's type has no such line (strings,
    dates...)."""
    if isinstance(field, models.UUIDField):
        connection = connections[using]
        if not vendor_for(connection).uuids_sort_as_numbers(connection):
            return None
        return int(field.to_python(value).int)
    if isinstance(field, models.IntegerField):
        return int(value)
    return None


def _from_number(field: models.Field[Any, Any], number: int) -> Any:
    if isinstance(field, models.UUIDField):
        return uuid.UUID(int=number)
    return number


def plan_partitions(
    model: type[models.Model], using: str, horizon: Any, count: int, total: int
) -> list[KeyRange]:
    """Split the keys up to *horizon* into about *count* ranges, without scanning the table.

    Integer and UUID keys are split arithmetically between the first key and the horizon (two
    index lookups): gaps make some ranges lighter, which the workers even out by splitting a
    straggler's remainder (``split_point``). Other keys (strings, dates) are stepped through
    on the primary key index, every ``total / count`` keys: an index-only walk, no row reads.
    """
    if horizon is None or count < 1:
        return []
    field = pk_target(model._meta.pk)
    first = table_queryset(model, using).order_by("pk").values_list("pk", flat=True).first()
    if first is None:
        return []
    low, high = _as_number(field, first, using), _as_number(field, horizon, using)
    bounds: list[Any] = []
    if low is not None and high is not None:
        low -= 1  # exclusive
        last = low
        for i in range(1, count):
            bound = low + (high - low) * i // count
            if last < bound < high:
                bounds.append(_from_number(field, bound))
                last = bound
    else:
        step = max(1, -(-total // count))
        cursor = None
        for _ in range(count - 1):
            window = next_window(model, using, cursor, horizon, step)
            if window is None or window.size < step:
                break
            bounds.append(window.upper)
            cursor = window.upper
    uppers = [b for b in bounds if b != horizon] + [horizon]
    lowers: list[Any] = [None, *uppers[:-1]]
    return list(zip(lowers, uppers, strict=True))


def split_point(model: type[models.Model], using: str, cursor: Any, upper: Any) -> Any:
    """A key halfway through the keys in ``(cursor, upper]``, or None when that range is
    too small to split. Arithmetic for integer and UUID keys; a count and one bounded step on
    the index otherwise."""
    field = pk_target(model._meta.pk)
    if cursor is None:
        first = table_queryset(model, using).order_by("pk").values_list("pk", flat=True).first()
        if first is None:
            return None
        low = _as_number(field, first, using)
        low = None if low is None else low - 1
    else:
        low = _as_number(field, cursor, using)
    high = _as_number(field, upper, using)
    if low is not None and high is not None:
        middle = (low + high) // 2
        return _from_number(field, middle) if low < middle < high else None
    remaining = count_range(model, using, cursor, upper)
    if remaining < 2:
        return None
    window = next_window(model, using, cursor, upper, remaining // 2)
    return None if window is None or window.upper == upper else window.upper
