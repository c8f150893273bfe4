"""What a chunk writes with its data: the checkpoint of a run (``Lease``) or of a partition
(``PartitionLease``), one prebuilt UPDATE fenced by the owner's token or the generation."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from django.db import connections, models
from django.db.models import Field, QuerySet
from django.utils import timezone

from ...chunking import Window
from ...db.base import column as db_column
from ...exceptions import LeaseLost


class Checkpoints:
    """The writes of a chunk on the row that records where a walk is (``position``).

    Subclasses say which row (``position``), which column fences it (``fence``: the owner's
    token of a run, the generation of a partition) and what losing it means (``lost``)."""

    #: The checkpoint's columns: those a chunk adds to, and those it sets.
    ADDED: ClassVar[tuple[str, ...]] = (
        "rows_scanned",
        "rows_processed",
        "rows_failed",
        "chunks_done",
        "time_running",
    )
    ASSIGNED: ClassVar[tuple[str, ...]] = (
        "cursor",
        "last_chunk_size",
        "last_chunk_seconds",
        "heartbeat_at",
        "updated_at",
    )
    #: The column every write of this lease is conditional on.
    FENCE: ClassVar[str]

    using: str
    _checkpoint_sql: str | None = None

    @property
    def position(self) -> Any:
        raise NotImplementedError

    @property
    def fence(self) -> Any:
        """Our value of the ``FENCE`` column."""
        raise NotImplementedError

    def lost(self) -> LeaseLost:
        raise NotImplementedError

    def mine(self) -> QuerySet[Any]:
        """The position's row, while it is still ours."""
        position: models.Model = self.position
        rows: QuerySet[Any] = type(position)._base_manager.using(self.using)
        return rows.filter(pk=position.pk, **{self.FENCE: self.fence})

    def checkpoint(
        self, window: Window, cursor: str, processed: int, failed: int, seconds: float
    ) -> dt.datetime:
        """Record a chunk inside its transaction and return the time it wrote; raise
        ``LeaseLost`` (rolling the chunk back as it leaves ``atomic()``) if another process
        took the walk over.

        One statement whose SQL is built once per lease (the columns come in the same order
        every chunk): building the ORM's ``update()`` with its F() expressions took about
        twice the database's own time for this UPDATE, in every chunk."""
        now = timezone.now()
        connection = connections[self.using]
        meta = type(self.position)._meta

        def field(name: str) -> Field[Any, Any]:
            found = meta.get_field(name)
            assert isinstance(found, Field)
            return found

        if self._checkpoint_sql is None:
            q = connection.ops.quote_name

            def column(name: str) -> str:
                return q(db_column(field(name)))

            sets = [f"{column(name)} = {column(name)} + %s" for name in self.ADDED]
            sets += [f"{column(name)} = %s" for name in self.ASSIGNED]
            self._checkpoint_sql = (
                f"UPDATE {q(meta.db_table)} SET {', '.join(sets)} "
                f"WHERE {column('id')} = %s AND {column(self.FENCE)} = %s"
            )
        added = (window.size, processed, failed, 1, seconds)
        assigned = (cursor, window.size, seconds, now, now)
        params = [
            *added,
            *(
                field(name).get_db_prep_save(value, connection)
                for name, value in zip(self.ASSIGNED, assigned, strict=True)
            ),
            self.position.pk,
            self.fence,
        ]
        with connection.cursor() as db:
            db.execute(self._checkpoint_sql, params)
            updated = db.rowcount
        if updated != 1:
            raise self.lost()
        return now

    def checkpointed(
        self,
        window: Window,
        cursor: str,
        processed: int,
        failed: int,
        seconds: float,
        at: dt.datetime,
    ) -> None:
        """Bring the in-memory position up to the checkpoint that just committed."""
        position = self.position
        position.rows_scanned += window.size
        position.rows_processed += processed
        position.rows_failed += failed
        position.chunks_done += 1
        position.time_running += seconds
        position.cursor = cursor
        position.last_chunk_size = window.size
        position.last_chunk_seconds = seconds
        position.heartbeat_at = position.updated_at = at

    def read_back(self) -> dict[str, Any] | None:
        """The checkpoint as committed, if a chunk committed since the position we hold (an
        error reported for a COMMIT does not mean the server rolled it back); else None."""
        row = (
            self.mine()
            .values("chunks_done", "cursor", "rows_scanned", "rows_processed", "rows_failed")
            .first()
        )
        if row is None or row["chunks_done"] == self.position.chunks_done:
            return None
        return dict(row)

    def adopt(self) -> None:
        """Take the figures of a checkpoint found by ``read_back`` as ours (those columns
        only: settings another process changed meanwhile are for the polls to pick up)."""
        position: models.Model = self.position
        position.refresh_from_db(using=self.using, fields=[*self.ADDED, *self.ASSIGNED])
