"""SQLite: ``UPDATE ... FROM (VALUES ...)`` writes (3.33+) and the gap after each chunk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import Statement, Vendor, column

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import Field


class SQLite(Vendor):
    # One writer at a time, and a shared-cache in-memory database locks tables on read: no
    # second connection reads ahead. Lock waits are bounded by the connection's `timeout`.
    supports_prefetch = False
    needs_gap_between_chunks = True
    single_writer = True
    writes_in_one_statement = True
    plans_row_values = True

    def key_range(self, sql: str) -> str:
        # Without ANALYZE statistics SQLite takes `slug IS NULL` on a slug index as more
        # selective than a row value on the primary key, and scanned every unfilled row of a
        # composite-key table for each chunk (timed at 40 ms a 1,000-row chunk at 200,000 rows,
        # growing with the table; 0.45 ms with this). likelihood() says the bound is selective.
        return f"likelihood({sql}, 0.001)"

    def gap_after_chunk(self, seconds: float, share: float) -> float:
        # SQLite has one write lock, and a writer waiting on its busy timeout polls only every
        # ~100 ms: without a gap our next chunk would always win it and starve every other
        # writer (the application, `backfill pause`/`set`).
        return min(0.1, seconds * share)

    def update_from_values(
        self,
        connection: BaseDatabaseWrapper,
        table: str,
        keys: Sequence[Field[Any, Any]],
        fields: Sequence[Field[Any, Any]],
        values: list[list[Any]],
    ) -> Statement:
        q = connection.ops.quote_name
        row = "(" + ", ".join(["%s"] * (len(keys) + len(fields))) + ")"
        first = len(keys) + 1
        assignments = ", ".join(
            f"{q(column(f))} = v.column{i + first}" for i, f in enumerate(fields)
        )
        matches = " AND ".join(
            f"{q(table)}.{q(column(f))} = v.column{i + 1}" for i, f in enumerate(keys)
        )
        sql = (
            f"UPDATE {q(table)} SET {assignments} FROM (VALUES {', '.join([row] * len(values))}) "
            f"AS v WHERE {matches}"
        )
        return sql, [value for row_values in values for value in row_values]
