"""The admin's SVG charts (backfills/admin/charts.py) read back as numbers: where the series
sits against the axis' ticks, which stretch is shaded, what a thinned history draws. Samples
are plain dataclasses; no database."""

from __future__ import annotations

import datetime as dt
import math
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pytest

from backfills.admin.charts import (
    EMPTY,
    Chart,
    _nice_scale,
    chunk_chart,
    clock,
    rows_label,
    seconds_label,
    throughput_chart,
)

SVG = "{http://www.w3.org/2000/svg}"
T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
UNITS = {"k": 1e3, "M": 1e6, "G": 1e9}


@dataclass(frozen=True)
class Sample:
    at: dt.datetime
    rows_scanned: int = 0
    chunks_done: int = 0
    time_running: float = 0.0
    time_throttled: float = 0.0
    throttle_reason: str = ""
    max_chunk_seconds: float | None = None


def history(
    rows: list[int],
    *,
    seconds: float = 1.0,
    chunk_seconds: float = 0.25,
    throttled: dict[int, str] | None = None,
) -> list[Sample]:
    """A first sample at T0, then one every *seconds* with ``rows[n]`` more rows, in chunks of
    100 rows taking *chunk_seconds* each; interval n (from sample n to n + 1) in *throttled*
    adds a second of throttling and that reason to its later sample."""
    throttled = throttled or {}
    samples = [Sample(T0)]
    for n, count in enumerate(rows):
        last = samples[-1]
        chunks = count // 100
        samples.append(
            Sample(
                at=T0 + dt.timedelta(seconds=seconds * (n + 1)),
                rows_scanned=last.rows_scanned + count,
                chunks_done=last.chunks_done + chunks,
                time_running=last.time_running + chunks * chunk_seconds,
                time_throttled=last.time_throttled + (1.0 if n in throttled else 0.0),
                throttle_reason=throttled.get(n, ""),
                max_chunk_seconds=chunk_seconds if chunks else None,
            )
        )
    return samples


def parse(chart: Chart) -> ET.Element:
    return ET.fromstring(chart.svg)


def polylines(root: ET.Element) -> list[list[tuple[float, float]]]:
    return [
        [(float(x), float(y)) for x, y in (p.split(",") for p in line.get("points", "").split())]
        for line in root.iter(f"{SVG}polyline")
    ]


def throttled_rects(root: ET.Element) -> list[ET.Element]:
    return [rect for group in with_class(root, "g", "bf-throttled") for rect in group]


def with_class(root: ET.Element, tag: str, name: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}{tag}") if name in e.get("class", "").split()]


def y_ticks(root: ET.Element) -> list[tuple[str, float]]:
    """Each y tick's label and height, bottom to top."""
    (grid,) = with_class(root, "g", "bf-grid")
    (labels,) = with_class(root, "g", "bf-y")
    heights = [float(line.get("y1", "")) for line in grid]
    return [(text.text or "", y) for text, y in zip(labels, heights, strict=True)]


def x_labels(root: ET.Element) -> list[str]:
    return [text.text or "" for g in with_class(root, "g", "bf-x") for text in g.iter(f"{SVG}text")]


def rate(label: str) -> float:
    return float(label[:-1]) * UNITS[label[-1]] if label[-1] in UNITS else float(label)


def mean_rate(root: ET.Element) -> float:
    """The series' average over the chart's width, in rows/s read off the y axis."""
    ticks = y_ticks(root)
    (low, y_low), (high, y_high) = ticks[0], ticks[-1]
    per_px = (rate(high) - rate(low)) / (y_high - y_low)
    area = width = 0.0
    for line in polylines(root):
        for (x0, y), (x1, _) in zip(line[::2], line[1::2], strict=True):
            area += (x1 - x0) * (rate(low) + (y - y_low) * per_px)
            width += x1 - x0
    return area / width


def test_a_constant_rate_is_a_flat_line_at_its_tick() -> None:
    chart = throughput_chart(history([1000] * 60))

    assert chart.points == 60
    root = parse(chart)
    (line,) = polylines(root)
    assert len(line) == 120
    assert len({y for _, y in line}) == 1
    ticks = y_ticks(root)
    assert [label for label, _ in ticks] == ["0", "500", "1k"]
    assert line[0][1] == ticks[-1][1]  # 1000 rows/s sits on the "1k" line
    assert line[0][0] == 48 and line[-1][0] == 640 - 14  # the first sample to the last


