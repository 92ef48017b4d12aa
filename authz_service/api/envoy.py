"""`envoy.service.auth.v3.Authorization/Check`: Envoy's external authorization, translated.

Envoy asks before it forwards an HTTP request. The route's `context_extensions` name the
`plugin`, optional `permission` and `action` (else the HTTP method gives the action), the
`authorization` header carries the token, and the answer is the same `Checker.check` decision
`authz.v1.AuthzService/Check` gives, with the same cache and revocation window.

A deny is always a CheckResponse, never an RPC error: Envoy treats an RPC error as an outage of
this service. Only a real failure (storage unavailable, a bug) ends the call with an RPC error,
through the one error mapping in `_status`, and Envoy then fails closed on its own; so do bytes
that are no CheckRequest at all (INVALID_ARGUMENT), which Envoy never sends.

A misconfigured route is logged, but what a line quotes from the request is clipped and the
lines are rate-limited: the endpoint is unauthenticated, and its callers choose what they send.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

from authz_service.core.decision import Decision, Reason
from authz_service.core.errors import InvalidArgument, invalid
from authz_service.core.model import Action
from authz_service.logs import RateLimitedLog, clipped
from authz_service.usecases import Checker

from ._status import abort_for
from .convert import client_host, peer_host

log = logging.getLogger("authz_service.api.envoy")

SERVICE_NAME: str = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
REALM = "authz-service"
SUBJECT_HEADER = "x-authz-subject"
ENTRY_ID_HEADER = "x-authz-entry-id"
REASON_HEADER = "x-ext-auth-reason"
MISCONFIGURED_ROUTE = "misconfigured_route"

# The action a request asks for when its route names none. Other methods (TRACE, CONNECT,
# extension methods) ask for no action: allowed only to entries whose restriction for the
# plugin lists no actions, as Check treats a request that names none.
METHOD_ACTIONS: Mapping[str, Action] = {
    "GET": Action.READ,
    "HEAD": Action.READ,
    "OPTIONS": Action.READ,
    "POST": Action.CREATE,
    "PUT": Action.UPDATE,
    "PATCH": Action.UPDATE,
    "DELETE": Action.DELETE,
}
# Action numbers, looked up per request.
_METHOD_NUMBERS = {method: int(action) for method, action in METHOD_ACTIONS.items()}
_ACTION_NAMES = {action.name.lower(): int(action) for action in Action}
_FLAGS = {"true": True, "false": False}

Context = Any  # grpc.aio.ServicerContext; the generated code leaves it untyped


class RouteCheck(NamedTuple):
    """What one route asks Check, read from its context_extensions and the request's method.

    `action` is an `authz.v1.Action` number, 0 when the request asks for none. (A NamedTuple:
    one is built per request, and it costs half what a frozen dataclass does.)
    """

    plugin: str
    permission: str
    action: int
    forward_authorization: bool


_new_route = tuple.__new__


def route_check(extensions: Mapping[str, str], method: str) -> RouteCheck:
    """The Check a request on this route asks for; InvalidArgument if the route is misconfigured.

    Only presence and the spelling of `action` and `forward_authorization` are checked here;
    Check itself validates the plugin and permission names.
    """
    # `in`, then a subscript, here and below: a protobuf map's get() parses its arguments as
    # keywords, which costs more than both.
    plugin = extensions["plugin"] if "plugin" in extensions else ""  # noqa: SIM401
    if not plugin:
        raise invalid("context_extensions.plugin", "is required: the route names no plugin")
    if len(extensions) == 1:
        # Most routes name the plugin alone: no lookups of the other three.
        named = flag = permission = ""
    else:
        named = _extension(extensions, "action")
        flag = _extension(extensions, "forward_authorization")
        permission = _extension(extensions, "permission")
    if named:
        action = _ACTION_NAMES.get(named.lower())
        if action is None:
            raise invalid(
                "context_extensions.action", "must be one of create, read, update, delete"
            )
    else:
        # Envoy sends methods in upper case; upper() only for anything else.
        action = _METHOD_NUMBERS.get(method)
        if action is None:
            action = _METHOD_NUMBERS.get(method.upper(), 0)
    forward: bool | None = False
    if flag:
        forward = _FLAGS.get(flag.lower())
        if forward is None:
            raise invalid("context_extensions.forward_authorization", 'must be "true" or "false"')
    # What RouteCheck(...) does, less its Python-level __new__: one is built per request.
    return _new_route(RouteCheck, (plugin, permission, action, forward))


def _extension(extensions: Mapping[str, str], name: str) -> str:
    return extensions[name] if name in extensions else ""  # noqa: SIM401 (see route_check)


@dataclass(frozen=True, slots=True)
class Denial:
    """The HTTP answer Envoy sends for a deny: status, WWW-Authenticate (or ""), JSON body."""

    http_status: int
    www_authenticate: str
    error: str
    reason: str

    @property
    def body(self) -> str:
        """`{"error": ..., "reason": ...}`."""
        return json.dumps({"error": self.error, "reason": self.reason})


def denial_of(decision: Decision) -> Denial:
    """How a DENY decision reads over HTTP (RFC 6750 section 3).

    No credential at all gets a bare challenge; a bad, revoked or expired one `invalid_token`;
    a valid one without the scope 403 `insufficient_scope`.
    """
    if decision.http_status == 401:
        if decision.reason == Reason.MISSING_TOKEN:
            return Denial(401, f'Bearer realm="{REALM}"', "unauthenticated", decision.reason)
        challenge = f'Bearer realm="{REALM}", error="invalid_token"'
        return Denial(401, challenge, "invalid_token", decision.reason)
    challenge = f'Bearer realm="{REALM}", error="insufficient_scope"'
    return Denial(403, challenge, "insufficient_scope", decision.reason)


# A misconfigured route is the platform's fault, not the caller's: 500, so it shows in 5xx
# alerts rather than sending callers to check their token's scope.
MISCONFIGURED = Denial(500, "", "misconfigured_route", MISCONFIGURED_ROUTE)


def allow_response(
    decision: Decision, forward_authorization: bool
) -> external_auth_pb2.CheckResponse:
    """OK: the identity in headers (overwriting the client's) and in dynamic metadata."""
    headers = [
        _header(SUBJECT_HEADER, decision.subject),
        _header(ENTRY_ID_HEADER, decision.entry_id),
    ]
    metadata = struct_pb2.Struct()
    metadata.update({"subject": decision.subject, "entry_id": decision.entry_id})
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=headers,
            headers_to_remove=[] if forward_authorization else ["authorization"],
        ),
        dynamic_metadata=metadata,
    )


