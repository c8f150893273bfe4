"""The displays on a fake terminal: what stays readable at 80 columns, and at 160."""

from __future__ import annotations

import datetime as dt
import re
from io import StringIO
from typing import Any

import pytest
from rich.console import Console

from backfills.display import format as fmt
from backfills.display.progress import PlainProgress, RichProgress
from backfills.display.tables import status_table
from backfills.events import ChunkCommitted, RunCompleted, RunStarted
from backfills.snapshot import RunSnapshot

LONG_NAME = "catalog.broken_backfill_with_a_long_name"
#: The name of the issue's example (a 40-character name leaves no room for the figures).
LIVE_NAME = "catalog.broken_backfill"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def snapshot(**changes: Any) -> RunSnapshot:
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    values: dict[str, Any] = {
        "id": 7,
        "name": LONG_NAME,
        "reverse": False,
        "state": "running",
        "parameters": {},
        "cursor": "22240",
        "horizon": "200000",
        "rows_total": 200_000,
        "rows_total_exact": True,
        "rows_scanned": 22_240,
        "rows_processed": 22_240,
        "rows_failed": 0,
        "chunks_done": 12,
        "retries": 0,
        "batch_size": None,
        "target_chunk_time": 0.5,
        "sleep": 0.0,
        "profile": "balanced",
        "max_duty": None,
        "settings_version": 0,
        "last_chunk_size": 2_000,
        "last_chunk_seconds": 0.45,
        "time_running": 2.0,
        "time_throttled": 0.0,
        "throttle_reason": "",
        "created_at": now,
        "started_at": now,
        "updated_at": now + dt.timedelta(seconds=3),
        "finished_at": None,
        "owner_token": "t",
        "owner_host": "web-1",
        "owner_pid": 1,
        "owned_since": now,
        "heartbeat_at": now,
        "requested_state": "",
        "status_reason": "",
        "error_class": "",
        "error_message": "",
        "error_backtrace": "",
    }
    values.update(changes)
    return RunSnapshot(**values)


def terminal(width: int) -> tuple[Console, StringIO]:
    out = StringIO()
    return Console(file=out, width=width, force_terminal=True, color_system=None), out


def live_line(width: int) -> str:
    console, out = terminal(width)
    display = RichProgress(console)
    with display:
        start = snapshot(name=LIVE_NAME, rows_scanned=0, chunks_done=0, cursor=None)
        display(RunStarted(start, resumed=False))
        chunk = snapshot(name=LIVE_NAME)
        display(ChunkCommitted(chunk, window_size=2_000, processed=2_000, seconds=0.45))
        display.progress.refresh()
    # The live display redraws its line in place: the text after the last erase is what shows.
    text = ANSI.sub("\n", out.getvalue())
    lines = [line.rstrip() for line in text.splitlines()]
    return next(line for line in reversed(lines) if LIVE_NAME in line and "rows/s" in line)


@pytest.mark.parametrize("width", [80, 160])
def test_live_line_keeps_name_percent_rows_rate_and_eta(width: int) -> None:
    line = live_line(width)
    assert len(line) <= width
    for part in (LIVE_NAME, "11%", "22,240/200,000 rows", "11,120 rows/s", "ETA 16.0s"):
        assert part in line, (part, line)


def test_live_line_drops_the_bar_and_chunk_first_at_80_columns() -> None:
    wide, narrow = live_line(160), live_line(80)
    assert "━" in wide and "chunk 2,000 in 0.45s" in wide
    assert "━" not in narrow and "chunk" not in narrow


def table_rows(width: int, run: RunSnapshot) -> list[str]:
    console, out = terminal(width)
    console.print(status_table(console, [run]))
    return [ANSI.sub("", line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("width", [80, 160])
def test_status_keeps_the_full_name_run_and_state(width: int) -> None:
    run = snapshot(state="failed", error_class="builtins.ValueError", error_message="boom")
    lines = table_rows(width, run)
    assert all(len(line) <= width for line in lines)
    row = next(line for line in lines if LONG_NAME in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[:4] == [LONG_NAME, "#7", "failed", "11.1%"]
    header = next(line for line in lines if "name" in line and "state" in line)
    if width == 160:
        assert cells[4] == "22,240/200,000"
        assert "elapsed" in header and "rate" in header
    else:
        assert "elapsed" not in header


def test_plain_lines_count_in_the_singular_and_end_once() -> None:
    lines: list[str] = []
    display = PlainProgress(lines.append, interval=0)
    done = snapshot(state="completed", rows_scanned=200_000, chunks_done=1, retries=1)
    display(RunStarted(snapshot(chunks_done=1), resumed=True))
    display(ChunkCommitted(done, window_size=10, processed=10, seconds=0.1))
    display(RunCompleted(done))
    assert "1 chunk;" in lines[0]
    assert len(lines) == 3
    assert "in 1 chunk," in lines[-1] and "1 retry" in lines[-1]


def test_formatting_helpers() -> None:
    assert fmt.count(1, "chunk") == "1 chunk"
    assert fmt.count(2_000, "row") == "2,000 rows"
    assert fmt.count(2, "retry", "retries") == "2 retries"
    assert fmt.duration(185) == "3m05s"
    assert fmt.signal_name(2) == "SIGINT"
    assert fmt.signal_name(1) == "SIGHUP"
