"""Keyset iteration over a table's key: windows, never OFFSET over the table.

A walk follows a *key*: the primary key (one column, or a ``CompositePrimaryKey``'s columns)
or the unique, non-null columns a backfill names in ``chunk_by``. A window is
``(lower, upper]`` in that key's order: ``lower`` is the checkpoint cursor (None before the
first chunk) and ``upper`` the n-th key after it, found on the key's index alone. The
backfill's filter is applied inside the window, so a chunk scans at most n rows however few
of them need work, and the cost of a chunk does not grow with the table.

A key of several columns compares as a row value, ``(a, b) > (%s, %s)``, where the database
plans that as a range on the index (PostgreSQL, SQLite 3.15+: Django itself expands row values
on SQLite, into ORs its planner sorts); MariaDB/MySQL scan the whole index for a row value, so
there it is expanded into ``a > %s OR (a = %s AND b > %s)``, which they range over on both
columns (``Vendor.plans_row_values``; the plans are checked in tests/test_composite.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connections, models
from django.db.models import F, Q
from django.db.models.fields.tuple_lookups import (
    Tuple,
    TupleGreaterThan,
    TupleLessThanOrEqual,
    TupleLookupMixin,
)

from .db import vendor_for
from .db.base import Vendor


@dataclass(frozen=True)
class Key:
    """The columns a backfill walks its table in, in order: one value per column, compared
    together. A one-column key's values are plain (an int, a str...); a longer key's are
    tuples."""

    model: type[models.Model]
    #: The key's concrete fields, in walk order.
    fields: tuple[models.Field[Any, Any], ...]
    #: Where the key comes from, for messages: "primary key" or "chunk_by".
    origin: str = "primary key"
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(f.attname for f in self.fields))

    @property
    def single(self) -> bool:
        return len(self.fields) == 1

    @property
    def is_pk(self) -> bool:
        return self.origin == "primary key"

    def describe(self) -> str:
        """``id`` or ``(tenant, number)``, for messages."""
        columns = [f.name for f in self.fields]
        return columns[0] if self.single else f"({', '.join(columns)})"

    # -- values ------------------------------------------------------------------------------

    def values(self, queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
        """*queryset*'s key values, in key order."""
        if self.single:
            return queryset.order_by(*self.names).values_list(self.names[0], flat=True)
        return queryset.order_by(*self.names).values_list(*self.names)

    def of(self, obj: Any) -> Any:
        """The key value of a model instance or record."""
        if self.single:
            return getattr(obj, self.names[0])
        return tuple(getattr(obj, name) for name in self.names)

    def dump(self, value: Any) -> str:
        """*value* as a checkpoint stores it: the plain text of a one-column key (as before
        keys of several columns existed), a JSON list for a longer one."""
        if self.single:
            return str(value)
        return json.dumps([_jsonable(v) for v in value])

    def load(self, text: Any) -> Any:
        """A stored checkpoint's value from its text (None stays None; a value is kept)."""
        if text is None:
            return None
        if not isinstance(text, str):  # a value already
            return tuple(text) if isinstance(text, list) else text
        if self.single:
            return value_field(self.fields[0]).to_python(text)
        items = json.loads(text)
        if not isinstance(items, list) or len(items) != len(self.fields):
            raise ValueError(f"{text!r} is not a cursor of the key {self.describe()}")
        return tuple(
            value_field(f).to_python(item) for f, item in zip(self.fields, items, strict=True)
        )

    # -- conditions --------------------------------------------------------------------------

    def order(
        self, queryset: models.QuerySet[Any], descending: bool = False
    ) -> models.QuerySet[Any]:
        return queryset.order_by(*(f"-{n}" if descending else n for n in self.names))

    def after(self, queryset: models.QuerySet[Any], value: Any, using: str) -> models.QuerySet[Any]:
        """Rows whose key is greater than *value*."""
        if self.single:
            return queryset.filter(**{f"{self.names[0]}__gt": value})
        if vendor_for(connections[using]).plans_row_values:
            return queryset.filter(_RowAfter(self._tuple(), tuple(value)))
        return queryset.filter(_expanded(self.names, tuple(value), "gt"))

    def upto(self, queryset: models.QuerySet[Any], value: Any, using: str) -> models.QuerySet[Any]:
        """Rows whose key is at most *value*."""
        if self.single:
            return queryset.filter(**{f"{self.names[0]}__lte": value})
        if vendor_for(connections[using]).plans_row_values:
            return queryset.filter(_RowUpTo(self._tuple(), tuple(value)))
        return queryset.filter(_expanded(self.names, tuple(value), "lte"))

    def _tuple(self) -> Tuple:
        return Tuple(*(F(name) for name in self.names))

    def window_sql(
        self,
        connection: Any,
        columns: Sequence[str],
        lower: Any,
        upper: Any,
        mark: Callable[[Any], str],
    ) -> str:
        """The SQL condition ``lower < key <= upper`` over the (qualified, quoted) *columns*;
        *mark* takes each value (prepared for the database) and returns its placeholder."""

        def prep(value: Any) -> list[Any]:
            values = [value] if self.single else list(value)
            return [
                value_field(f).get_db_prep_value(v, connection)
                for f, v in zip(self.fields, values, strict=True)
            ]

        vendor = vendor_for(connection)
        # Lower bound first: *mark* may number positional placeholders in call order.
        parts = [] if lower is None else [_compare_sql(vendor, columns, prep(lower), ">", mark)]
        parts.append(_compare_sql(vendor, columns, prep(upper), "<=", mark))
        return "(" + " AND ".join(parts) + ")"


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return str(value)
    return value


