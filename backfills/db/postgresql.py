"""PostgreSQL: ``SET LOCAL`` timeouts, ``pg_class`` estimates, ``pg_stat_replication`` lag,
and ``UPDATE ... FROM unnest(arrays)`` writes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import Statement, Vendor, column, fetch_float

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import Field


class PostgreSQL(Vendor):
    supports_prefetch = True
    writes_in_one_statement = True
    plans_row_values = True

    def apply_chunk_timeouts(
        self, connection: BaseDatabaseWrapper, lock: float | None, statement: float | None
    ) -> None:
        # set_config(..., true) is SET LOCAL: scoped to the chunk's transaction, gone at commit
        # or rollback. Both in one statement: one round trip per chunk.
        settings = [
            (name, f"{int(float(value) * 1000)}ms")
            for name, value in (("lock_timeout", lock), ("statement_timeout", statement))
            if value is not None
        ]
        if settings:
            calls = ", ".join("set_config(%s, %s, true)" for _ in settings)
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {calls}", [v for pair in settings for v in pair])

    sees_lock_waits = True

    def backend_id(self, connection: BaseDatabaseWrapper) -> int | None:
        raw = connection.connection
        return None if raw is None else int(raw.info.backend_pid)

    def lock_waits(self, probe: BaseDatabaseWrapper, backend: int) -> dict[int, float]:
        # pg_locks.waitstart (PostgreSQL 14+): when each waiting lock request began to wait.
        with probe.cursor() as cursor:
            cursor.execute(
                "SELECT l.pid, EXTRACT(EPOCH FROM clock_timestamp() - MIN(l.waitstart)) "
                "FROM pg_locks l WHERE NOT l.granted AND %s = ANY(pg_blocking_pids(l.pid)) "
                "GROUP BY l.pid",
                [backend],
            )
            return {int(pid): float(waited or 0.0) for pid, waited in cursor.fetchall()}

    def release_locks(self, probe: BaseDatabaseWrapper, backend: int, *, force: bool) -> None:
        # A cancel only stops a running statement: a session idle in its transaction (the
        # backfill's Python between two statements) keeps its locks unless it is ended.
        with probe.cursor() as cursor:
            cursor.execute(
                "SELECT CASE WHEN state = 'active' AND NOT %s THEN pg_cancel_backend(pid) "
                "ELSE pg_terminate_backend(pid) END FROM pg_stat_activity WHERE pid = %s",
                [force, backend],
            )

    def table_estimate(self, connection: BaseDatabaseWrapper, table: str) -> int | None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                [connection.ops.quote_name(table)],
            )
            row = cursor.fetchone()
        # reltuples is -1 for a table never analyzed.
        return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None

    def primary_replica_lag(self, connection: BaseDatabaseWrapper) -> float | None:
        return fetch_float(
            connection, "SELECT max(extract(epoch FROM replay_lag)) FROM pg_stat_replication"
        )

    def replica_delay(self, connection: BaseDatabaseWrapper) -> float | None:
        # The time since the last replayed commit is the delay only while received WAL waits
        # to be replayed: a caught-up replica of a primary that has committed nothing for a
        # minute is not a minute behind. Without a WAL receiver (primary unreachable) nothing
        # new is received either, so that time is all there is to go by.
        return fetch_float(
            connection,
            "SELECT CASE WHEN NOT pg_is_in_recovery() THEN NULL "
            "WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() "
            "AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN 0 "
            "ELSE COALESCE(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END",
        )

    def rows_per_update(self, connection: BaseDatabaseWrapper, columns: int, rows: int) -> int:
        return max(1, rows)  # arrays: one parameter per column, whatever the row count

    def update_from_values(
        self,
        connection: BaseDatabaseWrapper,
        table: str,
        keys: Sequence[Field[Any, Any]],
        fields: Sequence[Field[Any, Any]],
        values: list[list[Any]],
    ) -> Statement:
        # One array per column, unnested into rows: a short statement whatever the chunk size
        # (thousands of %s placeholders cost more to parse client-side than the UPDATE itself).
        q = connection.ops.quote_name
        casts = [array_cast(f, connection) for f in (*keys, *fields)]
        arrays = ", ".join(f"%s::{cast}[]" for cast in casts)
        key_names = [q(f"pk{i}") for i in range(len(keys))]
        names = ", ".join([*key_names, *(q(column(f)) for f in fields)])
        assignments = ", ".join(f"{q(column(f))} = v.{q(column(f))}" for f in fields)
        matches = " AND ".join(
            f"{q(table)}.{q(column(f))} = v.{name}" for f, name in zip(keys, key_names, strict=True)
        )
        sql = (
            f"UPDATE {q(table)} SET {assignments} FROM unnest({arrays}) AS v({names}) "
            f"WHERE {matches}"
        )
        return sql, [pg_array(list(column)) for column in zip(*values, strict=True)]


def array_cast(field: Field[Any, Any], connection: BaseDatabaseWrapper) -> str:
    """The element type for *field*'s array, without a character length: an explicit cast to
    ``varchar(n)`` silently truncates, while assigning text to the column raises on an
    over-long value, as ``Model.save()`` would."""
    cast = field.cast_db_type(connection) or "text"
    return re.sub(r"^(varchar|character varying|char|character)\(\d+\)$", "text", cast)


def pg_array(column: list[Any]) -> Any:
    """A column as a PostgreSQL array literal (text, cast by the statement) when every value is
    an integer, or every one a string or None, built with ``str.join`` instead of psycopg's
    per-element dumping (that was a tenth of a row backfill's time). Other columns go as a
    list, for psycopg to adapt."""
    types = set(map(type, column))
    if all(issubclass(kind, int) and kind is not bool for kind in types):
        # int.__repr__: the digits, also for psycopg's Int4/Int8 and IntEnum members.
        return "{" + ",".join(map(int.__repr__, column)) + "}"
    if all(kind is type(None) or issubclass(kind, str) for kind in types):
        # Inside double quotes only backslash and the quote itself are special; an unquoted
        # NULL is SQL NULL, a quoted "NULL" the four letters.
        return (
            "{"
            + ",".join(
                "NULL"
                if value is None
                else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
                for value in column
            )
            + "}"
        )
    return column
