"""Server-rendered SVG charts of a run's history (``BackfillSample``): throughput and chunk
duration over the run's life, throttled stretches shaded. No script, nothing from a CDN.

Samples hold cumulative counters, so each figure is a difference between two samples:
throughput = rows walked / wall seconds, chunk duration = working seconds / chunks."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from django.utils.html import escape


class SampleLike(Protocol):
    at: dt.datetime
    rows_scanned: int
    chunks_done: int
    time_running: float
    time_throttled: float
    throttle_reason: str
    max_chunk_seconds: float | None


@dataclass(frozen=True)
class Chart:
    """A complete ``<svg>`` element (all text escaped) and how many intervals it plots."""

    svg: str
    points: int


@dataclass(frozen=True)
class _Interval:
    start: float  # seconds since the first sample
    end: float
    rows: int
    chunks: int
    working: float
    throttled: bool
    slowest: float | None


#: Intervals shorter than this are merged into the next (two near-simultaneous samples).
MIN_SECONDS = 0.05
SERIES = "#417690"
SHADE = "#f5c451"
_MARGIN = (46, 10, 10, 24)  # left, right, top, bottom


def _intervals(samples: Sequence[SampleLike]) -> list[_Interval]:
    if len(samples) < 2:
        return []
    origin = samples[0].at
    out: list[_Interval] = []
    begin = samples[0]
    for sample in samples[1:]:
        seconds = (sample.at - begin.at).total_seconds()
        if seconds < MIN_SECONDS:
            continue
        out.append(
            _Interval(
                start=(begin.at - origin).total_seconds(),
                end=(sample.at - origin).total_seconds(),
                rows=sample.rows_scanned - begin.rows_scanned,
                chunks=sample.chunks_done - begin.chunks_done,
                working=sample.time_running - begin.time_running,
                throttled=sample.time_throttled > begin.time_throttled
                or bool(sample.throttle_reason),
                slowest=sample.max_chunk_seconds,
            )
        )
        begin = sample
    return out


def _merge(intervals: list[_Interval], cap: int) -> list[_Interval]:
    """At most *cap* intervals: adjacent ones summed (their slowest chunk kept)."""
    if len(intervals) <= cap:
        return intervals
    group = math.ceil(len(intervals) / cap)
    merged = []
    for i in range(0, len(intervals), group):
        part = intervals[i : i + group]
        slowest = [p.slowest for p in part if p.slowest is not None]
        merged.append(
            _Interval(
                start=part[0].start,
                end=part[-1].end,
                rows=sum(p.rows for p in part),
                chunks=sum(p.chunks for p in part),
                working=sum(p.working for p in part),
                throttled=any(p.throttled for p in part),
                slowest=max(slowest) if slowest else None,
            )
        )
    return merged


def _nice_top(value: float) -> tuple[float, float]:
    """An axis top >= *value* and its tick step (1, 2 or 5 x 10^k, 3-5 ticks)."""
    if value <= 0:
        return 1.0, 0.25
    raw = value / 4
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        step = factor * power
        if step * 4 >= value:
            break
    return step * math.ceil(value / step), step


def rows_label(value: float) -> str:
    """``950``, ``12k``, ``3.4M``."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            text = f"{value / limit:.1f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return f"{value:.3g}" if value < 10 else f"{value:.0f}"


def seconds_label(value: float) -> str:
    """``120 ms``, ``1.5 s``."""
    if value == 0:
        return "0"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.3g} s"


