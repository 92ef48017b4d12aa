"""Prometheus metrics, read from the use cases' own counters at scrape time.

Nothing is counted through prometheus-client on the Check hot path: the Checker keeps plain
integer counters and this collector turns them into metrics when Prometheus asks. No label
ever carries a token, a tag or a hash.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from authz_service.usecases import Checker


class CheckerCollector(Collector):
    """Check counters: decisions by reason, argon2 verifications, tag misses, cache size."""

    def __init__(self, checker: Checker) -> None:
        self._checker = checker

    def collect(self) -> Iterator[Metric]:
        """The current values, as Prometheus metric families."""
        checks = CounterMetricFamily(
            "authz_checks", "Check answers by decision and reason", labels=["decision", "reason"]
        )
        for reason, count in sorted(self._checker.answers.items()):
            checks.add_metric(["allow" if not reason else "deny", reason or "ok"], count)
        yield checks
        yield CounterMetricFamily(
            "authz_argon2_verifications",
            "argon2 verifications made by Check",
            value=self._checker.argon2_verifications,
        )
        yield CounterMetricFamily(
            "authz_tag_misses",
            "Checks whose lookup tag matched no entry (no argon2 work)",
            value=self._checker.tag_misses,
        )
        yield GaugeMetricFamily(
            "authz_cache_tokens",
            "Verified tokens held in the cache",
            value=self._checker.cache_size,
        )


def serve_metrics(listen: str, checker: Checker) -> int:
    """Serve /metrics on `listen` (HOST:PORT) from a daemon thread; returns the bound port."""
    host, _, port = listen.rpartition(":")
    registry = CollectorRegistry()
    registry.register(CheckerCollector(checker))
    server, _ = start_http_server(int(port), host.strip("[]"), registry)
    return int(server.server_port)
