"""What only the PostgreSQL store does, on a real PostgreSQL: migrations when replicas start at
once, the append-only event log, connection loss, and the replicas' acknowledgements and
leases (`settle`). The shared behaviour is the store contract (test_store_contract.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from authz_service.adapters.postgres_store import (
    APPLICATION,
    SCHEMA_VERSION,
    PostgresFile,
    PostgresStore,
)
from authz_service.core.errors import Unavailable
from authz_service.core.model import Action, Entry, Restriction
from postgres_server import PostgresServer

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
LEASE = 1.0


def _entry(n: int) -> Entry:
    when = T0 + timedelta(seconds=n)
    return Entry(
        id=f"id-{n:03d}",
        subject=f"subject-{n}",
        description="",
        restrictions=(Restriction("catalog", (), (Action.READ,)),),
        unrestricted=False,
        verifier=f"fake$v1$salt{n}$verifier{n}",
        lookup_tag=1000 + n,
        create_time=when,
        update_time=when,
        etag=f"etag-{n}",
    )


def _sql(url: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresFile]:
    opened = PostgresFile(postgres_url, lease=LEASE)
    yield opened
    opened.close()


def test_replicas_opening_a_new_database_at_once_migrate_it_once(postgres_url: str) -> None:
    with ThreadPoolExecutor(4) as starting:
        stores = list(starting.map(lambda _: PostgresFile(postgres_url), range(4)))
    try:
        assert _sql(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        stores[0].add(_entry(1))
        assert all(each.get("id-001").subject == "subject-1" for each in stores)
    finally:
        for each in stores:
            each.close()


def test_a_database_with_a_newer_schema_is_refused_with_what_to_do(postgres_url: str) -> None:
    PostgresFile(postgres_url).close()
    _sql(postgres_url, "UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(Unavailable, match=r"newer than this server knows.*upgrade the server"):
        PostgresFile(postgres_url)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET kind = 'updated'",
        "DELETE FROM events",
        "TRUNCATE events",
        "UPDATE audit_events SET code = 7",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ],
)
def test_the_event_log_refuses_every_edit(store: PostgresFile, statement: str) -> None:
    store.add(_entry(1))
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        _sql(store.url, statement)
    assert store.changes(0).events[0].entry_id == "id-001"


def _kill_pooled_connections(url: str) -> int:
    rows = _sql(
        url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = %s",
        (APPLICATION,),
    )
    (killed,) = rows[0]
    assert isinstance(killed, int)
    return killed


def test_reads_and_writes_after_the_pooled_connections_were_killed_succeed(
    store: PostgresFile,
) -> None:
    store.add(_entry(1))
    assert _kill_pooled_connections(store.url) >= 1
    assert store.get("id-001").subject == "subject-1"
    assert _kill_pooled_connections(store.url) >= 1
    event = store.add(_entry(2))
    assert store.changes(event.revision - 1).events == (event,)


def test_a_database_that_is_down_makes_calls_unavailable_and_back_they_work(
    tmp_path: Path,
) -> None:
    postgres = PostgresServer()
    try:
        store = PostgresFile(postgres.create_database("down"), lease=LEASE)
        # Acknowledged as a server's follower would: a replica that falls behind what it is
        # told lets its lease run out on purpose.
        store.acknowledge(store.add(_entry(1)).revision)
        assert store.problem() is None
        postgres.stop()
        started = time.monotonic()
        with pytest.raises(Unavailable, match="database write failed"):
            store.add(_entry(2))
        with pytest.raises(Unavailable, match="database read failed"):
            store.get("id-001")
        assert time.monotonic() - started < 15
        assert store.problem() is not None  # the lease ran out meanwhile
        with pytest.raises(Unavailable, match="lost its database"):
            store.version()
        postgres.start()
        store.acknowledge(store.add(_entry(2)).revision)
        assert [e.entry_id for e in store.changes(0).events] == ["id-001", "id-002"]
        deadline = time.monotonic() + 10
        while store.problem() is not None:  # the replica listens and holds its lease again
            assert time.monotonic() < deadline
            time.sleep(0.05)
        store.version()
        store.close()
    finally:
        postgres.close()


def test_a_write_waits_for_a_replica_that_does_not_acknowledge_until_its_lease_ends(
    postgres_url: str,
) -> None:
    async def run() -> tuple[float, float]:
        writer = PostgresStore(postgres_url, lease=LEASE)
        silent = PostgresStore(postgres_url, lease=LEASE)  # applies nothing, acknowledges nothing
        try:
            event = await writer.add(_entry(1))
            started = time.monotonic()
            await writer.settle(event.revision)
            waited = time.monotonic() - started
            # Its lease is gone (it kept falling behind), so later writes do not wait for it.
            event = await writer.add(_entry(2))
            started = time.monotonic()
            await writer.settle(event.revision)
            return waited, time.monotonic() - started
        finally:
            writer.close()
            silent.close()

    waited, then = asyncio.run(run())
    assert 0.3 < waited < 2 * LEASE + 0.5
    assert then < 0.25


def test_a_write_returns_once_every_other_replica_acknowledged_it(postgres_url: str) -> None:
    async def run() -> float:
        writer = PostgresStore(postgres_url, lease=10.0)
        other = PostgresStore(postgres_url, lease=10.0)
        try:
            writer.watch(lambda: None)
            event = await writer.add(_entry(1))
            waiting = asyncio.ensure_future(writer.settle(event.revision))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # a 10 s lease: it waits for the acknowledgement
            started = time.monotonic()
            await other.acknowledge(event.revision)
            await waiting
            return time.monotonic() - started
        finally:
            writer.close()
            other.close()

    assert asyncio.run(run()) < 0.5


def test_a_closed_replica_is_no_longer_waited_for(postgres_url: str) -> None:
    async def run() -> float:
        writer = PostgresStore(postgres_url, lease=10.0)
        try:
            PostgresStore(postgres_url, lease=10.0).close()
            event = await writer.add(_entry(1))
            started = time.monotonic()
            await writer.settle(event.revision)
            return time.monotonic() - started
        finally:
            writer.close()

    assert asyncio.run(run()) < 0.25
