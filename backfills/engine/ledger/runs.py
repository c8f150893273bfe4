"""The run table's rows: reading them, creating and claiming runs, and the control requests
any process may make. An owner's own writes go through its ``Lease`` (``lease.py``)."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.db.models import F, FloatField, Q, QuerySet, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from ...exceptions import RunNotResumable, RunOwned
from ...models import BackfillAction, BackfillRun, RunFigures
from ..owners import Owner, describe_owner, owner_alive, owner_gone_here, owner_pid_alive_here
from .transitions import check_transition, sources

if TYPE_CHECKING:
    from ..guard import Blocking
    from .lease import Lease

logger = logging.getLogger("backfills")

State = BackfillRun.State


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


#: A run's settings that `backfill set` may change while it runs (``RunSettings``' fields).
SETTINGS_FIELDS = ("batch_size", "target_chunk_time", "sleep", "profile", "max_duty")


@dataclass(frozen=True)
class ControlRow:
    """What an owner reads when it polls its run: requests and settings made elsewhere."""

    requested_state: str
    settings_version: int
    batch_size: int | None
    target_chunk_time: float | None
    sleep: float
    profile: str
    max_duty: float | None


def apply_settings(run: BackfillRun, control: ControlRow) -> dict[str, Any]:
    """Take the settings *control* read (changed by `backfill set`) into the in-memory *run*;
    returns what changed."""
    changes = {
        key: getattr(control, key)
        for key in SETTINGS_FIELDS
        if getattr(run, key) != getattr(control, key)
    }
    for key, value in changes.items():
        setattr(run, key, value)
    run.settings_version = control.settings_version
    return changes


@dataclass(frozen=True)
class RunSettings:
    """A run's changeable settings: a fixed chunk size (None: adaptive toward
    ``target_chunk_time``), the sleep between chunks, the profile (the guard's budget) and the
    duty cycle (None: none)."""

    batch_size: int | None
    target_chunk_time: float | None
    sleep: float
    profile: str
    max_duty: float | None


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
                **vars(settings),
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

    def record_blocking(self, run: BackfillRun, blocking: Blocking) -> None:
        """Count a chunk whose locks kept application sessions waiting over the budget (or
        that the guard cancelled), and the longest wait, on the run's row (an observation:
        not fenced, for a serial run and for any worker of a parallel one)."""
        self.runs.filter(pk=run.pk).update(
            blocking_yields=F("blocking_yields") + int(blocking.over_budget),
            blocking_cancels=F("blocking_cancels") + int(blocking.cancelled),
            blocking_max_wait=Greatest(
                F("blocking_max_wait"), Value(blocking.max_wait, output_field=FloatField())
            ),
        )
        run.blocking_yields += int(blocking.over_budget)
        run.blocking_cancels += int(blocking.cancelled)
        run.blocking_max_wait = max(run.blocking_max_wait, blocking.max_wait)

    def record_action(
        self,
        run: RunFigures | None,
        action: str,
        *,
        by: str,
        via: str,
        message: str,
        name: str = "",
    ) -> None:
        """Record who did *action* (start, pause, resume, cancel, set, retry) to *run* (a row
        or a snapshot of one; or to the backfill *name* when there is no run), and from where
        (*via*)."""
        BackfillAction.objects.using(self.using).create(
            run_id=None if run is None else run.pk,
            name=run.name if run is not None else name,
            action=action,
            by=by[:255],
            via=via,
            message=message,
        )

    def change_settings(self, run: BackfillRun, changes: dict[str, Any]) -> bool:
        """Change *run*'s batch size, target chunk time, sleep, profile or duty cycle; its
        owner applies them at its next chunk boundary. False if the run finished meanwhile."""
        allowed = set(SETTINGS_FIELDS)
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
