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
        pk: Field[Any, Any],
        fields: Sequence[Field[Any, Any]],
        values: list[list[Any]],
    ) -> Statement:
        q = connection.ops.quote_name
        first = "SELECT " + ", ".join(
            ["%s AS " + q("pk"), *(f"%s AS {q(column(f))}" for f in fields)]
        )
        other = "SELECT " + ", ".join(["%s"] * (len(fields) + 1))
        union = " UNION ALL ".join([first] + [other] * (len(values) - 1))
        assignments = ", ".join(f"t.{q(column(f))} = v.{q(column(f))}" for f in fields)
        sql = (
            f"UPDATE {q(table)} AS t INNER JOIN ({union}) AS v ON t.{q(column(pk))} = v.{q('pk')} "
            f"SET {assignments} WHERE 1 = 1"
        )
        return sql, [value for row_values in values for value in row_values]
