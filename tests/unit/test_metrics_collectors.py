"""The metrics collectors without a listener: entries are counted in the store at most once per
interval however often Prometheus scrapes, and a failing count is not retried by every scrape."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from authz_service.adapters.metrics import AdminCollector, ListenerCollector
from authz_service.adapters.metrics_listener import ListenerStats
from authz_service.core.errors import Unavailable
from authz_service.core.model import Entry, State
from fakes import InMemoryStore

NOW = datetime(2025, 6, 1, tzinfo=UTC)


class Clock:
    """A settable monotonic clock, in seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(InMemoryStore):
    """An InMemoryStore that counts `count_by_state` calls and can be made to fail them."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = 0
        self.failing = False

    def count_by_state(self, now: datetime) -> dict[State, int]:
        self.counts += 1
        if self.failing:
            raise Unavailable("database read failed: database is locked")
        return super().count_by_state(now)


def _entry(entry_id: str) -> Entry:
    return Entry(
        id=entry_id,
        subject=entry_id,
        description="",
        restrictions=(),
        unrestricted=True,
        verifier="v",
        lookup_tag=1,
        create_time=NOW,
        update_time=NOW,
    )


def _scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def _registry(store: CountingStore, clock: Clock) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(AdminCollector({}, store.count_by_state, count_seconds=5.0, clock=clock))
    return registry


def test_a_scrape_loop_counts_entries_in_the_store_once_per_interval() -> None:
    store, clock = CountingStore(), Clock()
    registry = _registry(store, clock)
    for _ in range(20):  # 20 scrapes, a quarter of a second apart: 5 seconds in all
        _scrape(registry)
        clock.now += 0.25
    assert store.counts == 1
    _scrape(registry)  # 5 seconds after the first count
    assert store.counts == 2


def test_entry_counts_are_at_most_one_interval_old() -> None:
    store, clock = CountingStore(), Clock()
    registry = _registry(store, clock)
    assert 'authz_entries{state="active"} 0.0' in _scrape(registry)
    store.add(_entry("e1"))
    clock.now += 4.9
    assert 'authz_entries{state="active"} 0.0' in _scrape(registry)
    clock.now += 0.1
    assert 'authz_entries{state="active"} 1.0' in _scrape(registry)


def test_a_failing_count_serves_the_other_metrics_and_then_waits_an_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, clock = CountingStore(), Clock()
    store.add(_entry("e1"))
    registry = _registry(store, clock)
    _scrape(registry)
    store.failing = True
    clock.now += 5.0
    # The storage failing fails no scrape: the last good counts are served, the store is
    # left alone until the next interval, and one line says why.
    for _ in range(10):
        text = _scrape(registry)
        assert 'authz_entries{state="active"} 1.0' in text
        assert "authz_checks_total" in text or "authz_admin_calls_total" in text
    assert store.counts == 2
    assert caplog.text.count("entries not counted for metrics") == 1


def test_without_an_entry_count_admin_calls_are_served_and_no_entries_metric() -> None:
    registry = CollectorRegistry()
    registry.register(AdminCollector({("CreateEntry", "OK"): 2}, None))
    text = _scrape(registry)
    assert 'authz_admin_calls_total{code="OK",rpc="CreateEntry"} 2.0' in text
    assert "authz_entries" not in text


def test_the_listener_reports_its_dropped_connections_by_cause() -> None:
    registry = CollectorRegistry()
    registry.register(ListenerCollector(ListenerStats(refused=3, timed_out=2, too_large=1)))
    text = _scrape(registry)
    assert 'authz_metrics_connections_dropped_total{cause="over_limit"} 3.0' in text
    assert 'authz_metrics_connections_dropped_total{cause="deadline"} 2.0' in text
    assert 'authz_metrics_connections_dropped_total{cause="header_too_large"} 1.0' in text
