"""MySQL and MariaDB: session timeouts, ``information_schema`` estimates, replica status, and
``UPDATE ... JOIN (SELECT ... UNION ALL ...)`` writes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError

from .base import Statement, Vendor, column

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import Field


class MySQL(Vendor):
    supports_prefetch = True
    writes_in_one_statement = True
    # EXPLAIN on MariaDB 10.11: `(a, b) > (x, y)` is a full index scan ("index", no possible
    # keys), `a > x OR (a = x AND b > y)` a range on both columns.
    plans_row_values = False

    def apply_chunk_timeouts(
        self, connection: BaseDatabaseWrapper, lock: float | None, statement: float | None
    ) -> None:
        # Session variables: set once per physical connection (a reconnect starts afresh).
        raw = connection.connection
        if getattr(raw, "_backfills_timeouts", None) == (lock, statement):
            return
        parts = []
        if lock is not None:
            parts.append(f"innodb_lock_wait_timeout = {max(1, math.ceil(float(lock)))}")
        if statement is not None:
            if getattr(connection, "mysql_is_mariadb", False):
                parts.append(f"max_statement_time = {float(statement):.3f}")
            else:
                parts.append(f"max_execution_time = {int(float(statement) * 1000)}")
        if parts:
            with connection.cursor() as cursor:
                cursor.execute("SET SESSION " + ", ".join(parts))
        raw._backfills_timeouts = (lock, statement)

    sees_lock_waits = True

    def backend_id(self, connection: BaseDatabaseWrapper) -> int | None:
        raw = connection.connection
        return None if raw is None else int(raw.thread_id())

    # InnoDB refreshes its information_schema copy of transactions and lock waits only when
    # it was not read for 0.1 s: looking more often would keep reading a stale copy, and so
    # would several lookers at once (the workers of a parallel run).
    lock_waits_min_interval = 0.15
    lock_waits_one_looker = True

    def lock_waits(self, probe: BaseDatabaseWrapper, backend: int) -> dict[int, float]:
        # MariaDB (and MySQL 5.7) keep lock waits in information_schema; MySQL 8 moved them to
        # performance_schema.data_lock_waits. trx_wait_started has whole seconds: one second
        # less than its difference to now is a lower bound of the wait.
        if getattr(probe, "mysql_is_mariadb", False) or getattr(probe, "mysql_version", (8,)) < (
            8,
        ):
            waits = (
                "information_schema.INNODB_LOCK_WAITS w "
                "JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id "
                "JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id"
            )
        else:
            waits = (
                "performance_schema.data_lock_waits w "
                "JOIN information_schema.INNODB_TRX b "
                "ON b.trx_id = w.BLOCKING_ENGINE_TRANSACTION_ID "
                "JOIN information_schema.INNODB_TRX r "
                "ON r.trx_id = w.REQUESTING_ENGINE_TRANSACTION_ID"
            )
        with probe.cursor() as cursor:
            cursor.execute(
                "SELECT r.trx_mysql_thread_id, "
                "TIMESTAMPDIFF(MICROSECOND, r.trx_wait_started, NOW(6)) / 1e6 - 1 "
                f"FROM {waits} WHERE b.trx_mysql_thread_id = %s",
                [backend],
            )
            return {
                int(waiter): max(0.0, float(waited or 0.0)) for waiter, waited in cursor.fetchall()
            }

    def release_locks(self, probe: BaseDatabaseWrapper, backend: int, *, force: bool) -> None:
        # KILL QUERY only stops a running statement; a session between two statements of its
        # transaction ("Sleep") keeps its locks until its connection is killed.
        with probe.cursor() as cursor:
            cursor.execute(
                "SELECT command FROM information_schema.PROCESSLIST WHERE id = %s", [backend]
            )
            row = cursor.fetchone()
            if row is None:
                return
            idle = str(row[0]).lower() == "sleep"
            cursor.execute(f"KILL {'CONNECTION' if idle or force else 'QUERY'} {int(backend)}")

    def table_estimate(self, connection: BaseDatabaseWrapper, table: str) -> int | None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT table_rows FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = %s",
                [table],
            )
            row = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None

    def replica_delay(self, connection: BaseDatabaseWrapper) -> float | None:
        for statement in ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS"):
            try:
                with connection.cursor() as cursor:
                    cursor.execute(statement)
                    row = cursor.fetchone()
                    names = [column[0] for column in cursor.description or ()]
            except DatabaseError:
                continue
            if not row:
                return None
            value = dict(zip(names, row, strict=False)).get("Seconds_Behind_Master")
            return None if value is None else float(value)
        return None

    def update_pk_column(self, connection: BaseDatabaseWrapper, table: str, column: str) -> str:
        return f"t.{connection.ops.quote_name(column)}"

    def update_from_values(
        self,
        connection: BaseDatabaseWrapper,
        table: str,
        keys: Sequence[Field[Any, Any]],
        fields: Sequence[Field[Any, Any]],
        values: list[list[Any]],
    ) -> Statement:
        q = connection.ops.quote_name
        assignments = ", ".join(f"t.{q(column(f))} = v.{q(column(f))}" for f in fields)
        key_names = [q(f"pk{i}") for i in range(len(keys))]
        names = [*key_names, *(q(column(f)) for f in fields)]
        derived = self._union(connection, names, values)
        params = [value for row_values in values for value in row_values]
        matches = " AND ".join(
            f"t.{q(column(f))} = v.{name}" for f, name in zip(keys, key_names, strict=True)
        )
        sql = (
            f"UPDATE {q(table)} AS t INNER JOIN {derived} AS v "
            f"ON {matches} SET {assignments} WHERE 1 = 1"
        )
        return sql, params

    def _union(
        self, connection: BaseDatabaseWrapper, names: list[str], values: list[list[Any]]
    ) -> str:
        # The first row is a SELECT that names the columns; on MariaDB 10.3.3+ the others
        # follow as one table value constructor, `VALUES (...), (...)`, elsewhere as one
        # SELECT each. Each SELECT is a query block of its own for the server to parse and
        # plan: at 5,000 rows a statement the UNION of SELECTs took 1.7x as long as VALUES
        # (MariaDB 10.11 on the test machine), and a row backfill ran 15% faster with VALUES
        # (median of 3 interleaved pairs). JSON_TABLE over one JSON parameter was 1.2-1.5x
        # faster still on a bare table but no faster than VALUES in the row backfill, where
        # the unique index being written dominates: not worth its type mapping.
        first = "SELECT " + ", ".join(f"%s AS {name}" for name in names)
        placeholders = ", ".join(["%s"] * len(names))
        rest = len(values) - 1
        if rest and self.is_mariadb(connection, 10, 3, 3):
            return f"({first} UNION ALL VALUES " + ", ".join([f"({placeholders})"] * rest) + ")"
        return "(" + " UNION ALL ".join([first] + [f"SELECT {placeholders}"] * rest) + ")"

    def uuids_sort_as_numbers(self, connection: BaseDatabaseWrapper) -> bool:
        # MariaDB 10.7+'s native UUID type (Django uses it there) stores and orders the
        # groups swapped, for time-based UUIDs; CHAR(32) hex elsewhere sorts as numbers.
        return not self.is_mariadb(connection, 10, 7)

    def is_mariadb(self, connection: BaseDatabaseWrapper, *version: int) -> bool:
        """Whether *connection* is to MariaDB of at least *version*."""
        if not getattr(connection, "mysql_is_mariadb", False):
            return False
        return tuple(connection.mysql_version) >= version  # type: ignore[attr-defined]
