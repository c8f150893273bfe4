"""The Python control API: pause, resume, cancel, change settings, read status.

``manage.py backfill pause|resume|cancel|set|status|list`` call these functions, and so can a
project's own code (an admin action, a deploy script, a chat bot). Each finds the backfill's
unfinished run on ``using`` and asks the ledger to record the change: a run a live process owns
gets a *request* its owner acts on at its next chunk boundary (from any host); a run nobody
owns changes at once.

    import backfills

    result = backfills.pause("blog.populate_post_slugs", by="deploy bot")
    print(result.message)  # Asked run #3 of blog.populate_post_slugs (host web-1, ...
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from django.db import DEFAULT_DB_ALIAS

from . import conf, profiles
from .display import format as fmt
from .engine.ledger import Ledger, Partitions
from .exceptions import BackfillError
from .models import BackfillPartition, BackfillRun, QuarantinedRow
from .snapshot import RunSnapshot

if TYPE_CHECKING:
    from .base import Backfill
    from .engine.runner import RunResult
    from .events import Listener

State = BackfillRun.State

#: What a control call did: asked the live owner, changed the run itself, found nothing to
#: change, or took back a pending pause request.
Action = Literal["requested", "applied", "unchanged", "withdrawn", "resumed"]


class NoActiveRun(BackfillError):
    """The backfill has no unfinished run to act on."""


@dataclass(frozen=True)
class ControlResult:
    """The run as the call left it, what the call did, and a sentence saying so."""

    run: RunSnapshot
    action: Action
    message: str


@dataclass(frozen=True)
class BackfillState:
    """Where a backfill's data stands: the state of its latest run in either direction.

    ``state`` is ``never run``, a run state (``running``, ``paused``, ``failed``, ...,
    ``interrupted`` when its owner is gone), or ``reversed`` when the latest run is a completed
    reverse. ``done`` is True only when the latest run is a completed forward run."""

    name: str
    state: str
    run: RunSnapshot | None
    done: bool


def _class(name: str | type[Backfill]) -> type[Backfill]:
    from .registry import registry

    return registry.get(name) if isinstance(name, str) else name


def _ledger(using: str) -> Ledger:
    return Ledger(using, float(conf.get("LEASE_SECONDS")))


def snapshot(run: BackfillRun, ledger: Ledger) -> RunSnapshot:
    """*run* as people should see it: ``interrupted`` when it reads running but its owner is
    gone (its pid no longer exists on this host, or its heartbeat is past the lease)."""
    if run.parallel:
        interrupted = run.state == State.RUNNING and not Partitions(ledger).live_workers(run)
    else:
        interrupted = run.state == State.RUNNING and not ledger.owner_alive(run)
    return RunSnapshot.of(run, interrupted=interrupted)


def _active(name: str, ledger: Ledger, reverse: bool | None, verb: str) -> BackfillRun:
    run = ledger.active(name, reverse)
    if run is not None:
        return run
    latest = ledger.latest(name, reverse=reverse)
    if latest is None:
        raise NoActiveRun(f"{name} has never run on database {ledger.using!r}; nothing to {verb}.")
    hint = f"start a new run with `backfill run {name} --restart`"
    if reverse is False and ledger.active(name, reverse=True) is not None:
        hint += " (its reverse has an unfinished run: add --reverse for that one)"
    raise NoActiveRun(
        f"{name} has no unfinished run to {verb}: its latest run #{latest.pk} is "
        f"{latest.state}; {hint}."
    )


def _stop(
    name: str | type[Backfill], state: str, using: str, reverse: bool | None, by: str, via: str
) -> ControlResult:
    result = _stopped(name, state, using, reverse, by)
    if result.action != "unchanged":
        _record(using, result, "pause" if state == State.PAUSED else "cancel", by, via)
    return result


def _record(using: str, result: ControlResult, action: str, by: str, via: str) -> None:
    """Record who did *action* to the run, with the call's sentence (``BackfillAction``)."""
    _ledger(using).record_action(result.run, action, by=by, via=via, message=result.message)


