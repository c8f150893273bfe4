"""Event consumers: a live rich display, plain log lines, JSON lines. None touches the database."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
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


def start_message(event: RunStarted) -> str:
    run = event.run
    total = "?" if run.rows_total is None else f"{run.rows_total:,}"
    if event.resumed:
        how = "Taking over" if event.took_over else "Resuming"
        return (
            f"{how} run #{run.pk} of {run.name} from its checkpoint: {run.rows_scanned:,} of "
            f"{total} rows already done (cursor pk {run.cursor}), {run.chunks_done} chunks."
        )
    horizon = "" if run.horizon is None else f" up to pk {run.horizon}"
    return f"Started run #{run.pk} of {run.name}: {total} rows{horizon}."


def end_message(event: Event) -> str | None:
    run = event.run
    done = f"{run.rows_scanned:,} rows walked, {run.rows_processed:,} processed"
    if isinstance(event, RunCompleted):
        return (
            f"Completed run #{run.pk} of {run.name}: {done} in {run.chunks_done} chunks, "
            f"{format_duration(run.time_running)} working ({format_rate(run.rate)})."
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
    total = "?" if run.rows_total is None else f"{run.rows_total:,}"
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
        else:
            message = end_message(event)
            if message:
                if not isinstance(event, RunStarted):
                    self.write(progress_line(event.run))
                self.write(message)


def retry_message(event: Retrying) -> str:
    return (
        f"{event.run.name}: transient {type(event.error).__name__} "
        f"({str(event.error).strip().splitlines()[0] if str(event.error).strip() else ''}); "
        f"retry {event.attempt} in {event.delay:.2f}s"
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


class RowsPerSecondColumn(ProgressColumn):
    """Rows per second, from rich's own moving estimate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-" if speed is None else f"{speed:,.0f} rows/s", style="progress.data.speed")


class RichProgress:
    """A live progress bar on a rich console. Use as a context manager around the run."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            TaskProgressColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
            RowsPerSecondColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
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
            self.console.print(start_message(event))
            self.task = self.progress.add_task(
                run.name,
                total=run.rows_total or None,
                completed=run.rows_scanned,
                chunk="-",
                status="",
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
                status=f"[yellow]retry {event.attempt}: {type(event.error).__name__}[/]",
            )
        else:
            message = end_message(event)
            if message:
                self.progress.stop()
                style = "red" if isinstance(event, RunFailed) else "green"
                if isinstance(event, RunPaused | RunCancelled):
                    style = "yellow"
                self.console.print(message, style=style, markup=False, highlight=False)
