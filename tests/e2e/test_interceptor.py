"""The server interceptors guarding a small real gRPC service with this authorization service."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest

from authz_client import (
    AsyncAuthzClient,
    AsyncAuthzServerInterceptor,
    AuthzClient,
    AuthzServerInterceptor,
    MethodRule,
    Restriction,
    current_identity,
)
from server_process import BOOTSTRAP_TOKEN, ServerProcess

WHOAMI = "/demo.Inventory/WhoAmI"
RESTOCK = "/demo.Inventory/Restock"
UNMAPPED = "/demo.Inventory/Unmapped"
PING = "/demo.Inventory/Ping"
RULES = {
    WHOAMI: MethodRule("inventory", "inventory.item.read", "read"),
    RESTOCK: MethodRule("inventory", "inventory.item.update", "update"),
}


def _whoami(request: bytes, context: Any) -> bytes:
    identity = current_identity()
    return b"anonymous" if identity is None else identity.subject.encode()


async def _async_whoami(request: bytes, context: Any) -> bytes:
    return _whoami(request, context)


def _handlers(behavior: Any) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "demo.Inventory",
        {
            name: grpc.unary_unary_rpc_method_handler(behavior)
            for name in ("WhoAmI", "Restock", "Unmapped", "Ping")
        },
    )


@pytest.fixture
def reader_token(server: ServerProcess) -> str:
    with AuthzClient(server.target, admin_token=BOOTSTRAP_TOKEN, timeout=5) as admin:
        admin.create_entry(
            "inventory-reader",
            "inventory-reader-token",
            restrictions=[Restriction("inventory", ("inventory.item.read",), ("read",))],
        )
    return "inventory-reader-token"


@pytest.fixture
def sync_backend(server: ServerProcess) -> Iterator[str]:
    client = AuthzClient(server.target, timeout=5)
    backend = grpc.server(
        futures.ThreadPoolExecutor(4),
        interceptors=[AuthzServerInterceptor(client, RULES, public=[PING])],
    )
    backend.add_generic_rpc_handlers([_handlers(_whoami)])
    port = backend.add_insecure_port("127.0.0.1:0")
    backend.start()
    yield f"127.0.0.1:{port}"
    backend.stop(None)
    client.close()


def _call(target: str, method: str, token: str | None) -> bytes:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(target) as channel:
        result: bytes = channel.unary_unary(method)(b"", metadata=metadata, timeout=10)
        return result


def _code(target: str, method: str, token: str | None) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        _call(target, method, token)
    return raised.value.code()  # type: ignore[no-any-return]


def test_a_call_without_a_token_is_unauthenticated(sync_backend: str) -> None:
    assert _code(sync_backend, WHOAMI, None) == grpc.StatusCode.UNAUTHENTICATED


def test_a_call_with_a_wrong_token_is_unauthenticated(sync_backend: str, reader_token: str) -> None:
    assert _code(sync_backend, WHOAMI, "wrong-token-12345") == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_without_its_bearer_scheme_is_unauthenticated(
    sync_backend: str, reader_token: str
) -> None:
    with grpc.insecure_channel(sync_backend) as channel:
        call = channel.unary_unary(WHOAMI)
        with pytest.raises(grpc.RpcError) as raised:
            call(b"", metadata=(("authorization", reader_token),), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_an_under_scoped_call_is_permission_denied(sync_backend: str, reader_token: str) -> None:
    assert _code(sync_backend, RESTOCK, reader_token) == grpc.StatusCode.PERMISSION_DENIED


def test_an_allowed_call_reaches_the_handler_with_the_subject(
    sync_backend: str, reader_token: str
) -> None:
    assert _call(sync_backend, WHOAMI, reader_token) == b"inventory-reader"


def test_an_unmapped_method_is_denied_and_a_public_one_is_open(
    sync_backend: str, reader_token: str
) -> None:
    assert _code(sync_backend, UNMAPPED, reader_token) == grpc.StatusCode.PERMISSION_DENIED
    assert _call(sync_backend, PING, None) == b"anonymous"


def test_an_unreachable_authorization_service_fails_closed(
    server: ServerProcess, reader_token: str
) -> None:
    client = AuthzClient(server.target, timeout=2)
    backend = grpc.server(
        futures.ThreadPoolExecutor(2), interceptors=[AuthzServerInterceptor(client, RULES)]
    )
    backend.add_generic_rpc_handlers([_handlers(_whoami)])
    port = backend.add_insecure_port("127.0.0.1:0")
    backend.start()
    try:
        assert server.stop() == 0
        assert _code(f"127.0.0.1:{port}", WHOAMI, reader_token) == grpc.StatusCode.UNAVAILABLE
    finally:
        backend.stop(None)
        client.close()


def test_the_async_interceptor_guards_an_aio_server(
    server: ServerProcess, reader_token: str
) -> None:
    async def scenario() -> dict[str, object]:
        client = AsyncAuthzClient(server.target, timeout=5)
        backend = grpc.aio.server(
            interceptors=[AsyncAuthzServerInterceptor(client, RULES, public=[PING])]
        )
        backend.add_generic_rpc_handlers([_handlers(_async_whoami)])
        port = backend.add_insecure_port("127.0.0.1:0")
        await backend.start()
        outcomes: dict[str, object] = {}
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for name, method, token in (
                ("allowed", WHOAMI, reader_token),
                ("no token", WHOAMI, None),
                ("wrong token", WHOAMI, "wrong-token-12345"),
                ("under-scoped", RESTOCK, reader_token),
                ("unmapped", UNMAPPED, reader_token),
                ("public", PING, None),
            ):
                metadata = (("authorization", f"Bearer {token}"),) if token else None
                try:
                    outcomes[name] = await channel.unary_unary(method)(
                        b"", metadata=metadata, timeout=10
                    )
                except grpc.aio.AioRpcError as error:
                    outcomes[name] = error.code()
        await backend.stop(None)
        await client.close()
        return outcomes

    assert asyncio.run(scenario()) == {
        "allowed": b"inventory-reader",
        "no token": grpc.StatusCode.UNAUTHENTICATED,
        "wrong token": grpc.StatusCode.UNAUTHENTICATED,
        "under-scoped": grpc.StatusCode.PERMISSION_DENIED,
        "unmapped": grpc.StatusCode.PERMISSION_DENIED,
        "public": b"anonymous",
    }
