"""Request building shared by the sync and async clients."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import Enum
from typing import Final

from google.protobuf import duration_pb2, field_mask_pb2

from authz.v1 import authz_pb2

from ._model import Restriction, action_number, restriction_messages, timestamp

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 1.0


class _Keep(Enum):
    KEEP = "keep"


# Pass KEEP (the default) to leave a field of an entry as it is in `update_entry`.
KEEP: Final = _Keep.KEEP


def admin_metadata(admin_token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that authenticates an admin."""
    return (("authorization", f"Bearer {admin_token}"),) if admin_token else ()


def check_request(
    token_or_authorization: str, plugin: str, permission: str | None, action: str | None
) -> authz_pb2.CheckRequest:
    """A CheckRequest; a value with a space is an `Authorization` header, else a raw token
    (tokens never contain whitespace)."""
    is_header = " " in token_or_authorization
    return authz_pb2.CheckRequest(
        token="" if is_header else token_or_authorization,
        authorization=token_or_authorization if is_header else "",
        plugin=plugin,
        permission=permission or "",
        action=action_number(action),  # type: ignore[arg-type]
    )


def create_request(  # noqa: PLR0917 (mirrors CreateEntryRequest's fields, in order)
    subject: str,
    token: str,
    restrictions: Sequence[Restriction],
    unrestricted: bool,
    description: str,
    expire_time: datetime | None,
) -> authz_pb2.CreateEntryRequest:
    """A CreateEntryRequest."""
    request = authz_pb2.CreateEntryRequest(
        subject=subject,
        token=token,
        description=description,
        access_restrictions=restriction_messages(restrictions),
        unrestricted=unrestricted,
    )
    if expire_time is not None:
        request.expire_time.CopyFrom(timestamp(expire_time))
    return request


def update_request(
    entry_id: str,
    etag: str,
    *,
    description: str | _Keep,
    restrictions: Sequence[Restriction] | _Keep,
    unrestricted: bool | _Keep,
    expire_time: datetime | _Keep | None,
    new_token: str,
    previous_token_grace: timedelta | None = None,
) -> authz_pb2.UpdateEntryRequest:
    """An UpdateEntryRequest whose mask names exactly the fields not left at KEEP; with
    `previous_token_grace`, the token `new_token` replaces keeps working that long."""
    entry = authz_pb2.Entry(id=entry_id)
    paths = []
    if description is not KEEP:
        entry.description = description
        paths.append("description")
    if restrictions is not KEEP:
        entry.access_restrictions.extend(restriction_messages(restrictions))
        paths.append("access_restrictions")
    if unrestricted is not KEEP:
        entry.unrestricted = unrestricted
        paths.append("unrestricted")
    if expire_time is not KEEP:
        if expire_time is not None:
            entry.expire_time.CopyFrom(timestamp(expire_time))
        paths.append("expire_time")
    request = authz_pb2.UpdateEntryRequest(
        entry=entry,
        update_mask=field_mask_pb2.FieldMask(paths=paths),
        new_token=new_token,
        etag=etag,
    )
    if previous_token_grace is not None:
        grace = duration_pb2.Duration()
        grace.FromTimedelta(previous_token_grace)
        request.previous_token_grace.CopyFrom(grace)
    return request


def audit_request(
    entry_id: str,
    actor_entry_id: str,
    *,
    since: datetime | None,
    until: datetime | None,
    page_size: int,
    page_token: str,
) -> authz_pb2.ListAuditEventsRequest:
    """A ListAuditEventsRequest; empty filters match every event."""
    request = authz_pb2.ListAuditEventsRequest(
        entry_id=entry_id, actor_entry_id=actor_entry_id, page_size=page_size, page_token=page_token
    )
    if since is not None:
        request.since.CopyFrom(timestamp(since))
    if until is not None:
        request.until.CopyFrom(timestamp(until))
    return request
