"""A ``Lease``: this process's claim on one run, and every write its owner makes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connections
from django.db.models import F
from django.utils import timezone

from ...exceptions import LeaseLost
from ...models import BackfillRun
from ..owners import Owner
from .checkpoints import Checkpoints
from .runs import RELEASED, SETTINGS_FIELDS, ControlRow, apply_settings, error_fields
from .transitions import check_transition

if TYPE_CHECKING:
    from .runs import Ledger

logger = logging.getLogger("backfills")

State = BackfillRun.State


class Lease(Checkpoints):
    """This process's claim on one run. Every write says ``WHERE owner_token = <ours>``."""

    FENCE = "owner_token"

    def __init__(self, ledger: Ledger, run: BackfillRun, owner: Owner, took_over: bool) -> None:
        self.ledger = ledger
        self.using = ledger.using
        self.run = run
        self.owner = owner
        self.took_over = took_over
        self._checkpoint_sql = None

    @property
    def position(self) -> BackfillRun:
        """Where the walk is: the run's own cursor and counters."""
        return self.run

    @property
    def fence(self) -> str:
        return self.owner.token

    @property
    def label(self) -> str:
        return self.run.label

    def lost(self) -> LeaseLost:
        return LeaseLost(
            f"Run #{self.run.pk} of {self.run.label} was taken over by another process; "
            "this process stopped without committing its open chunk."
        )

    def _update(self, **fields: Any) -> int:
        return self.mine().update(**fields)

    def _remember(self, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            setattr(self.run, key, value)

    # -- while running (the checkpoint itself: ``Checkpoints``) --------------------------------

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
            .values("requested_state", "settings_version", *SETTINGS_FIELDS)
            .first()
        )
        if row is None:
            raise LeaseLost(f"Run #{self.run.pk} of {self.run.label} was deleted.")
        return ControlRow(**row)

    def apply_settings(self, control: ControlRow) -> dict[str, Any]:
        """Take changed settings from *control*; returns what changed."""
        return apply_settings(self.run, control)

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
