"""gRPC servicers: proto in, plain values, one use-case call, proto out. Nothing else."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from authz.v1 import authz_pb2, authz_pb2_grpc
from authz_service.core.decision import Decision
from authz_service.usecases import Admin, Checker, EntryChange, NewEntry

from ._status import abort_for, translate_errors
from .convert import authorization_of, entry_message, optional_time, restriction_inputs

Context = Any  # grpc.aio.ServicerContext; the generated base classes leave it untyped


class AuthzServicer(authz_pb2_grpc.AuthzServiceServicer):
    """`authz.v1.AuthzService`: Check, for backend services."""

    def __init__(self, checker: Checker) -> None:
        self._checker = checker
        # Responses built once per distinct answer: an entry's ALLOW (keyed by its id, whose
        # subject never changes) or a deny reason. Cleared when it grows past its bound.
        self._responses: dict[str, authz_pb2.CheckResponse] = {}

    async def Check(  # noqa: N802 (gRPC method name)
        self, request: authz_pb2.CheckRequest, context: Context
    ) -> authz_pb2.CheckResponse:
        """Answer ALLOW or DENY; a deny is an answer, not an RPC error."""
        # Errors are caught inline rather than by @translate_errors: one coroutine fewer on
        # the hottest path (measured), same mapping through abort_for.
        try:
            decision = await self._checker.check(
                request.token,
                request.authorization,
                request.plugin,
                request.permission,
                request.action,
            )
        except Exception as error:  # noqa: BLE001 (mapped, never leaked, by abort_for)
            await abort_for(context, error, "Check")
        key = decision.entry_id or decision.reason
        response = self._responses.get(key)
        if response is None:
            if len(self._responses) >= _MAX_RESPONSES:
                self._responses.clear()
            response = self._responses[key] = _response(decision)
        return response


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


class AdminServicer(authz_pb2_grpc.AdminServiceServicer):
    """`authz.v1.AdminService`: create, update, revoke, get and list entries."""

    def __init__(
        self, admin: Admin, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._admin = admin
        self._clock = clock

    @translate_errors
    async def CreateEntry(  # noqa: N802 (gRPC method name)
        self, request: authz_pb2.CreateEntryRequest, context: Context
    ) -> authz_pb2.Entry:
        """Create an entry; the response never holds the token."""
        new = NewEntry(
            subject=request.subject,
            token=request.token,
            description=request.description,
            restrictions=restriction_inputs(request.access_restrictions),
            unrestricted=request.unrestricted,
            expire_time=optional_time(request, "expire_time", "expire_time"),
        )
        entry = await self._admin.create(authorization_of(context), new)
        return entry_message(entry, self._clock())

    @translate_errors
    async def UpdateEntry(  # noqa: N802 (gRPC method name)
        self, request: authz_pb2.UpdateEntryRequest, context: Context
    ) -> authz_pb2.Entry:
        """Change the fields in update_mask, or rotate the token with new_token."""
        change = EntryChange(
            entry_id=request.entry.id,
            etag=request.etag,
            paths=list(request.update_mask.paths),
            description=request.entry.description,
            restrictions=restriction_inputs(request.entry.access_restrictions),
            unrestricted=request.entry.unrestricted,
            expire_time=optional_time(request.entry, "expire_time", "entry.expire_time"),
            new_token=request.new_token,
        )
        entry = await self._admin.update(authorization_of(context), change)
        return entry_message(entry, self._clock())

    @translate_errors
    async def RevokeEntry(  # noqa: N802 (gRPC method name)
        self, request: authz_pb2.RevokeEntryRequest, context: Context
    ) -> authz_pb2.Entry:
        """Revoke at once: the next Check with its token is denied."""
        entry = await self._admin.revoke(authorization_of(context), request.id, request.reason)
        return entry_message(entry, self._clock())

    @translate_errors
    async def GetEntry(  # noqa: N802 (gRPC method name)
        self, request: authz_pb2.GetEntryRequest, context: Context
    ) -> authz_pb2.Entry:
        """One entry by id."""
        entry = await self._admin.get(authorization_of(context), request.id)
        return entry_message(entry, self._clock())

    @translate_errors
    async def ListEntries(  # noqa: N802 (gRPC method name)
        self, request: authz_pb2.ListEntriesRequest, context: Context
    ) -> authz_pb2.ListEntriesResponse:
        """A page of entries; revoked ones only with include_revoked."""
        entries, next_token = await self._admin.list(
            authorization_of(context),
            request.page_size,
            request.page_token,
            request.include_revoked,
        )
        now = self._clock()
        return authz_pb2.ListEntriesResponse(
            entries=[entry_message(e, now) for e in entries], next_page_token=next_token
        )
