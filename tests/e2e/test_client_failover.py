"""The client library over several replicas: real servers on one SQLite file, some of them
killed, not serving, hung or never there, and a DNS name with two addresses.

Each replica serves Prometheus metrics, so a test can tell which replicas a call reached.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from authz.v1 import authz_pb2, authz_pb2_grpc
from authz_client import (
    AsyncAuthzClient,
    AuthzClient,
    AuthzClientError,
    DeadlineExceeded,
    InvalidArgument,
    PermissionDenied,
    Restriction,
    Unavailable,
)
from server_process import BOOTSTRAP_TOKEN, ServerProcess

CHEAP_ARGON2 = {"AUTHZ_ARGON2_TIME_COST": "1", "AUTHZ_ARGON2_MEMORY_KIB": "8"}
METRICS = ("--metrics-listen", "127.0.0.1:0")
READER = Restriction("catalog", ("catalog.entity.read",), ("read",))
TOKEN = "failover-reader-token"
ROUNDS = 200
CALLERS = 4  # concurrent callers, so that calls are in flight on a replica when it is killed
# What a measured call may take past its timeout: the client's own work and the clock reads.
SLACK = 0.15


def _replica(db: Path, *args: str) -> ServerProcess:
    return ServerProcess(db, CHEAP_ARGON2, *METRICS, *args)


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Two servers on one SQLite file, and an entry for TOKEN made through the first."""
    db = tmp_path / "shared.db"
    servers = [_replica(db), _replica(db)]
    with AuthzClient(servers[0].target, admin_token=BOOTSTRAP_TOKEN, timeout=10) as admin:
        admin.create_entry("failover-reader", TOKEN, restrictions=[READER])
    yield servers
    for server in servers:
        server.stop()


