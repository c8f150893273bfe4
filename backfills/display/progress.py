"""Event consumers: a live rich display, plain log lines, JSON lines. None touches the database."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

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
from rich.table import Column, Table
from rich.text import Text

from ..events import (
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
    Yielding,
)
from . import format as fmt
from .tables import fits

if TYPE_CHECKING:
    from ..snapshot import RunSnapshot

Write = Callable[[str], None]


def start_message(event: RunStarted) -> str:
    run = event.run
    total = fmt.total(run)
    if event.resumed:
        how = "Taking over" if event.took_over else "Resuming"
        where = "" if run.cursor is None else f" (cursor {fmt.position(run.cursor)})"
        return (
            f"{how} run #{run.pk} of {run.label} from its checkpoint: {run.rows_scanned:,} of "
            f"{total} rows already done{where}, {fmt.count(run.chunks_done, 'chunk')}; "
            f"{fmt.sizing(run)}."
        )
    horizon = "" if run.horizon is None else f" up to {fmt.position(run.horizon)}"
    return f"Started run #{run.pk} of {run.label}: {total} rows{horizon}; {fmt.sizing(run)}."


def end_message(event: Event) -> str | None:
    """The closing sentence of a run, or None for events that do not end it."""
    run = event.run
    done = f"{fmt.count(run.rows_scanned, 'row')} walked, {run.rows_processed:,} processed"
    if isinstance(event, RunCompleted):
        throttled = f", {fmt.duration(run.time_throttled)} throttled" if run.time_throttled else ""
        retries = f", {fmt.count(run.retries, 'retry', 'retries')}" if run.retries else ""
        failed = f", {run.rows_failed:,} quarantined" if run.rows_failed else ""
        return (
            f"Completed run #{run.pk} of {run.label}: {done} in "
            f"{fmt.count(run.chunks_done, 'chunk')}, {fmt.duration(run.time_running)} working "
            f"({fmt.rate(run.rate)}){throttled}{retries}{failed}."
        )
    if isinstance(event, RunPaused):
        if run.parallel:
            where = "at its partitions' checkpoints"
        else:
            where = (
                "before its first chunk"
                if run.cursor is None
                else f"at cursor {fmt.position(run.cursor)}"
            )
        return (
            f"Paused run #{run.pk} of {run.label} {where} ({done}): "
            f"{event.reason}. Run the same command again to resume."
        )
    if isinstance(event, RunCancelled):
        return f"Cancelled run #{run.pk} of {run.label} ({done}): {event.reason}."
    if isinstance(event, RunFailed):
        return f"Run #{run.pk} of {run.label} failed after {done}: {fmt.error(event.error)}"
    return None


def progress_line(run: RunSnapshot) -> str:
    """One plain status line, without control characters."""
    percent = "" if run.percent is None else f" ({run.percent:.1f}%)"
    last = (
        ""
        if run.last_chunk_seconds is None or run.last_chunk_size is None
        else f" | chunk {run.last_chunk_size:,} rows in {run.last_chunk_seconds:.2f}s"
    )
    return (
        f"{run.label}: {run.rows_scanned:,}/{fmt.total(run)} rows{percent} | "
        f"{run.rows_processed:,} processed | {fmt.rate(run.rate)} | "
        f"ETA {fmt.duration(run.eta_seconds)}{last}"
    )


def settings_message(event: SettingsChanged) -> str:
    return f"{event.run.label}: settings changed by `backfill set`: {fmt.settings(event.changes)}"


def retry_message(event: Retrying) -> str:
    return (
        f"{event.run.label}: transient {fmt.error(event.error)}; retry {event.attempt} in "
        f"{event.delay:.2f}s with {fmt.count(event.next_size, 'row')}"
    )


class PlainProgress:
    """Plain lines: start, one every *interval* seconds, retries, and the end."""

    def __init__(self, write: Write, interval: float = 5.0) -> None:
        self.write = write
        self.interval = interval
        self._next = 0.0
        self._throttled = ""
        #: Rows walked as of the last progress line written (None: none yet).
        self._shown: int | None = None

    def _progress(self, run: RunSnapshot) -> None:
        self.write(progress_line(run))
        self._shown = run.rows_scanned

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.write(start_message(event))
            self._next = time.monotonic() + self.interval
        elif isinstance(event, ChunkCommitted):
            now = time.monotonic()
            if now >= self._next:
                self._progress(event.run)
                self._next = now + self.interval
        elif isinstance(event, Retrying):
            self.write(retry_message(event))
        elif isinstance(event, Yielding):
            self.write(yield_message(event))
        elif isinstance(event, Throttled):
            if event.reason != self._throttled:
                self._throttled = event.reason
                self.write(f"{event.run.label}: throttled: {event.reason}")
        elif isinstance(event, ThrottleCleared):
            self._throttled = ""
            self.write(f"{event.run.label}: unthrottled after {fmt.duration(event.waited)}")
        elif isinstance(event, SettingsChanged):
            self.write(settings_message(event))
        else:
            message = end_message(event)
            if message:
                # The final figures, unless the last chunk's line already showed them.
                if self._shown != event.run.rows_scanned:
                    self._progress(event.run)
                self.write(message)


def yield_message(event: Yielding, *, label: bool = True) -> str:
    """``blog.x: yielding: 3 sessions waited up to 180 ms on our locks; next chunk 250 rows``."""
    from ..engine.guard import waited

    text = (
        f"yielding: {waited(event.sessions, event.max_wait)}; next chunk {event.next_size:,} rows"
    )
    return f"{event.run.label}: {text}" if label else text


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
            payload[key] = fmt.error(value) if isinstance(value, BaseException) else value
        self.write(json.dumps(payload, default=str))


class RunFigureColumn(ProgressColumn):
    """Rate or ETA from the run's own figures: working time only, so time spent throttled,
    paused or sleeping does not skew them (rich's own estimate counts wall time)."""

    def __init__(self, figure: str) -> None:
        super().__init__(table_column=Column(no_wrap=True))
        self.figure = figure

    def render(self, task: Task) -> Text:
        run: RunSnapshot | None = task.fields.get("run")
        if run is None:
            return Text("-")
        if self.figure == "rate":
            return Text(fmt.rate(run.rate), style="progress.data.speed")
        return Text(f"ETA {fmt.duration(run.eta_seconds)}", style="progress.remaining")


def _text(template: str, *, style: str = "", ellipsis: bool = False) -> TextColumn:
    column = Column(no_wrap=True, overflow="ellipsis" if ellipsis else "fold")
    return TextColumn(template, style=style, table_column=column)


class NarrowingProgress(Progress):
    """A progress line that fits the terminal by dropping columns, least useful first: the
    bar, then the last chunk's figures. Name, percent, rows, rate and ETA always stay."""

    #: Column indexes (into ``self.columns``) given up in this order when the line is too wide.
    drop_order: tuple[int, ...] = ()

    def __init__(self, *columns: str | ProgressColumn, console: Console, **kwargs: Any) -> None:
        # Kept here: rich asks for the table while it sets up, before self.console exists.
        self._fit_console = console
        super().__init__(*columns, console=console, **kwargs)

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        tasks = list(tasks)
        everything = self.columns
        width = self._fit_console.width
        dropped: set[int] = set()
        try:
            for index in (None, *self.drop_order):
                if index is not None:
                    dropped.add(index)
                self.columns = tuple(c for i, c in enumerate(everything) if i not in dropped)
                table = super().make_tasks_table(tasks)
                if fits(self._fit_console, table, width):
                    break
            return table
        finally:
            self.columns = everything


class RichProgress:
    """A live progress bar on a rich console. Use as a context manager around the run."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = NarrowingProgress(
            _text("[bold]{task.description}"),
            BarColumn(bar_width=24),
            TaskProgressColumn(),
            _text("{task.completed:,.0f}/{task.fields[total_text]} rows"),
            RunFigureColumn("rate"),
            RunFigureColumn("eta"),
            _text("chunk {task.fields[chunk]}"),
            _text("{task.fields[status]}", ellipsis=True),
            console=console,
            transient=False,
            refresh_per_second=8,
        )
        self.progress.drop_order = (1, 6)
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
                run.label,
                total=run.rows_total or None,
                completed=run.rows_scanned,
                total_text=fmt.total(run),
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
                completed=run.rows_scanned,
                chunk=f"{event.window_size:,} in {event.seconds:.2f}s",
                status="",
                run=run,
            )
        elif isinstance(event, Retrying):
            self.progress.update(
                self.task,
                status=f"[yellow]retry {event.attempt}: {escape(type(event.error).__name__)}[/]",
                run=run,
            )
        elif isinstance(event, Yielding):
            self.progress.update(
                self.task, status=f"[yellow]{escape(yield_message(event, label=False))}[/]", run=run
            )
        elif isinstance(event, Throttled):
            self.progress.update(
                self.task, status=f"[yellow]throttled: {escape(event.reason)}[/]", run=run
            )
        elif isinstance(event, ThrottleCleared):
            self.progress.update(self.task, status="", run=run)
        elif isinstance(event, SettingsChanged):
            self.progress.console.print(settings_message(event), markup=False)
        else:
            message = end_message(event)
            if message:
                self.progress.update(self.task, completed=run.rows_scanned, run=run)
                self.progress.stop()
                style = "red" if isinstance(event, RunFailed) else "green"
                if isinstance(event, RunPaused | RunCancelled):
                    style = "yellow"
                self.console.print(message, style=style, markup=False, highlight=False)
