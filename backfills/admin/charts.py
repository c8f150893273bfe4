"""Server-rendered SVG charts of a run's history (``BackfillSample``): throughput and chunk
duration over the run's life, throttled stretches shaded. No script, nothing from a CDN.

Samples hold cumulative counters and the history may be thinned (every other sample dropped),
so each figure is a difference between two samples: throughput = rows walked / wall seconds,
chunk duration = working seconds / chunks. A thinned history draws the same totals."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from django.utils.html import escape


class SampleLike(Protocol):
    """What a chart reads from a sample (``backfills.models.BackfillSample``): cumulative
    counters at ``at``, why the run was throttled then, the slowest chunk since the last one."""

    @property
    def at(self) -> dt.datetime: ...
    @property
    def rows_scanned(self) -> int: ...
    @property
    def chunks_done(self) -> int: ...
    @property
    def time_running(self) -> float: ...
    @property
    def time_throttled(self) -> float: ...
    @property
    def throttle_reason(self) -> str: ...
    @property
    def max_chunk_seconds(self) -> float | None: ...


@dataclass(frozen=True)
class Chart:
    """A complete ``<svg>`` element (all text escaped) and how many intervals it plots (0: not
    enough history, the SVG says so)."""

    svg: str
    points: int


#: Intervals shorter than this merge into the next, so two near-simultaneous samples (a forced
#: sample right after a timed one) don't draw a spike.
MIN_SECONDS = 0.05
#: The admin's own blue, and a light amber that reads on both its light and dark themes. They
#: are presentation attributes: a stylesheet's ``.bf-series`` or ``.bf-throttled`` wins.
SERIES = "#417690"
SHADE = "#f5c451"
EMPTY = "Not enough history yet"
#: A throttled stretch's tooltip names at most this many reasons, each cut to this length; past
#: this many stretches the shading keeps no tooltips, so the SVG stays small.
_REASONS = 3
_REASON_CHARS = 100
_TOOLTIPS = 24
#: Space around the plot for the labels: left, right, top, bottom.
_MARGIN = (48, 14, 22, 20)
#: Elapsed-time steps for the x axis (seconds), and the least room between two of its labels.
_CLOCK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)
_X_LABEL_ROOM = 70


@dataclass(frozen=True)
class _Interval:
    start: float  # seconds since the first sample
    end: float
    rows: int
    chunks: int
    working: float
    throttled: bool
    slowest: float | None
    reasons: tuple[str, ...]


def _reasons(reasons: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r for r in reasons if r))[:_REASONS]


def _interval(origin: dt.datetime, begin: SampleLike, later: list[SampleLike]) -> _Interval:
    end = later[-1]
    slowest = [s.max_chunk_seconds for s in later if s.max_chunk_seconds is not None]
    reasons = _reasons(s.throttle_reason for s in later)
    return _Interval(
        start=(begin.at - origin).total_seconds(),
        end=(end.at - origin).total_seconds(),
        rows=end.rows_scanned - begin.rows_scanned,
        chunks=end.chunks_done - begin.chunks_done,
        working=end.time_running - begin.time_running,
        throttled=end.time_throttled > begin.time_throttled or bool(reasons),
        slowest=max(slowest) if slowest else None,
        reasons=reasons,
    )


def _intervals(samples: Sequence[SampleLike]) -> list[_Interval]:
    """The intervals between consecutive samples, none shorter than ``MIN_SECONDS``."""
    if len(samples) < 2:
        return []
    groups: list[tuple[SampleLike, list[SampleLike]]] = []
    begin, later = samples[0], []
    for sample in samples[1:]:
        later.append(sample)
        if (sample.at - begin.at).total_seconds() >= MIN_SECONDS:
            groups.append((begin, later))
            begin, later = sample, []
    if later and groups:  # the last sample came right after the one before: the last interval
        groups[-1][1].extend(later)
    return [_interval(samples[0].at, begin, later) for begin, later in groups]


def _merge(intervals: list[_Interval], cap: int) -> list[_Interval]:
    """At most *cap* intervals: adjacent ones summed (their slowest chunk kept)."""
    if len(intervals) <= cap:
        return intervals
    size = math.ceil(len(intervals) / cap)
    merged = []
    for i in range(0, len(intervals), size):
        part = intervals[i : i + size]
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
                reasons=_reasons(r for p in part for r in p.reasons),
            )
        )
    return merged


def _nice_scale(highest: float) -> tuple[float, int]:
    """A tick step (1, 2 or 5 x 10^k) and a number of steps (2 to 4) reaching *highest*."""
    if not highest > 0 or not math.isfinite(highest):
        return 0.5, 2
    power = 10.0 ** math.floor(math.log10(highest / 4))
    step = power
    for factor in (1, 2, 5, 10):
        step = factor * power
        if step * 4 >= highest * (1 - 1e-9):
            break
    return step, max(1, math.ceil(highest / step - 1e-9))


def _decimal(value: float) -> str:
    """*value* to three significant digits, no exponent, no trailing zeros."""
    if value == 0:
        return "0"
    places = max(0, 2 - math.floor(math.log10(abs(value))))
    text = f"{value:.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def rows_label(value: float) -> str:
    """A rate for an axis: ``950``, ``12k``, ``3.4M``."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{_decimal(value / limit)}{suffix}"
    return _decimal(value)


