"""How the server registers its gRPC services: as generic handlers only, refusing undecodable
requests with INVALID_ARGUMENT."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, NamedTuple, NoReturn

import grpc
from google.protobuf import descriptor_pool

from .api._status import abort_for, status_of
from .core.errors import InvalidArgument, invalid
from .logs import RateLimitedLog

log = logging.getLogger("authz_service.registration")

# Methods whose servicer reads the request inside the try that maps its errors, so that an
# Undecodable's first attribute read is refused there like any bad field: the two hot ones get
# the tolerant deserializer only, no guard coroutine around each call (callgrind: the guard
# costs 1.5k instructions a call, 0.3% of an empty Check's 460k; the deserializer 0.5k).
# tests/e2e/test_undecodable.py sends garbage to every method, these two included.
SELF_REFUSING = frozenset(
    {
        "/authz.v1.AuthzService/Check",
        "/envoy.service.auth.v3.Authorization/Check",
    }
)

# One line a minute for all the services together, however many requests are refused.
_REFUSALS = RateLimitedLog(log, limit=1)


class Undecodable:
    """What a method's deserializer answers for bytes that are not its request message.

    The guard around the method refuses it with INVALID_ARGUMENT before the servicer runs; a
    servicer that meets one anyway (SELF_REFUSING, or a request stream read with
    `context.read()`) gets InvalidArgument from its first attribute read, e.g. `request.token`.
    """

    __slots__ = ("message_name",)

    def __init__(self, message_name: str) -> None:
        self.message_name = message_name

    def error(self) -> InvalidArgument:
        """The InvalidArgument the call ends with: `request: cannot be decoded as ...`."""
        return invalid("request", f"cannot be decoded as {self.message_name}")

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__"):  # copy, pickle and friends probe for these: not a field
            raise AttributeError(name)
        raise self.error()

    def __repr__(self) -> str:
        return f"Undecodable({self.message_name!r})"


class GenericOnly:
    """Registers a service's methods as generic handlers only, not as registered methods, each
    method's handler guarded so that undecodable bytes end the call with INVALID_ARGUMENT.

    grpc.aio's server loop keeps one pending request per registered method, plus one for all
    generic calls, and waits on all of them for every call it accepts: each registered method
    costs every call 4-6k instructions (callgrind), more than a generic handler's lookup
    (a dict get, Check's service asked first). So no method is registered. The benchmark's
    empty-handler floors register through this too, so they do not pay a cost the service
    avoids, and pay the guard's.

    grpc itself answers bytes its deserializer cannot parse with UNKNOWN and an ERROR line with
    a traceback, before any servicer or authorization runs: a flood of garbage is a flood of
    log. Here each method's deserializer answers an `Undecodable` instead, and the method's
    behaviour ends the call with INVALID_ARGUMENT (`request: cannot be decoded as <message>`)
    on meeting one; the refusals are counted in one WARNING line a minute. A service's handler
    is rebuilt once, here, from the methods its descriptor names (no cost per call); a generic
    handler of no known service is guarded call by call. Synchronous behaviours are guarded
    too (the sync reflection servicer is what `enable_server_reflection` picks for this class).
    """

    def __init__(self, server: grpc.aio.Server, refusals: RateLimitedLog | None = None) -> None:
        self._server = server
        self._refusals = refusals or _REFUSALS

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        """Pass the generic handlers through, guarded."""
        self._server.add_generic_rpc_handlers([self._guarded(h) for h in handlers])

    def add_registered_method_handlers(self, service: str, handlers: object) -> None:
        """Leave the service out of the registered methods."""

    def _guarded(self, handler: grpc.GenericRpcHandler[Any, Any]) -> Any:
        if isinstance(handler, grpc.ServiceRpcHandler):
            name = handler.service_name()
            try:
                service = descriptor_pool.Default().FindServiceByName(name)
            except KeyError:
                service = None
            if service is not None:
                methods = {}
                for method in service.methods:
                    path = f"/{name}/{method.name}"
                    found = handler.service(_Lookup(path, ()))  # type: ignore[arg-type]
                    if found is not None:
                        message = method.input_type.full_name
                        methods[method.name] = _guard(found, path, message, self._refusals)
                return grpc.method_handlers_generic_handler(name, methods)
        return _GuardEachCall(handler, self._refusals)


class _Lookup(NamedTuple):
    """The HandlerCallDetails a generic handler is asked with, to find one method."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class _GuardEachCall(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A generic handler of no known service, its answer guarded on every call."""

    def __init__(self, handler: grpc.GenericRpcHandler[Any, Any], refusals: RateLimitedLog):
        self._handler = handler
        self._refusals = refusals

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        found = self._handler.service(handler_call_details)
        if found is None:
            return None
        path = handler_call_details.method
        return _guard(found, path, path, self._refusals)


Behaviour = Callable[..., Any]


def _guard(
    handler: grpc.RpcMethodHandler[Any, Any],
    path: str,
    message_name: str,
    refusals: RateLimitedLog = _REFUSALS,
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with a deserializer that answers an Undecodable for bytes it cannot parse, and
    (unless `path` is SELF_REFUSING) a behaviour that ends the call with INVALID_ARGUMENT on
    meeting one."""
    parse = handler.request_deserializer
    if parse is None:  # the method takes raw bytes: nothing to decode
        return handler
    undecodable = Undecodable(message_name)

    def deserialize(raw: bytes) -> Any:
        try:
            return parse(raw)
        except Exception:  # noqa: BLE001 (it parses only the caller's bytes: theirs to fix)
            refusals.warning(
                "refused undecodable requests with INVALID_ARGUMENT, the latest to %s", path
            )
            return undecodable

    kind, build = _KINDS[bool(handler.request_streaming), bool(handler.response_streaming)]
    behaviour: Behaviour = getattr(handler, kind)
    if path not in SELF_REFUSING:
        if handler.request_streaming:
            behaviour = _guard_stream(behaviour, undecodable)
        else:
            behaviour = _guard_unary(
                behaviour, undecodable, response_streaming=bool(handler.response_streaming)
            )
    built: grpc.RpcMethodHandler[Any, Any] = build(
        behaviour, deserialize, handler.response_serializer
    )
    return built


# Each kind of method: the handler's attribute holding its behaviour, and grpc's builder.
_KINDS: dict[tuple[bool, bool], tuple[str, Callable[..., Any]]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


# grpc.aio tells a coroutine, an async generator and a plain function (run in its thread pool)
# apart by inspecting the behaviour, so each guard is of the same kind as what it guards.


def _guard_unary(
    behaviour: Behaviour, undecodable: Undecodable, *, response_streaming: bool
) -> Behaviour:
    if inspect.isasyncgenfunction(behaviour):

        async def guarded_generator(request: Any, context: Any) -> AsyncIterator[Any]:
            if request is undecodable:
                await _refuse(context, undecodable)
            async for response in behaviour(request, context):
                yield response

        return guarded_generator
    if inspect.iscoroutinefunction(behaviour):

        async def guarded_coroutine(request: Any, context: Any) -> Any:
            if request is undecodable:
                await _refuse(context, undecodable)
            return await behaviour(request, context)

        return guarded_coroutine

    def guarded(request: Any, context: Any) -> Any:
        if request is undecodable:
            _refuse_in_thread(context, undecodable)
            return iter(()) if response_streaming else None
        return behaviour(request, context)

    return guarded


def _guard_stream(behaviour: Behaviour, undecodable: Undecodable) -> Behaviour:
    async def decoded(requests: Any, context: Any) -> AsyncIterator[Any]:
        async for request in requests:
            if request is undecodable:
                await _refuse(context, undecodable)
            yield request

    if inspect.isasyncgenfunction(behaviour):

        async def guarded_generator(requests: Any, context: Any) -> AsyncIterator[Any]:
            async for response in behaviour(decoded(requests, context), context):
                yield response

        return guarded_generator
    if inspect.iscoroutinefunction(behaviour):

        async def guarded_coroutine(requests: Any, context: Any) -> Any:
            return await behaviour(decoded(requests, context), context)

        return guarded_coroutine

    def decoded_in_thread(requests: Any, context: Any) -> Iterator[Any]:
        for request in requests:
            if request is undecodable:
                # The abort is recorded; the stream then ends, and grpc sends that status.
                _refuse_in_thread(context, undecodable)
                return
            yield request

    def guarded(requests: Any, context: Any) -> Any:
        return behaviour(decoded_in_thread(requests, context), context)

    return guarded


async def _refuse(context: Any, undecodable: Undecodable) -> NoReturn:
    await abort_for(context, undecodable.error(), "decoding a request")


def _refuse_in_thread(context: Any, undecodable: Undecodable) -> None:
    # A synchronous context's abort records the status and returns (in grpc.aio it does not
    # raise); the caller then ends the behaviour, and grpc sends the recorded status.
    status = status_of(undecodable.error())
    context.abort(status.code, status.details, status.trailing_metadata)
