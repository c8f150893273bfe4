"""Partitions of a parallel run: planning them, claiming one, and every write its worker makes.

A parallel run has no owner of its own. Each partition is leased by one worker at a time with
a claim that increments its ``generation`` (the fencing token); the worker's chunks commit with
a checkpoint conditional on that generation. The run row is written only for what concerns
the whole run: starting it, its control requests (``runs.py``), the rolled-up counters, the
shared health verdict and, once every partition is done, its completion.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import Exists, F, Field, Max, OuterRef, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from ... import conf
from ...chunking import KeyRange
from ...db import vendor_for
from ...exceptions import LeaseLost, RunNotResumable
from ...models import BackfillPartition, BackfillRun
from ..owners import Owner, owner_alive, owner_gone_here
from .checkpoints import Checkpoints
from .runs import RELEASED, SETTINGS_FIELDS, ControlRow, RunSettings, error_fields
from .transitions import check_transition, sources

if TYPE_CHECKING:
    from .runs import Ledger

logger = logging.getLogger("backfills")

State = BackfillRun.State
Part = BackfillPartition.State

#: The counters a partition's checkpoint adds to, summed into its run by ``roll_up``.
COUNTERS = Checkpoints.ADDED


@dataclass(frozen=True)
class PartitionControl(ControlRow):
    """What a worker reads between chunks: its run's requests and settings (``ControlRow``),
    its state, and whether an idle worker asked it to split its partition."""

    run_state: str
    split_requested: bool


class Partitions:
    """The partition table of one database, for the runs of a ``Ledger``."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.using = ledger.using
        self.lease_seconds = ledger.lease_seconds

    @property
    def rows(self) -> QuerySet[BackfillPartition]:
        return BackfillPartition.objects.using(self.using)

    def of(self, run: BackfillRun) -> list[BackfillPartition]:
        return list(self.rows.filter(run_id=run.pk).order_by("number"))

    def live_workers(self, run: BackfillRun) -> int:
        """Partitions of *run* leased by a live worker (by the rule a claim applies)."""
        return sum(
            owner_alive(partition, self.lease_seconds)
            for partition in self.rows.filter(run_id=run.pk, state=Part.RUNNING)
        )

    # -- starting a parallel run -------------------------------------------------------------

    def start(
        self,
        run: BackfillRun,
        ranges: list[KeyRange],
        *,
        workers: int,
        max_workers: int | None,
        settings: RunSettings,
    ) -> None:
        """Split *run* into partitions over *ranges* and set it running with no owner, in one
        transaction; a run already split (another process got there first) only resumes."""
        with transaction.atomic(using=self.using):
            locked = self.ledger.runs.select_for_update().filter(pk=run.pk).first()
            if locked is None:
                raise RunNotResumable(f"Run #{run.pk} of {run.label} was deleted.")
            if locked.owner_token and owner_alive(locked, self.lease_seconds):
                raise self.ledger.owned(locked)
            if locked.workers is None:
                if locked.chunks_done:
                    raise RunNotResumable(
                        f"Run #{run.pk} of {run.label} was started without --workers and has "
                        f"{locked.chunks_done} chunks done; resume it the same way, or pass "
                        "--restart to start a parallel run from the beginning."
                    )
                now = timezone.now()
                self.rows.bulk_create(
                    BackfillPartition(
                        run_id=run.pk,
                        number=number,
                        lower=None if lower is None else str(lower),
                        upper=str(upper),
                        cursor=None if lower is None else str(lower),
                        updated_at=now,
                    )
                    for number, (lower, upper) in enumerate(ranges)
                )
                self.ledger.runs.filter(pk=run.pk).update(
                    workers=workers, max_workers=max_workers, cursor=None, updated_at=now
                )
            self._set_running(locked, settings)
        self.ledger.read(run)

    def resume(
        self, run: BackfillRun, settings: RunSettings, *, max_workers: int | None = None
    ) -> None:
        """Set a paused or failed parallel run running again (its workers claim partitions);
        *max_workers*, if given, replaces its cap."""
        with transaction.atomic(using=self.using):
            locked = self.ledger.runs.select_for_update().filter(pk=run.pk).first()
            if locked is None:
                raise RunNotResumable(f"Run #{run.pk} of {run.label} was deleted.")
            if max_workers is not None:
                self.ledger.runs.filter(pk=run.pk).update(max_workers=max_workers)
            self._set_running(locked, settings)
        self.ledger.read(run)

    def _set_running(self, run: BackfillRun, settings: RunSettings) -> None:
        if run.state == State.RUNNING:
            return
        check_transition(run, State.RUNNING)
        now = timezone.now()
        self.ledger.runs.filter(pk=run.pk, state__in=sources(State.RUNNING)).update(
            state=State.RUNNING,
            started_at=Coalesce(F("started_at"), now),
            updated_at=now,
            requested_state="",
            status_reason="",
            error_class="",
            error_message="",
            error_backtrace="",
            throttle_reason="",
            health_verdict="",
            health_checked_at=None,
            **vars(settings),
            **RELEASED,
        )

    # -- claiming ------------------------------------------------------------------------------

    def claim(self, owner: Owner, run_ids: list[int] | None = None) -> PartitionLease | None:
        """Lease one partition of a running parallel run (of *run_ids*, if given): a pending
        one, or one whose owner is gone (at once when its pid is gone on this host, after the
        lease otherwise). None when there is none to take, or the runs are at ``max_workers``.

        Candidates are read without locks; the chosen one is then locked with one short
        ``SELECT ... FOR UPDATE SKIP LOCKED`` (where the database has it) and taken with an
        UPDATE conditional on the generation read, so two claimers never both win."""
        now = timezone.now()
        stale_before = now - timedelta(seconds=self.lease_seconds)
        candidates = self.rows.filter(
            run__state=State.RUNNING,
            run__workers__isnull=False,
            state__in=[Part.PENDING, Part.RUNNING],
        )
        if run_ids is not None:
            candidates = candidates.filter(run_id__in=run_ids)
        claimable = [
            p
            for p in candidates.only(
                "id",
                "run_id",
                "state",
                "generation",
                "owner_token",
                "owner_host",
                "owner_pid",
                "heartbeat_at",
            ).order_by("run_id", "number")
            if p.state == Part.PENDING
            or p.heartbeat_at is None
            or p.heartbeat_at < stale_before
            or owner_gone_here(p)
        ]
        # Never-claimed and released partitions first; then those of dead owners.
        claimable.sort(key=lambda p: p.state != Part.PENDING)
        for candidate in claimable:
            lease = self._take(candidate, owner, now, stale_before)
            if lease is not None:
                return lease
        return None

    def _take(
        self,
        candidate: BackfillPartition,
        owner: Owner,
        now: dt.datetime,
        stale_before: dt.datetime,
    ) -> PartitionLease | None:
        connection = connections[self.using]
        features = connection.features
        with transaction.atomic(using=self.using):
            # Never wait long behind another claimer (one stopped by the OS mid-claim, say):
            # LOCK_TIMEOUT, as for chunks; a timeout is transient and the claim is made later.
            vendor_for(connection).apply_chunk_timeouts(
                connection, float(conf.get("LOCK_TIMEOUT") or 0) or None, None
            )
            # The run row's lock makes the max_workers count and the claim one step (claims
            # are rare: one per partition). On PostgreSQL it is NO KEY UPDATE, so inserting a
            # partition (a foreign key to the run) does not wait on it; on MySQL/MariaDB such
            # an insert (a split) waits for the claim to commit, and without SKIP LOCKED
            # (MariaDB < 10.6) the two can deadlock: both are retried as transient.
            run = (
                self.ledger.runs.select_for_update(no_key=features.has_select_for_no_key_update)
                .filter(pk=candidate.run_id, state=State.RUNNING)
                .only("id", "max_workers")
                .first()
            )
            if run is None:
                return None
            if run.max_workers is not None:
                leased = (
                    self.rows.filter(
                        run_id=run.pk,
                        state=Part.RUNNING,
                        heartbeat_at__gte=now - timedelta(seconds=self.lease_seconds),
                    )
                    .exclude(pk=candidate.pk)
                    .count()
                )
                if leased >= run.max_workers:
                    return None
            mine = self.rows.filter(pk=candidate.pk, generation=candidate.generation).filter(
                state__in=[Part.PENDING, Part.RUNNING]
            )
            if candidate.state == Part.RUNNING:
                # A takeover: only if the owner has not beaten since we judged it gone.
                mine = mine.filter(heartbeat_at=candidate.heartbeat_at)
            skip_locked = features.has_select_for_update_skip_locked
            if skip_locked and not mine.select_for_update(skip_locked=True).values_list("pk"):
                return None
            took = mine.update(
                generation=F("generation") + 1,
                state=Part.RUNNING,
                owner_token=owner.token,
                owner_host=owner.host,
                owner_pid=owner.pid,
                owned_since=now,
                heartbeat_at=now,
                started_at=Coalesce(F("started_at"), now),
                updated_at=now,
                split_requested=False,
            )
            if took != 1:
                return None
        partition = self.rows.get(pk=candidate.pk)
        run_row = self.ledger.runs.get(pk=candidate.run_id)
        took_over = candidate.state == Part.RUNNING
        if took_over:
            logger.info(
                "took over partition %s of run #%s from %s pid %s",
                partition.number,
                run_row.pk,
                candidate.owner_host,
                candidate.owner_pid,
            )
        return PartitionLease(self, run_row, partition, owner, took_over=took_over)

    # -- the idle worker's moves ---------------------------------------------------------------

    def request_split(self, run_ids: list[int] | None, min_rows: int) -> bool:
        """Ask the owner of the leased partition with the largest remainder to split it (at
        its next chunk boundary); False if no partition has more than *min_rows*, and more
        than two of its owner's chunks, left to walk (as far as its key range tells: a
        partition's rows are counted only when split). A remainder of a chunk or two is
        walked sooner by its owner than claimed by another worker. Runs that still have a
        pending partition are left alone: a worker idle there is held back by ``max_workers``,
        and splitting would only make more partitions to wait for."""
        busy = (
            self.rows.filter(state=Part.RUNNING, split_requested=False, run__state=State.RUNNING)
            .exclude(Exists(self.rows.filter(run_id=OuterRef("run_id"), state=Part.PENDING)))
            .select_related("run")
        )
        if run_ids is not None:
            busy = busy.filter(run_id__in=run_ids)
        best: tuple[int, BackfillPartition] | None = None
        counts: dict[int, int] = {}
        for partition in busy:
            if partition.run_id not in counts:
                counts[partition.run_id] = self.rows.filter(run_id=partition.run_id).count()
            left = _rows_left(partition, counts[partition.run_id])
            enough = max(min_rows, 2 * (partition.last_chunk_size or 0))
            if left > enough and (best is None or left > best[0]):
                best = (left, partition)
        if best is None:
            return False
        partition = best[1]
        return bool(
            self.rows.filter(pk=partition.pk, generation=partition.generation).update(
                split_requested=True
            )
        )

    def unfinished_runs(self, run_ids: list[int] | None = None) -> list[BackfillRun]:
        """Running parallel runs (of *run_ids*) that still have a partition to walk."""
        return self.running_runs(run_ids, walked=False)

    def walked_runs(self, run_ids: list[int] | None = None) -> list[BackfillRun]:
        """Running parallel runs whose partitions are all done: only completion is left
        (the worker that finished the last one may have died before recording it)."""
        return self.running_runs(run_ids, walked=True)

    def running_runs(
        self, run_ids: list[int] | None = None, *, walked: bool | None = None
    ) -> list[BackfillRun]:
        """Running parallel runs (of *run_ids*): all of them, or only those whose partitions
        are all done (*walked* True) or not (False)."""
        runs = self.ledger.runs.filter(state=State.RUNNING, workers__isnull=False)
        if walked is not None:
            left = Exists(self.rows.filter(run_id=OuterRef("pk")).exclude(state=Part.DONE))
            runs = runs.exclude(left) if walked else runs.filter(left)
        if run_ids is not None:
            runs = runs.filter(pk__in=run_ids)
        return list(runs)

    # -- the run's figures and its end ---------------------------------------------------------

    def sums(self, run: BackfillRun) -> tuple[dict[str, Any], dt.datetime | None]:
        """The sums of *run*'s partitions' counters, and their latest update (one query, no
        write: what a display shows between roll-ups)."""
        sums = self.rows.filter(run_id=run.pk).aggregate(
            **{
                name: Coalesce(Sum(name), 0.0 if name == "time_running" else 0) for name in COUNTERS
            },
            last=Max("updated_at"),
        )
        last = sums.pop("last")
        sums["time_running"] = float(sums["time_running"])
        return sums, last

    def roll_up(self, run: BackfillRun) -> None:
        """Write the sums of *run*'s partitions into its counters, so that every reader of the
        run row (status, the control API, the admin) sees the whole run.

        Every worker rolls up at its polls, each reading the sums and then writing them: a
        writer whose sums were read before another's may come second. The counters only grow,
        so each is written as the greater of the two, and a late writer never takes the run
        back (nor the figures of a completed run)."""
        fields, last = self.sums(run)
        self.ledger.runs.filter(pk=run.pk).update(
            **{
                name: Greatest(F(name), Value(value, output_field=_run_field(name)))
                for name, value in fields.items()
            },
            # Never backwards either: a late roll-up carries older partitions' times.
            updated_at=Greatest(
                F("updated_at"),
                Value(last or timezone.now(), output_field=_run_field("updated_at")),
            ),
        )
        row = self.ledger.runs.filter(pk=run.pk).values(*COUNTERS).first()
        for key, value in (row or fields).items():
            setattr(run, key, value)

    def complete(self, run: BackfillRun) -> bool:
        """Record *run* completed if every partition is done (a conditional UPDATE: whoever
        finishes last, or finds it finished, completes it; no coordinator). False if a
        partition is still to walk or the run is no longer running."""
        self.roll_up(run)
        now = timezone.now()
        done = (
            self.ledger.runs.filter(pk=run.pk, state__in=sources(State.COMPLETED))
            .exclude(Exists(self.rows.filter(run_id=OuterRef("pk")).exclude(state=Part.DONE)))
            .update(
                state=State.COMPLETED,
                rows_total=F("rows_scanned"),
                rows_total_exact=True,
                active_key=None,
                finished_at=now,
                updated_at=now,
                status_reason="",
                requested_state="",
                throttle_reason="",
                health_verdict="",
            )
        )
        self.ledger.read(run)
        return bool(done)

    def fail(self, run: BackfillRun, exc: BaseException) -> None:
        """Record *exc* on the run and leave it failed: every worker stops at its next
        chunk boundary; it resumes from the partitions' checkpoints once fixed."""
        connection = connections[self.using]
        if connection.connection is not None and not connection.is_usable():
            connection.close()
        try:
            self.ledger.runs.filter(pk=run.pk, state=State.RUNNING).update(
                state=State.FAILED,
                status_reason="failed",
                updated_at=timezone.now(),
                throttle_reason="",
                **error_fields(exc),
            )
        except DatabaseError:
            logger.exception("could not record the failure of run #%s", run.pk)

    # -- the shared health verdict -------------------------------------------------------------

    def take_health_turn(self, run: BackfillRun, every: float) -> bool:
        """Whether this worker asks the health checks now (one worker per interval per run:
        a conditional UPDATE decides)."""
        now = timezone.now()
        before = now - timedelta(seconds=every)
        return bool(
            self.ledger.runs.filter(pk=run.pk)
            .filter(Q(health_checked_at__isnull=True) | Q(health_checked_at__lt=before))
            .update(health_checked_at=now)
        )

    def record_health(self, run: BackfillRun, verdict: str) -> None:
        self.ledger.runs.filter(pk=run.pk).update(
            health_verdict=verdict, throttle_reason=verdict.removeprefix("critical: ")
        )

    def health(self, run: BackfillRun) -> str:
        row = self.ledger.runs.filter(pk=run.pk).values_list("health_verdict", flat=True).first()
        return row or ""