def _stopped(
    name: str | type[Backfill], state: str, using: str, reverse: bool | None, by: str
) -> ControlResult:
    backfill_name = _class(name).name
    ledger = _ledger(using)
    verb = "pause" if state == State.PAUSED else "cancel"
    run = _active(backfill_name, ledger, reverse, verb)
    if run.owner_token and ledger.owner_alive(run):
        if not ledger.request(run, state):
            raise BackfillError(f"Run #{run.pk} of {run.label} finished or stopped meanwhile.")
        # Named as we asked it: by the time we read the row again it may have acted already.
        message = (
            f"Asked run #{run.pk} of {run.label} (host {run.owner_host}, pid {run.owner_pid}) "
            f"to {verb} at its next chunk boundary."
        )
        ledger.read(run)
        return ControlResult(snapshot(run, ledger), "requested", message)
    if state == State.PAUSED and run.state == State.PAUSED:
        return ControlResult(
            snapshot(run, ledger), "unchanged", f"Run #{run.pk} of {run.label} is already paused."
        )
    who = f" by {by}" if by else ""
    reason = f"{state} by `backfill {verb}`{who} while not running"
    # Conditional on the lease we saw being gone, so a process that claimed the run
    # meanwhile is not overwritten.
    if not ledger.stop_unowned(run, state, reason):
        raise BackfillError(f"Run #{run.pk} of {run.label} changed while we looked; try again.")
    ledger.read(run)
    return ControlResult(
        snapshot(run, ledger), "applied", f"Run #{run.pk} of {run.label} is now {state}."
    )


def pause(
    name: str | type[Backfill],
    *,
    using: str = DEFAULT_DB_ALIAS,
    reverse: bool | None = None,
    by: str = "",
    via: str = "code",
) -> ControlResult:
    """Pause the backfill's unfinished run: its live owner stops at its next chunk boundary
    (the run stays resumable); a run nobody owns is marked paused at once.

    *reverse* picks the direction (None: whichever run is unfinished, newest first); *by*
    names who asked, for the run's status and its actions (``BackfillAction``, with *via*:
    "command", "admin" or "code"). Raises ``NoActiveRun`` when there is none."""
    return _stop(name, State.PAUSED, using, reverse, by, via)


def cancel(
    name: str | type[Backfill],
    *,
    using: str = DEFAULT_DB_ALIAS,
    reverse: bool | None = None,
    by: str = "",
    via: str = "code",
) -> ControlResult:
    """Cancel the backfill's unfinished run for good (committed chunks stay); a new run needs
    ``run --restart``. Like ``pause`` for a run a live process owns."""
    return _stop(name, State.CANCELLED, using, reverse, by, via)


def withdraw_pause(
    name: str | type[Backfill],
    *,
    using: str = DEFAULT_DB_ALIAS,
    reverse: bool | None = None,
    by: str = "",
    via: str = "code",
) -> ControlResult | None:
    """Take back a pause request its live owner has not acted on yet; None when there is no
    such request (the run is not owned, or it already paused). Raises ``NoActiveRun`` when
    the backfill has no unfinished run."""
    backfill_name = _class(name).name
    ledger = _ledger(using)
    run = _active(backfill_name, ledger, reverse, "resume")
    if not (run.requested_state == State.PAUSED and run.owner_token and ledger.owner_alive(run)):
        return None
    if not ledger.withdraw(run):
        return None  # the owner acted on the request meanwhile: it paused
    message = (
        f"Withdrew the pause request: run #{run.pk} of {run.label} keeps running on "
        f"{run.owner_host} (pid {run.owner_pid})."
    )
    ledger.read(run)
    result = ControlResult(snapshot(run, ledger), "withdrawn", message)
    _record(using, result, "resume", by, via)
    return result


def resume(
    name: str | type[Backfill],
    *,
    using: str = DEFAULT_DB_ALIAS,
    reverse: bool = False,
    listeners: Iterable[Listener] = (),
    by: str = "",
    via: str = "code",
    **options: object,
) -> ControlResult | RunResult:
    """Continue the backfill's paused or failed run.

    A pause request its live owner has not acted on yet is withdrawn (returns a
    ``ControlResult``); otherwise the run continues in this process from its checkpoint until
    it completes or stops (returns the ``RunResult``, as ``run_backfill`` does, with the same
    keyword options). Raises ``NoActiveRun`` when there is nothing to resume."""
    from .engine.runner import run_backfill

    if "restart" in options:
        raise TypeError("resume() continues the unfinished run; use run_backfill(restart=True)")
    backfill_cls = _class(name)
    withdrawn = withdraw_pause(backfill_cls, using=using, reverse=reverse, by=by, via=via)
    if withdrawn is not None:
        return withdrawn
    ledger = _ledger(using)
    run = _active(backfill_cls.name, ledger, reverse, "resume")
    if run.parallel:
        return resume_parallel(backfill_cls, run, using=using, by=by, via=via, **options)
    ledger.record_action(run, "resume", by=by, via=via, message="resumed in this process")
    return run_backfill(
        backfill_cls,
        using=using,
        reverse=reverse,
        listeners=listeners,
        **options,  # type: ignore[arg-type]
    )


