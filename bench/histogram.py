"""Latency histogram with logarithmic buckets (about 1% relative error), mergeable across processes.

Sorted samples would be exact but cost memory proportional to the request count and cannot be
summed across generator processes cheaply; log buckets keep a run's latencies in a few
kilobytes whatever its length, and merging is adding counts. Values are recorded in
microseconds; a percentile answers with the midpoint of its bucket.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

_GROWTH = 1.01  # bucket width: 1% of its value
_LOG_GROWTH = math.log(_GROWTH)


def bucket_of(us: float) -> int:
    """Bucket index of a latency in microseconds; everything at or below 1 µs is bucket 0."""
    if us <= 1.0:
        return 0
    return int(math.log(us) / _LOG_GROWTH) + 1


def bucket_value(index: int) -> float:
    """Representative value (geometric midpoint) of a bucket, in microseconds."""
    if index <= 0:
        return 1.0
    lo = _GROWTH ** (index - 1)
    return lo * math.sqrt(_GROWTH)


class LatencyHistogram:
    """Counts per log bucket plus exact count, sum, min and max."""

    __slots__ = ("buckets", "count", "max_us", "min_us", "sum_us")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.sum_us = 0.0
        self.min_us = math.inf
        self.max_us = 0.0

    def record(self, seconds: float) -> None:
        us = seconds * 1e6
        b = bucket_of(us)
        self.buckets[b] = self.buckets.get(b, 0) + 1
        self.count += 1
        self.sum_us += us
        if us < self.min_us:
            self.min_us = us
        if us > self.max_us:
            self.max_us = us

    def merge(self, other: LatencyHistogram) -> None:
        for b, n in other.buckets.items():
            self.buckets[b] = self.buckets.get(b, 0) + n
        self.count += other.count
        self.sum_us += other.sum_us
        self.min_us = min(self.min_us, other.min_us)
        self.max_us = max(self.max_us, other.max_us)

    def percentile_us(self, p: float) -> float:
        """Value at rank ceil(p% of count) (the nearest-rank definition), clamped to min/max."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(p / 100.0 * self.count))
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return min(max(bucket_value(b), self.min_us), self.max_us)
        return self.max_us

    def percentile_ms(self, p: float) -> float:
        return self.percentile_us(p) / 1000.0

    def mean_ms(self) -> float:
        return self.sum_us / self.count / 1000.0 if self.count else 0.0

    def summary_ms(self, points: Iterable[float] = (50, 90, 99, 99.9)) -> dict[str, float]:
        out = {f"p{p:g}": round(self.percentile_ms(p), 3) for p in points}
        out["mean"] = round(self.mean_ms(), 3)
        out["max"] = round(self.max_us / 1000.0, 3)
        return out

    # Plain-data form for multiprocessing queues and the JSON report.
    def to_dict(self) -> dict[str, object]:
        return {"buckets": {str(k): v for k, v in self.buckets.items()}, "count": self.count,
                "sum_us": self.sum_us, "min_us": self.min_us if self.count else 0.0, "max_us": self.max_us}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> LatencyHistogram:
        h = cls()
        raw = data.get("buckets", {})
        assert isinstance(raw, dict)
        h.buckets = {int(k): int(v) for k, v in raw.items()}
        h.count = int(data.get("count", 0))  # type: ignore[call-overload]
        h.sum_us = float(data.get("sum_us", 0.0))  # type: ignore[arg-type]
        h.min_us = float(data.get("min_us", 0.0)) if h.count else math.inf  # type: ignore[arg-type]
        h.max_us = float(data.get("max_us", 0.0))  # type: ignore[arg-type]
        return h
