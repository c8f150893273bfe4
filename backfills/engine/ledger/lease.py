"""A ``Lease``: this process's claim on one run, and every write its owner makes."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connections
from django.db.models import F, Field
from django.utils import timezone

from ...chunking import Window
from ...db.base import column as db_column
from ...exceptions import LeaseLost
from ...models import BackfillRun
from ..owners import Owner
from .runs import RELEASED, ControlRow, error_fields
from .transitions import check_transition

if TYPE_CHECKING:
    from .runs import Ledger

logger = logging.getLogger("backfills")

State = BackfillRun.State


class Lease:
    """This process's claim on one run. Every write says ``WHERE owner_token = <ours>``."""

    #: The checkpoint's columns: those a chunk adds to, and those it sets.
    ADDED = ("rows_scanned", "rows_processed", "rows_failed", "chunks_done", "time_running")
    ASSIGNED = ("cursor", "last_chunk_size", "last_chunk_seconds", "heartbeat_at", "updated_at")

    def __init__(self, ledger: Ledger, run: BackfillRun, owner: Owner, took_over: bool) -> None:
        self.ledger = ledger
        self.using = ledger.using
        self.run = run
        self.owner = owner
        self.took_over = took_over
        self._checkpoint_sql: str | None = None

    @property
    def position(self) -> BackfillRun:
        """Where the walk is: the run's own cursor and counters."""
        return self.run

    @property
    def label(self) -> str:
        return self.run.label

    def _update(self, **fields: Any) -> int:
        return self.ledger.runs.filter(pk=self.run.pk, owner_token=self.owner.token).update(
            **fields
        )

    def _remember(self, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            setattr(self.run, key, value)

    # -- while running -----------------------------------------------------------------------

    def checkpoint(
        self, window: Window, cursor: str, processed: int, failed: int, seconds: float
    ) -> dt.datetime:
        """Record a chunk inside its transaction and return the time it wrote; raise
        ``LeaseLost`` (rolling the chunk back as it leaves ``atomic()``) if another process
        took the run over.

        One statement whose SQL is built once per lease (the columns come in the same order
        every chunk): building the ORM's ``update()`` with its F() expressions took about
        twice the database's own time for this UPDATE, in every chunk."""
        now = timezone.now()
        added = (window.size, processed, failed, 1, seconds)
        assigned = (cursor, window.size, seconds, now, now)
        connection = connections[self.using]
        meta = BackfillRun._meta
        if self._checkpoint_sql is None:
            q = connection.ops.quote_name

            def column(name: str) -> str:
                field = meta.get_field(name)
                assert isinstance(field, Field)
                return q(db_column(field))

            sets = [f"{column(name)} = {column(name)} + %s" for name in self.ADDED]
            sets += [f"{column(name)} = %s" for name in self.ASSIGNED]
            self._checkpoint_sql = (
                f"UPDATE {q(meta.db_table)} SET {', '.join(sets)} "
                f"WHERE {column('id')} = %s AND {column('owner_token')} = %s"
            )
        params = [
            *added,
            *(
                meta.get_field(name).get_db_prep_save(value, connection)  # type: ignore[union-attr]
                for name, value in zip(self.ASSIGNED, assigned, strict=True)
            ),
            self.run.pk,
            self.owner.token,
        ]
        with connection.cursor() as db:
            db.execute(self._checkpoint_sql, params)
            updated = db.rowcount
        if updated != 1:
            raise LeaseLost(
                f"Run #{self.run.pk} of {self.run.label} was taken over by another process; "
                "this process stopped without committing its open chunk."
            )
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
        """Bring the in-memory run up to the checkpoint that just committed."""
        run = self.run
        run.rows_scanned += window.size
        run.rows_processed += processed
        run.rows_failed += failed
        run.chunks_done += 1
        run.time_running += seconds
        run.cursor = cursor
        run.last_chunk_size = window.size
        run.last_chunk_seconds = seconds
        run.heartbeat_at = run.updated_at = at

    def read_back(self) -> dict[str, Any] | None:
        """The checkpoint as committed, if a chunk committed since the run we hold (an error
        reported for a COMMIT does not mean the server rolled it back); else None."""
        row = (
            self.ledger.runs.filter(pk=self.run.pk, owner_token=self.owner.token)
            .values("chunks_done", "cursor", "rows_scanned", "rows_processed", "rows_failed")
            .first()
        )
        if row is None or row["chunks_done"] == self.run.chunks_done:
            return None
        return dict(row)

    def adopt(self) -> None:
        """Take the figures of a checkpoint found by ``read_back`` as ours (those columns
        only: settings another process changed meanwhile are for ``poll`` to pick up)."""
        self.run.refresh_from_db(using=self.using, fields=[*self.ADDED, *self.ASSIGNED])

    def heartbeat(self) -> None:
        """Tell other processes we are alive (between chunks, while sleeping or throttled)."""
        self._update(heartbeat_at=timezone.now())

    def throttled(self, reason: str) -> None:
        """Record why the run waits now."""
        self._update(throttle_reason=reason, heartbeat_at=timezone.now())
        self.run.throttle_reason = reason

    def unthrottled(self, waited: float) -> None:
        """Record the end of a wait on health checks and its length."""
        self._update(
            time_throttled=F("time_throttled") + waited,
            throttle_reason="",
            heartbeat_at=timezone.now(),
        )
        self.run.time_throttled += waited
        self.run.throttle_reason = ""

    def count_retry(self) -> None:
        """Count a retried chunk (best effort: the connection may be down)."""
        try:
            self._update(retries=F("retries") + 1)
            self.run.retries += 1
        except DatabaseError:
            logger.warning("could not count a retry of run #%s", self.run.pk)

    def poll(self) -> ControlRow:
        """Read the requests and settings other processes left on the run."""
        row = (
            self.ledger.runs.filter(pk=self.run.pk)
            .values(
                "requested_state", "settings_version", "batch_size", "target_chunk_time", "sleep"
            )
            .first()
        )
        if row is None:
            raise LeaseLost(f"Run #{self.run.pk} of {self.run.label} was deleted.")
        return ControlRow(**row)

    def apply_settings(self, control: ControlRow) -> dict[str, Any]:
        """Take changed settings from *control*; returns what changed."""
        changes = {
            key: getattr(control, key)
            for key in ("batch_size", "target_chunk_time", "sleep")
            if getattr(self.run, key) != getattr(control, key)
        }
        self._remember(changes)
        self.run.settings_version = control.settings_version
        return changes

    # -- letting go ------------------------------------------------------------------------

    def stop(self, state: str, reason: str, *, after_abort: bool = False) -> None:
        """Leave the run paused or cancelled and release it (best effort: if the database is
        gone, the lease expires and the run is taken over)."""
        check_transition(self.run, state)
        if after_abort:
            # The connection may have been interrupted mid-query; start from a clean one.
            connections[self.using].close()
        now = timezone.now()
        fields: dict[str, Any] = {
            "state": state,
            "status_reason": reason,
            "updated_at": now,
            "requested_state": "",
            "throttle_reason": "",
            **RELEASED,
        }
        if state in BackfillRun.FINAL:
            fields.update(active_key=None, finished_at=now)
        try:
            self._update(**fields)
        except DatabaseError:
            logger.exception(
                "could not record %s for run #%s; its lease will expire", state, self.run.pk
            )
            return
        self._remember(fields)

    def fail(self, exc: BaseException) -> None:
        """Record *exc* and leave the run failed, resumable from its last checkpoint."""
        connection = connections[self.using]
        if connection.connection is not None and not connection.is_usable():
            connection.close()
        fields: dict[str, Any] = {
            "state": State.FAILED,
            "status_reason": "failed",
            "updated_at": timezone.now(),
            "throttle_reason": "",
            **error_fields(exc),
            **RELEASED,
        }
        try:
            self._update(**fields)
        except DatabaseError:
            logger.exception("could not record the failure of run #%s", self.run.pk)
            return
        self._remember(fields)
        logger.error(
            "backfill %s run #%s failed: %s", self.run.label, self.run.pk, self.run.last_error
        )

    def complete(self) -> None:
        """Record the run completed: every window up to the horizon committed."""
        check_transition(self.run, State.COMPLETED)
        now = timezone.now()
        fields: dict[str, Any] = {
            "state": State.COMPLETED,
            # The walk is over: the total is now known exactly.
            "rows_total": self.run.rows_scanned,
            "rows_total_exact": True,
            "active_key": None,
            "finished_at": now,
            "updated_at": now,
            "status_reason": "",
            "requested_state": "",
            "throttle_reason": "",
            **RELEASED,
        }
        if self._update(**fields) != 1:
            raise LeaseLost(f"Run #{self.run.pk} was taken over by another process.")
        self._remember(fields)
