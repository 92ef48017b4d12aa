"""`AuthzClient`: the blocking client for backend services and admin tools."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc

from authz.v1 import authz_pb2, authz_pb2_grpc

from ._errors import error_from_rpc
from ._model import CheckResult, Entry, Restriction, check_result, entry_from_message
from ._requests import (
    CHANNEL_OPTIONS,
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    KEEP,
    _Keep,
    admin_metadata,
    check_request,
    create_request,
    update_request,
)

Response = TypeVar("Response")


class AuthzClient:
    """A connection to the authorization service. Use it as a context manager to close it.

    Every call has a deadline (`timeout`, 1 s by default). Check, Get, List and Revoke are
    retried on UNAVAILABLE; nothing else is. Failures raise `AuthzClientError` subclasses.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        admin_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        options = list(CHANNEL_OPTIONS)
        self._channel = (
            grpc.secure_channel(target, credentials, options)
            if credentials is not None
            else grpc.insecure_channel(target, options)
        )
        self._authz = authz_pb2_grpc.AuthzServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._admin = authz_pb2_grpc.AdminServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = admin_metadata(admin_token)
        self.target = target
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
        return check_result(self._call(self._authz.Check, request, ()))

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
        return entry_from_message(self._call(self._admin.CreateEntry, request))

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
    ) -> Entry:
        """Change the fields given (None clears `expire_time`); a stale etag raises Aborted."""
        request = update_request(
            entry_id,
            etag,
            description=description,
            restrictions=restrictions,
            unrestricted=unrestricted,
            expire_time=expire_time,
            new_token=new_token,
        )
        return entry_from_message(self._call(self._admin.UpdateEntry, request))

    def rotate_token(self, entry_id: str, etag: str, new_token: str) -> Entry:
        """Replace the entry's token; the old one is denied once this returns."""
        return self.update_entry(entry_id, etag, new_token=new_token)

    def revoke_entry(self, entry_id: str, reason: str = "") -> Entry:
        """Revoke at once; revoking again changes nothing."""
        request = authz_pb2.RevokeEntryRequest(id=entry_id, reason=reason)
        return entry_from_message(self._call(self._admin.RevokeEntry, request))

    def get_entry(self, entry_id: str) -> Entry:
        """One entry by id."""
        request = authz_pb2.GetEntryRequest(id=entry_id)
        return entry_from_message(self._call(self._admin.GetEntry, request))

    def list_entries(
        self, page_size: int = 0, page_token: str = "", *, include_revoked: bool = False
    ) -> tuple[list[Entry], str]:
        """One page of entries and the next page's token ("" after the last page)."""
        request = authz_pb2.ListEntriesRequest(
            page_size=page_size, page_token=page_token, include_revoked=include_revoked
        )
        response = self._call(self._admin.ListEntries, request)
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

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

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
        method: Callable[..., Response],
        request: Any,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> Response:
        try:
            return method(
                request,
                timeout=self.timeout,
                metadata=self._metadata if metadata is None else metadata,
            )
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None
