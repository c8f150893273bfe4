"""ChunkSizer arithmetic (pure; the database-backed convergence test is in test_online.py)."""

from __future__ import annotations

from backfills.sizing import ChunkSizer


def simulate(sizer: ChunkSizer, seconds_per_row: float, steps: int) -> list[int]:
    sizes = []
    for _ in range(steps):
        sizes.append(sizer.size)
        sizer.observe(sizer.size, sizer.size * seconds_per_row)
    return sizes


def test_grows_from_a_small_start_by_at_most_the_growth_factor_and_settles() -> None:
    sizer = ChunkSizer(size=10, target=0.5, growth=1.2)
    sizes = simulate(sizer, seconds_per_row=0.001, steps=60)  # 500 rows fit 0.5 s
    assert sizes[0] == 10
    # Slow start: doubling while a chunk takes under half the target (250 rows here)...
    assert sizes[:6] == [10, 20, 40, 80, 160, 320], sizes
    # ...then at most 20% a step, never past what fits the target.
    assert all(b <= a * 1.2 + 1 for a, b in zip(sizes[5:], sizes[6:], strict=False))
    assert all(b >= a for a, b in zip(sizes[:20], sizes[1:21], strict=False))
    assert max(sizes) <= 500
    assert 450 <= sizes[-1] <= 550


def test_slow_start_ends_at_a_back_off_or_a_long_chunk() -> None:
    sizer = ChunkSizer(size=100, target=0.5)
    assert sizer.observe(100, 0.01) == 200
    sizer.back_off()
    assert not sizer.starting
    assert sizer.observe(sizer.size, 0.01) <= 120
    long = ChunkSizer(size=100, target=0.5)
    long.observe(100, 1.0)  # twice the target: shrinks, and the slow start is over
    assert not long.starting and long.size == 50


def test_shrinks_at_once_after_a_slow_chunk() -> None:
    sizer = ChunkSizer(size=500, target=0.5)
    simulate(sizer, seconds_per_row=0.001, steps=10)
    before = sizer.size
    after = sizer.observe(before, 2.0)  # four times the target
    assert after <= before // 3


def test_bounds_and_fixed_mode() -> None:
    assert simulate(ChunkSizer(size=50, target=0.5, max_size=200), 0.0001, 40)[-1] == 200
    assert simulate(ChunkSizer(size=50, target=0.5, min_size=20), 1.0, 10)[-1] == 20
    fixed = ChunkSizer(size=123, target=None)
    assert simulate(fixed, 0.5, 5) == [123] * 5
    assert fixed.halve() == 61
    assert fixed.observe(61, 0.1) == 123  # back to the fixed size once a chunk commits


def test_after_a_back_off_the_size_grows_back_additively() -> None:
    sizer = ChunkSizer(size=10, target=0.5, growth=1.2)
    simulate(sizer, seconds_per_row=0.0005, steps=40)  # settles at about 1,000 rows
    settled = sizer.size
    assert 900 <= settled <= 1100
    assert sizer.back_off() == settled // 2 == sizer.threshold
    sizes = simulate(sizer, seconds_per_row=0.0005, steps=6)
    steps = [b - a for a, b in zip(sizes, sizes[1:], strict=False)]
    # A tenth of the threshold per chunk, where multiplicative growth would add 20% a chunk.
    assert steps == [settled // 2 // 10] * 5, sizes
    # Below the threshold (a slow stretch shrank it), growth is multiplicative again.
    sizer.observe(sizer.size, sizer.size * 0.005)
    small = sizer.size
    assert small < sizer.threshold // 2
    assert sizer.observe(small, small * 0.0005) == int(small * 1.2)
    # New settings start afresh.
    sizer.reconfigure(size=100, target=0.5, min_size=10, max_size=20_000, growth=1.2)
    assert sizer.threshold is None
    # A fixed size has no threshold to grow back to.
    fixed = ChunkSizer(size=100, target=None)
    assert fixed.back_off() == 50 and fixed.threshold is None
