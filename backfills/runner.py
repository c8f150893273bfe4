"""The loop: claim the run -> walk pk windows -> commit each chunk with its checkpoint -> repeat.

Each chunk runs in ``transaction.atomic`` together with the conditional UPDATE that advances the
run's cursor. The UPDATE only matches while we still own the run (``owner_token``), so a process
that lost its lease cannot commit a chunk another owner will also do.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import os
import random
import socket
import time
import traceback
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.migrations.recorder import MigrationRecorder
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import conf
from .base import Backfill
from .chunking import Window, count_range, find_horizon, next_window
from .events import (
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
)
from .exceptions import (
    Abort,
    BackfillConfigurationError,
    BackfillFailed,
    CheckFailed,
    LeaseLost,
    MigrationNotApplied,
    PreconditionFailed,
    RunNotResumable,
    RunOwned,
)
from .models import BackfillRun, QuarantinedRow, describe_age
from .parameters import from_json, parse_parameters, to_json
from .prefetch import Prefetcher, prefetch_unavailable
from .signals import signal_listener
from .sizing import ChunkSizer
from .throttle import default_checks, evaluate
from .transient import is_timeout, is_transient

logger = logging.getLogger("backfills")

State = BackfillRun.State


class Outcome(enum.Enum):
    """How ``Runner.run()`` ended."""

    COMPLETED = "completed"
    ALREADY_COMPLETED = "already_completed"
    PAUSED = "paused"  # at a chunk boundary: signal, pause request or partial-run limit
    CANCELLED = "cancelled"


@dataclass
class RunOptions:
    """Knobs for one invocation of a run; ``None`` means "the backfill's or the setting's"."""

    #: A fixed chunk size (turns adaptive sizing off).
    batch_size: int | None = None
    #: Seconds each chunk should take (adaptive sizing).
    target_chunk_time: float | None = None
    sleep: float | None = None
    #: Throttle while this file exists.
    pause_file: str | None = None
    #: Count the rows to walk exactly even when table statistics would do.
    exact_count: bool = False
    #: Stop (paused, resumable) after this many chunks in this invocation.
    max_chunks: int | None = None
    #: Stop (paused, resumable) after walking this many rows in this invocation.
    limit: int | None = None
    #: Start a new run from the beginning even if the latest one is final.
    restart: bool = False
    #: Take over the run even if its owner's lease has not expired.
    force: bool = False
    #: Parameter values: text as given on the command line, or typed values.
    parameters: dict[str, Any] = field(default_factory=dict)
    #: Run the backfill's reverse (its own run, checkpointed like any other).
    reverse: bool = False


@dataclass
class RunResult:
    """What happened: the run row as we last wrote it, and why we stopped."""

    run: BackfillRun
    outcome: Outcome
    reason: str = ""
    signum: int | None = None
    #: True when a critical health threshold paused the run.
    critical: bool = False


def default_target_chunk_time(backfill_cls: type[Backfill]) -> float:
    """TARGET_CHUNK_TIME; for kinds whose one statement holds its row locks for the whole chunk
    (UpdateBackfill, SQLBackfill), never more than SET_BASED_TARGET_CHUNK_TIME."""
    target = float(conf.get("TARGET_CHUNK_TIME"))
    if backfill_cls.locks_rows_whole_chunk:
        target = min(target, float(conf.get("SET_BASED_TARGET_CHUNK_TIME")))
    return target


def check_requirements(backfill_cls: type[Backfill], using: str) -> None:
    """Refuse to run before the backfill's required migrations (and ours) are applied."""
    backfill_cls.get_pk_field()  # raises for models we cannot walk
    connection = connections[using]
    recorder = MigrationRecorder(connection)
    if not recorder.has_table():
        raise MigrationNotApplied(
            f"Database {using!r} has no migrations table; run `manage.py migrate` first."
        )
    applied = recorder.applied_migrations()
    if not set(_own_migrations()) <= set(applied):
        raise MigrationNotApplied(
            f"The backfills tables are not installed on database {using!r}; "
            f"run `manage.py migrate backfills --database {using}`."
        )
    missing = [f"{app}.{name}" for app, name in backfill_cls.requires if (app, name) not in applied]
    if missing:
        raise MigrationNotApplied(
            f"Backfill {backfill_cls.name} requires migration(s) {', '.join(missing)}, not "
            f"applied on database {using!r}. Run `manage.py migrate` first."
        )


@functools.cache
def _own_migrations() -> tuple[tuple[str, str], ...]:
    """Every migration this app ships, read from disk once."""
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    return tuple(key for key in loader.disk_migrations if key[0] == "backfills")


def owner_alive(run: BackfillRun) -> bool:
    """Whether a live process holds *run*'s lease, by the rule ``Runner._claim`` applies: an
    owner on this host whose pid is gone is dead at once; otherwise the lease holds while the
    heartbeat is younger than LEASE_SECONDS (a live pid with a stale heartbeat may be stopped,
    or a reused pid, and its run is taken over)."""
    if not run.owner_token or run.heartbeat_at is None:
        return False
    if run.owner_host == socket.gethostname() and run.owner_pid and not pid_alive(run.owner_pid):
        return False
    lease = timedelta(seconds=float(conf.get("LEASE_SECONDS")))
    return timezone.now() - run.heartbeat_at < lease


