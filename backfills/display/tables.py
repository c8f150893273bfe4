"""The tables of ``backfill list``, ``status``, ``errors`` and ``--dry-run``, and the lines
that go with them. They render what they are given; none of them reads the database."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console, ConsoleRenderable
from rich.table import Table
from rich.text import Text

from . import format as fmt

if TYPE_CHECKING:
    from ..control import BackfillState
    from ..dryrun import DryRunReport
    from ..models import BackfillPartition, QuarantinedRow
    from ..snapshot import RunSnapshot

#: Wider than any terminal: measuring at this width tells how wide a table wants to be.
_UNBOUNDED = 10_000
#: The width a wrapping column (a description, an error) is judged at.
FOLD_WIDTH = 24


def fits(console: Console, renderable: ConsoleRenderable, width: int) -> bool:
    """Whether *renderable* fits in *width* columns without wrapping or cutting anything."""
    options = console.options.update_width(_UNBOUNDED)
    return console.measure(renderable, options=options).maximum <= width


@dataclass(frozen=True)
class Col:
    """A table column; ``keep`` columns are never dropped, never wrapped, never cut."""

    header: str
    justify: str = "left"
    keep: bool = False
    fold: bool = False


def fitted_table(
    console: Console,
    title: str,
    columns: Sequence[Col],
    rows: Sequence[Sequence[str]],
    drop_order: Sequence[str] = (),
) -> Table:
    """A table of *rows* that fits the console: the columns named in *drop_order* are left
    out one by one until it does; what is left wraps (``fold`` columns) only as a last resort."""
    dropped: set[str] = set()
    for header in (None, *drop_order):
        if header is not None:
            dropped.add(header)
        table = Table(title=title, title_justify="left")
        shown = [i for i, col in enumerate(columns) if col.header not in dropped]
        for i in shown:
            col = columns[i]
            table.add_column(
                col.header,
                justify=col.justify,  # type: ignore[arg-type]
                no_wrap=not col.fold,
                overflow="fold" if col.fold or col.keep else "ellipsis",
                min_width=len(col.header) if col.keep else None,
                # Wrapping columns count as this wide when we judge whether the table fits.
                max_width=FOLD_WIDTH if col.fold else None,
            )
        for row in rows:
            # Plain text: data ("[News] ...", "[Errno 111]") is not rich markup.
            table.add_row(*(Text(row[i]) for i in shown))
        if fits(console, table, console.width):
            break
    for column in table.columns:
        column.max_width = None  # ... and take what room is left when it is drawn
    if any(col.keep for col in columns):
        # The columns that must stay whole get at least the width of their longest cell.
        for column in table.columns:
            col = next(c for c in columns if c.header == column.header)
            if col.keep:
                cells = [len(str(cell)) for cell in column.cells]
                column.min_width = max([len(col.header), *cells])
    return table


# -- list -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListRow:
    """One registered backfill as ``backfill list`` shows it."""

    name: str
    model: str
    description: str
    reversible: bool
    state: BackfillState


def list_table(console: Console, rows: Sequence[ListRow]) -> Table:
    columns = [
        Col("name", keep=True),
        Col("state", keep=True),
        Col("model"),
        Col("description", fold=True),
        Col("reverse"),
    ]
    cells = []
    for row in rows:
        run = row.state.run
        state = row.state.state if run is None else f"{row.state.state} (#{run.pk})"
        cells.append(
            [row.name, state, row.model, row.description, "yes" if row.reversible else "-"]
        )
    return fitted_table(
        console, "Registered backfills", columns, cells, drop_order=("reverse", "model")
    )


# -- status ---------------------------------------------------------------------------------

STATUS_COLUMNS = [
    Col("name", keep=True),
    Col("run", "right", keep=True),
    Col("state", keep=True),
    Col("progress", "right"),
    Col("rows", "right"),
    Col("processed", "right"),
    Col("rate", "right"),
    Col("elapsed", "right"),
    Col("ETA / finished"),
    Col("last error", fold=True),
]

#: What goes first when the terminal is narrow (the last error is also printed below the
#: table); name, run, state and progress always stay.
STATUS_DROP_ORDER = ("last error", "elapsed", "processed", "ETA / finished", "rate", "rows")


def status_cells(run: RunSnapshot) -> list[str]:
    if run.finished_at:
        when = fmt.timestamp(run.finished_at)
    elif run.shown_state == "running":
        when = f"ETA {fmt.duration(run.eta_seconds)}"
    else:
        when = "-"
    return [
        run.label,
        f"#{run.pk}",
        run.shown_state,
        fmt.percent(run),
        f"{run.rows_scanned:,}/{fmt.total(run)}",
        f"{run.rows_processed:,}",
        fmt.rate(run.rate),
        fmt.elapsed(run),
        when,
        run.last_error[:80],
    ]


def status_table(console: Console, runs: Sequence[RunSnapshot]) -> Table:
    with_errors = any(run.error_class for run in runs)
    columns = STATUS_COLUMNS if with_errors else STATUS_COLUMNS[:-1]
    rows = [status_cells(run)[: len(columns)] for run in runs]
    return fitted_table(console, "Backfill runs", columns, rows, STATUS_DROP_ORDER)


def status_notes(
    run: RunSnapshot, verbosity: int = 1, partitions: Sequence[BackfillPartition] = ()
) -> list[str]:
    """The lines printed under the status table for *run*: why it stopped, who owns it (for
    a parallel run, its *partitions*' states)."""
    head = f"#{run.pk} {run.label}"
    notes = []
    if run.parallel:
        states = Counter(p.state for p in partitions)
        live = sum(1 for p in partitions if p.owner_token and p.state == "running")
        cap = f", at most {run.max_workers} at once" if run.max_workers else ""
        notes.append(
            f"{head}: parallel ({fmt.count(run.workers or 0, 'worker')} asked{cap}): "
            f"{fmt.count(len(partitions), 'partition')}, {states['done']} done, "
            f"{live} leased, {states['pending']} pending"
        )
        if run.interrupted:
            notes.append(
                f"{head}: interrupted: no live worker holds a partition; start workers "
                f"(`backfill worker`, or `backfill run {run.name}` to resume with "
                f"{run.workers} here)."
            )
    if run.status_reason and run.state in ("paused", "cancelled"):
        notes.append(f"{head}: {run.status_reason}")
    if run.parameters:
        described = ", ".join(f"{k}={v}" for k, v in sorted(run.parameters.items()))
        notes.append(f"{head}: parameters {described}")
    if not run.is_final and not run.parallel and run.cursor is not None:
        notes.append(f"{head}: at cursor {fmt.position(run.cursor)}")
    if not run.is_final and (run.profile != "balanced" or run.max_duty or run.sleep):
        rest = f", sleep {run.sleep:g}s" if run.sleep else ""
        notes.append(f"{head}: {fmt.sizing(run)}{rest}")
    if run.throttle_reason and run.shown_state == "running":
        notes.append(f"{head}: throttled: {run.throttle_reason}")
    if run.blocking_yields or run.blocking_cancels:
        notes.append(
            f"{head}: application sessions waited on its locks: yielded after "
            f"{fmt.count(run.blocking_yields, 'chunk')}, cancelled "
            f"{fmt.count(run.blocking_cancels, 'chunk')}; longest wait "
            f"{run.blocking_max_wait * 1000:.0f} ms"
        )
    if run.requested_state:
        notes.append(f"{head}: {run.requested_state} requested")
    if run.state == "running" and run.owner_token and not run.parallel:
        owner = f"{run.owner_host} pid {run.owner_pid}, heartbeat {fmt.age(run.heartbeat_at)}"
        if run.interrupted:
            notes.append(
                f"{head}: interrupted: its owner ({owner}) is gone; run the same command "
                "again to take it over and resume."
            )
        else:
            notes.append(f"{head}: owned by {owner}")
    if run.error_class:  # also when the narrowed table dropped the error column
        kind = "failed" if run.state == "failed" else "last error"
        notes.append(f"{head} {kind}: {run.last_error}")
    if run.error_backtrace and verbosity >= 2:
        notes.append(f"{head} traceback:\n{run.error_backtrace}")
    return notes


PARTITION_COLUMNS = (
    Col("#", justify="right", keep=True),
    Col("state", keep=True),
    Col("range"),
    Col("cursor"),
    Col("rows", justify="right", keep=True),
    Col("rate", justify="right"),
    Col("owner"),
    Col("heartbeat"),
)
PARTITION_DROP_ORDER = ("heartbeat", "cursor", "rate", "range", "owner")


def partition_cells(partition: BackfillPartition) -> list[str]:
    owner = f"{partition.owner_host} pid {partition.owner_pid}" if partition.owner_pid else "-"
    if partition.state == "done" and partition.owner_pid:
        owner = f"(walked by {owner})"
    return [
        str(partition.number),
        partition.state,
        f"({partition.lower or 'start'}, {partition.upper}]",
        "-" if partition.cursor is None else fmt.position(partition.cursor),
        f"{partition.rows_scanned:,}",
        fmt.rate(partition.rate),
        owner,
        fmt.age(partition.heartbeat_at) if partition.state == "running" else "-",
    ]


def partitions_table(
    console: Console, run: RunSnapshot, partitions: Sequence[BackfillPartition]
) -> Table:
    """Each partition of a parallel run: its key range, cursor, rows, rate and owner."""
    rows = [partition_cells(p) for p in partitions]
    title = f"Partitions of run #{run.pk} {run.label}"
    return fitted_table(console, title, PARTITION_COLUMNS, rows, PARTITION_DROP_ORDER)


# -- errors ---------------------------------------------------------------------------------


def errors_table(console: Console, name: str, rows: Sequence[QuarantinedRow]) -> Table:
    columns = [
        Col("pk", keep=True),
        Col("run"),
        Col("error", fold=True),
        Col("attempts", "right"),
        Col("since"),
        Col("resolved"),
    ]
    cells = [
        [
            str(row.row_pk),
            f"#{row.run_id}",
            f"{row.error_class}: {fmt.first_line(row.error_message)}",
            str(row.attempts),
            fmt.timestamp(row.created_at),
            fmt.timestamp(row.resolved_at),
        ]
        for row in rows
    ]
    return fitted_table(
        console, f"Quarantined rows of {name}", columns, cells, ("resolved", "since")
    )


# -- dry run --------------------------------------------------------------------------------


def _text(cursor: Any) -> str:
    """A dry run's starting cursor as a checkpoint stores it."""
    if isinstance(cursor, tuple | list | dict):
        return json.dumps(list(cursor) if isinstance(cursor, tuple) else cursor, default=str)
    return str(cursor)


def dry_run_lines(report: DryRunReport, reverse: bool, run_pk: int | None = None) -> list[str]:
    """The summary of a dry run: where it started, what it did, the projection. *run_pk* is
    the unfinished run whose checkpoint it started from, if any."""
    direction = " (reverse)" if reverse else ""
    if report.cursor is not None:
        of_run = "" if run_pk is None else f", the checkpoint of unfinished run #{run_pk}"
        start = (
            f"Started after {fmt.position(_text(report.cursor))}{of_run}, where resuming it would."
        )
    else:
        start = "Started at the first row, as a new run would."
    return [
        f"Dry run of {report.name}{direction}: {fmt.count(report.chunks, 'chunk')}, "
        f"{fmt.count(report.rows_walked, 'row')} walked, {report.rows_processed:,} processed "
        f"in {report.seconds:.3f}s ({fmt.rate(report.rate)}). Everything was rolled back; "
        "no run was recorded.",
        start,
        f"Projected: {fmt.count(report.rows_total, 'row')} left to walk in about "
        f"{fmt.duration(report.projected_seconds)} of work (sleeps and throttling extra).",
    ]


def changes_table(console: Console, changes: Sequence[tuple[Any, dict[str, Any]]]) -> Table:
    columns = [Col("pk"), Col("field"), Col("before", fold=True), Col("after", fold=True)]
    cells = [
        [str(pk), name, repr(before), repr(after)]
        for pk, diff in changes
        for name, (before, after) in diff.items()
    ]
    return fitted_table(console, "Sample of changed rows", columns, cells)
