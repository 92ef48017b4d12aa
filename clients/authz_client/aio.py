"""`AsyncAuthzClient`: the asyncio (grpc.aio) client, the same calls as `AuthzClient`."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from authz.v1 import authz_pb2, authz_pb2_grpc

from ._errors import error_from_rpc
from ._failover import REPEATABLE, Attempts, ask_order, channel_options, service_of, target_list
from ._model import (
    AuditEvent,
    CheckResult,
    Entry,
    Restriction,
    audit_event_from_message,
    check_result,
    entry_from_message,
)
from ._requests import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    KEEP,
    _Keep,
    admin_metadata,
    audit_request,
    check_request,
    create_request,
    update_request,
)


class _Route:
    """One target's channel and stubs."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.stubs = {
            "authz": authz_pb2_grpc.AuthzServiceStub(channel),  # type: ignore[no-untyped-call]
            "admin": authz_pb2_grpc.AdminServiceStub(channel),  # type: ignore[no-untyped-call]
        }


class AsyncAuthzClient:
    """An asyncio connection to the authorization service; `async with` closes it.

    Same targets, deadlines, failover and errors as `AuthzClient`.
    """

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        *,
        admin_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.targets = target_list(target)
        several = len(self.targets) > 1
        options = channel_options(several)
        self._routes = [
            _Route(
                grpc.aio.secure_channel(t, credentials, options)
                if credentials is not None
                else grpc.aio.insecure_channel(t, options)
            )
            for t in self.targets
        ]
        if several:  # connect every channel now, so calls know which are ready
            for route in self._routes:
                route.channel.get_state(try_to_connect=True)
        self._turns = itertools.count()
        self._metadata = admin_metadata(admin_token)
        self.target = ", ".join(self.targets)
        self.timeout = timeout

    async def check(
        self,
        token_or_authorization: str,
        plugin: str,
        permission: str | None = None,
        action: str | None = None,
    ) -> CheckResult:
        """May this token (raw, or a whole `Bearer ...` header value) do this?"""
        request = check_request(token_or_authorization, plugin, permission, action)
        return check_result(await self._call("Check", request, ()))

    async def create_entry(
        self,
        subject: str,
        token: str,
        *,
        restrictions: Sequence[Restriction] = (),
        unrestricted: bool = False,
        description: str = "",
        expire_time: datetime | None = None,
    ) -> Entry:
        """Create an entry for `token`."""
        request = create_request(
            subject, token, restrictions, unrestricted, description, expire_time
        )
        return entry_from_message(await self._call("CreateEntry", request))

    async def update_entry(
        self,
        entry_id: str,
        etag: str,
        *,
        description: str | _Keep = KEEP,
        restrictions: Sequence[Restriction] | _Keep = KEEP,
        unrestricted: bool | _Keep = KEEP,
        expire_time: datetime | _Keep | None = KEEP,
        new_token: str = "",
        previous_token_grace: timedelta | None = None,
    ) -> Entry:
        """Change the fields given (None clears `expire_time`)."""
        request = update_request(
            entry_id,
            etag,
            description=description,
            restrictions=restrictions,
            unrestricted=unrestricted,
            expire_time=expire_time,
            new_token=new_token,
            previous_token_grace=previous_token_grace,
        )
        return entry_from_message(await self._call("UpdateEntry", request))

    async def rotate_token(
        self, entry_id: str, etag: str, new_token: str, *, grace: timedelta | None = None
    ) -> Entry:
        """Replace the entry's token; with `grace`, the old one keeps working that long."""
        return await self.update_entry(
            entry_id, etag, new_token=new_token, previous_token_grace=grace
        )

    async def revoke_entry(self, entry_id: str, reason: str = "") -> Entry:
        """Revoke at once."""
        request = authz_pb2.RevokeEntryRequest(id=entry_id, reason=reason)
        return entry_from_message(await self._call("RevokeEntry", request))

    async def get_entry(self, entry_id: str) -> Entry:
        """One entry by id."""
        request = authz_pb2.GetEntryRequest(id=entry_id)
        return entry_from_message(await self._call("GetEntry", request))

    async def list_entries(
        self, page_size: int = 0, page_token: str = "", *, include_revoked: bool = False
    ) -> tuple[list[Entry], str]:
        """One page of entries and the next page's token."""
        request = authz_pb2.ListEntriesRequest(
            page_size=page_size, page_token=page_token, include_revoked=include_revoked
        )
        response = await self._call("ListEntries", request)
        return [entry_from_message(e) for e in response.entries], response.next_page_token

    async def iter_entries(self, *, include_revoked: bool = False) -> AsyncIterator[Entry]:
        """Every entry, page after page."""
        page_token = ""
        while True:
            entries, page_token = await self.list_entries(
                page_token=page_token, include_revoked=include_revoked
            )
            for entry in entries:
                yield entry
            if not page_token:
                return

    async def list_audit_events(
        self,
        entry_id: str = "",
        actor_entry_id: str = "",
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[AuditEvent], str]:
        """One page of audit events, oldest first, and the next page's token."""
        request = audit_request(
            entry_id,
            actor_entry_id,
            since=since,
            until=until,
            page_size=page_size,
            page_token=page_token,
        )
        response = await self._call("ListAuditEvents", request)
        return [audit_event_from_message(e) for e in response.events], response.next_page_token

    async def iter_audit_events(
        self,
        entry_id: str = "",
        actor_entry_id: str = "",
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncIterator[AuditEvent]:
        """Every audit event that passes the filters, oldest first, page after page."""
        page_token = ""
        while True:
            events, page_token = await self.list_audit_events(
                entry_id, actor_entry_id, since=since, until=until, page_token=page_token
            )
            for event in events:
                yield event
            if not page_token:
                return

    async def close(self) -> None:
        """Close the channels."""
        for route in self._routes:
            await route.channel.close(None)

    async def __aenter__(self) -> AsyncAuthzClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(
        self,
        method: str,
        request: Any,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> Any:
        """Ask the targets in turn, within `timeout` in all (see `_failover.Attempts`)."""
        metadata = self._metadata if metadata is None else metadata
        repeatable = method in REPEATABLE
        several = len(self._routes) > 1
        states = [r.channel.get_state() for r in self._routes] if several else [None]
        attempts = Attempts(ask_order(states, next(self._turns)), self.timeout)
        for index, share in attempts:
            route = self._routes[index]
            if not repeatable and several and not await _ready(route, share):
                attempts.not_ready()
                continue
            rpc = getattr(route.stubs[service_of(method)], method)
            try:
                return await rpc(
                    request, timeout=share if repeatable else attempts.left(), metadata=metadata
                )
            except grpc.RpcError as error:
                failure = error_from_rpc(error)
                if not repeatable or not attempts.fails_over(failure):
                    raise failure from None
        raise attempts.exhausted()


async def _ready(route: _Route, wait: float) -> bool:
    """Whether the route's channel is connected and serving, waiting up to `wait` seconds."""
    try:
        await asyncio.wait_for(route.channel.channel_ready(), wait)
    except TimeoutError:
        return False
    return True
