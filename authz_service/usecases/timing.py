"""Durations kept as plain numbers: a histogram that a metrics collector reads at scrape time.

Observing is a bisect and two additions on the thread that owns it; nothing here locks or
knows about prometheus-client.
"""

from __future__ import annotations

from bisect import bisect_left as _bucket
from collections.abc import Sequence


class Durations:
    """Counts of durations by upper bound (seconds), their sum and their number."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        # counts[i]: durations in (bounds[i-1], bounds[i]]; the last one: above every bound.
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self.counts[_bucket(self.bounds, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, how many durations were at most that) pairs, ending with "+Inf"."""
        pairs, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs
