"""GenericOnly: every method's handler is guarded so that undecodable bytes end the call with
INVALID_ARGUMENT, without an exception reaching grpc (which logs a traceback per call).

Driven without a socket: a fake server records the generic handlers, and the tests call a
handler's deserializer and behaviour as grpc.aio would.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, NamedTuple

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from authz.v1 import authz_pb2, authz_pb2_grpc
from authz_service.api import AuthzServicer
from authz_service.core.errors import InvalidArgument
from authz_service.logs import RateLimitedLog
from authz_service.registration import SELF_REFUSING, GenericOnly, Undecodable

INVALID_UTF8 = b"\x0a\x02\xff\xfe"  # field 1, a string, two bytes that are not UTF-8
GARBAGE = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"  # a varint longer than ten bytes


class Details(NamedTuple):
    """HandlerCallDetails."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class FakeServer:
    """Records the generic handlers added to it, and finds a method's handler as grpc does."""

    def __init__(self) -> None:
        self.generic: list[Any] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def handler(self, method: str) -> Any:
        for generic in self.generic:
            found = generic.service(Details(method, ()))
            if found is not None:
                return found
        raise LookupError(method)


class Aborted(Exception):
    """What FakeContext.abort raises, as grpc.aio's abort raises AbortError."""


class FakeContext:
    """grpc.aio's ServicerContext, as far as an abort goes."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str, Any] | None = None
        self.written: list[Any] = []

    async def abort(self, code: grpc.StatusCode, details: str, trailing: Any = ()) -> None:
        self.aborted = (code, details, trailing)
        raise Aborted

    async def write(self, message: Any) -> None:
        self.written.append(message)


class FakeSyncContext:
    """grpc.aio's context for a sync behaviour: its abort records and returns."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str, Any] | None = None

    def abort(self, code: grpc.StatusCode, details: str, trailing: Any = ()) -> None:
        self.aborted = (code, details, trailing)


