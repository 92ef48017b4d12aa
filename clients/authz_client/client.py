"""`AuthzClient`: the blocking client for backend services and admin tools."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import grpc

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
    """One target's channel and stubs, and the channel's last known state."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.stubs = {
            "authz": authz_pb2_grpc.AuthzServiceStub(channel),  # type: ignore[no-untyped-call]
            "admin": authz_pb2_grpc.AdminServiceStub(channel),  # type: ignore[no-untyped-call]
        }
        self.state: grpc.ChannelConnectivity | None = None

    def note(self, state: grpc.ChannelConnectivity) -> None:
        self.state = state


class AuthzClient:
    """A connection to the authorization service. Use it as a context manager to close it.

    `target` is one `host:port` (or any grpc target, such as `dns:///name:port`, whose
    addresses are used in turn), or a sequence of them: replicas of one service. Every call
    has a deadline (`timeout`, 1 s by default) that covers every target it asks. Check, the
    reads (Get, List, ListAuditEvents) and Revoke go to the next target on UNAVAILABLE or when
    their share of the timeout runs out; Create and Update only go to a target that is
    connected and serving, and are never sent twice. Failures raise `AuthzClientError`
    subclasses.
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
                grpc.secure_channel(t, credentials, options)
                if credentials is not None
                else grpc.insecure_channel(t, options)
            )
            for t in self.targets
        ]
        if several:  # keep every channel connected, and know which are ready
            for route in self._routes:
                route.channel.subscribe(route.note, try_to_connect=True)
        self._turns = itertools.count()
        self._metadata = admin_metadata(admin_token)
        self.target = ", ".join(self.targets)
        self.timeout = timeout

    def check(
        self,
        token_or_authorization: str,
        plugin: str,
        permission: str | None = None,
        action: str | None = None,
    ) -> CheckResult:
        """May this token (raw, or a whole `Bearer ...` header value) do this?

        A deny is a result (`allowed` False, `http_status` 401 or 403), not an exception.
        """
        request = check_request(token_or_authorization, plugin, permission, action)
        return check_result(self._call("Check", request, ()))

    def create_entry(
        self,
        subject: str,
        token: str,
        *,
        restrictions: Sequence[Restriction] = (),
        unrestricted: bool = False,
        description: str = "",
        expire_time: datetime | None = None,
    ) -> Entry:
        """Create an entry for `token`; the token cannot be read back afterwards."""
        request = create_request(
            subject, token, restrictions, unrestricted, description, expire_time
        )
        return entry_from_message(self._call("CreateEntry", request))

    def update_entry(
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
        """Change the fields given (None clears `expire_time`); a stale etag raises Aborted.

        `new_token` rotates the token; `previous_token_grace` then keeps the replaced one
        working that long (see `rotate_token`).
        """
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
        return entry_from_message(self._call("UpdateEntry", request))

    def rotate_token(
        self, entry_id: str, etag: str, new_token: str, *, grace: timedelta | None = None
    ) -> Entry:
        """Replace the entry's token. Without `grace` the old one is denied once this returns;
        with it, the old one keeps working, with the entry's current scope, that long (at most
        7 days, and never past the entry's expiry): until `previous_token_expire_time`."""
        return self.update_entry(entry_id, etag, new_token=new_token, previous_token_grace=grace)

    def revoke_entry(self, entry_id: str, reason: str = "") -> Entry:
        """Revoke at once; revoking again changes nothing."""
        request = authz_pb2.RevokeEntryRequest(id=entry_id, reason=reason)
        return entry_from_message(self._call("RevokeEntry", request))

    def get_entry(self, entry_id: str) -> Entry:
        """One entry by id."""
        request = authz_pb2.GetEntryRequest(id=entry_id)
        return entry_from_message(self._call("GetEntry", request))

    def list_entries(
        self, page_size: int = 0, page_token: str = "", *, include_revoked: bool = False
    ) -> tuple[list[Entry], str]:
        """One page of entries and the next page's token ("" after the last page)."""
        request = authz_pb2.ListEntriesRequest(
            page_size=page_size, page_token=page_token, include_revoked=include_revoked
        )
        response = self._call("ListEntries", request)
        return [entry_from_message(e) for e in response.entries], response.next_page_token

    def iter_entries(self, *, include_revoked: bool = False) -> Iterator[Entry]:
        """Every entry, page after page."""
        page_token = ""
        while True:
            entries, page_token = self.list_entries(
                page_token=page_token, include_revoked=include_revoked
            )
            yield from entries
            if not page_token:
                return

    def list_audit_events(
        self,
        entry_id: str = "",
        actor_entry_id: str = "",
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[AuditEvent], str]:
        """One page of audit events, oldest first, and the next page's token ("" after the
        last page). Filters: the target entry, the acting admin's entry, and a time range
        [since, until); empty ones match every event. Needs `authz.audit.read`."""
        request = audit_request(
            entry_id,
            actor_entry_id,
            since=since,
            until=until,
            page_size=page_size,
            page_token=page_token,
        )
        response = self._call("ListAuditEvents", request)
        return [audit_event_from_message(e) for e in response.events], response.next_page_token

    def iter_audit_events(
        self,
        entry_id: str = "",
        actor_entry_id: str = "",
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[AuditEvent]:
        """Every audit event that passes the filters, oldest first, page after page."""
        page_token = ""
        while True:
            events, page_token = self.list_audit_events(
                entry_id, actor_entry_id, since=since, until=until, page_token=page_token
            )
            yield from events
            if not page_token:
                return

    def close(self) -> None:
        """Close the channels."""
        for route in self._routes:
            if len(self._routes) > 1:
                route.channel.unsubscribe(route.note)
            route.channel.close()

    def __enter__(self) -> AuthzClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self,
        method: str,
        request: Any,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> Any:
        """Ask the targets in turn, within `timeout` in all (see `_failover.Attempts`)."""
        metadata = self._metadata if metadata is None else metadata
        repeatable = method in REPEATABLE
        start = next(self._turns)
        attempts = Attempts(ask_order([r.state for r in self._routes], start), self.timeout)
        for index, share in attempts:
            route = self._routes[index]
            if not repeatable and len(self._routes) > 1 and not _ready(route, share):
                attempts.not_ready()
                continue
            rpc = getattr(route.stubs[service_of(method)], method)
            try:
                return rpc(
                    request, timeout=share if repeatable else attempts.left(), metadata=metadata
                )
            except grpc.RpcError as error:
                failure = error_from_rpc(error)
                if not repeatable or not attempts.fails_over(failure):
                    raise failure from None
        raise attempts.exhausted()


def _ready(route: _Route, wait: float) -> bool:
    """Whether the route's channel is connected and serving, waiting up to `wait` seconds."""
    if route.state is grpc.ChannelConnectivity.READY:
        return True
    ready = grpc.channel_ready_future(route.channel)
    try:
        ready.result(timeout=wait)
    except grpc.FutureTimeoutError:
        ready.cancel()
        return False
    return True