class _RowAfter(TupleGreaterThan):
    """``(a, b) > (x, y)`` as a row value on every backend (Django expands it on SQLite),
    marked as the selective condition it is (``Vendor.key_range``)."""

    def as_sql(self, compiler: Any, connection: Any) -> Any:
        sql, params = super(TupleLookupMixin, self).as_sql(compiler, connection)
        return vendor_for(connection).key_range(sql), params


class _RowUpTo(TupleLessThanOrEqual):
    """``(a, b) <= (x, y)`` as a row value on every backend (as ``_RowAfter``)."""

    def as_sql(self, compiler: Any, connection: Any) -> Any:
        sql, params = super(TupleLookupMixin, self).as_sql(compiler, connection)
        return vendor_for(connection).key_range(sql), params


def _expanded(names: Sequence[str], values: tuple[Any, ...], op: str) -> Q:
    """``(a, b, ...) > (x, y, ...)`` (op "gt") or ``<=`` ("lte") column by column:
    ``a > x OR (a = x AND (b, ...) > (y, ...))``, which MariaDB/MySQL plan as ranges on the
    index over all its columns (a row value they scan the whole index for)."""
    head, value = names[0], values[0]
    if len(names) == 1:
        return Q(**{f"{head}__{op}": value})
    strict = "gt" if op == "gt" else "lt"
    return Q(**{f"{head}__{strict}": value}) | (
        Q(**{head: value}) & _expanded(names[1:], values[1:], op)
    )


def _compare_sql(
    vendor: Vendor, columns: Sequence[str], values: list[Any], op: str, mark: Callable[[Any], str]
) -> str:
    """``columns op values`` in SQL, *op* ">" or "<=": a row value where *vendor* plans one
    on the index, or expanded as ``_expanded``."""
    if len(columns) == 1:
        return f"{columns[0]} {op} {mark(values[0])}"
    if vendor.plans_row_values:
        marks = ", ".join(mark(v) for v in values)
        return vendor.key_range(f"({', '.join(columns)}) {op} ({marks})")
    strict = ">" if op == ">" else "<"
    head, value = columns[0], values[0]
    first, second = mark(value), mark(value)  # in text order, for positional placeholders
    rest = _compare_sql(vendor, columns[1:], values[1:], op, mark)
    return f"({head} {strict} {first} OR ({head} = {second} AND {rest}))"


def value_field(field: models.Field[Any, Any]) -> models.Field[Any, Any]:
    """The field whose values *field* holds: itself, or for a foreign key (a one-to-one
    primary key included) the target's field."""
    target = getattr(field, "target_field", None) if field.is_relation else None
    return target if isinstance(target, models.Field) else field


def primary_key(model: type[models.Model]) -> Key:
    """*model*'s primary key as a walk key: its column, or a ``CompositePrimaryKey``'s."""
    pk = model._meta.pk
    assert pk is not None, model
    if isinstance(pk, models.CompositePrimaryKey):
        return Key(model, tuple(f for f in pk.fields if isinstance(f, models.Field)))
    return Key(model, (pk,))


Walked = Key | type[models.Model]


def as_key(walked: Walked) -> Key:
    """A key as given, or a model's primary key."""
    return walked if isinstance(walked, Key) else primary_key(walked)