def clock(seconds: float) -> str:
    """``0:00``, ``2:30``, ``1:05:00``."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _chart(
    title: str,
    intervals: list[_Interval],
    value: Callable[[_Interval], float | None],
    label: Callable[[float], str],
    width: int,
    height: int,
    dots: Callable[[_Interval], float | None] | None = None,
) -> Chart:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" style="width:100%;height:auto" role="img" '
        f'aria-label="{escape(title)}" class="bf-chart"><title>{escape(title)}</title>'
    )
    points = [(i, value(i)) for i in intervals]
    plotted = [(i, v) for i, v in points if v is not None]
    if not plotted:
        return Chart(
            f'{head}<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
            f'fill="currentColor" font-size="12">Not enough history yet</text></svg>',
            0,
        )
    left, right, top, bottom = _MARGIN
    plot_w, plot_h = width - left - right, height - top - bottom
    span = intervals[-1].end or 1.0
    highest = max(v for _, v in plotted)
    if dots is not None:
        highest = max([highest] + [d for i in intervals if (d := dots(i)) is not None])
    y_top, step = _nice_top(highest)

    def x(seconds: float) -> float:
        return left + plot_w * seconds / span

    def y(amount: float) -> float:
        return top + plot_h * (1 - amount / y_top)

    parts = [
        head,
        f'<text x="{left}" y="{top - 1}" font-size="11" fill="currentColor">{escape(title)}</text>',
    ]
    throttled = [i for i in intervals if i.throttled]
    for i in throttled:
        parts.append(
            f'<rect class="bf-throttled" x="{x(i.start):.1f}" y="{top}" '
            f'width="{max(0.5, x(i.end) - x(i.start)):.1f}" height="{plot_h}" '
            f'fill="{SHADE}" fill-opacity="0.35"/>'
        )
    ticks = int(round(y_top / step))
    for n in range(ticks + 1):
        amount = n * step
        parts.append(
            f'<line class="bf-axis" x1="{left}" x2="{width - right}" y1="{y(amount):.1f}" '
            f'y2="{y(amount):.1f}" stroke="currentColor" stroke-opacity="0.15"/>'
            f'<text class="bf-axis" x="{left - 4}" y="{y(amount) + 4:.1f}" text-anchor="end" '
            f'font-size="10" fill="currentColor">{escape(label(amount))}</text>'
        )
    for fraction in (0, 0.5, 1):
        parts.append(
            f'<text class="bf-axis" x="{x(span * fraction):.1f}" y="{height - 6}" '
            f'text-anchor="{("start", "middle", "end")[int(fraction * 2)]}" font-size="10" '
            f'fill="currentColor">{clock(span * fraction)}</text>'
        )
    coords = []
    for i, v in plotted:
        coords.append(f"{x(i.start):.1f},{y(v):.1f}")
        coords.append(f"{x(i.end):.1f},{y(v):.1f}")
    parts.append(
        f'<polyline class="bf-series" points="{" ".join(coords)}" fill="none" '
        f'stroke="{SERIES}" stroke-width="1.5"/>'
    )
    if dots is not None:
        for i in intervals:
            d = dots(i)
            if d is not None:
                parts.append(
                    f'<circle class="bf-slowest" cx="{x(i.end):.1f}" cy="{y(d):.1f}" r="1.8" '
                    f'fill="{SERIES}" fill-opacity="0.6"/>'
                )
    if throttled:
        parts.append(
            f'<text x="{width - right}" y="{top - 1}" text-anchor="end" font-size="10" '
            f'fill="currentColor">shaded: throttled</text>'
        )
    parts.append("</svg>")
    return Chart("".join(parts), len(plotted))


def throughput_chart(
    samples: Sequence[SampleLike], *, width: int = 640, height: int = 180
) -> Chart:
    """Rows walked per second of wall time, interval by interval."""
    intervals = _merge(_intervals(samples), max(1, width // 2))
    return _chart(
        "Throughput (rows/s)",
        intervals,
        lambda i: i.rows / (i.end - i.start),
        rows_label,
        width,
        height,
    )


def chunk_chart(samples: Sequence[SampleLike], *, width: int = 640, height: int = 180) -> Chart:
    """The average chunk's duration per interval (line) and the slowest chunk (dots)."""
    intervals = _merge(_intervals(samples), max(1, width // 2))
    return _chart(
        "Chunk duration (s): average, dots the slowest",
        intervals,
        lambda i: i.working / i.chunks if i.chunks > 0 else None,
        seconds_label,
        width,
        height,
        dots=lambda i: i.slowest,
    )