def pid_alive(pid: int) -> bool:
    """Whether a process with *pid* exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Runner:
    """Runs one backfill on one database, emitting events to its listeners."""

    def __init__(
        self,
        backfill_cls: type[Backfill],
        *,
        using: str = "default",
        options: RunOptions | None = None,
        listeners: Iterable[Listener] = (),
    ) -> None:
        self.backfill_cls = backfill_cls
        self.using = using
        self.options = options or RunOptions()
        self.listeners = [signal_listener(backfill_cls), *listeners]
        self.backfill = backfill_cls(using=using, reverse=self.options.reverse)
        if self.options.reverse and not backfill_cls.is_reversible():
            raise BackfillConfigurationError(f"Backfill {backfill_cls.name} defines no reverse.")
        self.key = f"{backfill_cls.name}:reverse" if self.options.reverse else backfill_cls.name
        self.model = backfill_cls.get_model()
        self.pk_field = backfill_cls.get_pk_field()
        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.sizer = ChunkSizer(size=int(conf.get("INITIAL_BATCH_SIZE")))
        self.health_checks = [
            *default_checks(self.options.pause_file),
            *self.backfill.get_health_checks(),
        ]
        self._stop_reason: str | None = None
        self._stop_signum: int | None = None
        self._settings_version = 0
        #: Benchmarks only (`make bench` measures checkpoint overhead with it): False skips
        #: the per-chunk checkpoint write, giving up every resume guarantee.
        self.checkpoints = True
        #: Seconds spent in this process's checkpoint writes (what `make bench` reports as the
        #: checkpoint's share of the run, exactly rather than as a difference of two noisy runs).
        self.checkpoint_seconds = 0.0
        self._checkpoint_sql: str | None = None
        #: The read-ahead worker while a run with ``Backfill.prefetch`` is in its loop.
        self.prefetcher: Prefetcher | None = None
        #: Chunks written from a prefetched read, over this process's runs.
        self.prefetched_chunks = 0

    # -- public ---------------------------------------------------------------------------

    def request_stop(self, reason: str, signum: int | None = None) -> None:
        """Stop after the chunk in progress commits (safe to call from a signal handler)."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._stop_signum = signum

    def run(self) -> RunResult:
        """Claim (or create) the run and work until completion, a stop request or an error."""
        check_requirements(self.backfill_cls, self.using)
        run, created = self._get_or_create_run()
        if run is None:
            latest = self._latest_run()
            assert latest is not None
            return RunResult(latest, Outcome.ALREADY_COMPLETED, "already completed")
        resumed = not created and (run.cursor is not None or run.chunks_done > 0)
        took_over = self._claim(run)
        self._emit(RunStarted(run, resumed=resumed, took_over=took_over))
        logger.info(
            "backfill %s run #%s %s on %r",
            run.name,
            run.pk,
            "resumed" if resumed else "started",
            self.using,
        )
        try:
            return self._loop_prefetching(run)
        except Abort as exc:
            # Second signal: the open chunk rolled back as the exception left atomic().
            reason = f"aborted by signal {exc.signum}; the open chunk was rolled back"
            self._record_stop(run, State.PAUSED, reason, after_abort=True)
            self._emit(RunPaused(run, reason))
            raise
        except LeaseLost:
            raise
        except Exception as exc:
            self._record_failure(run, exc)
            self._emit(RunFailed(run, exc))
            if isinstance(exc, CheckFailed):
                raise BackfillFailed(
                    f"Backfill {run.name} walked every chunk but its post_check failed: {exc}. "
                    "Fix the data or the backfill and run it again to re-check."
                ) from exc
            raise BackfillFailed(
                f"Backfill {run.name} failed in chunk {run.chunks_done + 1} "
                f"(after cursor {run.cursor!r}): {type(exc).__name__}: {exc}. "
                "The committed chunks are kept; fix the cause and run it again to resume."
            ) from exc

    # -- run row lifecycle ----------------------------------------------------------------

    def _runs(self) -> Any:
        return BackfillRun.objects.using(self.using)

    def _latest_run(self) -> BackfillRun | None:
        return (
            self._runs()
            .filter(name=self.backfill_cls.name, reverse=self.options.reverse)
            .order_by("-id")
            .first()
        )

    def _get_or_create_run(self) -> tuple[BackfillRun | None, bool]:
        name = self.backfill_cls.name
        assert name is not None
        direction = " (reverse)" if self.options.reverse else ""
        # One read: the live run, if any, is the latest one of its direction. Reading the
        # live run and then the latest separately races with a concurrent creator, whose new
        # run would look unfinished but inactive ("was pending; pass --restart").
        latest = self._latest_run()
        active = latest if latest is not None and latest.active_key == self.key else None
        if active is not None and not self.options.restart:
            self._use_parameters(active)
        if active is not None:
            if self.options.restart:
                # Never restart under a live owner: it would go on committing chunks of the
                # run we cancel while the new run does them again.
                if self._owner_alive(active):
                    raise self._owned(active)
                superseded = (
                    self._runs()
                    .filter(pk=active.pk, owner_token=active.owner_token)
                    .update(
                        state=State.CANCELLED,
                        active_key=None,
                        finished_at=timezone.now(),
                        status_reason="superseded by --restart",
                        **self._release_fields(),
                    )
                )
                if not superseded:
                    raise RunOwned(f"Run #{active.pk} of {name} changed while restarting; retry.")
            else:
                return active, False
        else:
            if latest is not None and not self.options.restart:
                if latest.state == State.COMPLETED:
                    return None, False
                raise RunNotResumable(
                    f"The latest run of {name}{direction} (#{latest.pk}) was {latest.state}; "
                    "pass --restart to start a new run from the beginning."
                )
        values = parse_parameters(name, self.backfill_cls.parameters, self.options.parameters)
        self.backfill.params = SimpleNamespace(**values)
        self._pre_check()
        horizon = find_horizon(self.model, self.using)
        total, exact = estimate_total(self.model, self.using, horizon, self.options.exact_count)
        run = BackfillRun(
            name=name,
            reverse=self.options.reverse,
            active_key=self.key,
            state=State.PENDING,
            parameters=to_json(values),
            horizon=None if horizon is None else self._dump_pk(horizon),
            rows_total=total,
            rows_total_exact=exact,
            batch_size=self._batch_size(),
            target_chunk_time=self._target_chunk_time(),
            sleep=self._sleep(),
        )
        try:
            with transaction.atomic(using=self.using):
                run.save(using=self.using)
        except IntegrityError:
            # Another process created the live run between our read and our insert.
            existing = self._runs().filter(active_key=self.key).first()
            if existing is None:
                raise
            self._use_parameters(existing)
            return existing, False
        return run, True

    def _use_parameters(self, run: BackfillRun) -> None:
        """Continue with the run's own parameters; refuse different ones."""
        declared = self.backfill_cls.parameters
        stored = from_json(declared, run.parameters)
        if self.options.parameters:
            given = parse_parameters(run.name, declared, self.options.parameters)
            if to_json(given) != to_json(stored):
                raise RunNotResumable(
                    f"Run #{run.pk} of {run.name} was started with parameters "
                    f"{_describe(run.parameters)}, not {_describe(to_json(given))}. Resume it "
                    "without --param (or with the same values), or pass --restart."
                )
        self.backfill.params = SimpleNamespace(**stored)

    def _pre_check(self) -> None:
        try:
            problem = None if self.options.reverse else self.backfill.pre_check()
        except CheckFailed as exc:
            problem = str(exc)
        if problem:
            raise PreconditionFailed(
                f"Backfill {self.backfill_cls.name} refused to start: {problem}"
            )

    def _batch_size(self) -> int | None:
        """The fixed chunk size asked for, or None for adaptive sizing."""
        if self.options.target_chunk_time is not None and self.options.batch_size is None:
            return None
        fixed = self.options.batch_size or self.backfill_cls.batch_size or conf.get("BATCH_SIZE")
        return None if fixed is None else int(fixed)

    def _target_chunk_time(self) -> float:
        return float(
            self.options.target_chunk_time
            or self.backfill_cls.target_chunk_time
            or default_target_chunk_time(self.backfill_cls)
        )

    def _sleep(self) -> float:
        if self.options.sleep is not None:
            return float(self.options.sleep)
        return float(self.backfill_cls.sleep)

    def _claim(self, run: BackfillRun) -> bool:
        """Take the lease with one conditional UPDATE; refuse if a live process holds it."""
        now = timezone.now()
        stale_before = now - timedelta(seconds=float(conf.get("LEASE_SECONDS")))
        free = (
            Q(owner_token__isnull=True)
            | Q(heartbeat_at__isnull=True)
            | Q(heartbeat_at__lt=stale_before)
        )
        took_over = bool(run.owner_token)
        if run.owner_token and (
            self.options.force
            or (run.owner_host == self.host and run.owner_pid and not pid_alive(run.owner_pid))
        ):
            # The owner is known dead (same host, no such pid) or the user says so: take over
            # the lease we saw, still conditionally, so a concurrent claimer cannot also win.
            free |= Q(owner_token=run.owner_token)
        elif run.owner_token and run.heartbeat_at and run.heartbeat_at >= stale_before:
            # A live owner: refuse on what we read instead of queueing behind its chunk for
            # the write lock (SQLite) or the row lock (the checkpoint UPDATE).
            raise self._owned(run)
        # Options given now win; otherwise the run keeps the settings it was created with
        # (or that `backfill set` gave it).
        given_size = self.options.batch_size is not None or self.options.target_chunk_time
        batch_size = self._batch_size() if given_size else run.batch_size
        target = self._target_chunk_time() if given_size else run.target_chunk_time
        sleep = self._sleep() if self.options.sleep is not None else run.sleep
        claimed = (
            self._runs()
            .filter(pk=run.pk, state__in=BackfillRun.RESUMABLE)
            .filter(free)
            .update(
                owner_token=self.token,
                owner_host=self.host,
                owner_pid=self.pid,
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
                batch_size=batch_size,
                target_chunk_time=target,
                sleep=sleep,
                throttle_reason="",
            )
        )
        run.refresh_from_db(using=self.using)
        if claimed != 1 or run.owner_token != self.token:
            if run.state in BackfillRun.FINAL:
                raise RunNotResumable(f"Run #{run.pk} of {run.name} is already {run.state}.")
            raise self._owned(run)
        self._settings_version = run.settings_version
        self._configure_sizer(run, resumed_size=run.last_chunk_size)
        return took_over

    def _configure_sizer(self, run: BackfillRun, resumed_size: int | None = None) -> None:
        adaptive = run.batch_size is None
        self.sizer = ChunkSizer(
            size=run.batch_size or resumed_size or int(conf.get("INITIAL_BATCH_SIZE")),
            target=(run.target_chunk_time or default_target_chunk_time(self.backfill_cls))
            if adaptive
            else None,
            min_size=int(conf.get("MIN_BATCH_SIZE")),
            max_size=int(self.backfill_cls.max_batch_size or conf.get("MAX_BATCH_SIZE")),
            growth=float(conf.get("BATCH_GROWTH")),
        )

    def _owner_alive(self, run: BackfillRun) -> bool:
        return not self.options.force and owner_alive(run)

    def _owned(self, run: BackfillRun) -> RunOwned:
        since = (
            timezone.localtime(run.owned_since).isoformat(timespec="seconds")
            if run.owned_since
            else "?"
        )
        return RunOwned(
            f"Run #{run.pk} of {run.name} is owned by another process: host "
            f"{run.owner_host}, pid {run.owner_pid}, since {since} (last heartbeat "
            f"{describe_age(run.heartbeat_at)}). It is taken over automatically once its "
            f"heartbeat is older than {conf.get('LEASE_SECONDS'):g}s; pass --force if you "
            "know that process is dead."
        )

    def _update_owned(self, run: BackfillRun, **fields: Any) -> int:
        return self._runs().filter(pk=run.pk, owner_token=self.token).update(**fields)

    def _release_fields(self) -> dict[str, Any]:
        return {"owner_token": None, "owner_pid": None, "owner_host": "", "owned_since": None}

    def _record_stop(
        self, run: BackfillRun, state: str, reason: str, *, after_abort: bool = False
    ) -> None:
        if after_abort:
            # The connection may have been interrupted mid-query; start from a clean one.
            connections[self.using].close()
        now = timezone.now()
        fields: dict[str, Any] = {
            "state": state,
            "status_reason": reason,
            "updated_at": now,
            "requested_state": "",
            **self._release_fields(),
        }
        if state in BackfillRun.FINAL:
            fields.update(active_key=None, finished_at=now)
        try:
            self._update_owned(run, **fields)
        except DatabaseError:
            logger.exception(
                "could not record %s for run #%s; its lease will expire", state, run.pk
            )
            return
        for key, value in fields.items():
            setattr(run, key, value)

    def _record_failure(self, run: BackfillRun, exc: BaseException) -> None:
        self._reconnect_if_needed()
        fields = {
            "state": State.FAILED,
            "status_reason": "failed",
            "error_class": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "error_message": str(exc),
            "error_backtrace": "".join(traceback.format_exception(exc)),
            "updated_at": timezone.now(),
            **self._release_fields(),
        }
        try:
            self._update_owned(run, **fields)
        except DatabaseError:
            logger.exception("could not record the failure of run #%s", run.pk)
            return
        for key, value in fields.items():
            setattr(run, key, value)
        logger.error("backfill %s run #%s failed: %s", run.name, run.pk, run.last_error)

    # -- the loop -------------------------------------------------------------------------

    def _loop_prefetching(self, run: BackfillRun) -> RunResult:
        """The loop, with the read-ahead worker running when the backfill asks for one."""
        why_not = prefetch_unavailable(self.backfill, self.using)
        if why_not is None:
            self.prefetcher = Prefetcher(
                self.backfill,
                self.using,
                max_age=float(conf.get("PREFETCH_MAX_AGE")),
                prepare_connection=apply_chunk_timeouts,
            )
            logger.info("backfill %s reads each next chunk ahead on a second connection", run.name)
        elif self.backfill_cls.prefetch:
            logger.info("backfill %s does not prefetch: %s", run.name, why_not)
        try:
            return self._loop(run)
        finally:
            if self.prefetcher is not None:
                self.prefetched_chunks += self.prefetcher.used
                self.prefetcher.close()
                self.prefetcher = None

    def _loop(self, run: BackfillRun) -> RunResult:
        cursor = self._load_pk(run.cursor)
        horizon = self._load_pk(run.horizon)
        chunks_here = 0
        rows_here = 0
        next_poll = time.monotonic() + float(conf.get("CONTROL_POLL_SECONDS"))
        # Health is asked before the first chunk, then at most every HEALTH_CHECK_SECONDS
        # (a replica-lag query before every 50 ms chunk would cost a round trip each).
        next_health = float("-inf")
        while True:
            stop = self._stop_requested(chunks_here, rows_here)
            if stop is None and time.monotonic() >= next_poll:
                stop = self._poll_control(run)
                next_poll = time.monotonic() + float(conf.get("CONTROL_POLL_SECONDS"))
            if stop is None and self.health_checks and time.monotonic() >= next_health:
                stop = self._wait_until_healthy(run)
                next_health = time.monotonic() + float(conf.get("HEALTH_CHECK_SECONDS"))
            if stop is not None:
                return self._stop(run, *stop)
            limit = None if self.options.limit is None else self.options.limit - rows_here
            done = self._run_chunk_with_retries(run, cursor, horizon, limit)
            if done is None:
                return self._complete(run)
            window, processed, failed, seconds = done
            cursor = window.upper
            chunks_here += 1
            rows_here += window.size
            self.sizer.observe(window.size, seconds)
            self._emit(ChunkCommitted(run, window.size, processed, seconds, failed))
            if connections[self.using].vendor == "sqlite":
                # SQLite has one write lock, and a writer waiting on its busy timeout polls
                # only every ~100 ms: without a gap our next chunk would always win it and
                # starve every other writer (the application, `backfill pause`/`set`).
                self._interruptible_sleep(min(0.1, seconds * float(conf.get("SQLITE_GAP"))))
            if run.sleep > 0 and self._stop_requested(chunks_here, rows_here) is None:
                self._sleep_between_chunks(run)

    def _wait_until_healthy(self, run: BackfillRun) -> tuple[str, str] | None:
        """Ask the health checks; while any says "not now", wait (heartbeat, control polls)."""
        verdict = evaluate(self.health_checks, self.backfill)
        if verdict.ok:
            return None
        started = time.monotonic()
        wait = 0.25
        reason = ""
        try:
            while not verdict.ok:
                if verdict.critical:
                    return State.PAUSED, f"critical: {verdict.reason}"
                if verdict.reason != reason:
                    reason = verdict.reason
                    self._update_owned(run, throttle_reason=reason, heartbeat_at=timezone.now())
                    run.throttle_reason = reason
                    logger.info("backfill %s throttled: %s", run.name, reason)
                self._emit(Throttled(run, reason, wait))
                self._interruptible_sleep(wait, heartbeat_run=run)
                if self._stop_reason is not None:
                    return State.PAUSED, self._stop_reason
                stop = self._poll_control(run)
                if stop is not None:
                    return stop
                wait = min(wait * 2, float(conf.get("THROTTLE_MAX_WAIT")))
                verdict = evaluate(self.health_checks, self.backfill)
            return None
        finally:
            waited = time.monotonic() - started
            run.time_throttled += waited
            run.throttle_reason = ""
            self._update_owned(
                run,
                time_throttled=F("time_throttled") + waited,
                throttle_reason="",
                heartbeat_at=timezone.now(),
            )
            if verdict.ok:
                self._emit(ThrottleCleared(run, waited))

    def _stop_requested(self, chunks_here: int, rows_here: int) -> tuple[str, str] | None:
        if self._stop_reason is not None:
            return State.PAUSED, self._stop_reason
        if self.options.max_chunks is not None and chunks_here >= self.options.max_chunks:
            return State.PAUSED, f"partial run: stopped after --max-chunks {chunks_here}"
        if self.options.limit is not None and rows_here >= self.options.limit:
            return State.PAUSED, f"partial run: stopped after --limit {self.options.limit} rows"
        return None

    def _poll_control(self, run: BackfillRun) -> tuple[str, str] | None:
        """Pick up pause/cancel requests and `backfill set` changes made from any host."""
        row = (
            self._runs()
            .filter(pk=run.pk)
            .values(
                "requested_state", "settings_version", "batch_size", "target_chunk_time", "sleep"
            )
            .first()
        )
        if row is None:
            raise LeaseLost(f"Run #{run.pk} of {run.name} was deleted.")
        if row["settings_version"] != self._settings_version:
            self._settings_version = row["settings_version"]
            changes = {
                key: row[key]
                for key in ("batch_size", "target_chunk_time", "sleep")
                if getattr(run, key) != row[key]
            }
            for key, value in changes.items():
                setattr(run, key, value)
            run.settings_version = row["settings_version"]
            self._configure_sizer(run, resumed_size=self.sizer.size)
            logger.info("backfill %s settings changed: %s", run.name, changes)
            self._emit(SettingsChanged(run, changes))
        requested = row["requested_state"]
        if requested == State.PAUSED:
            return State.PAUSED, "paused on request (backfill pause)"
        if requested == State.CANCELLED:
            return State.CANCELLED, "cancelled on request (backfill cancel)"
        return None

    def _stop(self, run: BackfillRun, state: str, reason: str) -> RunResult:
        self._record_stop(run, state, reason)
        logger.info("backfill %s run #%s %s: %s", run.name, run.pk, state, reason)
        if state == State.CANCELLED:
            self._emit(RunCancelled(run, reason))
            return RunResult(run, Outcome.CANCELLED, reason)
        critical = reason.startswith("critical: ")
        self._emit(RunPaused(run, reason, critical=critical))
        return RunResult(run, Outcome.PAUSED, reason, self._stop_signum, critical=critical)

    def _complete(self, run: BackfillRun) -> RunResult:
        if not self.options.reverse:
            problem = self.backfill.post_check()
            if problem:
                raise CheckFailed(problem)
        now = timezone.now()
        fields: dict[str, Any] = {
            "state": State.COMPLETED,
            # The walk is over: the total is now known exactly.
            "rows_total": run.rows_scanned,
            "rows_total_exact": True,
            "active_key": None,
            "finished_at": now,
            "updated_at": now,
            "status_reason": "",
            "requested_state": "",
            **self._release_fields(),
        }
        if self._update_owned(run, **fields) != 1:
            raise LeaseLost(f"Run #{run.pk} was taken over by another process.")
        for key, value in fields.items():
            setattr(run, key, value)
        logger.info("backfill %s run #%s completed", run.name, run.pk)
        self._emit(RunCompleted(run))
        return RunResult(run, Outcome.COMPLETED)

    def _run_chunk_with_retries(
        self, run: BackfillRun, cursor: Any, horizon: Any, limit: int | None
    ) -> tuple[Window, int, int, float] | None:
        """Find the next window and commit it; None when the walk has reached the horizon."""
        attempt = 0
        timeouts = 0
        while True:
            started = time.perf_counter()
            size = self.sizer.size if limit is None else max(1, min(self.sizer.size, limit))
            try:
                if attempt > 0:
                    committed = self._committed_meanwhile(run)
                    if committed is not None:
                        return committed
                taken = None
                if self.prefetcher is not None and attempt == 0:
                    taken = self.prefetcher.take(cursor, size)
                # Inside the retry loop: a dropped connection can surface here too.
                window, prepared = taken or (
                    next_window(self.model, self.using, cursor, horizon, size),
                    None,
                )
                if window is None:
                    return None
                if self.prefetcher is not None and self._stop_reason is None:
                    following = self.sizer.size if limit is None else limit - window.size
                    if following > 0:
                        self.prefetcher.submit(
                            window.upper, horizon, min(self.sizer.size, following)
                        )
                return (window, *self._run_chunk(run, window, started, prepared))
            except Exception as exc:
                attempt += 1
                if not is_transient(exc) or attempt > int(conf.get("MAX_RETRIES")):
                    raise
                if is_timeout(exc):
                    timeouts += 1
                    if timeouts >= 2:
                        # The same window keeps timing out: try half of it next time.
                        self.sizer.halve()
                delay = min(
                    float(conf.get("RETRY_MAX_DELAY")),
                    float(conf.get("RETRY_BASE_DELAY")) * 2 ** (attempt - 1),
                ) * random.uniform(0.5, 1.0)
                logger.warning(
                    "backfill %s chunk after %r: transient %s (attempt %d), retrying in %.2fs",
                    run.name,
                    cursor,
                    type(exc).__name__,
                    attempt,
                    delay,
                )
                self._emit(Retrying(run, attempt, delay, exc, next_size=self.sizer.size))
                self._interruptible_sleep(delay)
                self._reconnect_if_needed()
                self._count_retry(run)

    def _committed_meanwhile(self, run: BackfillRun) -> tuple[Window, int, int, float] | None:
        """The chunk whose attempt failed, if its transaction did commit: an error reported for
        the COMMIT itself (a connection lost just after sending it) does not mean the server
        rolled it back. Read from the checkpoint, never done twice."""
        row = (
            self._runs()
            .filter(pk=run.pk, owner_token=self.token)
            .values("chunks_done", "cursor", "rows_scanned", "rows_processed", "rows_failed")
            .first()
        )
        if row is None or row["chunks_done"] == run.chunks_done:
            return None
        window = Window(
            self._load_pk(run.cursor),
            self._load_pk(row["cursor"]),
            row["rows_scanned"] - run.rows_scanned,
        )
        processed = row["rows_processed"] - run.rows_processed
        failed = row["rows_failed"] - run.rows_failed
        run.refresh_from_db(using=self.using)
        logger.warning(
            "backfill %s: the chunk up to %r committed although its commit reported an error; "
            "going on from its checkpoint",
            run.name,
            window.upper,
        )
        return window, processed, failed, run.last_chunk_seconds or 0.0

    def _run_chunk(
        self, run: BackfillRun, window: Window, started: float, prepared: Any = None
    ) -> tuple[int, int, float]:
        """Process *window* (from the rows *prepared* ahead, if given) and commit it with the
        checkpoint."""
        with transaction.atomic(using=self.using):
            apply_chunk_timeouts(connections[self.using])
            queryset = window.filter(self.backfill.chunk_queryset()).order_by("pk")
            self.backfill.window = window
            if self.backfill_cls.quarantine:
                processed, failed = self._process_isolating(run, queryset, prepared)
            else:
                processed, failed = self._process(queryset, prepared), 0
            seconds = time.perf_counter() - started
            now = timezone.now()
            # The checkpoint: columns of the run row it adds to, and those it sets.
            added = {
                "rows_scanned": window.size,
                "rows_processed": processed,
                "rows_failed": failed,
                "chunks_done": 1,
                "time_running": seconds,
            }
            assigned = {
                "cursor": self._dump_pk(window.upper),
                "last_chunk_size": window.size,
                "last_chunk_seconds": seconds,
                "heartbeat_at": now,
                "updated_at": now,
            }
            updated = 1
            checkpoint_started = time.perf_counter()
            if self.checkpoints:
                updated = self._write_checkpoint(run, added, assigned)
            self.checkpoint_seconds += time.perf_counter() - checkpoint_started
            if updated != 1:
                # Leaving atomic() with this exception rolls the chunk back.
                raise LeaseLost(
                    f"Run #{run.pk} of {run.name} was taken over by another process; this "
                    "process stopped without committing its open chunk."
                )
        for name, value in added.items():
            setattr(run, name, getattr(run, name) + value)
        for name, value in assigned.items():
            setattr(run, name, value)
        # The checkpoint records the time up to its own write; sizing and the display also
        # count the commit, which is part of what a chunk costs.
        return processed, failed, time.perf_counter() - started

    def _write_checkpoint(
        self, run: BackfillRun, added: dict[str, Any], assigned: dict[str, Any]
    ) -> int:
        """Add *added* to, and set *assigned* on, the run's row if we still own the run;
        returns the rows matched (1, or 0 when the lease was lost).

        One statement whose SQL is built once per run (the keys come in the same order every
        chunk): building the ORM's ``update()`` with its F() expressions took about twice the
        database's own time for this UPDATE, in every chunk."""
        connection = connections[self.using]
        meta = BackfillRun._meta
        if self._checkpoint_sql is None:
            q = connection.ops.quote_name

            def column(name: str) -> str:
                return q(meta.get_field(name).column)

            sets = [f"{column(name)} = {column(name)} + %s" for name in added]
            sets += [f"{column(name)} = %s" for name in assigned]
            self._checkpoint_sql = (
                f"UPDATE {q(meta.db_table)} SET {', '.join(sets)} "
                f"WHERE {column('id')} = %s AND {column('owner_token')} = %s"
            )
        params = [
            *added.values(),
            *(
                meta.get_field(name).get_db_prep_save(value, connection)
                for name, value in assigned.items()
            ),
            run.pk,
            self.token,
        ]
        with connection.cursor() as cursor:
            cursor.execute(self._checkpoint_sql, params)
            return cursor.rowcount

    def _process(self, queryset: Any, prepared: Any) -> int:
        """Run the backfill on the chunk: from the rows *prepared* ahead, if given."""
        if prepared is not None:
            return self.backfill.write_prepared(prepared)
        return self.backfill.run_window(queryset)

    def _process_isolating(
        self, run: BackfillRun, queryset: Any, prepared: Any = None
    ) -> tuple[int, int]:
        """Process the chunk; if it raises, bisect it to quarantine exactly the failing rows.

        Each attempt runs in a savepoint, so a failed half rolls back alone and the rows that
        succeed commit with the checkpoint, together with the records of the failing ones.
        Transient errors are not quarantined: they abort the chunk, which is retried whole.
        The halves are read and processed again here, whether or not the chunk was prefetched.
        """
        try:
            with transaction.atomic(using=self.using):
                return self._process(queryset, prepared), 0
        except Exception as exc:
            # A mistake in the backfill itself fails every row alike: fail the run instead.
            if is_transient(exc) or isinstance(exc, BackfillConfigurationError):
                raise
        pks = list(queryset.values_list("pk", flat=True))
        return self._bisect(run, queryset, pks)

    def _bisect(self, run: BackfillRun, queryset: Any, pks: list[Any]) -> tuple[int, int]:
        try:
            with transaction.atomic(using=self.using):
                return self.backfill.run_window(queryset.filter(pk__in=pks)), 0
        except Exception as exc:
            if is_transient(exc) or isinstance(exc, BackfillConfigurationError):
                raise
            if len(pks) == 1:
                quarantine_row(run, self.using, pks[0], exc)
                return 0, 1
        middle = len(pks) // 2
        left = self._bisect(run, queryset, pks[:middle])
        right = self._bisect(run, queryset, pks[middle:])
        return left[0] + right[0], left[1] + right[1]

    def _count_retry(self, run: BackfillRun) -> None:
        try:
            self._update_owned(run, retries=F("retries") + 1)
            run.retries += 1
        except DatabaseError:
            logger.warning("could not count a retry of run #%s", run.pk)

    def _reconnect_if_needed(self) -> None:
        connection = connections[self.using]
        if connection.connection is not None and not connection.is_usable():
            connection.close()

    def _sleep_between_chunks(self, run: BackfillRun) -> None:
        self._interruptible_sleep(run.sleep, heartbeat_run=run)

    def _interruptible_sleep(
        self, seconds: float, heartbeat_run: BackfillRun | None = None
    ) -> None:
        deadline = time.monotonic() + seconds
        beat_every = float(conf.get("LEASE_SECONDS")) / 3
        next_beat = time.monotonic() + beat_every
        while self._stop_reason is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))
            if heartbeat_run is not None and time.monotonic() >= next_beat:
                self._update_owned(heartbeat_run, heartbeat_at=timezone.now())
                next_beat = time.monotonic() + beat_every

    # -- helpers --------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)

    def _dump_pk(self, value: Any) -> str:
        return str(value)

    def _load_pk(self, text: str | None) -> Any:
        if text is None:
            return None
        target = self.pk_field.target_field if self.pk_field.is_relation else self.pk_field
        return target.to_python(text)