@dataclass(frozen=True)
class Window:
    """One chunk's key range ``lower < key <= upper`` and how many rows it spans (for an
    input walk: the cursors before and after its items, and the items)."""

    lower: Any
    upper: Any
    size: int
    #: The key the window is on (None: the model's one-column primary key).
    key: Key | None = None
    #: An input walk's items in this window (``ItemsWalk``); None for a table's rows.
    items: list[Any] | None = None

    def filter(self, queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
        """Restrict *queryset* to this window."""
        if self.key is None:
            if self.lower is not None:
                queryset = queryset.filter(pk__gt=self.lower)
            return queryset.filter(pk__lte=self.upper)
        using = queryset.db
        if self.lower is not None:
            queryset = self.key.after(queryset, self.lower, using)
        return self.key.upto(queryset, self.upper, using)

    def ordered(self, queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
        """Restrict *queryset* to this window, in key order."""
        queryset = self.filter(queryset)
        return queryset.order_by("pk") if self.key is None else self.key.order(queryset)


def table_queryset(model: type[models.Model], using: str) -> models.QuerySet[Any]:
    """Every row of the model's table, unfiltered, on *using*."""
    return model._base_manager.using(using).all()


def find_horizon(walked: Walked, using: str) -> Any:
    """The highest key in the table now (None for an empty table)."""
    key = as_key(walked)
    # ORDER BY key DESC LIMIT 1 rather than MAX(pk): a backward index scan on every backend,
    # and PostgreSQL has no max(uuid).
    queryset = key.order(table_queryset(key.model, using), descending=True)
    if key.single:
        return queryset.values_list(key.names[0], flat=True).first()
    return queryset.values_list(*key.names).first()


def count_range(walked: Walked, using: str, lower: Any, upper: Any) -> int:
    """Rows with ``lower < key <= upper``: the total a run walks."""
    if upper is None:
        return 0
    key = as_key(walked)
    return Window(lower, upper, 0, key).filter(table_queryset(key.model, using)).count()


def next_window(walked: Walked, using: str, cursor: Any, horizon: Any, size: int) -> Window | None:
    """The next window of at most *size* rows after *cursor*, or None when the walk is done."""
    if horizon is None:
        return None
    key = as_key(walked)
    keys = key.upto(table_queryset(key.model, using), horizon, using)
    if cursor is not None:
        keys = key.after(keys, cursor, using)
    keys = key.values(keys)
    # OFFSET here is bounded by one chunk and runs on the key's index: it finds the window's
    # upper bound without fetching the chunk's keys.
    bound = list(keys[size - 1 : size])
    if bound:
        return Window(cursor, _plain(bound[0]), size, key)
    # Fewer than `size` rows remain: the last window reaches the horizon.
    remaining = keys.count()
    if remaining == 0:
        return None
    return Window(cursor, horizon, remaining, key)


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def estimate_total(
    walked: Walked, using: str, horizon: Any, exact: bool, estimate_above: int
) -> tuple[int, bool]:
    """Rows up to *horizon* and whether that is exact: a COUNT when cheap or asked for, the
    vendor's table statistics above *estimate_above* rows, where a COUNT would scan the whole
    table."""
    if horizon is None:
        return 0, True
    key = as_key(walked)
    if not exact:
        connection = connections[using]
        estimate = vendor_for(connection).table_estimate(connection, key.model._meta.db_table)
        if estimate is not None and estimate > estimate_above:
            return estimate, False
    return count_range(key, using, None, horizon), True


# -- partitions of a parallel run --------------------------------------------------------------

#: A partition's key range: (exclusive lower bound or None for "from the first row", inclusive
#: upper bound).
KeyRange = tuple[Any, Any]


def _as_number(key: Key, value: Any, using: str) -> int | None:
    """*value* as an integer on a line where keys sort as numbers (integer keys, UUIDs where
    the database orders them so), or None when the key's type has no such line (strings,
    dates, keys of several columns...)."""
    if not key.single:
        return None
    field = value_field(key.fields[0])
    if isinstance(field, models.UUIDField):
        connection = connections[using]
        if not vendor_for(connection).uuids_sort_as_numbers(connection):
            return None
        return int(field.to_python(value).int)
    if isinstance(field, models.IntegerField):
        return int(value)
    return None


def _from_number(key: Key, number: int) -> Any:
    if isinstance(value_field(key.fields[0]), models.UUIDField):
        return uuid.UUID(int=number)
    return number


def _first(key: Key, using: str) -> Any:
    queryset = key.values(table_queryset(key.model, using))
    return _plain(queryset.first())


def plan_partitions(
    walked: Walked, using: str, horizon: Any, count: int, total: int
) -> list[KeyRange]:
    """Split the keys up to *horizon* into about *count* ranges, without scanning the table.

    Integer and UUID keys are split arithmetically between the first key and the horizon (two
    index lookups): gaps make some ranges lighter, which the workers even out by splitting a
    straggler's remainder (``split_point``). Other keys (strings, dates, several columns) are
    stepped through on the key's index, every ``total / count`` keys: an index-only walk, no
    row reads.
    """
    if horizon is None or count < 1:
        return []
    key = as_key(walked)
    first = _first(key, using)
    if first is None:
        return []
    low, high = _as_number(key, first, using), _as_number(key, horizon, using)
    bounds: list[Any] = []
    if low is not None and high is not None:
        low -= 1  # exclusive
        last = low
        for i in range(1, count):
            bound = low + (high - low) * i // count
            if last < bound < high:
                bounds.append(_from_number(key, bound))
                last = bound
    else:
        step = max(1, -(-total // count))
        cursor = None
        for _ in range(count - 1):
            window = next_window(key, using, cursor, horizon, step)
            if window is None or window.size < step:
                break
            bounds.append(window.upper)
            cursor = window.upper
    uppers = [b for b in bounds if b != horizon] + [horizon]
    lowers: list[Any] = [None, *uppers[:-1]]
    return list(zip(lowers, uppers, strict=True))


def split_point(walked: Walked, using: str, cursor: Any, upper: Any) -> Any:
    """A key halfway through the keys in ``(cursor, upper]``, or None when that range is
    too small to split. Arithmetic for integer and UUID keys; a count and one bounded step on
    the index otherwise."""
    key = as_key(walked)
    if cursor is None:
        first = _first(key, using)
        if first is None:
            return None
        low = _as_number(key, first, using)
        low = None if low is None else low - 1
    else:
        low = _as_number(key, cursor, using)
    high = _as_number(key, upper, using)
    if low is not None and high is not None:
        middle = (low + high) // 2
        return _from_number(key, middle) if low < middle < high else None
    remaining = count_range(key, using, cursor, upper)
    if remaining < 2:
        return None
    window = next_window(key, using, cursor, upper, remaining // 2)
    return None if window is None or window.upper == upper else window.upper


# -- walks: what the runner steps through ----------------------------------------------------


class Walk:
    """What a run steps through, one window after another: a table in key order
    (``TableWalk``) or the items of an input (``ItemsWalk``: a file, pages of an API...). The
    runner stores the cursor and the horizon as this walk's text (``dump`` / ``load``)."""

    #: Whether workers of a parallel run can split this walk into key ranges.
    partitionable = False
    #: The table key walked (None for an input).
    key: Key | None = None

    def horizon(self) -> Any:
        """Where the walk ends, fixed when a run starts (None: nothing to walk)."""
        raise NotImplementedError

    def total(self, horizon: Any, exact: bool, estimate_above: int) -> tuple[int, bool]:
        """How many rows (items) the walk covers, and whether that is exact."""
        raise NotImplementedError

    def next_window(self, cursor: Any, horizon: Any, size: int) -> Window | None:
        """The next window of at most *size* rows after *cursor*; None when done."""
        raise NotImplementedError

    def dump(self, value: Any) -> str:
        raise NotImplementedError

    def load(self, text: Any) -> Any:
        raise NotImplementedError

    def check_resume(self, stored_horizon: str | None) -> str | None:
        """Why a run that started with *stored_horizon* cannot go on over this walk now (a
        changed input file, say), or None."""
        return None


class TableWalk(Walk):
    """A table walked by keyset windows on *key*."""

    partitionable = True

    key: Key

    def __init__(self, key: Key, using: str) -> None:
        self.key = key
        self.using = using

    def horizon(self) -> Any:
        return find_horizon(self.key, self.using)

    def total(self, horizon: Any, exact: bool, estimate_above: int) -> tuple[int, bool]:
        return estimate_total(self.key, self.using, horizon, exact, estimate_above)

    def next_window(self, cursor: Any, horizon: Any, size: int) -> Window | None:
        return next_window(self.key, self.using, cursor, horizon, size)

    def dump(self, value: Any) -> str:
        return self.key.dump(value)

    def load(self, text: Any) -> Any:
        return self.key.load(text)
