"""The ledger: the one module that writes ``BackfillRun`` rows.

Like Django's ``MigrationRecorder`` beside the ``MigrationExecutor``, the runner does the work
and the ledger records it; the command, the control API (and, next, the admin) only call the
ledger's methods. Every state change is checked against ``TRANSITIONS`` and made with a
conditional ``UPDATE`` (on the states it may come from, and on the owner's token where an
owner writes), so two processes racing for one run cannot both win.

A ``Lease`` is this process's claim on a run: its writes (checkpoint, heartbeat, stop, fail,
complete) all say ``WHERE owner_token = <ours>``, so a process that lost its lease cannot
commit a chunk (the fencing token of DESIGN.md's invariant 3).
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import F, Field, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..chunking import Window
from ..db.base import column as db_column
from ..exceptions import BackfillError, LeaseLost, RunNotResumable, RunOwned
from ..models import BackfillRun
from .lease import Owner, describe_owner, owner_alive, owner_gone_here, owner_pid_alive_here

logger = logging.getLogger("backfills")

State = BackfillRun.State

#: Every allowed change of ``BackfillRun.state``, and why each edge exists.
TRANSITIONS: dict[str, frozenset[str]] = {
    State.PENDING: frozenset(
        {
            State.RUNNING,  # claimed by its first owner
            State.PAUSED,  # `pause` before any process claimed it
            State.CANCELLED,  # `cancel`, or superseded by `run --restart`
        }
    ),
    State.RUNNING: frozenset(
        {
            State.RUNNING,  # taken over from an owner that is gone
            State.PAUSED,  # signal, `pause`, partial run, critical health; or `pause` of a
            # run whose owner is gone
            State.FAILED,  # a chunk raised a non-transient error, or post_check failed
            State.CANCELLED,  # `cancel`, or superseded by `run --restart`
            State.COMPLETED,  # the last window committed and post_check passed
        }
    ),
    State.PAUSED: frozenset(
        {
            State.RUNNING,  # resumed
            State.CANCELLED,  # `cancel`, or superseded by `run --restart`
        }
    ),
    State.FAILED: frozenset(
        {
            State.RUNNING,  # resumed after the cause was fixed
            State.PAUSED,  # `pause`: keep it from being resumed by accident
            State.CANCELLED,  # given up, or superseded by `run --restart`
        }
    ),
    State.COMPLETED: frozenset(),  # final: a new run needs `run --restart`
    State.CANCELLED: frozenset(),  # final
}


class InvalidTransition(BackfillError):
    """A run cannot go from its state to the one asked for."""


def sources(target: str) -> frozenset[str]:
    """The states from which a run may change to *target*."""
    return frozenset(state for state, nexts in TRANSITIONS.items() if target in nexts)


def check_transition(run: BackfillRun, target: str) -> None:
    """Raise ``InvalidTransition`` unless *run* may change from its state to *target*."""
    if target not in TRANSITIONS.get(run.state, frozenset()):
        raise InvalidTransition(
            f"Run #{run.pk} of {run.label} is {run.state}; it cannot be {target}."
        )


#: The columns that say who owns a run, cleared together whenever an owner lets go.
RELEASED: dict[str, Any] = {
    "owner_token": None,
    "owner_pid": None,
    "owner_host": "",
    "owned_since": None,
}


def error_fields(exc: BaseException) -> dict[str, str]:
    """How an error is recorded on a run or a quarantined row."""
    return {
        "error_class": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "error_message": str(exc),
        "error_backtrace": "".join(traceback.format_exception(exc)),
    }


@dataclass(frozen=True)
class ControlRow:
    """What an owner reads when it polls its run: requests and settings made elsewhere."""

    requested_state: str
    settings_version: int
    batch_size: int | None
    target_chunk_time: float | None
    sleep: float


@dataclass(frozen=True)
class RunSettings:
    """A run's changeable settings: a fixed chunk size (None: adaptive toward
    ``target_chunk_time``) and the sleep between chunks."""

    batch_size: int | None
    target_chunk_time: float | None
    sleep: float


class Ledger:
    """Reads and writes of the run table on one database."""

    #: What ``claim()`` returns; a benchmark may pass a subclass that times the checkpoint.
    lease_class: type[Lease]

    def __init__(self, using: str, lease_seconds: float) -> None:
        self.using = using
        self.lease_seconds = lease_seconds

    @property
    def runs(self) -> QuerySet[BackfillRun]:
        return BackfillRun.objects.using(self.using)

    # -- reads -----------------------------------------------------------------------------

    def latest(self, name: str, reverse: bool | None = False) -> BackfillRun | None:
        """The newest run of *name* in one direction (either when *reverse* is None)."""
        runs = self.runs.filter(name=name)
        if reverse is not None:
            runs = runs.filter(reverse=reverse)
        return runs.order_by("-id").first()

    def active(self, name: str, reverse: bool | None = None) -> BackfillRun | None:
        """The unfinished run of *name*: of the given direction, or of either (newest first)."""
        keys = [name, f"{name}:reverse"] if reverse is None else [active_key(name, reverse)]
        return self.runs.filter(active_key__in=keys).order_by("-id").first()

    def latest_runs(self, names: list[str] | None = None) -> dict[str, BackfillRun]:
        """The newest run of each backfill and of its reverse, by ``run.label``."""
        runs = self.runs.order_by("-id")
        if names:
            runs = runs.filter(name__in=names)
        latest: dict[str, BackfillRun] = {}
        for run in runs.iterator():
            latest.setdefault(run.label, run)
        return latest

    def owner_alive(self, run: BackfillRun) -> bool:
        """Whether a live process holds *run*'s lease (see ``lease.owner_alive``)."""
        return owner_alive(run, self.lease_seconds)

    def read(self, run: BackfillRun) -> BackfillRun:
        """*run* as the table has it now."""
        run.refresh_from_db(using=self.using)
        return run

    # -- creating and claiming --------------------------------------------------------------

    def create(self, run: BackfillRun) -> tuple[BackfillRun, bool]:
        """Insert the new *run*, or return the live run another process inserted first."""
        try:
            with transaction.atomic(using=self.using):
                run.save(using=self.using)
        except IntegrityError:
            existing = self.runs.filter(active_key=run.active_key).first()
            if existing is None:
                raise
            return existing, False
        return run, True

    def supersede(self, run: BackfillRun, reason: str) -> None:
        """Cancel *run* so that a new one can start (``run --restart``), unless it changed
        since we read it (a process claimed it meanwhile)."""
        check_transition(run, State.CANCELLED)
        now = timezone.now()
        done = self.runs.filter(
            pk=run.pk, owner_token=run.owner_token, state__in=sources(State.CANCELLED)
        ).update(
            state=State.CANCELLED,
            active_key=None,
            finished_at=now,
            updated_at=now,
            status_reason=reason,
            requested_state="",
            **RELEASED,
        )
        if not done:
            raise RunOwned(f"Run #{run.pk} of {run.label} changed while restarting; retry.")

    def claim(
        self, run: BackfillRun, owner: Owner, settings: RunSettings, *, force: bool = False
    ) -> Lease:
        """Take *run*'s lease with one conditional UPDATE, or raise ``RunOwned`` if a live
        process holds it. *force* takes over an owner whose heartbeat is still fresh, but
        never one whose pid is alive on this host."""
        now = timezone.now()
        stale_before = now - timedelta(seconds=self.lease_seconds)
        free = (
            Q(owner_token__isnull=True)
            | Q(heartbeat_at__isnull=True)
            | Q(heartbeat_at__lt=stale_before)
        )
        took_over = bool(run.owner_token)
        if force and self.owner_alive(run) and owner_pid_alive_here(run):
            raise self.owned(run, forced=True)
        if run.owner_token and (force or owner_gone_here(run)):
            # The owner is known dead (same host, no such pid) or the user says so: take over
            # the lease we saw, still conditionally, so a concurrent claimer cannot also win.
            free |= Q(owner_token=run.owner_token)
        elif run.owner_token and run.heartbeat_at and run.heartbeat_at >= stale_before:
            # A live owner: refuse on what we read instead of queueing behind its chunk for
            # the write lock (SQLite) or the row lock (the checkpoint UPDATE).
            raise self.owned(run)
        if run.state not in sources(State.RUNNING):
            raise RunNotResumable(f"Run #{run.pk} of {run.label} is already {run.state}.")
        claimed = (
            self.runs.filter(pk=run.pk, state__in=sources(State.RUNNING))
            .filter(free)
            .update(
                owner_token=owner.token,
                owner_host=owner.host,
                owner_pid=owner.pid,
                owned_since=now,
                heartbeat_at=now,
                updated_at=now,
                state=State.RUNNING,
                started_at=Coalesce(F("started_at"), now),
                requested_state="",
                status_reason="",
                error_class="",
                error_message="",
                error_backtrace="",
                batch_size=settings.batch_size,
                target_chunk_time=settings.target_chunk_time,
                sleep=settings.sleep,
                throttle_reason="",
            )
        )
        self.read(run)
        if claimed != 1 or run.owner_token != owner.token:
            if run.state in BackfillRun.FINAL:
                raise RunNotResumable(f"Run #{run.pk} of {run.label} is already {run.state}.")
            raise self.owned(run)
        return self.lease_class(self, run, owner, took_over=took_over)

    def owned(self, run: BackfillRun, *, forced: bool = False) -> RunOwned:
        """The error for a run a live process owns (*forced*: although --force was given)."""
        if forced:
            return RunOwned(
                f"Run #{run.pk} of {run.label} is owned by a live process on this host "
                f"({describe_owner(run)}); --force only takes over owners that are gone. Stop "
                f"it with `backfill pause {run.name}` (or end pid {run.owner_pid}) first."
            )
        return RunOwned(
            f"Run #{run.pk} of {run.label} is owned by another process: {describe_owner(run)}. "
            f"It is taken over automatically once its heartbeat is older than "
            f"{self.lease_seconds:g}s; pass --force if you know that process is dead."
        )

    # -- control requests, from any process -------------------------------------------------

    def request(self, run: BackfillRun, state: str) -> bool:
        """Ask *run*'s live owner to pause or cancel at its next chunk boundary; False if the
        run finished or changed hands meanwhile (nobody would act on the request)."""
        check_transition(run, state)
        return bool(
            self.runs.filter(
                pk=run.pk, owner_token=run.owner_token, active_key=run.active_key
            ).update(requested_state=state)
        )

    def withdraw(self, run: BackfillRun) -> bool:
        """Take back a pending pause request; False if the owner already acted on it."""
        return bool(
            self.runs.filter(
                pk=run.pk, owner_token=run.owner_token, requested_state=State.PAUSED
            ).update(requested_state="")
        )

    def stop_unowned(self, run: BackfillRun, state: str, reason: str) -> bool:
        """Pause or cancel *run* directly, as no live process owns it; False if it changed
        since we read it (a process claimed it meanwhile)."""
        check_transition(run, state)
        now = timezone.now()
        fields: dict[str, Any] = {
            "state": state,
            "status_reason": reason,
            "requested_state": "",
            "updated_at": now,
            "throttle_reason": "",
            **RELEASED,
        }
        if state in BackfillRun.FINAL:
            fields.update(active_key=None, finished_at=now)
        done = self.runs.filter(
            pk=run.pk, owner_token=run.owner_token, state__in=sources(state)
        ).update(**fields)
        return bool(done)

    def change_settings(self, run: BackfillRun, changes: dict[str, Any]) -> bool:
        """Change *run*'s batch size, target chunk time or sleep; its owner applies them at
        its next chunk boundary. False if the run finished meanwhile."""
        allowed = {"batch_size", "target_chunk_time", "sleep"}
        if not changes or set(changes) - allowed:
            raise ValueError(f"change_settings() takes {sorted(allowed)}, got {sorted(changes)}")
        return bool(
            self.runs.filter(pk=run.pk, active_key=run.active_key).update(
                settings_version=F("settings_version") + 1, updated_at=timezone.now(), **changes
            )
        )


def active_key(name: str, reverse: bool) -> str:
    """The ``active_key`` of a live run: at most one per backfill and direction."""
    return f"{name}:reverse" if reverse else name


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
    ) -> None:
        """Record a chunk inside its transaction; raise ``LeaseLost`` (rolling the chunk back
        as it leaves ``atomic()``) if another process took the run over.

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

    def checkpointed(
        self, window: Window, cursor: str, processed: int, failed: int, seconds: float
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
        run.heartbeat_at = run.updated_at = timezone.now()

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
        """Take the figures of a checkpoint found by ``read_back`` as ours."""
        self.ledger.read(self.run)

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


Ledger.lease_class = Lease
