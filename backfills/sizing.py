"""Chunk sizes that follow a target duration (pt-online-schema-change's --chunk-time idea).

The sizer keeps an exponentially smoothed rows-per-second estimate and aims the next chunk at
``rate * target``. It grows by at most ``growth`` per step (GitLab's batched migrations use 20%),
shrinks at once when a chunk ran long, and stays within ``[min_size, max_size]``.

Like TCP's slow start, a run first doubles its chunks (``start_growth``) while they take less
than half the target, until one reaches half the target, runs long, or makes others wait: at
20% a chunk, a run starting at 100 rows needs about 30 chunks to reach 30,000 rows, and a run
of a few hundred thousand rows spent most of its time in small chunks paying the per-chunk
cost (window query, checkpoint, commit); doubling gets there in 9. Chunks never aim past the
target either way (``rate * target``), so no chunk holds its locks longer for it.

When application sessions waited on a chunk's locks (the blocking guard), ``back_off()`` halves
the size and remembers the half as a threshold: above it the size grows additively, by a tenth
of the threshold per chunk, instead of by ``growth`` (TCP's congestion avoidance after a loss),
so a run that found the size at which it makes others wait approaches it again slowly.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ChunkSizer:
    """Next chunk size from observed (rows, seconds) pairs; fixed when ``target`` is None."""

    size: int
    target: float | None = 0.5
    min_size: int = 10
    max_size: int = 20_000
    growth: float = 1.2
    #: Growth per step during the slow start (see the module's docstring).
    start_growth: float = 2.0
    #: Weight of the newest observation in the smoothed rate.
    alpha: float = 0.3
    #: A chunk longer than target * this factor shrinks the next one immediately.
    overrun: float = 1.5
    rate: float | None = field(default=None, init=False)
    fixed: int | None = field(default=None, init=False)
    #: Set by ``back_off()``: above this size, growth is additive.
    threshold: int | None = field(default=None, init=False)
    #: Whether the run is still in its slow start (doubling while chunks are short).
    starting: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        self.size = self._clamp(self.size)
        self.fixed = None if self.adaptive else self.size

    @property
    def adaptive(self) -> bool:
        return self.target is not None and self.target > 0

    def reconfigure(
        self, *, size: int, target: float | None, min_size: int, max_size: int, growth: float
    ) -> None:
        """New size, target and bounds (a run's settings changed); the rate starts afresh."""
        self.target, self.min_size, self.max_size, self.growth = target, min_size, max_size, growth
        self.size = size
        self.rate = None
        self.threshold = None
        self.starting = True
        self.__post_init__()

    def observe(self, rows: int, seconds: float) -> int:
        """Record a committed chunk and return the size of the next one."""
        if self.fixed is not None:
            # A fixed size comes back after a chunk that timeouts had split succeeds.
            self.size = self.fixed
            return self.size
        if rows <= 0:
            return self.size
        assert self.target is not None
        seconds = max(seconds, 1e-4)
        rate = rows / seconds
        self.rate = rate if self.rate is None else self.alpha * rate + (1 - self.alpha) * self.rate
        ideal = self.rate * self.target
        if self.starting and seconds >= self.target / 2:
            self.starting = False
        if seconds > self.target * self.overrun:
            # Too slow: jump straight to what this very chunk says fits the target.
            new = min(ideal, rate * self.target)
        else:
            new = min(ideal, self._grown())
            new = max(new, self.size / self.growth) if seconds <= self.target else new
        self.size = self._clamp(int(new))
        return self.size

    def _grown(self) -> float:
        """The largest next size: ``growth`` times this one, or one additive step above the
        threshold ``back_off()`` set."""
        if self.threshold is not None and self.size >= self.threshold:
            return self.size + max(1, self.threshold // 10)
        return self.size * (self.start_growth if self.starting else self.growth)

    def halve(self) -> int:
        """After repeated timeouts: try half as many rows (below min_size if need be)."""
        self.size = max(1, self.size // 2)
        return self.size

    def back_off(self) -> int:
        """Application sessions waited on the last chunk's locks: halve, and grow back
        additively from the half (multiplicative decrease, additive increase)."""
        size = self.halve()
        self.starting = False
        if self.adaptive:
            self.threshold = size
        return size

    def _clamp(self, size: int) -> int:
        return max(self.min_size, min(self.max_size, size)) if self.adaptive else max(1, size)