def seconds_label(value: float) -> str:
    """A duration for an axis: ``0``, ``250 µs``, ``120 ms``, ``1.5 s``, ``300 s``."""
    if value == 0:
        return "0"
    if abs(value) < 1e-3:
        return f"{_decimal(value * 1e6)} µs"
    if abs(value) < 1:
        return f"{_decimal(value * 1e3)} ms"
    return f"{_decimal(value)} s"


def clock(seconds: float) -> str:
    """Elapsed time: ``0:00``, ``2:30``, ``1:05:00``."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _clock_step(span: float, room: float) -> float:
    """The shortest round step that leaves labels ``_X_LABEL_ROOM`` apart over *room* px."""
    most = max(1, int(room // _X_LABEL_ROOM))
    for step in _CLOCK_STEPS:
        if span / step <= most:
            return step
    return 86400.0 * math.ceil(span / most / 86400)  # whole days past six hours


@dataclass(frozen=True)
class _Frame:
    """The plot's rectangle in the SVG's coordinates, and the scales onto it."""

    left: float
    top: float
    right: float
    bottom: float
    span: float  # seconds on the x axis
    y_top: float  # the value at the top of the y axis

    def x(self, seconds: float) -> float:
        return self.left + (self.right - self.left) * seconds / self.span

    def y(self, value: float) -> float:
        return self.bottom - (self.bottom - self.top) * value / self.y_top


def _head(title: str, width: int, height: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="bf-chart" viewBox="0 0 {width} {height}" '
        f'width="100%" style="width:100%;height:auto" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
        f'<text class="bf-chart-title" x="2" y="12" font-size="11" font-weight="600" '
        f'fill="currentColor">{escape(title)}</text>'
    )


def _empty(title: str, width: int, height: int) -> Chart:
    return Chart(
        f'{_head(title, width, height)}<text class="bf-empty" x="{width / 2:.0f}" '
        f'y="{height / 2:.0f}" text-anchor="middle" dominant-baseline="middle" font-size="12" '
        f'fill="currentColor" fill-opacity="0.7">{EMPTY}</text></svg>',
        0,
    )


def _y_axis(frame: _Frame, step: float, steps: int, label: Callable[[float], str]) -> str:
    lines, texts = [], []
    for n in range(steps + 1):
        y = frame.y(n * step)
        opacity = "0.4" if n == 0 else "0.15"
        lines.append(
            f'<line x1="{frame.left}" x2="{frame.right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke-opacity="{opacity}"/>'
        )
        texts.append(
            f'<text x="{frame.left - 5}" y="{y + 3.5:.1f}">{escape(label(n * step))}</text>'
        )
    return (
        f'<g class="bf-axis bf-grid" stroke="currentColor" stroke-width="1">{"".join(lines)}</g>'
        f'<g class="bf-axis bf-y" fill="currentColor" font-size="10" text-anchor="end">'
        f"{''.join(texts)}</g>"
    )


def _x_axis(frame: _Frame, width: int) -> str:
    step = _clock_step(frame.span, frame.right - frame.left)
    ticks, texts = [], []
    n = 0
    while n * step <= frame.span * (1 + 1e-9):
        x = frame.x(n * step)
        text = clock(n * step)
        # A label that would run off the right edge ends at its tick instead.
        anchor = "end" if x + len(text) * 3 > width else "middle"
        ticks.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.bottom}" y2="{frame.bottom + 3}"/>'
        )
        texts.append(
            f'<text x="{x:.1f}" y="{frame.bottom + 14}" text-anchor="{anchor}">{text}</text>'
        )
        n += 1
    return (
        f'<g class="bf-axis bf-x" stroke="currentColor" stroke-opacity="0.4">{"".join(ticks)}</g>'
        f'<g class="bf-axis bf-x" fill="currentColor" font-size="10">{"".join(texts)}</g>'
    )


def _shading(frame: _Frame, intervals: list[_Interval]) -> str:
    """One rectangle per stretch of throttled intervals, its reasons as a tooltip."""
    stretches: list[list[_Interval]] = []
    previous = False
    for interval in intervals:
        if interval.throttled and previous:
            stretches[-1].append(interval)
        elif interval.throttled:
            stretches.append([interval])
        previous = interval.throttled
    parts = []
    for stretch in stretches:
        x0, x1 = frame.x(stretch[0].start), frame.x(stretch[-1].end)
        tooltip = ""
        if len(stretches) <= _TOOLTIPS:
            text = f"throttled {clock(stretch[0].start)}–{clock(stretch[-1].end)}"
            reasons = _reasons(r for interval in stretch for r in interval.reasons)
            if reasons:
                text += ": " + "; ".join(r[:_REASON_CHARS] for r in reasons)
            tooltip = f"<title>{escape(text)}</title>"
        parts.append(
            f'<rect x="{x0:.1f}" y="{frame.top}" width="{max(0.5, x1 - x0):.1f}" '
            f'height="{frame.bottom - frame.top}">{tooltip}</rect>'
        )
    if not parts:
        return ""
    return f'<g class="bf-throttled" fill="{SHADE}" fill-opacity="0.35">{"".join(parts)}</g>'


def _series(frame: _Frame, steps: list[tuple[_Interval, float | None]]) -> str:
    """The values as steps, one polyline per run of intervals that have one."""
    lines: list[list[str]] = [[]]
    for interval, value in steps:
        if value is None:
            if lines[-1]:
                lines.append([])
            continue
        y = f"{frame.y(value):.1f}"
        lines[-1] += [f"{frame.x(interval.start):.1f},{y}", f"{frame.x(interval.end):.1f},{y}"]
    return "".join(
        f'<polyline class="bf-series" points="{" ".join(line)}" fill="none" stroke="{SERIES}" '
        f'stroke-width="1.5" stroke-linejoin="round"/>'
        for line in lines
        if line
    )


def _dots(frame: _Frame, intervals: list[_Interval]) -> str:
    dots = [
        f'<circle cx="{frame.x((i.start + i.end) / 2):.1f}" cy="{frame.y(i.slowest):.1f}" r="2"/>'
        for i in intervals
        if i.slowest is not None
    ]
    if not dots:
        return ""
    return f'<g class="bf-slowest" fill="{SERIES}" fill-opacity="0.7">{"".join(dots)}</g>'


def _chart(
    title: str,
    intervals: list[_Interval],
    value: Callable[[_Interval], float | None],
    label: Callable[[float], str],
    width: int,
    height: int,
    *,
    dots: bool = False,
) -> Chart:
    steps = [(i, value(i)) for i in intervals]
    points = sum(v is not None for _, v in steps)
    if not points:
        return _empty(title, width, height)
    highest = max(v for _, v in steps if v is not None)
    if dots:
        highest = max([highest] + [i.slowest for i in intervals if i.slowest is not None])
    step, count = _nice_scale(highest)
    left, right, top, bottom = _MARGIN
    frame = _Frame(
        left=left,
        top=top,
        right=max(left + 1, width - right),
        bottom=max(top + 1, height - bottom),
        span=intervals[-1].end or 1.0,
        y_top=step * count,
    )
    legend = []
    if dots and any(i.slowest is not None for i in intervals):
        legend.append("line: average, dots: slowest")
    if any(i.throttled for i in intervals):
        legend.append(f'<tspan fill="{SHADE}">■</tspan> shaded: throttled')
    parts = [
        _head(title, width, height),
        _shading(frame, intervals),
        _y_axis(frame, step, count, label),
        _x_axis(frame, width),
        _series(frame, steps),
        _dots(frame, intervals) if dots else "",
    ]
    if legend:
        parts.append(
            f'<text class="bf-legend" x="{width - 2}" y="12" text-anchor="end" font-size="10" '
            f'fill="currentColor">{" · ".join(legend)}</text>'
        )
    parts.append("</svg>")
    return Chart("".join(parts), points)


def throughput_chart(
    samples: Sequence[SampleLike], *, width: int = 640, height: int = 180
) -> Chart:
    """Rows walked per second of wall time, interval by interval, throttled stretches shaded."""
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
    """The average chunk's duration per interval (a line; none where no chunk finished), the
    slowest chunk of each (dots), throttled stretches shaded."""
    intervals = _merge(_intervals(samples), max(1, width // 2))
    return _chart(
        "Chunk duration (s)",
        intervals,
        lambda i: i.working / i.chunks if i.chunks > 0 else None,
        seconds_label,
        width,
        height,
        dots=True,
    )
