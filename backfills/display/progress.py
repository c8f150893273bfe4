"""Event consumers: a live rich display, plain log lines, JSON lines. None touches the database."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)
from rich.text import Text

from .events import (
    ChunkCommitted,
    Event,
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
from .models import BackfillRun

Write = Callable[[str], None]


def format_duration(seconds: float | None) -> str:
    """``4.2s``, ``3m05s``, ``2h07m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:,.0f} rows/s"


def format_total(run: BackfillRun) -> str:
    """``200,000``, or ``~2,000,000`` when the total comes from table statistics."""
    if run.rows_total is None:
        return "?"
    return f"{'' if run.rows_total_exact else '~'}{run.rows_total:,}"


def sizing(run: BackfillRun) -> str:
    if run.batch_size:
        return f"fixed chunks of {run.batch_size:,} rows"
    return f"chunks sized to {run.target_chunk_time or 0:g}s"


def start_message(event: RunStarted) -> str:
    run = event.run
    total = format_total(run)
    if event.resumed:
        how = "Taking over" if event.took_over else "Resuming"
        return (
            f"{how} run #{run.pk} of {run.name} from its checkpoint: {run.rows_scanned:,} of "
            f"{total} rows already done (cursor pk {run.cursor}), {run.chunks_done} chunks; "
            f"{sizing(run)}."
        )
    horizon = "" if run.horizon is None else f" up to pk {run.horizon}"
    return f"Started run #{run.pk} of {run.name}: {total} rows{horizon}; {sizing(run)}."


def end_message(event: Event) -> str | None:
    run = event.run
    done = f"{run.rows_scanned:,} rows walked, {run.rows_processed:,} processed"
    if isinstance(event, RunCompleted):
        throttled = (
            f", {format_duration(run.time_throttled)} throttled" if run.time_throttled else ""
        )
        retries = f", {run.retries} retries" if run.retries else ""
        failed = f", {run.rows_failed:,} quarantined" if run.rows_failed else ""
        return (
            f"Completed run #{run.pk} of {run.name}: {done} in {run.chunks_done} chunks, "
            f"{format_duration(run.time_running)} working ({format_rate(run.rate)})"
            f"{throttled}{retries}{failed}."
        )
    if isinstance(event, RunPaused):
        return (
            f"Paused run #{run.pk} of {run.name} at cursor pk {run.cursor} ({done}): "
            f"{event.reason}. Run the same command again to resume."
        )
    if isinstance(event, RunCancelled):
        return f"Cancelled run #{run.pk} of {run.name} ({done}): {event.reason}."
    if isinstance(event, RunFailed):
        return (
            f"Run #{run.pk} of {run.name} failed after {done}: "
            f"{type(event.error).__name__}: {event.error}"
        )
    return None


def progress_line(run: BackfillRun) -> str:
    """One plain status line, without control characters."""
    total = format_total(run)
    percent = "" if run.percent is None else f" ({run.percent:.1f}%)"
    last = (
        ""
        if run.last_chunk_seconds is None
        else f" | chunk {run.last_chunk_size:,} rows in {run.last_chunk_seconds:.2f}s"
    )
    return (
        f"{run.name}: {run.rows_scanned:,}/{total} rows{percent} | "
        f"{run.rows_processed:,} processed | {format_rate(run.rate)} | "
        f"ETA {format_duration(run.eta_seconds)}{last}"
    )


class PlainProgress:
    """Plain lines: start, one every *interval* seconds, retries, and the end."""

    def __init__(self, write: Write, interval: float = 5.0) -> None:
        self.write = write
        self.interval = interval
        self._next = 0.0
        self._throttled = ""

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.write(start_message(event))
            self._next = time.monotonic() + self.interval
        elif isinstance(event, ChunkCommitted):
            now = time.monotonic()
            if now >= self._next:
                self.write(progress_line(event.run))
                self._next = now + self.interval
        elif isinstance(event, Retrying):
            self.write(retry_message(event))
        elif isinstance(event, Throttled):
            if event.reason != self._throttled:
                self._throttled = event.reason
                self.write(f"{event.run.name}: throttled: {event.reason}")
        elif isinstance(event, ThrottleCleared):
            self._throttled = ""
            self.write(f"{event.run.name}: unthrottled after {format_duration(event.waited)}")
        elif isinstance(event, SettingsChanged):
            self.write(settings_message(event))
        else:
            message = end_message(event)
            if message:
                if not isinstance(event, RunStarted):
                    self.write(progress_line(event.run))
                self.write(message)


