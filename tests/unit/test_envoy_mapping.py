"""Envoy ext_authz translation: route settings and method to a Check, decisions to responses.

The servicer tests run it over a real Checker on the in-memory fakes; no sockets, no Envoy.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2
from hypothesis import given
from hypothesis import strategies as st

from authz_service.api.envoy import (
    MISCONFIGURED,
    Denial,
    EnvoyAuthorizationServicer,
    allow_response,
    denial_of,
    deny_response,
    route_check,
)
from authz_service.core.decision import (
    DENY_ACTION,
    DENY_EXPIRED,
    DENY_MALFORMED,
    DENY_MISSING_TOKEN,
    DENY_PERMISSION,
    DENY_PLUGIN,
    DENY_REVOKED,
    DENY_UNKNOWN_TOKEN,
    Decision,
)
from authz_service.core.errors import InvalidArgument
from authz_service.core.model import Action, Entry, Restriction
from authz_service.core.tokens import lookup_tag
from authz_service.registration import Undecodable
from authz_service.usecases import Checker
from fakes import FakeHasher, InMemoryStore, memory_port

KEY = bytes(range(32))
TOKEN = "catalog-sync-token-0001"
ALLOW = Decision(True, 0, 200, "", "catalog-sync", "id-catalog-sync")


@pytest.mark.parametrize(
    ("method", "action"),
    [
        ("GET", Action.READ),
        ("HEAD", Action.READ),
        ("OPTIONS", Action.READ),
        ("POST", Action.CREATE),
        ("PUT", Action.UPDATE),
        ("PATCH", Action.UPDATE),
        ("DELETE", Action.DELETE),
        ("get", Action.READ),
    ],
)
def test_without_an_action_the_http_method_chooses_it(method: str, action: Action) -> None:
    assert route_check({"plugin": "catalog"}, method).action == action


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND", ""])
def test_other_methods_ask_for_no_action(method: str) -> None:
    assert route_check({"plugin": "catalog"}, method).action == 0


@pytest.mark.parametrize("named", ["delete", "DELETE", "Delete"])
def test_a_route_action_overrides_the_method_in_any_case(named: str) -> None:
    route = route_check({"plugin": "catalog", "action": named}, "GET")
    assert route.action == Action.DELETE


def test_plugin_and_permission_come_from_the_route() -> None:
    route = route_check({"plugin": "catalog", "permission": "catalog.entity.read"}, "GET")
    assert (route.plugin, route.permission) == ("catalog", "catalog.entity.read")
    assert route.forward_authorization is False


@pytest.mark.parametrize(
    ("extensions", "field"),
    [
        ({}, "context_extensions.plugin"),
        ({"permission": "catalog.entity.read"}, "context_extensions.plugin"),
        ({"plugin": ""}, "context_extensions.plugin"),
        ({"plugin": "catalog", "action": "write"}, "context_extensions.action"),
        (
            {"plugin": "catalog", "forward_authorization": "yes"},
            "context_extensions.forward_authorization",
        ),
    ],
)
def test_a_misconfigured_route_is_invalid_and_names_the_setting(
    extensions: dict[str, str], field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        route_check(extensions, "GET")
    assert [v.field for v in raised.value.violations] == [field]


@pytest.mark.parametrize(
    ("value", "forward"), [("true", True), ("TRUE", True), ("false", False), ("", False)]
)
def test_forward_authorization_is_true_or_false(value: str, forward: bool) -> None:
    extensions = {"plugin": "catalog", "forward_authorization": value}
    assert route_check(extensions, "GET").forward_authorization is forward


@given(st.dictionaries(st.text(max_size=30), st.text(max_size=30)), st.text(max_size=10))
def test_route_check_answers_or_says_the_route_is_misconfigured(
    extensions: dict[str, str], method: str
) -> None:
    if not extensions.get("plugin"):
        with pytest.raises(InvalidArgument):
            route_check(extensions, method)
        return
    try:
        route = route_check(extensions, method)
    except InvalidArgument as error:
        # Only a misspelt action or forward_authorization is refused besides a missing plugin.
        fields = {v.field.rpartition(".")[2] for v in error.violations}
        assert fields <= {"action", "forward_authorization"}
    else:
        assert route.plugin == extensions["plugin"]
        assert 0 <= route.action <= len(Action)


BARE = 'Bearer realm="authz-service"'
INVALID = 'Bearer realm="authz-service", error="invalid_token"'
SCOPE = 'Bearer realm="authz-service", error="insufficient_scope"'


@pytest.mark.parametrize(
    ("decision", "status", "challenge", "error"),
    [
        (DENY_MISSING_TOKEN, 401, BARE, "unauthenticated"),
        (DENY_MALFORMED, 401, INVALID, "invalid_token"),
        (DENY_UNKNOWN_TOKEN, 401, INVALID, "invalid_token"),
        (DENY_REVOKED, 401, INVALID, "invalid_token"),
        (DENY_EXPIRED, 401, INVALID, "invalid_token"),
        (DENY_PLUGIN, 403, SCOPE, "insufficient_scope"),
        (DENY_PERMISSION, 403, SCOPE, "insufficient_scope"),
        (DENY_ACTION, 403, SCOPE, "insufficient_scope"),
    ],
)
def test_each_deny_reads_as_rfc_6750_says(
    decision: Decision, status: int, challenge: str, error: str
) -> None:
    assert denial_of(decision) == Denial(status, challenge, error, decision.reason)


def headers_of(options: list[base_pb2.HeaderValueOption]) -> dict[str, str]:
    return {o.header.key: o.header.value for o in options}


def test_an_allow_overwrites_the_identity_headers_and_removes_authorization() -> None:
    response = allow_response(ALLOW, forward_authorization=False)
    assert response.status.code == code_pb2.OK
    assert headers_of(response.ok_response.headers) == {
        "x-authz-subject": "catalog-sync",
        "x-authz-entry-id": "id-catalog-sync",
    }
    overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    assert all(o.append_action == overwrite for o in response.ok_response.headers)
    assert list(response.ok_response.headers_to_remove) == ["authorization"]
    assert dict(response.dynamic_metadata) == {
        "subject": "catalog-sync",
        "entry_id": "id-catalog-sync",
    }
    assert not response.HasField("denied_response")


def test_an_allow_on_a_forwarding_route_keeps_authorization() -> None:
    response = allow_response(ALLOW, forward_authorization=True)
    assert list(response.ok_response.headers_to_remove) == []
    assert headers_of(response.ok_response.headers)["x-authz-subject"] == "catalog-sync"


@pytest.mark.parametrize(
    ("decision", "code"),
    [(DENY_REVOKED, code_pb2.UNAUTHENTICATED), (DENY_ACTION, code_pb2.PERMISSION_DENIED)],
)
def test_a_deny_carries_status_challenge_reason_and_json_body(
    decision: Decision, code: int
) -> None:
    response = deny_response(denial_of(decision))
    assert response.status.code == code
    denied = response.denied_response
    assert denied.status.code == decision.http_status
    headers = headers_of(denied.headers)
    assert headers["x-ext-auth-reason"] == decision.reason
    assert headers["content-type"] == "application/json"
    assert headers["www-authenticate"].startswith('Bearer realm="authz-service", error=')
    assert json.loads(denied.body) == {
        "error": denial_of(decision).error,
        "reason": decision.reason,
    }
    assert not response.HasField("ok_response")


def test_a_misconfigured_route_is_a_500_without_a_challenge() -> None:
    response = deny_response(MISCONFIGURED)
    assert response.status.code == code_pb2.INVALID_ARGUMENT
    assert response.denied_response.status.code == 500
    assert "www-authenticate" not in headers_of(response.denied_response.headers)
    assert json.loads(response.denied_response.body) == {
        "error": "misconfigured_route",
        "reason": "misconfigured_route",
    }


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def checker() -> Iterator[Checker]:
    """A Checker over the fakes, knowing one catalog reader whose token is TOKEN."""
    store, hasher = InMemoryStore(), FakeHasher()
    created = datetime(2030, 1, 1, tzinfo=UTC)
    store.add(
        Entry(
            id="id-catalog-sync",
            subject="catalog-sync",
            description="",
            restrictions=(Restriction("catalog", (), (Action.READ,)),),
            unrestricted=False,
            verifier=hasher.hash(TOKEN),
            lookup_tag=lookup_tag(KEY, TOKEN),
            create_time=created,
            update_time=created,
        )
    )
    port = memory_port(store)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="test-hash") as hash_pool:
            started = Checker(port, hasher, KEY, hash_pool)
            asyncio.run(started.start())
            yield started
    finally:
        port.close()


def envoy_request(
    method: str = "GET", authorization: str | None = f"Bearer {TOKEN}", **extensions: str
) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path = method, "backstage.test", "/api/catalog/x?page=2"
    if authorization is not None:
        http.headers["authorization"] = authorization
    request.attributes.context_extensions.update(extensions)
    return request


class PeerContext:
    """The one part of a grpc.aio ServicerContext the servicer reads on a good request."""

    def __init__(self, peer: str = "ipv4:10.1.2.3:50000") -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


def check(
    servicer: EnvoyAuthorizationServicer,
    request: external_auth_pb2.CheckRequest,
    context: PeerContext | None = None,
) -> external_auth_pb2.CheckResponse:
    response: external_auth_pb2.CheckResponse = asyncio.run(
        servicer.Check(request, context or PeerContext())
    )
    return response


@pytest.mark.parametrize(
    ("downstream", "turn"),
    [("203.0.113.9", "203.0.113.9"), ("2001:db8::7", "2001:db8::/64"), ("", "10.1.2.3")],
    ids=["downstream-ipv4", "downstream-ipv6", "no-address-the-peer"],
)
def test_a_cold_check_takes_the_turn_of_the_downstream_client_envoy_reports(
    checker: Checker, monkeypatch: pytest.MonkeyPatch, downstream: str, turn: str
) -> None:
    turns: list[str] = []
    run = checker.hash_queue.run

    async def recorded(caller: str, *args: Any) -> Any:
        turns.append(caller)
        return await run(caller, *args)

    monkeypatch.setattr(checker.hash_queue, "run", recorded)
    request = envoy_request(plugin="catalog")
    request.attributes.source.address.socket_address.address = downstream
    assert check(EnvoyAuthorizationServicer(checker), request).status.code == code_pb2.OK
    assert turns == [turn]


def test_the_servicer_allows_a_read_and_denies_a_delete_by_method(checker: Checker) -> None:
    servicer = EnvoyAuthorizationServicer(checker)
    allowed = check(servicer, envoy_request("GET", plugin="catalog"))
    assert allowed.status.code == code_pb2.OK
    assert headers_of(allowed.ok_response.headers)["x-authz-subject"] == "catalog-sync"
    denied = check(servicer, envoy_request("DELETE", plugin="catalog"))
    assert denied.denied_response.status.code == 403
    assert headers_of(denied.denied_response.headers)["x-ext-auth-reason"] == "action_not_allowed"


def test_the_servicer_reads_the_bearer_scheme_case_insensitively(checker: Checker) -> None:
    servicer = EnvoyAuthorizationServicer(checker)
    answer = check(servicer, envoy_request(authorization=f"bEaReR {TOKEN}", plugin="catalog"))
    assert answer.status.code == code_pb2.OK
    missing = check(servicer, envoy_request(authorization=None, plugin="catalog"))
    assert missing.denied_response.status.code == 401
    assert headers_of(missing.denied_response.headers)["x-ext-auth-reason"] == "missing_token"


def test_the_servicer_reads_raw_header_maps_too(checker: Checker) -> None:
    request = envoy_request(authorization=None, plugin="catalog")
    request.attributes.request.http.header_map.headers.add(
        key="Authorization", raw_value=f"Bearer {TOKEN}".encode()
    )
    answer = check(EnvoyAuthorizationServicer(checker), request)
    assert answer.status.code == code_pb2.OK


@pytest.mark.parametrize(
    ("extensions", "problem"),
    [
        ({}, "context_extensions.plugin: is required"),
        ({"plugin": "Not A Plugin"}, "plugin: must be lowercase"),
        ({"plugin": "catalog", "permission": "no spaces allowed"}, "permission: must be"),
    ],
)
def test_a_misconfigured_route_is_denied_and_logged_once_a_minute_without_the_token(
    checker: Checker,
    caplog: pytest.LogCaptureFixture,
    extensions: dict[str, str],
    problem: str,
) -> None:
    clock = Clock()
    servicer = EnvoyAuthorizationServicer(checker, clock)
    with caplog.at_level(logging.WARNING, logger="authz_service.api.envoy"):
        for _ in range(3):
            answer = check(servicer, envoy_request(**extensions))
            assert answer.denied_response.status.code == 500
        clock.now += 61
        check(servicer, envoy_request(**extensions))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert problem in lines[0]
    assert "backstage.test/api/catalog/x" in lines[0]
    assert "page=2" not in lines[0]
    assert TOKEN not in caplog.text


def test_the_built_responses_stay_within_their_bound_across_both_route_kinds(
    checker: Checker,
) -> None:
    servicer = EnvoyAuthorizationServicer(checker, max_responses=3)
    allowed = check(servicer, envoy_request(plugin="catalog"))
    assert check(servicer, envoy_request(plugin="catalog")) is allowed  # built once
    missing = check(servicer, envoy_request(authorization=None, plugin="catalog"))
    forwarded = check(servicer, envoy_request(plugin="catalog", forward_authorization="true"))
    assert forwarded is not allowed
    assert headers_of(forwarded.ok_response.headers)["x-authz-subject"] == "catalog-sync"
    assert list(forwarded.ok_response.headers_to_remove) == []
    # A fourth distinct answer (in the table of removing routes) empties both tables: the
    # forwarding route's answer and the first allow are then built afresh, equal.
    wrong = "Bearer catalog-sync-token-0002"
    unknown = check(servicer, envoy_request(authorization=wrong, plugin="catalog"))
    assert headers_of(unknown.denied_response.headers)["x-ext-auth-reason"] == "unknown_token"
    forwarded_again = check(servicer, envoy_request(plugin="catalog", forward_authorization="true"))
    assert forwarded_again is not forwarded
    assert forwarded_again == forwarded
    allowed_again = check(servicer, envoy_request(plugin="catalog"))
    assert allowed_again is not allowed
    assert allowed_again == allowed
    assert missing.denied_response.status.code == 401


def misconfigured_request(index: int, size: int) -> external_auth_pb2.CheckRequest:
    """A request naming no plugin, with large context_extensions unlike any other's, and
    control characters that would break a log line if written as they are."""
    request = envoy_request(authorization=f"Bearer {TOKEN}")
    extensions = request.attributes.context_extensions
    for n in range(4):
        extensions[f"{index}-{n}-" + "k" * size] = f"{index}\nforged line\r" + "v" * size
    http = request.attributes.request.http
    http.path = f"/{index}\n/" + "p" * size + "?secret=1"
    return request


def test_huge_context_extensions_do_not_grow_the_memory_of_logged_problems(
    checker: Checker,
) -> None:
    clock = Clock()
    servicer = EnvoyAuthorizationServicer(checker, clock)
    for index in range(300):
        clock.now += 6.1  # slow enough for every line to be written (10 a minute)
        answer = check(servicer, misconfigured_request(index, 16 * 1024))
        assert answer.denied_response.status.code == 500
    # 300 distinct problems of 128 KiB of context_extensions each: remembered whole, 37 MiB.
    assert servicer.remembered_bytes() < 128 * 1024


class Counted(logging.Handler):
    """Keeps each formatted line."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_many_distinct_misconfigured_requests_write_few_short_lines(checker: Checker) -> None:
    clock = Clock()
    servicer = EnvoyAuthorizationServicer(checker, clock)
    handler = Counted()
    logger = logging.getLogger("authz_service.api.envoy")
    logger.addHandler(handler)
    try:
        for index in range(500):
            check(servicer, misconfigured_request(index, 4096))
        assert len(handler.lines) == 10
        clock.now += 61
        check(servicer, misconfigured_request(500, 4096))
    finally:
        logger.removeHandler(handler)
    assert len(handler.lines) == 11
    assert "and 490 more like it not logged" in handler.lines[-1]
    for line in handler.lines:
        assert len(line) < 1500
        assert "\n" not in line
        assert "\r" not in line
        assert "secret=1" not in line
        assert TOKEN not in line
        assert "and 0 more" not in line
    first = handler.lines[0]
    assert "context_extensions.plugin" in first
    assert "\\nforged line\\r" in first  # escaped, on the same line
    assert "backstage.test/0\\n/ppp" in first
    assert "\u2026" in first


class AbortingContext:
    """A ServicerContext whose abort records the status and raises, as grpc.aio's does."""

    def __init__(self) -> None:
        self.code: object = None
        self.details = ""

    async def abort(self, code: object, details: str, trailing: object = ()) -> None:
        self.code, self.details = code, details
        raise RuntimeError("aborted")


def test_an_undecodable_request_ends_with_invalid_argument_and_no_warning(
    checker: Checker, caplog: pytest.LogCaptureFixture
) -> None:
    servicer = EnvoyAuthorizationServicer(checker)
    context = AbortingContext()
    undecodable = Undecodable("envoy.service.auth.v3.CheckRequest")
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(RuntimeError, match="aborted"),
    ):
        asyncio.run(servicer.Check(undecodable, context))
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert context.details == "request: cannot be decoded as envoy.service.auth.v3.CheckRequest"
    assert caplog.records == []
