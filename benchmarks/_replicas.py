"""PostgreSQL replicas (DESIGN section 8), on a real PostgreSQL started for the run.

- Warm Check on a PostgreSQL-backed server against the empty-handler floor, round by round,
  as the SQLite row does: a warm Check touches no database, so the ratios should match.
- RevokeEntry's latency with 1, 2 and 3 replicas (each write waits for every other replica's
  acknowledgement), and on SQLite for comparison: fresh entries, each first checked on every
  replica so that every cache holds it, then revoked one at a time.
- A cold Check (the token's first use: a store query and one argon2 verify) on PostgreSQL
  against SQLite.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from _load import Load, h2load, median_load, paired_ratio, rounds_of
from _processes import Server, per_core
from seed import Seeded, new_token, seed

from authz_client import AuthzClient, Restriction

# The PostgreSQL launcher is shared with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from postgres_server import PostgresMissing, PostgresServer

RowT = TypeVar("RowT")
# Row(scenario, rps, p50_ms, p99_ms, ratio, target, passed, note), as benchmarks/run.py has it.
MakeRow = Callable[
    [str, float | None, float | None, float | None, float | None, str, bool, str], RowT
]
CATALOG = [Restriction("catalog", ("catalog.entity.read",), ("read",))]
WARM_TARGET = 0.90


def replica_rows(
    row: MakeRow[RowT],
    work: Path,
    *,
    seconds: float,
    rounds: int,
    revokes: int,
    admin_token: str,
    warm_body: Callable[[Seeded], bytes],
) -> list[RowT]:
    """Every PostgreSQL row; one FAIL row saying why when PostgreSQL cannot be started."""
    try:
        postgres = PostgresServer()
    except PostgresMissing as missing:
        return [row("PostgreSQL replicas", None, None, None, None, "", False, str(missing))]
    servers: list[Server] = []
    try:
        key = work / "pg-server.key"
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
        url = postgres.create_database("bench")
        tokens = seed(url, warm=10, fillers=0, decoys=0, key_file=key)
        env = {"AUTHZ_BOOTSTRAP_TOKEN": admin_token, "AUTHZ_SERVER_KEY_FILE": str(key)}
        sqlite_db = work / "pg-compare" / "authz.db"
        lite = seed(sqlite_db, warm=10, fillers=0, decoys=0)
        sqlite = Server.authz(sqlite_db, {"AUTHZ_BOOTSTRAP_TOKEN": admin_token})
        empty = Server.empty()
        servers += [sqlite, empty, Server.authz(url, env)]
        rows = [
            _warm_row(
                row,
                (empty, sqlite, servers[2]),
                (lite, tokens),
                warm_body,
                seconds=seconds,
                rounds=rounds,
            )
        ]
        sqlite_revokes = _revoke_times(admin_token, [sqlite], revokes)
        rows.append(_revoke_row(row, "RevokeEntry, SQLite (one process)", sqlite_revokes, None))
        alone: list[float] = []
        for count in (1, 2, 3):
            while len(servers) - 2 < count:
                servers.append(Server.authz(url, env))
            times = _revoke_times(admin_token, servers[2:], revokes)
            alone = alone or times
            rows.append(_revoke_row(row, f"RevokeEntry, {count} PostgreSQL replicas", times, alone))
        rows.append(_cold_row(row, admin_token, servers[2], sqlite))
        return rows
    finally:
        for server in servers:
            server.stop()
        postgres.close()


def _warm_row(
    row: MakeRow[RowT],
    servers: tuple[Server, Server, Server],
    tokens: tuple[Seeded, Seeded],
    warm_body: Callable[[Seeded], bytes],
    *,
    seconds: float,
    rounds: int,
) -> RowT:
    """The floor, SQLite and PostgreSQL taking turns, pinned as the SQLite rows are."""
    empty, sqlite, postgres = servers
    for server, seeded in ((sqlite, tokens[0]), (postgres, tokens[1])):
        with AuthzClient(server.target, timeout=10) as client:
            assert client.check(seeded.warm[0], "catalog", "catalog.entity.read", "read").allowed
    with per_core(servers) as placement:
        floors, lites, ours = rounds_of(
            [
                lambda: h2load(empty.target, warm_body(tokens[0]), seconds),
                lambda: h2load(sqlite.target, warm_body(tokens[0]), seconds),
                lambda: h2load(postgres.target, warm_body(tokens[1]), seconds),
            ],
            rounds,
        )
    load: Load = median_load(ours)
    ratio = paired_ratio(ours, floors)
    return row(
        "warm Check, PostgreSQL replica",
        load.rps,
        load.p50_ms,
        load.p99_ms,
        ratio,
        f">= {WARM_TARGET:.2f} vs floor",
        ratio >= WARM_TARGET,
        f"SQLite in the same rounds: {paired_ratio(lites, floors):.2f}; {placement}",
    )


def _revoke_times(admin_token: str, servers: Sequence[Server], count: int) -> list[float]:
    """Seconds each of `count` RevokeEntry calls on the first server took, each entry warm in
    every server's cache first."""
    clients = [AuthzClient(s.target, admin_token=admin_token, timeout=30) for s in servers]
    try:
        admin = clients[0]
        made = []
        for n in range(count):
            token = new_token()
            subject = f"bench-revoke-{len(servers)}-{n}"
            entry = admin.create_entry(subject, token, restrictions=CATALOG)
            made.append((entry.id, token))
        times = []
        for entry_id, token in made:
            for client in clients:
                assert client.check(token, "catalog", "catalog.entity.read", "read").allowed
            started = time.perf_counter()
            admin.revoke_entry(entry_id)
            times.append(time.perf_counter() - started)
            for client in clients:
                assert not client.check(token, "catalog", "catalog.entity.read", "read").allowed
        return times
    finally:
        for client in clients:
            client.close()


def _revoke_row(
    row: MakeRow[RowT], name: str, times: list[float], alone: list[float] | None
) -> RowT:
    p50, p99 = _percentile(times, 50), _percentile(times, 99)
    ratio = None if alone is None else p50 / _percentile(alone, 50)
    against = "" if alone is None else "; ratio: p50 vs 1 replica"
    return row(
        name,
        None,
        p50 * 1000,
        p99 * 1000,
        ratio,
        "reported",
        True,
        f"{len(times)} revokes, each entry warm on every replica{against}",
    )


def _cold_row(row: MakeRow[RowT], admin_token: str, postgres: Server, sqlite: Server) -> RowT:
    """The first Check of new tokens, PostgreSQL against SQLite, alternating."""
    took: dict[str, list[float]] = {"pg": [], "sqlite": []}
    for _ in range(10):
        for name, server in (("pg", postgres), ("sqlite", sqlite)):
            with AuthzClient(server.target, admin_token=admin_token, timeout=30) as client:
                token = new_token()
                client.create_entry(
                    f"bench-cold-{name}-{len(took[name])}", token, restrictions=CATALOG
                )
                started = time.perf_counter()
                assert client.check(token, "catalog", "catalog.entity.read", "read").allowed
                took[name].append(time.perf_counter() - started)
    pg, lite = statistics.median(took["pg"]), statistics.median(took["sqlite"])
    return row(
        "cold Check, PostgreSQL vs SQLite",
        None,
        pg * 1000,
        max(took["pg"]) * 1000,
        pg / lite,
        "reported",
        True,
        f"median of 10 first uses; SQLite {lite * 1000:.1f} ms (argon2 dominates both)",
    )


def _percentile(values: Sequence[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(percent / 100 * (len(ordered) - 1)))]