def _run_field(name: str) -> Field[Any, Any]:
    field = BackfillRun._meta.get_field(name)
    assert isinstance(field, Field)
    return field


def _rows_left(partition: BackfillPartition, partitions: int) -> int:
    """Keys left in *partition*'s range as far as its bounds tell (integer keys), else its
    size estimated from the run's total over its *partitions*."""
    try:
        if partition.cursor is not None:
            return int(partition.upper) - int(partition.cursor)
    except ValueError:
        pass
    run = partition.run
    share = (run.rows_total or 0) // max(1, partitions)
    return max(0, share - partition.rows_scanned)


class PartitionLease(Checkpoints):
    """This worker's claim on one partition. Every write says ``WHERE generation = <ours>``."""

    FENCE = "generation"

    def __init__(
        self,
        partitions: Partitions,
        run: BackfillRun,
        partition: BackfillPartition,
        owner: Owner,
        *,
        took_over: bool,
    ) -> None:
        self.partitions = partitions
        self.ledger = partitions.ledger
        self.using = partitions.using
        self.run = run
        self.partition = partition
        self.owner = owner
        self.took_over = took_over
        self._checkpoint_sql = None

    @property
    def position(self) -> BackfillPartition:
        """Where the walk is: the partition's cursor and counters."""
        return self.partition

    @property
    def fence(self) -> int:
        return self.partition.generation

    @property
    def label(self) -> str:
        return f"{self.run.label} partition {self.partition.number}"

    def lost(self) -> LeaseLost:
        return LeaseLost(
            f"Partition {self.partition.number} of run #{self.run.pk} was taken over by another "
            "worker; this worker stopped without committing its open chunk."
        )

    # -- while walking (the checkpoint itself: ``Checkpoints``) ------------------------------

    def heartbeat(self) -> None:
        """Tell other workers we are alive; raise ``LeaseLost`` if we are no longer owner."""
        if not self.mine().update(heartbeat_at=timezone.now()):
            raise self.lost()

    def count_retry(self) -> None:
        try:
            self.ledger.runs.filter(pk=self.run.pk).update(retries=F("retries") + 1)
        except DatabaseError:
            logger.warning("could not count a retry of run #%s", self.run.pk)

    def poll(self) -> PartitionControl:
        """Read the run's state, requests and settings, and our split request; heartbeat."""
        self.heartbeat()
        row = (
            self.ledger.runs.filter(pk=self.run.pk)
            .values("state", "requested_state", "settings_version", *SETTINGS_FIELDS)
            .first()
        )
        if row is None:
            raise LeaseLost(f"Run #{self.run.pk} was deleted.")
        split = bool(self.mine().values_list("split_requested", flat=True).first())
        return PartitionControl(run_state=row.pop("state"), split_requested=split, **row)

    def split(self, middle: Any) -> BackfillPartition | None:
        """Give ``(middle, upper]`` back as a new pending partition and walk on to *middle*
        only; one transaction, conditional on our generation. *middle* None only clears the
        request (the remainder is too small to split)."""
        for _ in range(3):
            try:
                with transaction.atomic(using=self.using):
                    if middle is None:
                        self.mine().update(split_requested=False)
                        return None
                    upper = self.partition.upper
                    if not self.mine().update(upper=str(middle), split_requested=False):
                        raise self.lost()
                    number = (
                        self.partitions.rows.filter(run_id=self.run.pk).aggregate(n=Max("number"))[
                            "n"
                        ]
                        + 1
                    )
                    new = self.partitions.rows.create(
                        run_id=self.run.pk,
                        number=number,
                        lower=str(middle),
                        upper=upper,
                        cursor=str(middle),
                    )
            except IntegrityError:
                continue  # another split took the number; count again
            self.partition.upper = str(middle)
            logger.info(
                "split partition %s of run #%s at %s: partition %s takes (%s, %s]",
                self.partition.number,
                self.run.pk,
                middle,
                new.number,
                middle,
                upper,
            )
            return new
        return None

    # -- letting go --------------------------------------------------------------------------

    def release(self) -> None:
        """Hand the partition back, pending, for any worker to claim (best effort: if the
        database is gone, the lease expires)."""
        try:
            self.mine().filter(state=Part.RUNNING).update(
                state=Part.PENDING, updated_at=timezone.now(), split_requested=False, **RELEASED
            )
        except DatabaseError:
            logger.exception(
                "could not release partition %s of run #%s; its lease will expire",
                self.partition.number,
                self.run.pk,
            )

    def finish(self) -> None:
        """Record the partition walked to its upper bound."""
        now = timezone.now()
        # owner_host and owner_pid stay: who walked the partition's last chunk.
        if not self.mine().update(
            state=Part.DONE,
            finished_at=now,
            updated_at=now,
            split_requested=False,
            owner_token=None,
            owned_since=None,
        ):
            raise self.lost()
        self.partition.state = Part.DONE