def deny_response(denial: Denial) -> external_auth_pb2.CheckResponse:
    """A denied CheckResponse carrying `denial` as the HTTP answer Envoy sends."""
    code = {401: code_pb2.UNAUTHENTICATED, 403: code_pb2.PERMISSION_DENIED}.get(
        denial.http_status, code_pb2.INVALID_ARGUMENT
    )
    headers = [_header(REASON_HEADER, denial.reason), _header("content-type", "application/json")]
    if denial.www_authenticate:
        headers.append(_header("www-authenticate", denial.www_authenticate))
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code, message=denial.reason),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=denial.http_status),
            headers=headers,
            body=denial.body,
        ),
    )


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


_MAX_RESPONSES = 50_000
# A misconfigured route's line: once a minute per problem and route settings, and at most
# _WARN_LINES_PER_MINUTE lines a minute in all (then one line says how many were held back).
_WARN_EVERY_SECONDS = 60.0
_WARN_LINES_PER_MINUTE = 10
# What a line quotes from a request: each context_extensions key and value, the method, and
# host and path, cut to this many characters; at most _SHOWN_EXTENSIONS extensions.
_SHOWN_CHARS = 64
_SHOWN_EXTENSIONS = 8
_SHOWN_METHOD_CHARS = 16
_SHOWN_PATH_CHARS = 128
# The memory of what was logged: keys of at most 512 characters, 64 KiB of them in all (the
# table is emptied when full, as the response tables are).
_WARNED_KEY_CHARS = 512
_WARNED_BYTES = 64 * 1024


