"""PostgreSQL replicas when the database goes away (DESIGN section 8): real `authz-service
serve` processes on a real PostgreSQL, with the connections cut, held or the server stopped.

A replica that loses its listen connection reconnects, catches up from the event log and
misses no event. One that cannot reach the database stops allowing from its cache by the time
its lease ends: Check answers UNAVAILABLE and health reports NOT_SERVING, while a revoke made
on another replica meanwhile returns within that lease. Each recovers by itself.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.v1 import authz_pb2 as pb
from authz_client import AuthzClient, AuthzClientError
from authz_service.adapters.postgres_store import LISTEN_APPLICATION
from postgres_server import PostgresServer
from server_process import ADMIN_METADATA, ServerProcess
from tcp_proxy import TcpProxy

log = logging.getLogger(__name__)
LEASE = 1.0
CHEAP_ARGON2 = {"AUTHZ_ARGON2_TIME_COST": "1", "AUTHZ_ARGON2_MEMORY_KIB": "8"}
READ = pb.AccessRestriction(plugin="catalog", permissions=["catalog.entity.read"])
# What "within its lease" allows for: the health watch polls every 0.2 s, and a slow machine.
SLACK = 1.0


def _env(key: Path) -> dict[str, str]:
    if not key.exists():
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
    return {
        **CHEAP_ARGON2,
        "AUTHZ_SERVER_KEY_FILE": str(key),
        "AUTHZ_REPLICA_LEASE": str(LEASE),
        "AUTHZ_LOG_FORMAT": "text",
    }


@dataclass
class Pair:
    """Replica `a` straight to the database, replica `b` through `proxy`."""

    a: ServerProcess
    b: ServerProcess
    proxy: TcpProxy
    url: str


@pytest.fixture
def pair(postgres: PostgresServer, tmp_path: Path) -> Iterator[Pair]:
    url = postgres.create_database(f"pair_{os.getpid()}_{time.monotonic_ns()}")
    proxy = TcpProxy(("127.0.0.1", postgres.port))
    env = _env(tmp_path / "server.key")
    a = ServerProcess(url, env)
    b = ServerProcess(url.replace(f":{postgres.port}/", f":{proxy.port}/"), env)
    yield Pair(a, b, proxy, url)
    proxy.heal()
    for server in (a, b):
        server.stop()
    proxy.close()


def _create(server: ServerProcess, subject: str, token: str) -> pb.Entry:
    request = pb.CreateEntryRequest(subject=subject, token=token, access_restrictions=[READ])
    entry: pb.Entry = server.admin.CreateEntry(request, metadata=ADMIN_METADATA, timeout=30)
    return entry


def _revoke(server: ServerProcess, entry: pb.Entry) -> None:
    request = pb.RevokeEntryRequest(id=entry.id)
    server.admin.RevokeEntry(request, metadata=ADMIN_METADATA, timeout=30)


def _answer(server: ServerProcess, token: str) -> str:
    """ALLOW, DENY, or the status code of a failed Check."""
    try:
        answer = server.authz.Check(
            pb.CheckRequest(token=token, plugin="catalog", permission="catalog.entity.read"),
            timeout=10,
        )
    except grpc.RpcError as error:
        return str(error.code().name)
    return "ALLOW" if answer.decision == pb.ALLOW else "DENY"


def _health(server: ServerProcess) -> str:
    try:
        answer = health_pb2_grpc.HealthStub(server.channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    except grpc.RpcError as error:
        return str(error.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def _wait_for(condition: str, check: Callable[[], bool], timeout: float) -> float:
    """Seconds until `check()` is true; fails after `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not {condition} within {timeout:g} s")
        time.sleep(0.02)
    return time.monotonic() - started


def _kill_listen_connections(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            [LISTEN_APPLICATION],
        ).fetchone()
    return int(killed[0]) if killed else 0


def test_a_replica_whose_listen_connection_is_killed_recovers_and_misses_no_event(
    pair: Pair,
) -> None:
    for n in range(20):
        token = f"listen-token-{n:04d}-0123456789abcdef"
        entry = _create(pair.a, f"listen-{n}", token)
        assert _answer(pair.b, token) == "ALLOW"
        assert _kill_listen_connections(pair.url) == 2  # both replicas', at once
        # Made while b (and a) have no listen connection, or are just getting one back.
        _revoke(pair.a, entry)
        assert _answer(pair.b, token) == "DENY", f"round {n}"
        # And a create after it is allowed on b at once.
        fresh = f"fresh-token-{n:04d}-0123456789abcdef"
        _create(pair.a, f"fresh-{n}", fresh)
        assert _answer(pair.b, fresh) == "ALLOW", f"round {n}"
    assert "the listen connection failed" in pair.b.log
    assert "listening again" in pair.b.log
    assert _health(pair.b) == "SERVING"


def test_a_partitioned_replica_stops_allowing_within_its_lease_and_a_revoke_elsewhere_returns(
    pair: Pair,
) -> None:
    token = "partition-token-0123456789abcdef"
    entry = _create(pair.a, "partitioned", token)
    assert _answer(pair.b, token) == "ALLOW"
    seen: list[tuple[float, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            started = time.monotonic()
            seen.append((started, _answer(pair.b, token)))

    checker = threading.Thread(target=hammer, daemon=True)
    checker.start()
    pair.proxy.partition()
    cut = time.monotonic()
    _revoke(pair.a, entry)
    returned = time.monotonic()
    # a waited for b's acknowledgement until b's lease ran out, and no longer.
    assert returned - cut < LEASE + SLACK
    unserving = _wait_for("NOT_SERVING", lambda: _health(pair.b) == "NOT_SERVING", LEASE + SLACK)
    assert unserving < LEASE + SLACK
    assert _answer(pair.b, token) == "UNAVAILABLE"
    stop.set()
    checker.join(15)
    assert not [answer for started, answer in seen if started > returned and answer == "ALLOW"]
    first_refusal = min(started for started, answer in seen if answer == "UNAVAILABLE")
    # What docs/performance.md quotes (`pytest --log-cli-level=INFO`).
    log.info(
        "cut off: the revoke elsewhere took %.2f s; Check answered UNAVAILABLE after %.2f s,"
        " NOT_SERVING after %.2f s (lease %.1f s)",
        returned - cut,
        first_refusal - cut,
        unserving,
        LEASE,
    )
    pair.proxy.heal()
    _wait_for("SERVING again", lambda: _health(pair.b) == "SERVING", 15)
    assert _answer(pair.b, token) == "DENY"  # caught up: the revoke made meanwhile holds
    later = "after-partition-0123456789abcdef"
    _create(pair.a, "after-partition", later)
    assert _answer(pair.b, later) == "ALLOW"


def test_replicas_that_lose_the_database_fail_closed_and_recover_by_themselves(
    tmp_path: Path,
) -> None:
    postgres = PostgresServer()
    servers: list[ServerProcess] = []
    try:
        url = postgres.create_database("outage")
        env = _env(tmp_path / "server.key")
        servers = [ServerProcess(url, env) for _ in range(2)]
        token = "outage-token-0123456789abcdef"
        _create(servers[0], "outage", token)
        assert [_answer(each, token) for each in servers] == ["ALLOW", "ALLOW"]
        postgres.stop()
        for each in servers:
            lost = _wait_for(
                "NOT_SERVING", lambda each=each: _health(each) == "NOT_SERVING", LEASE + SLACK
            )
            assert lost < LEASE + SLACK
            assert _answer(each, token) == "UNAVAILABLE"
        with pytest.raises(grpc.RpcError) as refused:
            _create(servers[1], "during-outage", "outage-token-2-0123456789abcdef")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "database" in (refused.value.details() or "")
        postgres.start()
        for each in servers:
            _wait_for("SERVING again", lambda each=each: _health(each) == "SERVING", 20)
            assert _answer(each, token) == "ALLOW"
        # Writes work again, and reach the other replica.
        again = "outage-token-3-0123456789abcdef"
        _create(servers[1], "after-outage", again)
        assert _answer(servers[0], again) == "ALLOW"
    finally:
        for each in servers:
            each.stop()
        postgres.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["terminated", "killed"])
def test_the_client_library_given_both_replicas_loses_no_check_when_one_goes(
    pair: Pair, sig: signal.Signals
) -> None:
    token = "client-token-0123456789abcdef"
    _create(pair.a, "client", token)
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def checks() -> None:
        with AuthzClient([pair.a.target, pair.b.target], timeout=5) as client:
            while not stop.is_set():
                try:
                    if not client.check(token, "catalog", "catalog.entity.read", "read").allowed:
                        failures.append("DENY")
                except AuthzClientError as error:
                    failures.append(repr(error))
                answered[0] += 1

    threads = [threading.Thread(target=checks, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    _wait_for("checks under way", lambda: answered[0] > 200, 30)
    pair.b.process.send_signal(sig)
    pair.b.process.wait(30)
    going_on = answered[0]
    _wait_for("checks after it went", lambda: answered[0] > going_on + 400, 30)
    stop.set()
    for thread in threads:
        thread.join(15)
    assert failures == []