def resume_parallel(
    name: str | type[Backfill],
    run: RunSnapshot | BackfillRun | None = None,
    *,
    using: str = DEFAULT_DB_ALIAS,
    by: str = "",
    via: str = "code",
    **options: object,
) -> ControlResult:
    """Set the backfill's paused or failed parallel run running again, for workers to claim
    its partitions (nothing is walked in this process: this is what the admin calls). A pause
    request not yet acted on is withdrawn instead."""
    from .engine.parallel import start_parallel
    from .engine.runner import RunOptions

    backfill_cls = _class(name)
    ledger = _ledger(using)
    if run is None:
        withdrawn = withdraw_pause(backfill_cls, using=using, by=by, via=via)
        if withdrawn is not None:
            return withdrawn
        run = _active(backfill_cls.name, ledger, None, "resume")
    if not run.parallel:
        raise BackfillError(
            f"Run #{run.pk} of {run.label} is a serial run: it continues in the process that "
            f"runs it, `python manage.py backfill resume {run.name}`."
        )
    opened = start_parallel(
        backfill_cls,
        workers=run.workers or 1,
        using=using,
        options=RunOptions(reverse=run.reverse, **options),  # type: ignore[arg-type]
    )
    result = ControlResult(
        snapshot(opened.run, ledger),
        "unchanged" if opened.how == "joined" else "resumed",
        f"Run #{run.pk} of {run.label} is running again; it needs workers to claim its "
        f"partitions: `backfill worker` processes, `backfill run {run.name}` (its "
        f"{run.workers} workers here) or `backfill run {run.name} --workers N --enqueue`.",
    )
    if result.action == "resumed":
        _record(using, result, "resume", by, via)
    return result


def start(
    name: str | type[Backfill],
    *,
    workers: int = 1,
    parameters: dict[str, Any] | None = None,
    using: str = DEFAULT_DB_ALIAS,
    restart: bool = False,
    enqueue: bool = True,
    profile: str | None = None,
    by: str = "",
    via: str = "code",
) -> ControlResult:
    """Open a parallel run of the backfill split for *workers* (or resume its unfinished one)
    and, with *enqueue*, hand it to the task backend (``TASK_BACKEND``): *workers* drain
    tasks. Nothing is walked in this process; this is what the admin's start button calls.
    *profile* is "gentle", "balanced" or "fast" (None: the backfill's or the setting's).

    *parameters* are typed values or their text; a bad one raises ``ParameterError`` before
    anything is written. ``tasks.backend_problem()`` says beforehand whether enqueuing can
    work; without a task backend, run ``backfill worker`` processes instead."""
    from .engine.parallel import start_parallel
    from .engine.runner import RunOptions

    backfill_cls = _class(name)
    if enqueue:
        from .exceptions import BackfillConfigurationError
        from .tasks import backend_problem

        problem = backend_problem()
        if problem is not None:  # before the run is opened: no run is left waiting for tasks
            raise BackfillConfigurationError(
                f"{problem} Start it with `backfill run {backfill_cls.name} --workers "
                f"{workers}` instead, or pass enqueue=False and run `backfill worker`."
            )
    opened = start_parallel(
        backfill_cls,
        workers=workers,
        using=using,
        options=RunOptions(
            parameters=dict(parameters or {}),
            restart=restart,
            profile=profile,
            started_by=by,
            via=via,
        ),
    )
    run, ledger = opened.run, _ledger(using)
    if opened.how == "already completed":
        return ControlResult(
            snapshot(run, ledger),
            "unchanged",
            f"{run.label} already completed in run #{run.pk}; start it again with restart.",
        )
    message = f"{opened.how.capitalize()} run #{run.pk} of {run.label} for {workers} worker(s)"
    if enqueue and opened.how != "joined":
        from .tasks import enqueue_workers

        backend = enqueue_workers(run, workers, using=using)
        message += f"; enqueued {workers} worker task(s) on {backend}."
    else:
        message += "; `python manage.py backfill worker` processes drain it."
    if opened.how == "resumed":
        ledger.record_action(run, "resume", by=by, via=via, message=message)
    ledger.read(run)
    return ControlResult(snapshot(run, ledger), "applied", message)