class EnvoyAuthorizationServicer:
    """`envoy.service.auth.v3.Authorization`: Check for Envoy's ext_authz HTTP filter."""

    def __init__(
        self,
        checker: Checker,
        clock: Callable[[], float] = time.monotonic,
        max_responses: int = _MAX_RESPONSES,
    ) -> None:
        self._checker = checker
        self._clock = clock
        self._max_responses = max_responses
        # Responses built once per distinct answer, as AuthzServicer does: an entry's ALLOW
        # (its subject never changes) or a deny reason, one table for routes that forward the
        # Authorization header and one for those that remove it.
        self._responses: dict[bool, dict[str, external_auth_pb2.CheckResponse]] = {
            False: {},
            True: {},
        }
        self._misconfigured = deny_response(MISCONFIGURED)
        # When each distinct route problem was last logged, so a busy broken route logs once
        # a minute rather than once per request; bounded by bytes, not by count.
        self._warned: dict[str, float] = {}
        self._warned_bytes = 0
        self._warnings = RateLimitedLog(log, _WARN_LINES_PER_MINUTE, clock=clock)

    async def Check(  # noqa: N802 (gRPC method name)
        self, request: external_auth_pb2.CheckRequest, context: Context
    ) -> external_auth_pb2.CheckResponse:
        """ALLOW as OK with the identity headers; every deny as a denied CheckResponse."""
        try:
            # Inside the try: bytes that are no CheckRequest arrive as an Undecodable (see
            # registration.GenericOnly), whose first attribute read raises InvalidArgument.
            attributes = request.attributes
            http = attributes.request.http
            plugin, permission, action, forward = route_check(
                attributes.context_extensions, http.method
            )
            decision = await self._checker.check(
                "",
                _authorization(http),
                plugin,
                permission,
                action,
                # Positional, and a partial rather than a lambda: a keyword argument and
                # closure cells cost every Check about 2k instructions (callgrind).
                partial(_downstream, attributes, context),
            )
        except InvalidArgument as error:
            if not isinstance(request, external_auth_pb2.CheckRequest):
                # Not Envoy: an RPC error, as for a malformed call to any other method.
                await abort_for(context, error, "Envoy Check")
            self._warn_misconfigured(request.attributes, str(error))
            return self._misconfigured
        except Exception as error:  # noqa: BLE001 (mapped, never leaked, by abort_for)
            await abort_for(context, error, "Envoy Check")
        responses = self._responses[forward]
        key = decision.entry_id or decision.reason
        response = responses.get(key)
        if response is None:
            # At most max_responses in both tables together.
            if len(responses) + len(self._responses[not forward]) >= self._max_responses:
                for table in self._responses.values():
                    table.clear()
            if decision.allowed:
                response = allow_response(decision, forward)
            else:
                response = deny_response(denial_of(decision))
            responses[key] = response
        return response

    def remembered_bytes(self) -> int:
        """What the memory of logged route problems takes: the table and its keys."""
        return sys.getsizeof(self._warned) + sum(sys.getsizeof(key) for key in self._warned)

    def _warn_misconfigured(self, attributes: Any, problem: str) -> None:
        # Everything a caller sent is clipped before it is kept or logged: context_extensions
        # has up to 1,024 keys of any size, and a log line per distinct one would let anyone
        # fill the memory and the disk.
        extensions = _shown_extensions(attributes.context_extensions)
        key = f"{problem} {extensions}"[:_WARNED_KEY_CHARS]
        now = self._clock()
        last = self._warned.get(key)
        if last is not None and now - last < _WARN_EVERY_SECONDS:
            return
        http = attributes.request.http
        # The path without its query (which may carry secrets); host and path are cut before
        # they are joined. clipped() quotes with repr, so control characters a client put in a
        # value cannot end the line. Never a header value.
        cut = _SHOWN_PATH_CHARS + 1  # one more than is shown, so a longer one gets its ellipsis
        where = http.host[:cut] + http.path[:cut].partition("?")[0]
        written = self._warnings.warning(
            "Envoy route misconfigured, request denied with 500: %s (context_extensions %s, "
            "on %s %s)",
            problem,
            extensions,
            clipped(http.method, _SHOWN_METHOD_CHARS),
            clipped(where, _SHOWN_PATH_CHARS),
        )
        if not written:  # held back: counted in the next line, and nothing is remembered
            return
        if last is None:
            size = sys.getsizeof(key)
            if self._warned_bytes + size > _WARNED_BYTES:
                self._warned.clear()
                self._warned_bytes = 0
            self._warned_bytes += size
        self._warned[key] = now


def _shown_extensions(extensions: Mapping[str, str]) -> str:
    """The first few context_extensions by key, each key and value clipped, for a log line."""
    # A route's settings are few and short; one from an attacker may have 1,024 keys, each
    # cut before sorting so that none is copied whole.
    items = sorted(
        (clipped(key, _SHOWN_CHARS), clipped(value, _SHOWN_CHARS))
        for key, value in extensions.items()
    )
    shown = ", ".join(f"{key}: {value}" for key, value in items[:_SHOWN_EXTENSIONS])
    if len(items) > _SHOWN_EXTENSIONS:
        shown += f", and {len(items) - _SHOWN_EXTENSIONS} more"
    return "{" + shown + "}"


def _downstream(attributes: Any, context: Context) -> str:
    """Whose turn argon2 work for this check takes: the downstream client Envoy reports, else
    the peer that sent the check (not Envoy, or Envoy without a source address)."""
    address: str = attributes.source.address.socket_address.address
    return client_host(address) if address else peer_host(context.peer() or "")


def _authorization(http: Any) -> str:
    """The `authorization` header: from `headers`, or `header_map` with encode_raw_headers."""
    # One lookup: a protobuf map's subscript answers "" for a missing key (adding it to this
    # request's copy, which nothing reads again). Not get(): see route_check.
    value: str = http.headers["authorization"]
    if not value:
        for header in http.header_map.headers:
            if header.key.lower() == "authorization":
                return str(header.raw_value.decode("utf-8", "replace") or header.value)
    return value
