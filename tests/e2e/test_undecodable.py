"""Bytes that are not a method's request message end the call with INVALID_ARGUMENT, on every
method the server exposes, before any authorization, and cost the log one line however many
arrive: grpc alone answers UNKNOWN and logs a traceback per call.

The methods are listed through the server's reflection, so a service added later is covered.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from server_process import ServerProcess

INVALID_UTF8 = b"\x0a\x02\xff\xfe"  # field 1, a string, two bytes that are not UTF-8


@dataclass(frozen=True)
class Method:
    """One method as reflection describes it."""

    path: str
    request: type[Message]  # built from the descriptor reflection gave
    client_streaming: bool
    server_streaming: bool


def exposed_methods(channel: grpc.Channel) -> list[Method]:
    """Every method of every service the server lists through reflection."""
    database = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(database)
    methods = []
    for name in database.get_services():
        for method in pool.FindServiceByName(name).methods:
            methods.append(  # noqa: PERF401 (clearer than a nested comprehension)
                Method(
                    f"/{name}/{method.name}",
                    message_factory.GetMessageClass(method.input_type),
                    method.client_streaming,
                    method.server_streaming,
                )
            )
    return methods


def undecodable(message: type[Message], count: int, seed: int = 7) -> list[bytes]:
    """Bodies that do not parse as `message`: INVALID_UTF8 where field 1 is a string, then
    random ones (random bytes often parse: as unknown fields)."""
    chosen = random.Random(seed)  # noqa: S311 (garbage, not secrets)
    bodies: list[bytes] = []
    body = INVALID_UTF8
    while len(bodies) < count:
        try:
            message.FromString(body)
        except Exception:  # noqa: BLE001 (any failure to parse is what is wanted)
            bodies.append(body)
        body = chosen.randbytes(chosen.randint(1, 64))
    return bodies


def call(channel: grpc.Channel, method: Method, body: bytes) -> grpc.StatusCode:
    """Send `body` as the request (the only message of a request stream); the status."""
    try:
        if method.client_streaming and method.server_streaming:
            for _ in channel.stream_stream(method.path, None, None)(iter([body]), timeout=10):
                pass
        elif method.client_streaming:
            channel.stream_unary(method.path, None, None)(iter([body]), timeout=10)
        elif method.server_streaming:
            for _ in channel.unary_stream(method.path, None, None)(body, timeout=10):
                pass
        else:
            channel.unary_unary(method.path, None, None)(body, timeout=10)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


@pytest.fixture
def methods(server: ServerProcess) -> list[Method]:
    """The server's methods, checked to be the ones this test means to reach."""
    found = exposed_methods(server.channel)
    services = {m.path.split("/")[1] for m in found}
    assert {
        "authz.v1.AuthzService",
        "authz.v1.AdminService",
        "envoy.service.auth.v3.Authorization",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services
    assert any(m.server_streaming and not m.client_streaming for m in found)  # health Watch
    assert any(m.client_streaming and m.server_streaming for m in found)  # reflection
    return found


def _records(server: ServerProcess) -> Iterator[dict[str, str]]:
    for line in server.lines:
        if line.strip():
            yield json.loads(line)


def test_undecodable_bytes_get_invalid_argument_on_every_method(
    server: ServerProcess, methods: list[Method]
) -> None:
    for method in methods:
        for body in undecodable(method.request, 3):
            assert call(server.channel, method, body) == grpc.StatusCode.INVALID_ARGUMENT, (
                method.path,
                body,
            )


def test_the_refusal_names_the_request_message(server: ServerProcess) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        server.channel.unary_unary("/authz.v1.AdminService/CreateEntry", None, None)(
            INVALID_UTF8, timeout=10
        )
    error: grpc.Call = refused.value  # type: ignore[assignment]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "request: cannot be decoded as authz.v1.CreateEntryRequest"


def test_many_undecodable_requests_cost_the_log_one_line_and_no_traceback(
    server: ServerProcess, methods: list[Method]
) -> None:
    sent = 0
    for method in methods:
        for body in undecodable(method.request, 40, seed=len(method.path)):
            call(server.channel, method, body)
            sent += 1
    assert sent >= 400
    # The server still answers what it can decode.
    health = next(m for m in methods if m.path == "/grpc.health.v1.Health/Check")
    assert call(server.channel, health, b"") == grpc.StatusCode.OK
    server.stop()
    records = list(_records(server))
    refusals = [r for r in records if r["logger"] == "authz_service.registration"]
    assert len(refusals) == 1
    assert refusals[0]["level"] == "WARNING"
    assert len(refusals[0]["message"]) < 200
    assert not [r for r in records if r["level"] in {"ERROR", "CRITICAL"}]
    assert not [r for r in records if "exception" in r or "Traceback" in r["message"]]
    assert not [r for r in records if r["logger"].startswith("grpc")]