def retry_quarantined(
    name: str | type[Backfill], *, using: str = DEFAULT_DB_ALIAS, by: str = "", via: str = "code"
) -> tuple[list[QuarantinedRow], list[QuarantinedRow]]:
    """Process the backfill's unresolved quarantined rows again (after fixing the cause), one
    transaction per row; returns (resolved, still failing) and records who asked."""
    from .engine.quarantine import retry_quarantined as retry

    backfill_cls = _class(name)
    resolved, failing = retry(backfill_cls, using)
    ledger = _ledger(using)
    ledger.record_action(
        ledger.latest(backfill_cls.name),
        "retry",
        by=by,
        via=via,
        message=f"{len(resolved)} quarantined row(s) processed, {len(failing)} still failing.",
        name=backfill_cls.name,
    )
    return resolved, failing


def note(
    name: str | type[Backfill],
    action: str,
    *,
    using: str = DEFAULT_DB_ALIAS,
    reverse: bool | None = None,
    by: str = "",
    via: str = "code",
    message: str = "",
) -> None:
    """Record who did *action* to the backfill's unfinished run (its latest when none is
    unfinished), for callers that act through another path (``backfill resume`` runs the
    run itself)."""
    backfill_name = _class(name).name
    ledger = _ledger(using)
    run = ledger.active(backfill_name, reverse) or ledger.latest(backfill_name, bool(reverse))
    ledger.record_action(run, action, by=by, via=via, message=message, name=backfill_name)


_UNSET: object = object()


