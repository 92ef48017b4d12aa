"""Prometheus metrics, read from the use cases' own counters at scrape time.

Nothing is counted through prometheus-client on the Check hot path: the Checker keeps plain
integer counters and this collector turns them into metrics when Prometheus asks. No label
ever carries a token, a tag or a hash. Entries are counted in the database at most every
`count_seconds`; `metrics_listener` serves the result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from authz_service.core.errors import AuthzError
from authz_service.logs import RateLimitedLog

from .metrics_listener import ListenerStats, MetricsLimits, MetricsListener

log = logging.getLogger("authz_service.metrics")

if TYPE_CHECKING:
    from authz_service.core.model import State
    from authz_service.usecases import Checker


class CheckerCollector(Collector):
    """Check counters: decisions by reason, argon2 verifications and their duration, tag
    misses, cache hits, misses and size."""

    def __init__(self, checker: Checker) -> None:
        self._checker = checker

    def collect(self) -> Iterator[Metric]:
        """The current values, as Prometheus metric families."""
        checks = CounterMetricFamily(
            "authz_checks", "Check answers by decision and reason", labels=["decision", "reason"]
        )
        for reason, count in sorted(self._checker.counters.answers.items()):
            checks.add_metric(["allow" if not reason else "deny", reason or "ok"], count)
        yield checks
        yield CounterMetricFamily(
            "authz_argon2_verifications",
            "argon2 verifications made by Check",
            value=self._checker.counters.argon2_verifications,
        )
        latency = self._checker.counters.check_seconds
        yield HistogramMetricFamily(
            "authz_check_duration_seconds",
            "Time from a Check's start to its answer in this process (transport excluded)",
            buckets=latency.cumulative(),
            sum_value=latency.total,
        )
        durations = self._checker.counters.argon2_seconds
        yield HistogramMetricFamily(
            "authz_argon2_verification_seconds",
            "Time one argon2 verification took (cold checks only), in its worker thread",
            buckets=durations.cumulative(),
            sum_value=durations.total,
        )
        yield CounterMetricFamily(
            "authz_cache_hits",
            "Checks whose token was in the cache of verified tokens",
            value=self._checker.counters.cache_hits,
        )
        yield CounterMetricFamily(
            "authz_cache_misses",
            "Checks whose token was not in the cache (looked up by tag, maybe verified)",
            value=self._checker.counters.cache_misses,
        )
        yield CounterMetricFamily(
            "authz_tag_misses",
            "Checks whose lookup tag matched no entry (no argon2 work)",
            value=self._checker.counters.tag_misses,
        )
        yield GaugeMetricFamily(
            "authz_cache_tokens",
            "Verified tokens held in the cache",
            value=len(self._checker.tokens),
        )


class AdminCollector(Collector):
    """Admin calls by RPC and status code, and entries by state (counted in the store at most
    every `count_seconds`: the count is a table scan); each only when given."""

    def __init__(
        self,
        calls: Mapping[tuple[str, str], int] | None,
        count_entries: Callable[[datetime], dict[State, int]] | None,
        *,
        count_seconds: float = MetricsLimits.count_seconds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._calls = calls
        self._count_entries = count_entries
        self._count_seconds = count_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[State, int] | None = None
        self._failures = RateLimitedLog(log, 1)
        self._counted_at = float("-inf")

    def collect(self) -> Iterator[Metric]:
        """The current values, as Prometheus metric families."""
        if self._calls is not None:
            calls = CounterMetricFamily(
                "authz_admin_calls",
                "Admin RPCs by method and status code",
                labels=["rpc", "code"],
            )
            for (rpc, code), count in sorted(self._calls.items()):
                calls.add_metric([rpc, code], count)
            yield calls
        if self._count_entries is None:
            return
        entries = GaugeMetricFamily("authz_entries", "Entries by state", labels=["state"])
        for state, count in self._entry_counts().items():
            entries.add_metric([state.name.lower()], count)
        yield entries

    def _entry_counts(self) -> dict[State, int]:
        assert self._count_entries is not None  # noqa: S101 (collect() asks only then)
        with self._lock:
            now = self._clock()
            if now - self._counted_at >= self._count_seconds:
                # Set first: a failing count is not retried by every scrape either.
                self._counted_at = now
                try:
                    self._counts = self._count_entries(datetime.now(UTC))
                except AuthzError as exc:
                    # The storage is failing, which is when the other metrics matter most:
                    # they are served, with the last good counts (none before the first).
                    self._failures.warning("entries not counted for metrics: %s", exc)
            return dict(self._counts or {})


class ListenerCollector(Collector):
    """The metrics listener's own drops: connections over the limit, requests too slow or
    too large."""

    def __init__(self, stats: ListenerStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        """The current values, as Prometheus metric families."""
        dropped = CounterMetricFamily(
            "authz_metrics_connections_dropped",
            "Metrics connections closed without serving metrics, by cause",
            labels=["cause"],
        )
        dropped.add_metric(["over_limit"], self._stats.refused)
        dropped.add_metric(["evicted"], self._stats.evicted)
        dropped.add_metric(["deadline"], self._stats.timed_out)
        dropped.add_metric(["header_too_large"], self._stats.too_large)
        yield dropped


def metrics_registry(
    checker: Checker,
    admin_calls: Mapping[tuple[str, str], int] | None = None,
    count_entries: Callable[[datetime], dict[State, int]] | None = None,
    *,
    count_seconds: float = MetricsLimits.count_seconds,
) -> CollectorRegistry:
    """A registry of this process's Check counters, and its admin calls (`admin_calls`) and the
    entries by state (`count_entries`, a blocking store's `count_by_state`) when given."""
    registry = CollectorRegistry()
    registry.register(CheckerCollector(checker))
    if admin_calls is not None:
        registry.register(AdminCollector(admin_calls, count_entries, count_seconds=count_seconds))
    return registry


def open_metrics(
    listen: str,
    checker: Checker,
    admin_calls: Mapping[tuple[str, str], int] | None = None,
    count_entries: Callable[[datetime], dict[State, int]] | None = None,
    limits: MetricsLimits | None = None,
) -> MetricsListener:
    """A started listener serving /metrics on `listen` (HOST:PORT); OSError when it cannot bind.

    With `admin_calls` (AdminCalls.counts) and `count_entries` (a blocking store's
    `count_by_state`, called on the listener's thread), admin calls and entries are served too.
    """
    limits = limits or MetricsLimits()
    registry = metrics_registry(
        checker, admin_calls, count_entries, count_seconds=limits.count_seconds
    )
    return serve_registry(listen, registry, limits)


def serve_registry(
    listen: str, registry: CollectorRegistry, limits: MetricsLimits | None = None
) -> MetricsListener:
    """A started listener serving `registry` (and its own drops) on `listen`."""
    listener = MetricsListener(registry, limits or MetricsLimits())
    registry.register(ListenerCollector(listener.stats))
    listener.start(listen)
    return listener