def test_the_y_axis_reads_the_series() -> None:
    root = parse(throughput_chart(history([3_400_000] * 5 + [1_700_000] * 5)))

    assert [label for label, _ in y_ticks(root)] == ["0", "1M", "2M", "3M", "4M"]
    assert mean_rate(root) == pytest.approx(2_550_000, rel=0.005)


def test_svg_element() -> None:
    root = parse(throughput_chart(history([1000] * 3), width=500, height=120))

    assert root.tag == f"{SVG}svg"
    assert root.get("viewBox") == "0 0 500 120"
    assert root.get("width") == "100%"
    assert root.get("role") == "img"
    assert root.get("aria-label") == "Throughput (rows/s)"
    assert root.findtext(f"{SVG}title") == "Throughput (rows/s)"
    assert parse(chunk_chart(history([1000] * 3))).get("aria-label") == "Chunk duration (s)"
    assert not [e for e in root.iter() if "id" in e.attrib]


def test_a_throttled_interval_is_one_rect_over_its_stretch() -> None:
    chart = throughput_chart(history([1000] * 10, throttled={4: ""}))

    root = parse(chart)
    (line,) = polylines(root)
    (rect,) = throttled_rects(root)
    start, end = line[2 * 4][0], line[2 * 4 + 1][0]  # interval 4's ends on the series
    assert float(rect.get("x", "")) == pytest.approx(start, abs=0.1)
    assert float(rect.get("width", "")) == pytest.approx(end - start, abs=0.11)
    assert root.findtext(f"{SVG}g/{SVG}rect/{SVG}title") == "throttled 0:04–0:05"
    assert "shaded: throttled" in chart.svg


def test_a_reason_alone_throttles_and_adjacent_intervals_share_a_rect() -> None:
    samples = history([1000] * 10)
    samples[3] = Sample(**{**samples[3].__dict__, "throttle_reason": "replica lag"})
    samples[4] = Sample(**{**samples[4].__dict__, "throttle_reason": "load"})

    root = parse(throughput_chart(samples))

    (line,) = polylines(root)
    (rect,) = throttled_rects(root)
    assert float(rect.get("x", "")) == pytest.approx(line[2 * 2][0], abs=0.1)
    assert float(rect.get("x", "")) + float(rect.get("width", "")) == pytest.approx(
        line[2 * 3 + 1][0], abs=0.15
    )
    assert rect.findtext(f"{SVG}title") == "throttled 0:02–0:04: replica lag; load"


def test_no_throttling_no_shading_no_legend() -> None:
    chart = throughput_chart(history([1000] * 10))

    assert throttled_rects(parse(chart)) == []
    assert "throttled" not in chart.svg


def test_thinning_keeps_the_average() -> None:
    samples = history([500, 1500] * 20)

    full = parse(throughput_chart(samples))
    thinned = parse(throughput_chart(samples[::2]))  # keeps the first and the last

    assert len({y for _, y in polylines(full)[0]}) == 2
    (line,) = polylines(thinned)
    assert len({y for _, y in line}) == 1
    assert y_ticks(thinned)[-1] == ("1k", line[0][1])
    assert mean_rate(full) == pytest.approx(1000, rel=0.005)
    assert mean_rate(thinned) == pytest.approx(1000, rel=0.005)


def test_thinning_keeps_throttled_stretches() -> None:
    samples = history([1000] * 10, throttled={3: "lag"})

    (rect,) = throttled_rects(parse(throughput_chart(samples[::2])))

    # Interval 3 is inside the thinned chart's interval from 0:02 to 0:04.
    assert rect.findtext(f"{SVG}title") == "throttled 0:02–0:04: lag"


def test_user_text_is_escaped() -> None:
    reason = '<script>alert("x")</script> & more'

    chart = throughput_chart(history([1000] * 5, throttled={2: reason}))

    assert "<script>" not in chart.svg
    assert "&lt;script&gt;" in chart.svg
    (rect,) = throttled_rects(parse(chart))
    assert rect.findtext(f"{SVG}title") == f"throttled 0:02–0:03: {reason}"


@pytest.mark.parametrize(
    "samples",
    [
        [],
        history([]),
        [Sample(T0), Sample(T0 + dt.timedelta(seconds=0.01), rows_scanned=50)],
    ],
    ids=["none", "one", "two at once"],
)
def test_not_enough_history(samples: list[Sample]) -> None:
    for chart in throughput_chart(samples), chunk_chart(samples):
        assert chart.points == 0
        root = parse(chart)
        assert [t.text for t in root.iter(f"{SVG}text")][-1] == EMPTY
        assert polylines(root) == []


def test_near_simultaneous_samples_merge_into_the_next_interval() -> None:
    base = history([1000] * 4)
    # A sample 10 ms after the one at 0:01 and one 10 ms after the last: no spike, no loss.
    extra = [
        Sample(T0 + dt.timedelta(seconds=1.01), rows_scanned=1010),
        Sample(T0 + dt.timedelta(seconds=4.01), rows_scanned=4010),
    ]
    samples = sorted([*base, *extra], key=lambda s: s.at)

    chart = throughput_chart(samples)

    assert chart.points == 4
    (line,) = polylines(parse(chart))
    assert len({y for _, y in line}) == 1


def test_chunk_chart_averages_and_slowest() -> None:
    samples = history([1000] * 6, chunk_seconds=0.25)
    # The slowest chunk of interval 2 took a second: a dot on the "1 s" line.
    samples[3] = Sample(**{**samples[3].__dict__, "max_chunk_seconds": 1.0})

    chart = chunk_chart(samples)

    assert chart.points == 6
    root = parse(chart)
    (line,) = polylines(root)
    ticks = dict(y_ticks(root))
    assert list(ticks) == ["0", "500 ms", "1 s"]
    dots = [float(c.get("cy", "")) for c in root.iter(f"{SVG}circle")]
    assert len(dots) == 6
    assert dots[2] == ticks["1 s"]
    assert {y for _, y in line} == {(ticks["0"] + ticks["500 ms"]) / 2}
    assert "line: average, dots: slowest" in chart.svg


def test_chunk_chart_skips_intervals_without_chunks() -> None:
    samples = history([1000, 1000, 0, 0, 1000, 1000])

    chart = chunk_chart(samples)

    assert chart.points == 4
    first, second = polylines(parse(chart))
    assert len(first) == len(second) == 4
    assert throughput_chart(samples).points == 6


def test_a_long_history_stays_small() -> None:
    rng = random.Random(7)
    rows = [rng.randint(0, 5000) for _ in range(9_999)]
    throttled = {n: f"replica lag {n}s <b>" for n in range(9_999) if rng.random() < 0.2}
    samples = history(rows, throttled=throttled)

    for chart in throughput_chart(samples), chunk_chart(samples):
        assert len(chart.svg.encode()) < 40_000
        assert 0 < chart.points <= 640 // 2
        root = parse(chart)
        assert sum(len(line) for line in polylines(root)) <= 2 * 320
    assert mean_rate(parse(throughput_chart(samples))) == pytest.approx(sum(rows) / 9_999, rel=0.01)


def test_x_axis_in_elapsed_time() -> None:
    root = parse(throughput_chart(history([1000] * 13, seconds=300)))  # 65 minutes

    assert x_labels(root) == ["0:00", "10:00", "20:00", "30:00", "40:00", "50:00", "1:00:00"]
    short = parse(throughput_chart(history([1000] * 13, seconds=300), width=300))
    assert x_labels(short) == ["0:00", "30:00", "1:00:00"]


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (950, "950"), (0.5, "0.5"), (1500, "1.5k"), (12_000, "12k"), (3.4e6, "3.4M")],
)
def test_rows_label(value: float, text: str) -> None:
    assert rows_label(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (0.0005, "500 µs"), (0.12, "120 ms"), (0.25, "250 ms"), (1.5, "1.5 s")]
    + [(2000, "2000 s")],
)
def test_seconds_label(value: float, text: str) -> None:
    assert seconds_label(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0:00"), (150, "2:30"), (3900, "1:05:00"), (90_000, "25:00:00")]
)
def test_clock(seconds: float, text: str) -> None:
    assert clock(seconds) == text


@pytest.mark.parametrize("highest", [0.003, 0.07, 0.3, 1, 4, 4.01, 9.99, 10, 17, 999, 1001, 6e6])
def test_nice_scale(highest: float) -> None:
    step, count = _nice_scale(highest)

    assert 2 <= count <= 4  # 3 to 5 ticks with 0
    assert step * count >= highest
    assert step * (count - 1) < highest
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in (1, 2, 5)
