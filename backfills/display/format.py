"""Every formatting helper the displays and the command use: one way to write each figure."""

from __future__ import annotations

import datetime as dt
import json
import signal

from django.utils import timezone

from ..models import RunFigures


def duration(seconds: float | None) -> str:
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


def elapsed(run: RunFigures) -> str:
    """Wall time of the run so far, or ``-``."""
    span = run.elapsed
    return duration(span.total_seconds() if span is not None else None)


def rate(rows_per_second: float | None) -> str:
    return "-" if rows_per_second is None else f"{rows_per_second:,.0f} rows/s"


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``1 chunk``, ``2 chunks``, ``12,000 rows``."""
    return f"{number:,} {noun if number == 1 else (plural or noun + 's')}"


def total(run: RunFigures) -> str:
    """``200,000``, or ``~2,000,000`` when the total comes from table statistics."""
    if run.rows_total is None:
        return "?"
    return f"{'' if run.rows_total_exact else '~'}{run.rows_total:,}"


def percent(run: RunFigures) -> str:
    return "-" if run.percent is None else f"{run.percent:.1f}%"


def timestamp(moment: dt.datetime | None) -> str:
    """``2026-11-24 01:33:34`` in the current time zone, or ``-``."""
    if moment is None:
        return "-"
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S")


def iso_timestamp(moment: dt.datetime | None) -> str:
    """``2026-11-24T01:33:34+00:00`` in the current time zone, or ``?``."""
    if moment is None:
        return "?"
    return timezone.localtime(moment).isoformat(timespec="seconds")


def age(moment: dt.datetime | None) -> str:
    """``12s ago`` (or ``never``), for heartbeats."""
    if moment is None:
        return "never"
    return f"{duration((timezone.now() - moment).total_seconds())} ago"


def sizing(run: RunFigures) -> str:
    """``chunks sized to 0.5s``; the profile and duty cycle follow when not the default."""
    if run.batch_size:
        text = f"fixed chunks of {count(run.batch_size, 'row')}"
    else:
        text = f"chunks sized to {run.target_chunk_time or 0:g}s"
    if run.profile != "balanced" or run.max_duty:
        text += f", {pacing(run)}"
    return text


def pacing(run: RunFigures) -> str:
    """``profile gentle, working at most 50% of the time`` (or ``profile balanced``)."""
    text = f"profile {run.profile}"
    if run.max_duty:
        text += f", working at most {run.max_duty:.0%} of the time"
    return text


def settings(changes: dict[str, object]) -> str:
    """``batch_size=500, sleep=0.1``; a batch size of None reads ``adaptive``."""
    return ", ".join(
        f"{key}={'adaptive' if value is None else value}" for key, value in changes.items()
    )


def signal_name(signum: int) -> str:
    """``SIGINT`` for 2; the number itself for a signal this platform does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def error(exc: BaseException) -> str:
    """``OperationalError: database is locked`` (the message's first line)."""
    message = first_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def position(text: str | None) -> str:
    """A stored cursor for people: ``pk 42``, ``key (acme, 42)``, ``line 17 (byte 512)``."""
    if text is None:
        return "the start"
    try:
        value = json.loads(text)
    except ValueError:
        return f"pk {text}"
    if isinstance(value, list):
        return "key (" + ", ".join(str(v) for v in value) + ")"
    if isinstance(value, dict) and {"line", "offset"} <= set(value):
        return f"line {value['line']} (byte {value['offset']:,})"
    if isinstance(value, str):
        return value
    return f"pk {text}" if isinstance(value, int | float) else f"cursor {text}"
