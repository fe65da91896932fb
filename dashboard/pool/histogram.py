"""A fixed-bucket histogram cheap enough for the checkout path (no locks, no labels).

Prometheus objects are only built at scrape time from these counts.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

# Seconds. Waiting for a connection: sub-millisecond when healthy, pool_timeout when not.
WAIT_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Histogram:
    """The total count is derived, so it can never disagree with the buckets.
    (instrument.py observes only the slow waits and fills the first bucket on read.)"""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last one is +Inf
        self.sum = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus-style `le` buckets, cumulative, ending with +Inf."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((_fmt(bound), running))
        running += self.counts[-1]
        out.append(("+Inf", running))
        return out

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (coarse, for display)."""
        if self.count == 0:
            return None
        target = q * self.count
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            if running >= target:
                return bound
        return float("inf")

    def quantile_bucket(self, q: float) -> tuple[float, float] | None:
        """(lower, upper] bounds of the bucket holding the q-quantile: all a histogram can
        say about it (lower 0 for the first bucket, upper inf past the last bound)."""
        upper = self.quantile(q)
        if upper is None:
            return None
        if upper == float("inf"):
            return (self.bounds[-1] if self.bounds else 0.0), upper
        i = self.bounds.index(upper)
        return (self.bounds[i - 1] if i else 0.0), upper

    def buckets(self) -> list[Bucket]:
        """Every bucket from the first to the last non-empty one, in order (empty ones in
        between kept, so the shape reads right)."""
        counts = self.counts
        used = [i for i, n in enumerate(counts) if n]
        if not used:
            return []
        out = []
        for i in range(used[0], used[-1] + 1):
            lower = self.bounds[i - 1] if i else 0.0
            upper = self.bounds[i] if i < len(self.bounds) else float("inf")
            out.append(Bucket(lower, upper, counts[i]))
        return out


@dataclass(frozen=True, slots=True)
class Bucket:
    lower: float  # exclusive (0 for the first bucket)
    upper: float  # inclusive (inf for the last)
    count: int


def _fmt(bound: float) -> str:
    return repr(float(bound))
