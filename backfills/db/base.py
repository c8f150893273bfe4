"""The interface every vendor module implements; the defaults suit an unknown backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.db.models import Field

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

#: ``(sql, params)`` of one statement.
Statement = tuple[str, list[Any]]


class Vendor:
    """What differs between databases, for the engine. One instance per vendor."""

    #: Whether a second connection may read the next chunk while the first writes
    #: (``Backfill.prefetch``): needs concurrent readers and writers.
    supports_prefetch = False
    #: Whether a chunk's single write lock starves other writers without a gap after it.
    needs_gap_between_chunks = False
    #: Whether the database has one writer at a time (no point in parallel workers).
    single_writer = False
    #: Whether ``update_from_values`` writes a chunk's rows in one statement.
    writes_in_one_statement = False
    #: Whether a row value comparison ``(a, b) > (x, y)`` is planned as a range on an index
    #: over ``(a, b)``; where not, keys of several columns are compared column by column.
    plans_row_values = False

    def key_range(self, sql: str) -> str:
        """A window's row-value bound, as the planner should weigh it: selective (a window
        is a few thousand rows of the table)."""
        return sql

    def apply_chunk_timeouts(
        self, connection: BaseDatabaseWrapper, lock: float | None, statement: float | None
    ) -> None:
        """Bound how long the open chunk may wait for locks or run one statement."""

    #: Whether ``lock_waits`` can see who waits on a session's locks (the blocking guard).
    sees_lock_waits = False

    def backend_id(self, connection: BaseDatabaseWrapper) -> int | None:
        """The server's id of *connection*'s session (a pid, a thread id), read off the client
        connection without a query; None when not connected."""
        return None

    #: The shortest useful interval between two ``lock_waits`` looks (seconds).
    lock_waits_min_interval = 0.0
    #: Whether one looker at a time sees fresh lock waits (several would starve each other).
    lock_waits_one_looker = False

    def lock_waits(self, probe: BaseDatabaseWrapper, backend: int) -> dict[int, float]:
        """The sessions waiting on a lock *backend* holds, asked on another connection,
        *probe*: each waiter's id and a lower bound of the seconds it has waited so far."""
        return {}

    def release_locks(self, probe: BaseDatabaseWrapper, backend: int, *, force: bool) -> None:
        """Make *backend*'s transaction give up its locks, from *probe*: cancel its running
        statement (the transaction rolls back when the caller sees the error) or, when it is
        between statements or *force*, end its session (the server rolls it back)."""

    def table_estimate(self, connection: BaseDatabaseWrapper, table: str) -> int | None:
        """The planner's row estimate for *table*, or None where there is none."""
        return None

    def primary_replica_lag(self, connection: BaseDatabaseWrapper) -> float | None:
        """On a primary: the worst lag of its replicas in seconds (None: none reported)."""
        return None

    def replica_delay(self, connection: BaseDatabaseWrapper) -> float | None:
        """On a replica: seconds it lags its primary (None: not replicating)."""
        return None

    def update_from_values(
        self,
        connection: BaseDatabaseWrapper,
        table: str,
        keys: Sequence[Field[Any, Any]],
        fields: Sequence[Field[Any, Any]],
        values: list[list[Any]],
    ) -> Statement:
        """One ``UPDATE`` joining *table* to the rows *values* (``[key values..., field
        values...]``) on the primary key's columns *keys*, setting *fields* (only where
        ``writes_in_one_statement``; elsewhere Django's ``bulk_update`` writes)."""
        raise NotImplementedError(f"{type(self).__name__} has no one-statement update.")

    def rows_per_update(self, connection: BaseDatabaseWrapper, columns: int, rows: int) -> int:
        """How many rows of *columns* values one ``update_from_values`` statement takes."""
        limit = min(MAX_PARAMS, connection.features.max_query_params or MAX_PARAMS)
        return max(1, limit // columns)

    def update_pk_column(self, connection: BaseDatabaseWrapper, table: str, column: str) -> str:
        """How ``update_from_values``'s statement names the table's primary key column."""
        q = connection.ops.quote_name
        return f"{q(table)}.{q(column)}"

    def uuids_sort_as_numbers(self, connection: BaseDatabaseWrapper) -> bool:
        """Whether the database orders UUID keys as their 128-bit numbers (so partitions can
        be planned arithmetically); True for native uuid types and 32-character hex text."""
        return True

    def gap_after_chunk(self, seconds: float, share: float) -> float:
        """Seconds to pause after a chunk of *seconds*, given the SQLITE_GAP *share*."""
        return 0.0


# Bind parameters per statement: psycopg's protocol limit; SQLite's default is 32766.
MAX_PARAMS = 32_000


def column(field: Field[Any, Any]) -> str:
    """*field*'s column name (concrete fields always have one)."""
    assert field.column is not None, field
    return field.column


def fetch_float(connection: BaseDatabaseWrapper, sql: str) -> float | None:
    """The first column of the first row of *sql* as a float (None for no row or NULL)."""
    with connection.cursor() as cursor:
        cursor.execute(sql)
        row = cursor.fetchone()
    return None if row is None or row[0] is None else float(row[0])
