"""What one invocation asks for (``RunOptions``) and how it combines with the backfill's class
attributes and the settings: options given now win, then the class, then BACKFILLS."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import profiles
from ..exceptions import BackfillConfigurationError
from .ledger import RunSettings

if TYPE_CHECKING:
    from ..base import Backfill
    from ..conf import Settings
    from ..models import BackfillRun
    from ..sizing import ChunkSizer


@dataclass(frozen=True)
class RunOptions:
    """Knobs for one invocation of a run; ``None`` means "the backfill's or the setting's".

    Values are checked when built: a wrong type or range raises ``BackfillConfigurationError``
    (a ``BackfillError``) naming the option, before anything touches the database."""

    #: A fixed chunk size (turns adaptive sizing off).
    batch_size: int | None = None
    #: Seconds each chunk should take (adaptive sizing).
    target_chunk_time: float | None = None
    #: Seconds to wait between chunks.
    sleep: float | None = None
    #: "gentle", "balanced" or "fast": target chunk time, guard budget and duty cycle in one
    #: word (``backfills.profiles``); explicit ``target_chunk_time``/``max_duty`` win over it.
    profile: str | None = None
    #: The largest fraction of wall time the run works, in (0, 1]: after a chunk of d seconds
    #: it rests d * (1 - max_duty) / max_duty (1: no duty cycle).
    max_duty: float | None = None
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
    #: Take over the run from an owner that is gone although its lease has not expired.
    force: bool = False
    #: Parameter values: text as given on the command line, or typed values.
    parameters: dict[str, Any] = field(default_factory=dict)
    #: Run the backfill's reverse (its own run, checkpointed like any other).
    reverse: bool = False
    #: Who starts the run (``user@host``, an admin user's name), recorded on a new run and
    #: in its actions (``BackfillAction``) with *via*: "command", "admin" or "code".
    started_by: str = ""
    via: str = "code"

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_chunks", "limit"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise BackfillConfigurationError(
                    f"{name} must be a whole number >= 1, got {value!r}."
                )
        for name, zero_ok in (("target_chunk_time", False), ("sleep", True)):
            value = getattr(self, name)
            if value is None:
                continue
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and (value > 0 or (zero_ok and value == 0))
            if not ok:
                rule = ">= 0" if zero_ok else "> 0"
                raise BackfillConfigurationError(
                    f"{name} must be a finite number of seconds {rule}, got {value!r}."
                )
        for name in ("exact_count", "restart", "force", "reverse"):
            if not isinstance(getattr(self, name), bool):
                raise BackfillConfigurationError(f"{name} must be True or False.")
        if self.profile is not None:
            profiles.check_name(self.profile)
        profiles.check_duty(self.max_duty)
        if not isinstance(self.parameters, dict):
            raise BackfillConfigurationError("parameters must be a dict of name -> value.")


def run_profile(backfill_cls: type[Backfill], options: RunOptions, settings: Settings) -> str:
    """The profile a new run uses: this invocation's, the class's, or the PROFILE setting."""
    return profiles.check_name(
        options.profile or backfill_cls.profile or settings.profile,
        "the profile (--profile, Backfill.profile or the PROFILE setting)",
    )


def default_target_chunk_time(
    backfill_cls: type[Backfill], settings: Settings, profile: str = profiles.BALANCED
) -> float:
    """The *profile*'s target chunk time; for kinds whose one statement holds its row locks for
    the whole chunk (UpdateBackfill, SQLBackfill), its shorter set-based target."""
    return profiles.profile(profile, settings).target(backfill_cls.locks_rows_whole_chunk)


def new_run_settings(
    backfill_cls: type[Backfill], options: RunOptions, settings: Settings
) -> RunSettings:
    """The settings a new run starts with. For each value: this invocation's explicit knob,
    then its profile, then the class's knob, then the class's (or the setting's) profile."""
    if options.target_chunk_time is not None and options.batch_size is None:
        batch_size = None  # a target asked for now means adaptive sizing
    else:
        fixed = options.batch_size or backfill_cls.batch_size or settings.batch_size
        batch_size = None if fixed is None else int(fixed)
    profile = run_profile(backfill_cls, options, settings)
    chosen = profiles.profile(profile, settings)
    if options.target_chunk_time is not None:
        target = options.target_chunk_time
    elif options.profile is None and backfill_cls.target_chunk_time:
        target = backfill_cls.target_chunk_time
    else:
        target = chosen.target(backfill_cls.locks_rows_whole_chunk)
    if options.max_duty is not None:
        duty = profiles.check_duty(options.max_duty)
    elif options.profile is None and backfill_cls.max_duty is not None:
        duty = profiles.check_duty(backfill_cls.max_duty, f"{backfill_cls.__name__}.max_duty")
    else:
        duty = chosen.max_duty
    sleep = float(options.sleep if options.sleep is not None else backfill_cls.sleep)
    return RunSettings(batch_size, float(target), sleep, profile, duty)


def resumed_run_settings(
    run: BackfillRun, backfill_cls: type[Backfill], options: RunOptions, settings: Settings
) -> RunSettings:
    """The settings a run continues with: options given now win; otherwise those it was
    created with (or that `backfill set` gave it)."""
    given = new_run_settings(backfill_cls, options, settings)
    sized_now = (
        options.batch_size is not None
        or options.target_chunk_time is not None
        or options.profile is not None
    )
    duty_now = options.max_duty is not None or options.profile is not None
    return RunSettings(
        batch_size=given.batch_size if sized_now else run.batch_size,
        target_chunk_time=given.target_chunk_time if sized_now else run.target_chunk_time,
        sleep=given.sleep if options.sleep is not None else run.sleep,
        profile=given.profile if options.profile is not None else run.profile,
        max_duty=given.max_duty if duty_now else run.max_duty,
    )


def configure_sizer(
    sizer: ChunkSizer,
    run: BackfillRun,
    backfill_cls: type[Backfill],
    settings: Settings,
    resumed_size: int | None,
) -> None:
    """Size chunks as *run*'s settings say: its fixed ``batch_size``, or adaptive toward its
    ``target_chunk_time`` starting from *resumed_size* (the last chunk's, when resuming)."""
    adaptive = run.batch_size is None
    sizer.reconfigure(
        size=run.batch_size or resumed_size or settings.initial_batch_size,
        target=(
            run.target_chunk_time or default_target_chunk_time(backfill_cls, settings, run.profile)
        )
        if adaptive
        else None,
        min_size=settings.min_batch_size,
        max_size=int(backfill_cls.max_batch_size or settings.max_batch_size),
        growth=settings.batch_growth,
    )
