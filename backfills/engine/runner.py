"""The runner: claim the run, then gate -> step -> pace until done or stopped.

Each chunk runs in ``transaction.atomic`` together with the conditional UPDATE that advances
the run's cursor (``step.py``); the UPDATE only matches while we still own the run, so a
process that lost its lease cannot commit a chunk another owner will also do. The ledger
(``ledger.py``) writes every run row; the runner emits events and prints nothing.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS, connections

from .. import conf
from ..db import vendor_for
from ..display import format as fmt
from ..events import (
    ChunkCommitted,
    Event,
    Listener,
    Retrying,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunPaused,
    RunStarted,
    SettingsChanged,
    ThrottleCleared,
    Throttled,
    Yielding,
)
from ..exceptions import (
    Abort,
    BackfillConfigurationError,
    BackfillFailed,
    CheckFailed,
    LeaseLost,
    RunNotResumable,
)
from ..models import BackfillRun
from ..parameters import check_given
from ..prefetch import Prefetcher, reading_ahead
from ..signals import signal_listener
from ..sizing import ChunkSizer
from ..snapshot import RunSnapshot
from ..throttle import default_checks
from .gate import HealthGate, Stop, StopGate
from .guard import BlockingGuard
from .ledger import History, Lease, Ledger
from .opening import Opening
from .options import RunOptions, configure_sizer, resumed_run_settings
from .owners import Owner
from .pacing import interruptible_sleep, rest_after
from .preconditions import apply_chunk_timeouts, check_requirements
from .retry import Retry, RetryPolicy
from .step import ChunkStep

if TYPE_CHECKING:
    from ..base import Backfill
    from ..conf import Settings

logger = logging.getLogger("backfills")

State = BackfillRun.State

__all__ = [
    "Outcome",
    "RunOptions",
    "RunResult",
    "Runner",
    "apply_chunk_timeouts",
    "check_requirements",
    "run_backfill",
]


class Outcome(enum.Enum):
    """How ``Runner.run()`` ended."""

    COMPLETED = "completed"
    ALREADY_COMPLETED = "already_completed"
    PAUSED = "paused"  # at a chunk boundary: signal, pause request or partial-run limit
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class RunResult:
    """What happened: the run as we last recorded it, and why we stopped."""

    run: RunSnapshot
    outcome: Outcome
    reason: str = ""
    signum: int | None = None
    #: True when a critical health threshold paused the run.
    critical: bool = False


class Runner:
    """Runs one backfill on one database, emitting events to its listeners.

    *ledger* is where run rows are recorded (``Ledger(using)`` by default; ``make bench``
    passes one that times its checkpoints)."""

    def __init__(
        self,
        backfill_cls: type[Backfill],
        *,
        using: str = DEFAULT_DB_ALIAS,
        options: RunOptions | None = None,
        listeners: Iterable[Listener] = (),
        ledger: Ledger | None = None,
    ) -> None:
        self.backfill_cls = backfill_cls
        self.name = backfill_cls.name
        if not self.name:
            raise BackfillConfigurationError(f"{backfill_cls.__name__} is not registered.")
        self.using = using
        self.options = options or RunOptions()
        self.settings: Settings = conf.snapshot()
        self.listeners = [signal_listener(backfill_cls), *listeners]
        if self.options.reverse and not backfill_cls.is_reversible():
            raise BackfillConfigurationError(f"Backfill {self.name} defines no reverse.")
        self.backfill = backfill_cls(using=using, reverse=self.options.reverse)
        self.ledger = ledger or Ledger(using, self.settings.lease_seconds)
        self.owner = Owner()
        self.sizer = ChunkSizer(size=self.settings.initial_batch_size)
        self.gate = StopGate(
            max_chunks=self.options.max_chunks,
            limit=self.options.limit,
            poll=self._poll,
            poll_every=self.settings.control_poll_seconds,
            health=HealthGate(
                [*default_checks(self.options.pause_file), *self.backfill.get_health_checks()],
                self.backfill,
                max_wait=self.settings.throttle_max_wait,
            ),
            health_every=self.settings.health_check_seconds,
            hooks=self,
        )
        self.history = History(
            self.ledger, self.settings.history_seconds, self.settings.history_samples
        )
        self.lease: Lease | None = None
        #: Chunks written from a prefetched read, over this runner's runs.
        self.prefetched_chunks = 0

    # -- public ---------------------------------------------------------------------------

    def request_stop(self, reason: str, signum: int | None = None) -> None:
        """Stop after the chunk in progress commits (safe to call from a signal handler)."""
        self.gate.request_stop(reason, signum)

    def run(self) -> RunResult:
        """Claim (or create) the run and work until completion, a stop request or an error."""
        # Invalid values are refused before anything else (a run that resumes has its own).
        check_given(self.name, self.backfill_cls.parameters, self.options.parameters)
        check_requirements(self.backfill_cls, self.using)
        run, resumed = Opening(self.backfill, self.ledger, self.options, self.settings).open_run()
        if run is None:
            latest = self.ledger.latest(self.name, self.options.reverse)
            assert latest is not None
            return RunResult(RunSnapshot.of(latest), Outcome.ALREADY_COMPLETED, "already completed")
        if run.parallel:
            raise RunNotResumable(
                f"Run #{run.pk} of {run.label} is a parallel run: resume it with `backfill run "
                f"{run.name} --workers N` or let `backfill worker` processes drain it."
            )
        self.lease = lease = self.ledger.claim(
            run,
            self.owner,
            resumed_run_settings(run, self.backfill_cls, self.options, self.settings),
            force=self.options.force,
        )
        self._configure_sizer(run.last_chunk_size)
        self._emit(RunStarted, resumed=resumed, took_over=lease.took_over)
        logger.info(
            "backfill %s run #%s %s on %r",
            run.label,
            run.pk,
            "resumed" if resumed else "started",
            self.using,
        )
        try:
            with reading_ahead(self.backfill, self.settings, label=run.label) as prefetcher:
                try:
                    return self._walk(lease, prefetcher)
                finally:
                    self.prefetched_chunks += prefetcher.used if prefetcher else 0
        except Abort as exc:
            # Second signal: the open chunk rolled back as the exception left atomic().
            reason = f"aborted by {fmt.signal_name(exc.signum)}; the open chunk was rolled back"
            lease.stop(State.PAUSED, reason, after_abort=True)
            self._emit(RunPaused, reason=reason)
            raise
        except LeaseLost:
            raise
        except Exception as exc:
            lease.fail(exc)
            self.history.offer(lease.run, force=True)
            self._emit(RunFailed, error=exc)
            if isinstance(exc, CheckFailed):
                raise BackfillFailed(
                    f"Backfill {run.label} walked every chunk but its post_check failed: {exc}. "
                    "Fix the data or the backfill and run it again to re-check."
                ) from exc
            where = f"after cursor {run.cursor}" if run.cursor is not None else "the first chunk"
            raise BackfillFailed(
                f"Backfill {run.label} failed in chunk {run.chunks_done + 1} ({where}): "
                f"{type(exc).__name__}: {exc}. "
                "The committed chunks are kept; fix the cause and run it again to resume."
            ) from exc

    # -- the loop -------------------------------------------------------------------------

    def _walk(self, lease: Lease, prefetcher: Prefetcher | None) -> RunResult:
        """gate -> step -> pace, one chunk at a time, until done or stopped."""
        step = ChunkStep(
            self.backfill,
            lease,
            self.settings,
            self.sizer,
            policy=RetryPolicy(
                self.settings.max_retries,
                self.settings.retry_base_delay,
                self.settings.retry_max_delay,
            ),
            on_retry=self._retrying,
            prefetcher=prefetcher,
            guard=BlockingGuard.for_settings(self.using, self.settings),
        )
        step.stopping = lambda: self.gate.stopping
        try:
            return self._chunks(lease, step)
        finally:
            if step.guard is not None:
                step.guard.close()

    def _chunks(self, lease: Lease, step: ChunkStep) -> RunResult:
        run = lease.run
        self.gate.start()
        cursor, horizon = step.load_pk(run.cursor), step.load_pk(run.horizon)
        chunks_here = rows_here = 0
        while True:
            stop = self.gate.check(chunks_here, rows_here)
            if stop is not None:
                return self._stop(lease, stop)
            limit = None if self.options.limit is None else self.options.limit - rows_here
            done = step(cursor, horizon, limit)
            if done is None:
                return self._complete(lease)
            cursor = done.window.upper
            chunks_here += 1
            rows_here += done.window.size
            step.settle(done)
            self._emit(
                ChunkCommitted,
                window_size=done.window.size,
                processed=done.processed,
                seconds=done.seconds,
                failed=done.failed,
            )
            self.history.chunk(lease.run, done.seconds)
            if done.blocking.over_budget:
                self._emit(
                    Yielding,
                    sessions=done.blocking.sessions,
                    max_wait=done.blocking.max_wait,
                    pause=done.blocking.pause,
                    next_size=self.sizer.size,
                )
                self._sleep(done.blocking.pause)
            self._pace(lease, done.seconds, self.gate.requested(chunks_here, rows_here) is None)

    def _pace(self, lease: Lease, seconds: float, going_on: bool) -> None:
        """The pauses after a chunk: the vendor's gap for other writers, then the rest (the
        sleep, or the duty cycle's)."""
        gap = vendor_for(connections[self.using]).gap_after_chunk(seconds, self.settings.sqlite_gap)
        if gap > 0:
            self._sleep(gap, heartbeat=False)
        rest = rest_after(seconds, lease.run)
        if rest > 0 and going_on:
            self._sleep(rest)

    # -- stopping -------------------------------------------------------------------------

    def _stop(self, lease: Lease, stop: Stop) -> RunResult:
        lease.stop(stop.state, stop.reason)
        run = lease.run
        self.history.offer(run, force=True)
        logger.info("backfill %s run #%s %s: %s", run.label, run.pk, stop.state, stop.reason)
        if stop.state == State.CANCELLED:
            self._emit(RunCancelled, reason=stop.reason)
            return RunResult(RunSnapshot.of(run), Outcome.CANCELLED, stop.reason)
        self._emit(RunPaused, reason=stop.reason, critical=stop.critical)
        return RunResult(
            RunSnapshot.of(run), Outcome.PAUSED, stop.reason, self.gate.signum, stop.critical
        )

    def _complete(self, lease: Lease) -> RunResult:
        if not self.options.reverse:
            problem = self.backfill.post_check()
            if problem:
                raise CheckFailed(problem)
        lease.complete()
        self.history.offer(lease.run, force=True)
        logger.info("backfill %s run #%s completed", lease.run.label, lease.run.pk)
        self._emit(RunCompleted)
        return RunResult(RunSnapshot.of(lease.run), Outcome.COMPLETED)

    def _poll(self) -> Stop | None:
        """Pick up pause/cancel requests and `backfill set` changes made from any host."""
        assert self.lease is not None
        control = self.lease.poll()
        if control.settings_version != self.lease.run.settings_version:
            changes = self.lease.apply_settings(control)
            self._configure_sizer(self.sizer.size)
            logger.info("backfill %s settings changed: %s", self.lease.run.label, changes)
            self._emit(SettingsChanged, changes=changes)
        if control.requested_state == State.PAUSED:
            return Stop(State.PAUSED, "paused on request (backfill pause)")
        if control.requested_state == State.CANCELLED:
            return Stop(State.CANCELLED, "cancelled on request (backfill cancel)")
        return None

    # -- health-wait hooks (gate.ThrottleHooks) ---------------------------------------------

    def throttled(self, reason: str, wait: float, changed: bool) -> None:
        assert self.lease is not None
        if changed:
            self.lease.throttled(reason)
            logger.info("backfill %s throttled: %s", self.lease.run.label, reason)
        self._emit(Throttled, reason=reason, wait=wait)

    def sleep(self, seconds: float) -> None:
        self._sleep(seconds)

    def stop_requested(self) -> Stop | None:
        return self.gate.requested() or self._poll()

    def cleared(self, waited: float, healthy: bool) -> None:
        assert self.lease is not None
        self.lease.unthrottled(waited)
        if healthy:
            self._emit(ThrottleCleared, waited=waited)

    # -- helpers --------------------------------------------------------------------------

    def _configure_sizer(self, resumed_size: int | None) -> None:
        assert self.lease is not None
        configure_sizer(self.sizer, self.lease.run, self.backfill_cls, self.settings, resumed_size)

    def _retrying(self, retry: Retry, exc: BaseException) -> None:
        self._emit(
            Retrying, attempt=retry.attempt, delay=retry.delay, error=exc, next_size=self.sizer.size
        )
        self._sleep(retry.delay, heartbeat=False)

    def _sleep(self, seconds: float, *, heartbeat: bool = True) -> None:
        lease = self.lease
        interruptible_sleep(
            seconds,
            stopped=lambda: self.gate.stopping,
            heartbeat=lease.heartbeat if heartbeat and lease is not None else None,
            beat_every=self.settings.lease_seconds / 3,
        )

    def _emit(self, kind: type[Event], **details: Any) -> None:
        assert self.lease is not None
        event = kind(run=RunSnapshot.of(self.lease.run), **details)
        for listener in self.listeners:
            listener(event)


