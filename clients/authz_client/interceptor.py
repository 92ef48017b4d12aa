"""gRPC server interceptors that let this service guard a Python backend's own RPCs.

Give them a map from full method name (`/pkg.Service/Method`) to the `MethodRule` it needs;
each call's `authorization` metadata is checked with the authorization service. A deny aborts
the call with UNAUTHENTICATED (401-kind) or PERMISSION_DENIED (403-kind); an unreachable
authorization service aborts with UNAVAILABLE (fail closed); unmapped methods are denied
unless listed as public. On allow, the handler reads the caller with `current_identity()`.

The sync interceptor checks inside the wrapped handler, on the server's worker thread: grpc
calls `intercept_service` on its polling thread, which must never block on a network call.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from ._errors import AuthzClientError
from ._model import CheckResult
from .aio import AsyncAuthzClient
from .client import AuthzClient

_identity: ContextVar[CheckResult | None] = ContextVar("authz_identity", default=None)


@dataclass(frozen=True, slots=True)
class MethodRule:
    """What a method asks of the caller's token: a plugin, and optionally permission and action."""

    plugin: str
    permission: str | None = None
    action: str | None = None


def current_identity() -> CheckResult | None:
    """The allowed Check result (subject, entry_id) of the call being handled, if guarded."""
    return _identity.get()


@dataclass(frozen=True, slots=True)
class _Refusal:
    code: grpc.StatusCode
    details: str


def _authorization(metadata: Iterable[tuple[str, Any]] | None) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            return value
    return ""


def _verdict(result: CheckResult) -> CheckResult | _Refusal:
    if result.allowed:
        return result
    code = (
        grpc.StatusCode.UNAUTHENTICATED
        if result.http_status == 401
        else grpc.StatusCode.PERMISSION_DENIED
    )
    return _Refusal(code, f"access denied: {result.reason}")


_UNMAPPED = _Refusal(grpc.StatusCode.PERMISSION_DENIED, "access denied: method has no access rule")
_NO_TOKEN = _Refusal(grpc.StatusCode.UNAUTHENTICATED, "access denied: missing_token")
_MALFORMED = _Refusal(grpc.StatusCode.UNAUTHENTICATED, "access denied: malformed")
_UNREACHABLE = _Refusal(
    grpc.StatusCode.UNAVAILABLE, "access denied: the authorization service did not answer"
)


def _rule_to_check(rule: MethodRule | None, authorization: str) -> MethodRule | _Refusal:
    """The rule to ask the service about, or why the call is refused without asking."""
    if rule is None:
        return _UNMAPPED
    if not authorization:
        return _NO_TOKEN
    if " " not in authorization:
        return _MALFORMED  # a header value, so it needs its scheme: "Bearer <token>"
    return rule


class _Rules:
    def __init__(self, rules: Mapping[str, MethodRule], public: Iterable[str]) -> None:
        self.rules = dict(rules)
        self.public = frozenset(public)


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any], guard: Callable[[Any, Any], Any]
) -> grpc.RpcMethodHandler[Any, Any]:
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, kind)
        if behavior is not None:
            return handler._replace(**{kind: guard(behavior, kind.endswith("stream"))})  # type: ignore[attr-defined, no-any-return]
    return handler


class AuthzServerInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Guards a sync `grpc.server` with `AuthzClient.check`."""

    def __init__(
        self,
        client: AuthzClient,
        rules: Mapping[str, MethodRule],
        public: Iterable[str] = (),
    ) -> None:
        self._client = client
        self._rules = _Rules(rules, public)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the method's handler so it checks the caller before running."""
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method in self._rules.public:
            return handler
        rule = self._rules.rules.get(method)
        authorization = _authorization(handler_call_details.invocation_metadata)

        def decide() -> CheckResult | _Refusal:
            asked = _rule_to_check(rule, authorization)
            if isinstance(asked, _Refusal):
                return asked
            try:
                return _verdict(
                    self._client.check(authorization, asked.plugin, asked.permission, asked.action)
                )
            except AuthzClientError:
                return _UNREACHABLE

        def guard(behavior: Callable[[Any, grpc.ServicerContext], Any], streams: bool) -> Any:
            def guarded(argument: Any, context: grpc.ServicerContext) -> Any:
                verdict = decide()
                if isinstance(verdict, _Refusal):
                    context.abort(verdict.code, verdict.details)
                token = _identity.set(verdict)
                try:
                    result = behavior(argument, context)
                    return _with_identity(result, verdict) if streams else result
                finally:
                    _identity.reset(token)

            return guarded

        return _wrap(handler, guard)


def _with_identity(responses: Iterator[Any], identity: CheckResult) -> Iterator[Any]:
    token = _identity.set(identity)
    try:
        yield from responses
    finally:
        _identity.reset(token)


class AsyncAuthzServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Guards a `grpc.aio.server` with `AsyncAuthzClient.check`."""

    def __init__(
        self,
        client: AsyncAuthzClient,
        rules: Mapping[str, MethodRule],
        public: Iterable[str] = (),
    ) -> None:
        self._client = client
        self._rules = _Rules(rules, public)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Wrap the method's handler so it checks the caller before running."""
        handler: grpc.RpcMethodHandler[Any, Any] = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method in self._rules.public:
            return handler
        rule = self._rules.rules.get(method)
        authorization = _authorization(handler_call_details.invocation_metadata)

        async def decide() -> CheckResult | _Refusal:
            asked = _rule_to_check(rule, authorization)
            if isinstance(asked, _Refusal):
                return asked
            try:
                return _verdict(
                    await self._client.check(
                        authorization, asked.plugin, asked.permission, asked.action
                    )
                )
            except AuthzClientError:
                return _UNREACHABLE

        def guard(behavior: Callable[..., Any], streams: bool) -> Any:
            if inspect.isasyncgenfunction(behavior):

                async def guarded_stream(
                    argument: Any, context: grpc.aio.ServicerContext[Any, Any]
                ) -> AsyncIterator[Any]:
                    verdict = await decide()
                    if isinstance(verdict, _Refusal):
                        await context.abort(verdict.code, verdict.details)
                    token = _identity.set(verdict)
                    try:
                        async for response in behavior(argument, context):
                            yield response
                    finally:
                        _identity.reset(token)

                return guarded_stream

            async def guarded(argument: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                verdict = await decide()
                if isinstance(verdict, _Refusal):
                    await context.abort(verdict.code, verdict.details)
                token = _identity.set(verdict)
                try:
                    return await behavior(argument, context)
                finally:
                    _identity.reset(token)

            return guarded

        return _wrap(handler, guard)