class Admin(authz_pb2_grpc.AdminServiceServicer):
    """Records the requests that reach it."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def GetEntry(self, request: Any, context: Any) -> authz_pb2.Entry:
        self.seen.append(request)
        return authz_pb2.Entry(id=request.id)


class NoChecker:
    """A Checker that must not be asked: an undecodable Check never gets that far."""

    async def check(self, *args: object) -> None:
        raise AssertionError("the checker was asked")


@pytest.fixture
def refusals() -> RateLimitedLog:
    """A refusal log of its own, one line a minute on a clock the test moves."""
    return RateLimitedLog(logging.getLogger("test.refusals"), limit=1, clock=lambda: 0.0)


def registered(refusals: RateLimitedLog) -> tuple[FakeServer, Admin]:
    server, admin = FakeServer(), Admin()
    authz_pb2_grpc.add_AdminServiceServicer_to_server(admin, GenericOnly(server, refusals))  # type: ignore[no-untyped-call, arg-type]
    servicer = AuthzServicer(NoChecker())  # type: ignore[arg-type]
    authz_pb2_grpc.add_AuthzServiceServicer_to_server(servicer, GenericOnly(server, refusals))  # type: ignore[no-untyped-call, arg-type]
    return server, admin


def assert_refused(aborted: Any, message: str) -> None:
    assert aborted is not None
    code, details, trailing = aborted
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == f"request: cannot be decoded as {message}"
    # The same BadRequest detail every INVALID_ARGUMENT of the service carries.
    status = status_pb2.Status.FromString(dict(trailing)["grpc-status-details-bin"])
    bad_request = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["request"]


@pytest.mark.parametrize("raw", [INVALID_UTF8, GARBAGE])
def test_bytes_that_do_not_parse_become_an_undecodable_instead_of_an_exception(
    refusals: RateLimitedLog, raw: bytes
) -> None:
    server, _ = registered(refusals)
    deserialize = server.handler("/authz.v1.AdminService/GetEntry").request_deserializer
    undecodable = deserialize(raw)
    assert isinstance(undecodable, Undecodable)
    assert undecodable.message_name == "authz.v1.GetEntryRequest"
    good = authz_pb2.GetEntryRequest(id="e-1")
    assert deserialize(good.SerializeToString()) == good


def test_a_guarded_method_refuses_an_undecodable_before_the_servicer_runs(
    refusals: RateLimitedLog,
) -> None:
    server, admin = registered(refusals)
    handler = server.handler("/authz.v1.AdminService/GetEntry")
    context = FakeContext()
    with pytest.raises(Aborted):
        asyncio.run(handler.unary_unary(handler.request_deserializer(INVALID_UTF8), context))
    assert_refused(context.aborted, "authz.v1.GetEntryRequest")
    assert admin.seen == []
    answer = asyncio.run(handler.unary_unary(authz_pb2.GetEntryRequest(id="e-2"), FakeContext()))
    assert answer.id == "e-2"
    assert [r.id for r in admin.seen] == ["e-2"]


def test_the_hot_checks_get_no_guard_and_refuse_on_their_servicers_error_path(
    refusals: RateLimitedLog,
) -> None:
    server, _ = registered(refusals)
    handler = server.handler("/authz.v1.AuthzService/Check")
    assert "/authz.v1.AuthzService/Check" in SELF_REFUSING
    assert handler.unary_unary.__qualname__ == "AuthzServicer.Check"  # no guard around it
    context = FakeContext()
    with pytest.raises(Aborted):
        asyncio.run(handler.unary_unary(handler.request_deserializer(INVALID_UTF8), context))
    assert_refused(context.aborted, "authz.v1.CheckRequest")


def test_the_envoy_check_is_self_refusing_too() -> None:
    server = FakeServer()
    servicer = external_auth_pb2_grpc.AuthorizationServicer()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, GenericOnly(server))  # type: ignore[arg-type]
    handler = server.handler("/envoy.service.auth.v3.Authorization/Check")
    assert handler.unary_unary == servicer.Check
    request = external_auth_pb2.CheckRequest()
    request.attributes.context_extensions["plugin"] = "catalog"
    decoded = handler.request_deserializer(request.SerializeToString())
    assert decoded == request


def test_an_undecodables_fields_raise_invalid_argument_but_copy_still_works() -> None:
    undecodable = Undecodable("authz.v1.CheckRequest")
    with pytest.raises(InvalidArgument, match=r"request: cannot be decoded as authz\.v1\."):
        _ = undecodable.token
    assert copy.copy(undecodable) is not None
    assert not hasattr(undecodable, "__wrapped__")


def test_a_unary_request_streaming_response_is_refused_before_the_first_response() -> None:
    server = FakeServer()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), GenericOnly(server))  # type: ignore[attr-defined, arg-type]
    watch = server.handler("/grpc.health.v1.Health/Watch")
    context = FakeContext()
    with pytest.raises(Aborted):
        asyncio.run(watch.unary_stream(watch.request_deserializer(INVALID_UTF8), context))
    assert_refused(context.aborted, "grpc.health.v1.HealthCheckRequest")
    assert context.written == []


class AsyncReflection(reflection_pb2_grpc.ServerReflectionServicer):  # type: ignore[misc]
    """Answers each request with its host, as an async generator."""

    async def ServerReflectionInfo(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for request in request_iterator:
            yield reflection_pb2.ServerReflectionResponse(valid_host=request.host)


def test_a_request_stream_is_refused_when_it_yields_an_undecodable() -> None:
    server = FakeServer()
    guarded = GenericOnly(server)  # type: ignore[arg-type]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(AsyncReflection(), guarded)
    info = server.handler("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    good = reflection_pb2.ServerReflectionRequest(host="first").SerializeToString()
    context = FakeContext()

    async def requests() -> AsyncIterator[Any]:
        for raw in (good, GARBAGE, good):
            yield info.request_deserializer(raw)

    seen: list[str] = []

    async def collect() -> None:
        async for response in info.stream_stream(requests(), context):
            seen.append(response.valid_host)  # noqa: PERF401 (each one before the abort)

    with pytest.raises(Aborted):
        asyncio.run(collect())
    assert seen == ["first"]
    assert_refused(context.aborted, "grpc.reflection.v1alpha.ServerReflectionRequest")


def test_the_sync_reflection_servicer_is_refused_too_and_its_stream_ends() -> None:
    server = FakeServer()
    # Not a grpc.aio.Server: enable_server_reflection picks its synchronous servicer.
    reflection.enable_server_reflection(["authz.v1.AuthzService"], GenericOnly(server))  # type: ignore[arg-type]
    info = server.handler("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert not asyncio.iscoroutinefunction(info.stream_stream)
    listing = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()

    def requests() -> Iterator[Any]:
        for raw in (listing, INVALID_UTF8, listing):
            yield info.request_deserializer(raw)

    context = FakeSyncContext()
    responses = list(info.stream_stream(requests(), context))
    assert len(responses) == 1  # the first listing; the stream ends at the undecodable
    assert_refused(context.aborted, "grpc.reflection.v1alpha.ServerReflectionRequest")


class Anything(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A generic handler of no known service: answers every method."""

    def service(self, handler_call_details: Any) -> Any:
        async def echo(request: Any, context: Any) -> Any:
            return request

        return grpc.unary_unary_rpc_method_handler(
            echo, health_pb2.HealthCheckRequest.FromString, lambda message: b""
        )


def test_a_generic_handler_of_no_known_service_is_guarded_call_by_call() -> None:
    server = FakeServer()
    GenericOnly(server).add_generic_rpc_handlers([Anything()])  # type: ignore[arg-type]
    handler = server.handler("/some.Unknown/Method")
    context = FakeContext()
    with pytest.raises(Aborted):
        asyncio.run(handler.unary_unary(handler.request_deserializer(INVALID_UTF8), context))
    assert_refused(context.aborted, "/some.Unknown/Method")


def test_many_refusals_write_one_line_and_the_next_one_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    refusals = RateLimitedLog(logging.getLogger("test.refusals"), limit=1, clock=lambda: now[0])
    server, _ = registered(refusals)
    deserialize = server.handler("/authz.v1.AdminService/GetEntry").request_deserializer
    check = server.handler("/authz.v1.AuthzService/Check").request_deserializer
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        for _ in range(500):
            deserialize(INVALID_UTF8)
            check(GARBAGE)
        assert len(caplog.records) == 1
        now[0] = 61.0
        deserialize(GARBAGE)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert "/authz.v1.AdminService/GetEntry" in lines[0]
    assert "and 999 more" in lines[1]
    assert all(record.exc_info is None for record in caplog.records)