def estimate_total(
    model: type[Any], using: str, horizon: Any, exact: bool = False
) -> tuple[int, bool]:
    """Rows up to *horizon*: a COUNT when cheap or asked for, table statistics otherwise.

    Statistics (PostgreSQL ``pg_class.reltuples``, MySQL/MariaDB ``information_schema``) are
    used above ESTIMATE_ABOVE rows, where an exact COUNT would scan the whole table.
    """
    if horizon is None:
        return 0, True
    if not exact:
        estimate = table_estimate(model, using)
        if estimate is not None and estimate > int(conf.get("ESTIMATE_ABOVE")):
            return estimate, False
    return count_range(model, using, None, horizon), True


def table_estimate(model: type[Any], using: str) -> int | None:
    """The planner's row estimate for the model's table, or None where there is none."""
    connection = connections[using]
    table = model._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                [connection.ops.quote_name(table)],
            )
        elif connection.vendor == "mysql":
            cursor.execute(
                "SELECT table_rows FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = %s",
                [table],
            )
        else:
            return None
        row = cursor.fetchone()
    # reltuples is -1 for a table never analyzed.
    return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


def quarantine_row(run: BackfillRun, using: str, pk: Any, exc: BaseException) -> None:
    """Record (or update) the failure of one row; called inside the chunk's transaction."""
    now = timezone.now()
    fields = {
        "error_class": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "error_message": str(exc),
        "error_backtrace": "".join(traceback.format_exception(exc)),
        "updated_at": now,
    }
    rows = QuarantinedRow.objects.using(using)
    existing = rows.filter(name=run.name, row_pk=str(pk), resolved_at__isnull=True)
    if not existing.update(attempts=F("attempts") + 1, **fields):
        rows.create(run=run, name=run.name, row_pk=str(pk), created_at=now, **fields)
    logger.warning("backfill %s quarantined pk=%s: %s", run.name, pk, fields["error_class"])


