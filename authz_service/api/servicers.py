"""gRPC servicers: proto in, plain values, one use-case call, proto out. Nothing else."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from authz.v1 import authz_pb2, authz_pb2_grpc
from authz_service.core.decision import Decision
from authz_service.usecases import Admin, Checker, EntryChange, NewEntry

from ._status import abort_for
from .access import AdminCalls, observed_admin_call
from .convert import (
    audit_filter,
    audit_message,
    authorization_of,
    entry_message,
    grace_of,
    mask_paths,
    optional_time,
    peer_address,
    peer_host,
    restriction_inputs,
)

Context = Any  # grpc.aio.ServicerContext; the generated base classes leave it untyped

log = logging.getLogger("authz_service.check")


class AuthzServicer(authz_pb2_grpc.AuthzServiceServicer):
    """`authz.v1.AuthzService`: Check, for backend services."""

    def __init__(self, checker: Checker) -> None:
        self._checker = checker
        # Responses built once per distinct answer: an entry's ALLOW (keyed by its id, whose
        # subject never changes) or a deny reason. Cleared when it grows past its bound.
        self._responses: dict[str, authz_pb2.CheckResponse] = {}
        # A line per Check only at DEBUG; read once so other levels pay one attribute test.
        self._debug = log.isEnabledFor(logging.DEBUG)

    async def Check(  # noqa: N802 (gRPC method name)
        self, request: authz_pb2.CheckRequest, context: Context
    ) -> authz_pb2.CheckResponse:
        """Answer ALLOW or DENY; a deny is an answer, not an RPC error."""
        # Errors are caught inline rather than by a decorator: one coroutine fewer on
        # the hottest path (measured), same mapping through abort_for.
        try:
            decision = await self._checker.check(
                request.token,
                request.authorization,
                request.plugin,
                request.permission,
                request.action,
                # Positional, and a partial rather than a lambda: a keyword argument and
                # closure cells cost every Check about 2k instructions (callgrind).
                partial(_peer, context),
            )
        except Exception as error:  # noqa: BLE001 (mapped, never leaked, by abort_for)
            await abort_for(context, error, "Check")
        key = decision.entry_id or decision.reason
        response = self._responses.get(key)
        if response is None:
            if len(self._responses) >= _MAX_RESPONSES:
                self._responses.clear()
            response = self._responses[key] = _response(decision)
        if self._debug:
            _log_check(request, decision)
        return response


def _log_check(request: authz_pb2.CheckRequest, decision: Decision) -> None:
    """One DEBUG line per Check: the names asked about and the answer, never the token."""
    log.debug(
        "check %s %s %s: %s %d %s",
        request.plugin,
        request.permission or "-",
        authz_pb2.Action.Name(request.action),
        "ALLOW" if decision.allowed else "DENY",
        decision.http_status,
        decision.subject or decision.reason,
        extra={
            "plugin": request.plugin,
            "permission": request.permission,
            "action": authz_pb2.Action.Name(request.action),
            "allowed": decision.allowed,
            "reason": decision.reason,
            "subject": decision.subject,
            "entry_id": decision.entry_id,
        },
    )


_MAX_RESPONSES = 50_000


def _response(decision: Decision) -> authz_pb2.CheckResponse:
    return authz_pb2.CheckResponse(
        decision=authz_pb2.ALLOW if decision.allowed else authz_pb2.DENY,
        code=decision.code,
        http_status=decision.http_status,
        reason=decision.reason,
        subject=decision.subject,
        entry_id=decision.entry_id,
    )


# The longest user agent the audit log keeps.
USER_AGENT_CHARS = 256


class AdminServicer(authz_pb2_grpc.AdminServiceServicer):
    """`authz.v1.AdminService`: create, update, revoke, get and list entries, and list the
    audit log."""

    def __init__(
        self,
        admin: Admin,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        calls: AdminCalls | None = None,
    ) -> None:
        self._admin = admin
        self._clock = clock
        # Every call is counted and access-logged here (see observed_admin_call).
        self.calls = calls or AdminCalls()

    def identify(self, context: Context) -> tuple[str, str] | None:
        """The entry id and subject of the admin whose token this call presents, when it was
        verified (for the access log)."""
        return self._admin.identify(authorization_of(context))

    @observed_admin_call
    async def CreateEntry(  # noqa: N802 (gRPC method name)
        self, request: authz_pb2.CreateEntryRequest, context: Context
    ) -> authz_pb2.Entry:
        """Create an entry; the response never holds the token."""
        expire_time, unreadable = optional_time(request, "expire_time", "expire_time")
        new = NewEntry(
            subject=request.subject,
            token=request.token,
            description=request.description,
            restrictions=restriction_inputs(request.access_restrictions),
            unrestricted=request.unrestricted,
            expire_time=expire_time,
            unreadable=unreadable,
        )
        entry = await self._admin.create(authorization_of(context), new, **_caller(context))
        return entry_message(entry, self._clock())

    @observed_admin_call
    async def UpdateEntry(  # noqa: N802 (gRPC method name)
        self, request: authz_pb2.UpdateEntryRequest, context: Context
    ) -> authz_pb2.Entry:
        """Change the fields in update_mask, or rotate the token with new_token."""
        expire_time, unreadable = optional_time(request.entry, "expire_time", "entry.expire_time")
        change = EntryChange(
            entry_id=request.entry.id,
            etag=request.etag,
            paths=mask_paths(request.update_mask),
            description=request.entry.description,
            restrictions=restriction_inputs(request.entry.access_restrictions),
            unrestricted=request.entry.unrestricted,
            expire_time=expire_time,
            new_token=request.new_token,
            previous_token_grace=grace_of(request),
            unreadable=unreadable,
        )
        entry = await self._admin.update(authorization_of(context), change, **_caller(context))
        return entry_message(entry, self._clock())

    @observed_admin_call
    async def RevokeEntry(  # noqa: N802 (gRPC method name)
        self, request: authz_pb2.RevokeEntryRequest, context: Context
    ) -> authz_pb2.Entry:
        """Revoke at once: the next Check with its token is denied."""
        entry = await self._admin.revoke(
            authorization_of(context), request.id, request.reason, **_caller(context)
        )
        return entry_message(entry, self._clock())

    @observed_admin_call
    async def GetEntry(  # noqa: N802 (gRPC method name)
        self, request: authz_pb2.GetEntryRequest, context: Context
    ) -> authz_pb2.Entry:
        """One entry by id."""
        entry = await self._admin.get(authorization_of(context), request.id, **_caller(context))
        return entry_message(entry, self._clock())

    @observed_admin_call
    async def ListEntries(  # noqa: N802 (gRPC method name)
        self, request: authz_pb2.ListEntriesRequest, context: Context
    ) -> authz_pb2.ListEntriesResponse:
        """A page of entries; revoked ones only with include_revoked."""
        entries, next_token = await self._admin.list(
            authorization_of(context),
            request.page_size,
            request.page_token,
            request.include_revoked,
            **_caller(context),
        )
        now = self._clock()
        return authz_pb2.ListEntriesResponse(
            entries=[entry_message(e, now) for e in entries], next_page_token=next_token
        )

    @observed_admin_call
    async def ListAuditEvents(  # noqa: N802 (gRPC method name)
        self, request: authz_pb2.ListAuditEventsRequest, context: Context
    ) -> authz_pb2.ListAuditEventsResponse:
        """A page of the audit log, oldest first, filtered."""
        wanted, unreadable = audit_filter(request)
        events, next_token = await self._admin.list_audit(
            authorization_of(context),
            wanted,
            request.page_size,
            request.page_token,
            unreadable=unreadable,
            **_caller(context),
        )
        return authz_pb2.ListAuditEventsResponse(
            events=[audit_message(e) for e in events], next_page_token=next_token
        )


def _peer(context: Context) -> str:
    return peer_host(context.peer() or "")


def _caller(context: Context) -> dict[str, str]:
    """Who sends an admin call: its host (whose turn any argon2 work takes), its address and
    its user agent (cut to USER_AGENT_CHARS), which the audit log records."""
    agent = next(
        (value for key, value in context.invocation_metadata() or () if key == "user-agent"), ""
    )
    if not isinstance(agent, str):
        agent = ""
    return {
        "peer": _peer(context),
        "user_agent": agent[:USER_AGENT_CHARS],
        "address": peer_address(context.peer() or ""),
    }