def change_settings(
    name: str | type[Backfill],
    *,
    using: str = DEFAULT_DB_ALIAS,
    reverse: bool | None = None,
    batch_size: int | None | object = _UNSET,
    target_chunk_time: float | object = _UNSET,
    sleep: float | object = _UNSET,
    profile: str | object = _UNSET,
    max_duty: float | None | object = _UNSET,
    by: str = "",
    via: str = "code",
) -> ControlResult:
    """Change the unfinished run's chunk size, target chunk time, sleep, profile or duty cycle,
    even while it runs (its owner applies them at its next chunk boundary, from any host).

    ``batch_size=None`` goes back to adaptive sizing; a ``target_chunk_time`` alone also does.
    A ``profile`` ("gentle", "balanced", "fast") sets the guard's budget and brings the
    profile's target chunk time (adaptive sizing) and duty cycle, unless given alongside.
    ``max_duty`` is a fraction in (0, 1]; 1 or None works all the time. Values are checked:
    a batch size is a whole number >= 1, times are finite and > 0 (the sleep may be 0)."""
    changes: dict[str, object] = {}
    backfill_cls = _class(name)
    if profile is not _UNSET:
        chosen = profiles.profile(profiles.check_name(profile), conf.snapshot())
        changes["profile"] = chosen.name
        changes["target_chunk_time"] = chosen.target(backfill_cls.locks_rows_whole_chunk)
        changes["batch_size"] = None
        changes["max_duty"] = chosen.max_duty
    if max_duty is not _UNSET:
        changes["max_duty"] = profiles.check_duty(max_duty)
    if batch_size is not _UNSET:
        if batch_size is not None and (
            not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise BackfillError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
        changes["batch_size"] = batch_size
    if target_chunk_time is not _UNSET:
        changes["target_chunk_time"] = check_seconds("target_chunk_time", target_chunk_time)
        changes.setdefault("batch_size", None)
    if sleep is not _UNSET:
        changes["sleep"] = check_seconds("sleep", sleep, allow_zero=True)
    if not changes:
        raise BackfillError(
            "Nothing to change: give batch_size, target_chunk_time, sleep, profile or max_duty."
        )
    backfill_name = backfill_cls.name
    ledger = _ledger(using)
    run = _active(backfill_name, ledger, reverse, "change")
    if not ledger.change_settings(run, changes):
        raise BackfillError(f"Run #{run.pk} of {run.label} finished before it could change.")
    live = bool(run.owner_token and ledger.owner_alive(run))
    ledger.read(run)
    described = fmt.settings(changes)
    where = (
        "the running process applies it at its next chunk boundary"
        if live
        else "used when the run resumes"
    )
    result = ControlResult(
        snapshot(run, ledger), "applied", f"Run #{run.pk} of {run.label}: {described} ({where})."
    )
    _record(using, result, "set", by, via)
    return result


def check_seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """*value* as a number of seconds: finite and > 0 (>= 0 with *allow_zero*), or a
    ``BackfillError`` saying so in one sentence."""
    rule = "a finite number of seconds " + (">= 0" if allow_zero else "> 0")
    if isinstance(value, bool):
        raise BackfillError(f"{name} must be {rule}, got {value!r}.")
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BackfillError(f"{name} must be {rule}, got {value!r}.") from None
    if not (seconds > 0 or (allow_zero and seconds == 0)) or seconds == float("inf"):
        raise BackfillError(f"{name} must be {rule}, got {value!r}.")
    return seconds


def active_run(
    name: str | type[Backfill], *, using: str = DEFAULT_DB_ALIAS, reverse: bool | None = None
) -> RunSnapshot | None:
    """The backfill's unfinished run (of *reverse*'s direction; either when None), if any."""
    ledger = _ledger(using)
    run = ledger.active(_class(name).name, reverse)
    return None if run is None else snapshot(run, ledger)


def partitions(run: RunSnapshot | int, *, using: str = DEFAULT_DB_ALIAS) -> list[BackfillPartition]:
    """The partitions of a parallel run (empty for a serial run), in order: each one's key
    range, cursor, state, owner, heartbeat and counters."""
    run_id = run if isinstance(run, int) else run.pk
    return list(BackfillPartition.objects.using(using).filter(run_id=run_id).order_by("number"))


def latest_run(
    name: str | type[Backfill], *, using: str = DEFAULT_DB_ALIAS, reverse: bool = False
) -> RunSnapshot | None:
    """The backfill's newest run in one direction (forward by default), finished or not."""
    ledger = _ledger(using)
    run = ledger.latest(_class(name).name, reverse)
    return None if run is None else snapshot(run, ledger)


def status(
    names: Sequence[str | type[Backfill]] = (),
    *,
    using: str = DEFAULT_DB_ALIAS,
    all_runs: bool = False,
) -> list[RunSnapshot]:
    """The latest run of each backfill (and of its reverse), or every run with *all_runs*;
    only those of *names* when given. Runs whose owner is gone read ``interrupted``."""
    wanted = [_class(name).name for name in names]
    ledger = _ledger(using)
    if all_runs:
        runs = ledger.runs.order_by("name", "-id")
        if wanted:
            runs = runs.filter(name__in=wanted)
        return [snapshot(run, ledger) for run in runs]
    latest = ledger.latest_runs(wanted or None)
    return [snapshot(latest[label], ledger) for label in sorted(latest)]


def backfill_state(name: str | type[Backfill], *, using: str = DEFAULT_DB_ALIAS) -> BackfillState:
    """Where the backfill's data stands on *using*: its latest run in either direction.

    Runs cancelled before their first chunk changed nothing and are skipped."""
    backfill_name = _class(name).name
    ledger = _ledger(using)
    runs = ledger.runs.filter(name=backfill_name).order_by("-id")
    latest = next(
        (
            run
            for run in runs.iterator()
            if not (run.state == State.CANCELLED and run.chunks_done == 0)
        ),
        None,
    )
    if latest is None:
        return BackfillState(backfill_name, "never run", None, False)
    shown = snapshot(latest, ledger)
    if latest.reverse:
        state = "reversed" if latest.state == State.COMPLETED else f"{shown.shown_state} (reverse)"
        return BackfillState(backfill_name, state, shown, False)
    return BackfillState(backfill_name, shown.shown_state, shown, latest.state == State.COMPLETED)