def retry_quarantined(
    backfill_cls: type[Backfill], using: str = "default"
) -> tuple[list[QuarantinedRow], list[QuarantinedRow]]:
    """Process each unresolved quarantined row again, one transaction per row.

    Returns (resolved, still_failing). A row that no longer matches ``get_queryset()`` is
    resolved: nothing is left to do for it.
    """
    check_requirements(backfill_cls, using)
    backfill = backfill_cls(using=using)
    latest = BackfillRun.objects.using(using).filter(name=backfill_cls.name).order_by("-id").first()
    backfill.params = SimpleNamespace(
        **from_json(backfill_cls.parameters, latest.parameters if latest else {})
    )
    pk_field = backfill_cls.get_pk_field()
    target = pk_field.target_field if pk_field.is_relation else pk_field
    resolved: list[QuarantinedRow] = []
    failing: list[QuarantinedRow] = []
    pending = QuarantinedRow.objects.using(using).filter(
        name=backfill_cls.name, resolved_at__isnull=True
    )
    for row in pending:
        queryset = backfill.chunk_queryset().filter(pk=target.to_python(row.row_pk))
        try:
            with transaction.atomic(using=using):
                apply_chunk_timeouts(connections[using])
                backfill.run_window(queryset)
                row.resolved_at = row.updated_at = timezone.now()
                row.save(using=using, update_fields=["resolved_at", "updated_at"])
            resolved.append(row)
        except Exception as exc:
            if is_transient(exc):
                raise
            row.error_class = f"{type(exc).__module__}.{type(exc).__qualname__}"
            row.error_message = str(exc)
            row.error_backtrace = "".join(traceback.format_exception(exc))
            row.attempts += 1
            row.updated_at = timezone.now()
            row.save(using=using)
            failing.append(row)
    return resolved, failing