def run_backfill(
    name_or_class: str | type[Backfill],
    *,
    using: str = DEFAULT_DB_ALIAS,
    listeners: Iterable[Listener] = (),
    batch_size: int | None = None,
    target_chunk_time: float | None = None,
    sleep: float | None = None,
    profile: str | None = None,
    max_duty: float | None = None,
    pause_file: str | None = None,
    exact_count: bool = False,
    max_chunks: int | None = None,
    limit: int | None = None,
    restart: bool = False,
    force: bool = False,
    parameters: dict[str, Any] | None = None,
    reverse: bool = False,
) -> RunResult:
    """Run a backfill in this process until it completes or stops (see ``RunOptions`` for
    what each option means); resumes its unfinished run from the checkpoint if there is one.

    Raises ``BackfillError`` subclasses for what a user can act on: ``RunOwned`` (a live
    process owns the run), ``RunNotResumable``, ``BackfillFailed`` (the run is recorded
    failed), ``ParameterError``, ``MigrationNotApplied``."""
    from ..registry import registry

    backfill_cls = registry.get(name_or_class) if isinstance(name_or_class, str) else name_or_class
    options = RunOptions(
        batch_size=batch_size,
        target_chunk_time=target_chunk_time,
        sleep=sleep,
        profile=profile,
        max_duty=max_duty,
        pause_file=pause_file,
        exact_count=exact_count,
        max_chunks=max_chunks,
        limit=limit,
        restart=restart,
        force=force,
        parameters=dict(parameters or {}),
        reverse=reverse,
    )
    return Runner(backfill_cls, using=using, options=options, listeners=listeners).run()
