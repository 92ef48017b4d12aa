"""The client library against a real server: results, admin calls, typed errors, retries."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from authz.v1 import authz_pb2, authz_pb2_grpc
from authz_client import (
    Aborted,
    AlreadyExists,
    AsyncAuthzClient,
    AuthzClient,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Restriction,
    Unauthenticated,
    Unavailable,
)
from server_process import BOOTSTRAP_TOKEN, ServerProcess

READER = Restriction("catalog", ("catalog.entity.read",), ("read",))


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[AuthzClient]:
    with AuthzClient(server.target, admin_token=BOOTSTRAP_TOKEN, timeout=5) as client:
        yield client


def test_check_returns_a_typed_result_for_allow_and_both_kinds_of_deny(admin: AuthzClient) -> None:
    entry = admin.create_entry("lib-reader", "lib-reader-token-1", restrictions=[READER])
    allowed = admin.check("lib-reader-token-1", "catalog", "catalog.entity.read", "read")
    assert (allowed.allowed, allowed.http_status, allowed.subject, allowed.entry_id) == (
        True,
        200,
        "lib-reader",
        entry.id,
    )
    header = admin.check("Bearer lib-reader-token-1", "catalog", action="read")
    assert header.allowed
    forbidden = admin.check("lib-reader-token-1", "scaffolder")
    assert (forbidden.allowed, forbidden.http_status, forbidden.reason) == (
        False,
        403,
        "plugin_not_allowed",
    )
    unknown = admin.check("not-a-known-token", "catalog")
    assert (unknown.allowed, unknown.http_status, unknown.reason) == (False, 401, "unknown_token")


def test_admin_calls_round_trip_an_entry(admin: AuthzClient) -> None:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    created = admin.create_entry(
        "lib-admin",
        "lib-admin-token-12",
        restrictions=[READER, Restriction("scaffolder")],
        description="made by the library",
        expire_time=expires,
    )
    assert created.restrictions == (READER, Restriction("scaffolder"))
    assert created.expire_time == expires
    assert created.state == "active"
    assert admin.get_entry(created.id) == created
    updated = admin.update_entry(created.id, created.etag, description="changed", expire_time=None)
    assert (updated.description, updated.expire_time) == ("changed", None)
    assert updated.restrictions == created.restrictions  # KEEP left them alone
    rotated = admin.rotate_token(updated.id, updated.etag, "lib-admin-token-34")
    assert admin.check("lib-admin-token-34", "scaffolder").allowed
    assert not admin.check("lib-admin-token-12", "scaffolder").allowed
    revoked = admin.revoke_entry(rotated.id, "done")
    assert (revoked.state, revoked.revoke_reason) == ("revoked", "done")
    assert revoked.to_dict()["revoke_time"].endswith("Z")
    assert created.id not in {e.id for e in admin.iter_entries()}
    assert created.id in {e.id for e in admin.iter_entries(include_revoked=True)}


def test_every_entry_is_listed_once_across_pages(admin: AuthzClient) -> None:
    made = {
        admin.create_entry(f"page-{n}", f"page-token-{n:04d}", restrictions=[READER]).id
        for n in range(5)
    }
    first, token = admin.list_entries(page_size=2)
    assert len(first) == 2
    assert token
    assert made <= {e.id for e in admin.iter_entries()}


def test_errors_are_typed_and_carry_field_violations(
    admin: AuthzClient, server: ServerProcess
) -> None:
    with pytest.raises(InvalidArgument) as invalid:
        admin.create_entry("bad subject", "short", restrictions=[READER])
    assert {v.field for v in invalid.value.violations} == {"subject", "token"}
    with pytest.raises(InvalidArgument) as invalid:  # found before anything is sent
        admin.check("lib-errors-token-1", "catalog", action="destroy")
    assert [v.field for v in invalid.value.violations] == ["action"]
    assert "destroy" in invalid.value.message
    with pytest.raises(NotFound):
        admin.get_entry("no-such-entry")
    entry = admin.create_entry("lib-errors", "lib-errors-token-1", restrictions=[READER])
    with pytest.raises(AlreadyExists):
        admin.create_entry("lib-errors", "lib-errors-token-2", restrictions=[READER])
    admin.update_entry(entry.id, entry.etag, description="one")
    with pytest.raises(Aborted):
        admin.update_entry(entry.id, entry.etag, description="two")
    with AuthzClient(server.target) as anonymous, pytest.raises(Unauthenticated):
        anonymous.list_entries()
    with (
        AuthzClient(server.target, admin_token="lib-errors-token-1") as weak,
        pytest.raises(PermissionDenied),
    ):
        weak.list_entries()


def test_an_unreachable_server_raises_unavailable_within_the_deadline() -> None:
    with (
        AuthzClient(f"127.0.0.1:{_closed_port()}", timeout=2) as client,
        pytest.raises(Unavailable),
    ):
        client.check("some-token-123", "catalog")


def test_the_context_manager_closes_the_channel(server: ServerProcess) -> None:
    with AuthzClient(server.target) as client:
        assert client.check("some-token-123", "catalog").reason == "unknown_token"
    with pytest.raises(ValueError, match="closed"):
        client.check("some-token-123", "catalog")


def test_the_async_client_does_the_same_calls(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with AsyncAuthzClient(
            server.target, admin_token=BOOTSTRAP_TOKEN, timeout=5
        ) as client:
            entry = await client.create_entry(
                "async-lib", "async-lib-token-1", restrictions=[READER]
            )
            result = await client.check(
                "async-lib-token-1", "catalog", "catalog.entity.read", "read"
            )
            assert (result.allowed, result.entry_id) == (True, entry.id)
            assert (await client.get_entry(entry.id)).subject == "async-lib"
            assert entry.id in {e.id async for e in client.iter_entries()}
            await client.revoke_entry(entry.id)
            assert (await client.check("async-lib-token-1", "catalog")).reason == "revoked"
            with pytest.raises(NotFound):
                await client.get_entry("no-such-entry")
            with pytest.raises(InvalidArgument) as invalid:
                await client.create_entry("x", "short", restrictions=[READER])
            assert [v.field for v in invalid.value.violations] == ["token"]

    asyncio.run(scenario())


class _FlakyAuthz(authz_pb2_grpc.AuthzServiceServicer, authz_pb2_grpc.AdminServiceServicer):
    """Answers UNAVAILABLE to the first two attempts of every call, and counts attempts."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}

    def _attempt(self, name: str, context: grpc.ServicerContext) -> None:
        self.attempts[name] = self.attempts.get(name, 0) + 1
        if self.attempts[name] <= 2:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")

    def Check(
        self, request: authz_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> authz_pb2.CheckResponse:
        self._attempt("Check", context)
        return authz_pb2.CheckResponse(decision=authz_pb2.ALLOW, http_status=200)

    def CreateEntry(
        self, request: authz_pb2.CreateEntryRequest, context: grpc.ServicerContext
    ) -> authz_pb2.Entry:
        self._attempt("CreateEntry", context)
        return authz_pb2.Entry()


def test_only_idempotent_calls_are_retried_and_only_on_unavailable() -> None:
    flaky = _FlakyAuthz()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    authz_pb2_grpc.add_AuthzServiceServicer_to_server(flaky, server)
    authz_pb2_grpc.add_AdminServiceServicer_to_server(flaky, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with AuthzClient(f"127.0.0.1:{port}", admin_token="x" * 10, timeout=5) as client:
            assert client.check("some-token-123", "catalog").allowed
            with pytest.raises(Unavailable):
                client.create_entry("s", "some-token-123", restrictions=[READER])
        assert flaky.attempts == {"Check": 3, "CreateEntry": 1}
    finally:
        server.stop(None)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_check_result_s_outcome_is_the_metrics_label_ok_on_allow_and_the_reason_on_deny(
    server: ServerProcess,
) -> None:
    with AuthzClient(server.target, timeout=10) as client:
        allowed = client.check(BOOTSTRAP_TOKEN, "authz", "authz.entry.read", "read")
        denied = client.check(BOOTSTRAP_TOKEN, "catalog")
    assert (allowed.reason, allowed.outcome) == ("", "ok")
    assert (denied.reason, denied.outcome) == ("plugin_not_allowed", "plugin_not_allowed")