def apply_chunk_timeouts(connection: Any) -> None:
    """Bound how long the open chunk may wait for locks or run one statement."""
    lock = conf.get("LOCK_TIMEOUT")
    statement = conf.get("STATEMENT_TIMEOUT")
    if connection.vendor == "postgresql":
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
    elif connection.vendor == "mysql":
        # Session variables: set once per physical connection (a reconnect starts afresh).
        raw = connection.connection
        if getattr(raw, "_backfills_timeouts", None) == (lock, statement):
            return
        parts = []
        if lock is not None:
            parts.append(f"innodb_lock_wait_timeout = {max(1, math.ceil(float(lock)))}")
        if statement is not None:
            if connection.mysql_is_mariadb:
                parts.append(f"max_statement_time = {float(statement):.3f}")
            else:
                parts.append(f"max_execution_time = {int(float(statement) * 1000)}")
        if parts:
            with connection.cursor() as cursor:
                cursor.execute("SET SESSION " + ", ".join(parts))
        raw._backfills_timeouts = (lock, statement)


def _describe(parameters: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(parameters.items())) or "none"


def run_backfill(
    name_or_class: str | type[Backfill],
    *,
    using: str = "default",
    listeners: Iterable[Listener] = (),
    **options: Any,
) -> RunResult:
    """Run a backfill in this process until it completes or stops; see RunOptions for options."""
    from .registry import registry

    backfill_cls = registry.get(name_or_class) if isinstance(name_or_class, str) else name_or_class
    if backfill_cls.name is None:
        raise BackfillConfigurationError(f"{backfill_cls.__name__} is not registered.")
    return Runner(
        backfill_cls, using=using, options=RunOptions(**options), listeners=listeners
    ).run()