def _checks(server: ServerProcess, decision: str) -> float:
    """How many Checks (the admin calls' own token checks included) the server answered so."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(server.metrics())
        if family.name == "authz_checks"
        for sample in family.samples
        if sample.name == "authz_checks_total" and sample.labels["decision"] == decision
    )


def _allowed(client: AuthzClient) -> bool:
    try:
        return client.check(TOKEN, "catalog", "catalog.entity.read", "read").allowed
    except AuthzClientError:
        return False


def _kill(server: ServerProcess) -> None:
    server.process.kill()
    server.process.wait(10)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def hung() -> Iterator[list[str]]:
    """Two targets that take connections and never answer (a hung process): listening
    sockets nothing accepts from."""
    sockets = [socket.socket(), socket.socket()]
    for listening in sockets:
        listening.bind(("127.0.0.1", 0))
        listening.listen(64)
    yield [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for listening in sockets:
        listening.close()


def test_checks_keep_answering_allow_when_the_first_replica_is_killed(
    replicas: list[ServerProcess],
) -> None:
    first, second = replicas
    with AuthzClient([first.target, second.target], timeout=1) as client:
        done = itertools.count(1)
        a_quarter_done = threading.Event()

        def caller() -> int:
            failures = 0
            for _ in range(ROUNDS):
                failures += not _allowed(client)
                if next(done) == CALLERS * ROUNDS // 4:
                    a_quarter_done.set()
            return failures

        with futures.ThreadPoolExecutor(CALLERS) as pool:
            calling = [pool.submit(caller) for _ in range(CALLERS)]
            assert a_quarter_done.wait(30)
            _kill(first)  # while checks are in flight on it
            assert sum(c.result() for c in calling) == 0
        wrong = client.check("not-the-reader-token", "catalog")
        assert (wrong.allowed, wrong.reason) == (False, "unknown_token")
        assert client.check(TOKEN, "scaffolder").reason == "plugin_not_allowed"


def test_a_deny_is_an_answer_and_is_asked_of_one_replica_only(
    replicas: list[ServerProcess],
) -> None:
    before = sum(_checks(server, "deny") for server in replicas)
    with AuthzClient([server.target for server in replicas], timeout=1) as client:
        answers = [client.check("not-the-reader-token", "catalog") for _ in range(20)]
        answers += [client.check(TOKEN, "scaffolder") for _ in range(20)]
    assert {(a.allowed, a.http_status) for a in answers} == {(False, 401), (False, 403)}
    assert sum(_checks(server, "deny") for server in replicas) - before == 40


def test_checks_are_spread_over_the_replicas_in_turn(replicas: list[ServerProcess]) -> None:
    before = [_checks(server, "allow") for server in replicas]
    with AuthzClient([server.target for server in replicas], timeout=1) as client:
        assert sum(_allowed(client) for _ in range(40)) == 40
    answered = [_checks(server, "allow") - b for server, b in zip(replicas, before, strict=True)]
    assert sum(answered) == 40
    assert min(answered) >= 10  # about 20 each: only the first calls may find one not connected


def test_a_target_that_is_not_listening_is_skipped_by_checks_and_writes(
    replicas: list[ServerProcess],
) -> None:
    first, _ = replicas
    nowhere = f"127.0.0.1:{_closed_port()}"
    with AuthzClient([nowhere, first.target], admin_token=BOOTSTRAP_TOKEN, timeout=1) as client:
        assert sum(_allowed(client) for _ in range(ROUNDS)) == ROUNDS
        made = [
            client.create_entry(f"skip-{n}", f"skip-token-{n:04d}", restrictions=[READER])
            for n in range(4)
        ]
        assert [client.get_entry(entry.id).subject for entry in made] == [
            f"skip-{n}" for n in range(4)
        ]


def test_a_replica_that_reports_not_serving_is_never_asked(
    replicas: list[ServerProcess], tmp_path: Path
) -> None:
    lost = _replica(tmp_path / "lost.db")  # knows nothing of TOKEN: asked, it would deny
    try:
        (tmp_path / "lost.db").unlink()
        _await_not_serving(lost)
        targets = [lost.target, *(server.target for server in replicas)]
        with AuthzClient(targets, admin_token=BOOTSTRAP_TOKEN, timeout=1) as client:
            assert sum(_allowed(client) for _ in range(ROUNDS)) == ROUNDS
            entry = client.create_entry("not-lost", "not-lost-token-1", restrictions=[READER])
            assert client.check("not-lost-token-1", "catalog", action="read").entry_id == entry.id
        assert _checks(lost, "allow") + _checks(lost, "deny") == 0
    finally:
        lost.stop()


def _await_not_serving(server: ServerProcess) -> None:
    watch = health_pb2_grpc.HealthStub(server.channel).Watch(
        health_pb2.HealthCheckRequest(), timeout=10
    )
    for answer in watch:
        if answer.status == health_pb2.HealthCheckResponse.NOT_SERVING:
            watch.cancel()
            return
    pytest.fail("the server never reported NOT_SERVING")


def test_a_hung_replica_leaves_the_others_their_share_of_the_timeout(
    replicas: list[ServerProcess], hung: list[str]
) -> None:
    first, _ = replicas
    with AuthzClient([hung[0], first.target], admin_token=BOOTSTRAP_TOKEN, timeout=1) as client:
        for n in range(3):
            started = time.monotonic()
            assert _allowed(client)
            entry = client.create_entry(f"hung-{n}", f"hung-token-{n:04d}", restrictions=[READER])
            assert time.monotonic() - started < 2 * (1 + SLACK)
            assert entry.subject == f"hung-{n}"


def test_the_async_client_fails_over_the_same(replicas: list[ServerProcess]) -> None:
    first, second = replicas
    nowhere = f"127.0.0.1:{_closed_port()}"

    async def scenario() -> None:
        async with AsyncAuthzClient(
            [nowhere, first.target, second.target], admin_token=BOOTSTRAP_TOKEN, timeout=1
        ) as client:
            done = itertools.count(1)
            a_quarter_done = asyncio.Event()

            async def caller() -> int:
                failures = 0
                for _ in range(ROUNDS):
                    try:
                        result = await client.check(TOKEN, "catalog", action="read")
                        failures += not result.allowed
                    except AuthzClientError:
                        failures += 1
                    if next(done) == CALLERS * ROUNDS // 4:
                        a_quarter_done.set()
                return failures

            calling = [asyncio.create_task(caller()) for _ in range(CALLERS)]
            await a_quarter_done.wait()
            await asyncio.to_thread(_kill, first)  # the callers go on meanwhile
            assert sum(await asyncio.gather(*calling)) == 0
            wrong = await client.check("not-the-reader-token", "catalog")
            assert wrong.reason == "unknown_token"
            entry = await client.create_entry(
                "async-failover", "async-failover-token", restrictions=[READER]
            )
            assert (await client.get_entry(entry.id)).subject == "async-failover"
            assert (await client.check("async-failover-token", "catalog", action="read")).allowed

    asyncio.run(scenario())


@pytest.mark.skipif(
    os.environ.get("GRPC_DNS_RESOLVER") == "native",
    reason="grpc's own resolver gives localhost both 127.0.0.1 and ::1; the native one may not",
)
def test_a_dns_name_with_two_addresses_is_used_in_turn_and_survives_losing_one(
    tmp_path: Path,
) -> None:
    db = tmp_path / "shared.db"
    v4 = _replica(db)
    # The same port on ::1: `dns:///localhost:PORT` names both. (This ServerProcess's own
    # `.target` is the IPv4 one: only its process and metrics are used.)
    v6 = _replica(db, "--listen", f"[::1]:{v4.port}")
    try:
        with AuthzClient(v4.target, admin_token=BOOTSTRAP_TOKEN, timeout=10) as admin:
            admin.create_entry("failover-reader", TOKEN, restrictions=[READER])
        with AuthzClient(f"dns:///localhost:{v4.port}", timeout=1) as client:
            before = [_checks(server, "allow") for server in (v4, v6)]
            assert sum(_allowed(client) for _ in range(40)) == 40
            after = [_checks(server, "allow") for server in (v4, v6)]
            assert sum(after) - sum(before) == 40
            assert all(a > b for a, b in zip(after, before, strict=True))
            _kill(v6)
            assert sum(_allowed(client) for _ in range(ROUNDS)) == ROUNDS
    finally:
        v4.stop()
        v6.stop()


def test_a_call_never_takes_longer_than_the_timeout_when_no_target_answers(
    hung: list[str],
) -> None:
    nowhere = f"127.0.0.1:{_closed_port()}"
    timeout = 0.6
    with AuthzClient(hung, admin_token=BOOTSTRAP_TOKEN, timeout=timeout) as client:
        for call in (
            lambda: client.check(TOKEN, "catalog"),
            lambda: client.create_entry("never", "never-token-1", restrictions=[READER]),
            lambda: client.get_entry("some-id"),
        ):
            started = time.monotonic()
            with pytest.raises((DeadlineExceeded, Unavailable), match="tried 2 of 2 targets"):
                call()
            assert time.monotonic() - started < timeout + SLACK
    with AuthzClient([*hung, nowhere], timeout=timeout) as client:
        started = time.monotonic()
        with pytest.raises((DeadlineExceeded, Unavailable), match="tried 3 of 3 targets"):
            client.check(TOKEN, "catalog")
        assert time.monotonic() - started < timeout + SLACK

    async def asynchronous() -> None:
        async with AsyncAuthzClient(hung, admin_token=BOOTSTRAP_TOKEN, timeout=timeout) as client:
            for call in (
                lambda: client.check(TOKEN, "catalog"),
                lambda: client.create_entry("never", "never-token-1", restrictions=[READER]),
            ):
                started = time.monotonic()
                with pytest.raises((DeadlineExceeded, Unavailable), match="tried 2 of 2"):
                    await call()
                assert time.monotonic() - started < timeout + SLACK

    asyncio.run(asynchronous())


class _Scripted(authz_pb2_grpc.AuthzServiceServicer, authz_pb2_grpc.AdminServiceServicer):
    """Answers every Check and CreateEntry with one status code, and counts them."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code
        self.calls = {"Check": 0, "CreateEntry": 0}

    def Check(
        self, request: authz_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> authz_pb2.CheckResponse:
        self.calls["Check"] += 1
        context.abort(self.code, "scripted")

    def CreateEntry(
        self, request: authz_pb2.CreateEntryRequest, context: grpc.ServicerContext
    ) -> authz_pb2.Entry:
        self.calls["CreateEntry"] += 1
        context.abort(self.code, "scripted")


@contextmanager
def _scripted_server(code: grpc.StatusCode) -> Iterator[tuple[str, _Scripted]]:
    """An in-process server that reports SERVING on grpc.health.v1 and answers with `code`."""
    scripted = _Scripted(code)
    server = grpc.server(futures.ThreadPoolExecutor(4))
    authz_pb2_grpc.add_AuthzServiceServicer_to_server(scripted, server)
    authz_pb2_grpc.add_AdminServiceServicer_to_server(scripted, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", scripted
    finally:
        server.stop(None)


def test_unavailable_fails_over_for_checks_but_a_write_that_was_sent_is_never_repeated(
    replicas: list[ServerProcess],
) -> None:
    first, _ = replicas
    with (
        _scripted_server(grpc.StatusCode.UNAVAILABLE) as (target, unavailable),
        AuthzClient([target, first.target], admin_token=BOOTSTRAP_TOKEN, timeout=2) as client,
    ):
        assert sum(_allowed(client) for _ in range(20)) == 20
        assert unavailable.calls["Check"] > 0  # asked first on every other call, then passed by
        refused, made = 0, set()
        for n in range(8):
            try:
                entry = client.create_entry(
                    f"once-{n}", f"once-token-{n:04d}", restrictions=[READER]
                )
                made.add(entry.subject)
            except Unavailable:
                refused += 1
    with AuthzClient(first.target, admin_token=BOOTSTRAP_TOKEN, timeout=2) as admin:
        subjects = {entry.subject for entry in admin.iter_entries()}
    assert refused == unavailable.calls["CreateEntry"] > 0
    assert made == {s for s in subjects if s.startswith("once-")}
    assert len(made) + refused == 8


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
    ],
)
def test_a_refusal_other_than_unavailable_is_never_asked_of_another_target(
    replicas: list[ServerProcess], code: grpc.StatusCode, error: type[AuthzClientError]
) -> None:
    first, _ = replicas
    with (
        _scripted_server(code) as (target, refusing),
        AuthzClient([target, first.target], timeout=1) as client,
    ):
        refused = allowed = 0
        for _ in range(20):
            try:
                allowed += client.check(TOKEN, "catalog", action="read").allowed
            except error:
                refused += 1
    assert refused == refusing.calls["Check"] > 0
    assert allowed + refused == 20