def settings_message(event: SettingsChanged) -> str:
    changes = ", ".join(
        f"{key}={'adaptive' if value is None else value}" for key, value in event.changes.items()
    )
    return f"{event.run.name}: settings changed by `backfill set`: {changes}"


def retry_message(event: Retrying) -> str:
    return (
        f"{event.run.name}: transient {type(event.error).__name__} "
        f"({str(event.error).strip().splitlines()[0] if str(event.error).strip() else ''}); "
        f"retry {event.attempt} in {event.delay:.2f}s with {event.next_size:,} rows"
    )


class JsonProgress:
    """One JSON object per event, for log pipelines."""

    def __init__(self, write: Write) -> None:
        self.write = write

    def __call__(self, event: Event) -> None:
        payload: dict[str, Any] = {
            "event": type(event).__name__,
            "time": time.time(),
            "run": event.run.summary(),
        }
        for key, value in vars(event).items():
            if key == "run":
                continue
            payload[key] = (
                f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else value
            )
        self.write(json.dumps(payload, default=str))


class RunFigureColumn(ProgressColumn):
    """Rate or ETA from the run's own figures: working time only, so time spent throttled,
    paused or sleeping does not skew them (rich's own estimate counts wall time)."""

    def __init__(self, figure: str) -> None:
        super().__init__()
        self.figure = figure

    def render(self, task: Task) -> Text:
        run: BackfillRun | None = task.fields.get("run")
        if run is None:
            return Text("-")
        if self.figure == "rate":
            return Text(format_rate(run.rate), style="progress.data.speed")
        return Text(f"ETA {format_duration(run.eta_seconds)}", style="progress.remaining")


class RichProgress:
    """A live progress bar on a rich console. Use as a context manager around the run."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            TaskProgressColumn(),
            TextColumn("{task.completed:,.0f}/{task.fields[total_text]} rows"),
            RunFigureColumn("rate"),
            RunFigureColumn("eta"),
            TextColumn("chunk {task.fields[chunk]} {task.fields[status]}"),
            console=console,
            transient=False,
            refresh_per_second=8,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: Event) -> None:
        run = event.run
        if isinstance(event, RunStarted):
            self.console.print(start_message(event), markup=False, highlight=False)
            self.task = self.progress.add_task(
                run.name,
                total=run.rows_total or None,
                completed=run.rows_scanned,
                total_text=format_total(run),
                chunk="-",
                status="",
                run=run,
            )
            self.progress.start()
            return
        if self.task is None:
            return
        if isinstance(event, ChunkCommitted):
            self.progress.update(
                self.task,
                advance=event.window_size,
                chunk=f"{event.window_size:,} in {event.seconds:.2f}s",
                status="",
            )
        elif isinstance(event, Retrying):
            self.progress.update(
                self.task,
                status=f"[yellow]retry {event.attempt}: {escape(type(event.error).__name__)}[/]",
            )
        elif isinstance(event, Throttled):
            self.progress.update(self.task, status=f"[yellow]throttled: {escape(event.reason)}[/]")
        elif isinstance(event, ThrottleCleared):
            self.progress.update(self.task, status="")
        elif isinstance(event, SettingsChanged):
            self.progress.console.print(settings_message(event), markup=False)
        else:
            message = end_message(event)
            if message:
                self.progress.stop()
                style = "red" if isinstance(event, RunFailed) else "green"
                if isinstance(event, RunPaused | RunCancelled):
                    style = "yellow"
                self.console.print(message, style=style, markup=False, highlight=False)
