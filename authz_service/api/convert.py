"""Translation between `authz.v1` messages and the plain values the use cases take."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime, timedelta
from urllib.parse import unquote

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message

from authz.v1 import authz_pb2
from authz_service.core.audit import AuditEvent, AuditFilter
from authz_service.core.errors import FieldViolation
from authz_service.core.model import Entry, Restriction, State, from_micros, to_micros
from authz_service.core.rules import (
    MAX_ACTIONS,
    MAX_MASK_PATHS,
    MAX_PERMISSIONS,
    MAX_RESTRICTIONS,
    RestrictionInput,
)

# The range google.protobuf.Timestamp allows: 0001-01-01 to 9999-12-31.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
# Far past the 7 days a grace may last, and well inside what a timedelta holds.
_GRACE_CLAMP = 10**10


def authorization_of(context: grpc.aio.ServicerContext[object, object]) -> str:
    """The caller's `authorization` metadata value, or ""."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return value
    return ""


def peer_host(peer: str) -> str:
    """The client host of a gRPC peer (`ipv4:10.0.0.7:51234`, `ipv6:%5B::1%5D:51234`): the
    caller whose turn argon2 work takes, one per host rather than per connection."""
    kind, _, address = peer.partition(":")
    if kind not in {"ipv4", "ipv6"}:
        return peer  # a Unix socket: every client is the same host
    return client_host(unquote(address.rpartition(":")[0]))


def peer_address(peer: str) -> str:
    """The client address of a gRPC peer, without its port (`10.0.0.7`, `::1`): what the audit
    log records. A Unix socket peer as it is."""
    kind, _, address = peer.partition(":")
    if kind not in {"ipv4", "ipv6"}:
        return peer
    return unquote(address.rpartition(":")[0]).strip("[]")


def client_host(address: str) -> str:
    """The host an IP address stands for: an IPv4 address as it is, an IPv6 one as its /64
    (one host is commonly given a whole /64, so each of its addresses must not count as a
    new caller); anything else as given."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def restriction_inputs(
    restrictions: Sequence[authz_pb2.AccessRestriction],
) -> list[RestrictionInput]:
    """Restrictions as the request spells them, for the core to validate.

    Each list is cut one past its limit: enough for the core to report it as too long, and
    no more Python objects than that, however many the request holds.
    """
    return [
        RestrictionInput(
            r.plugin,
            list(r.permissions[: MAX_PERMISSIONS + 1]),
            list(r.actions[: MAX_ACTIONS + 1]),
        )
        for r in restrictions[: MAX_RESTRICTIONS + 1]
    ]


def mask_paths(mask: field_mask_pb2.FieldMask) -> list[str]:
    """An update mask's paths, cut one past their limit as `restriction_inputs` does."""
    return list(mask.paths[: MAX_MASK_PATHS + 1])


def optional_time(
    message: Message, field: str, path: str
) -> tuple[datetime | None, tuple[FieldViolation, ...]]:
    """The datetime in `message.field` (None when unset), and the violation if out of range.

    The violation goes to the use case, which reports it with the request's other bad fields
    once it has authorized the caller: a caller without the right learns nothing of its input.
    """
    if not message.HasField(field):
        return None, ()
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    if not (_MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS and 0 <= stamp.nanos < 1_000_000_000):
        return None, (FieldViolation(path, "is not a valid timestamp"),)
    return from_micros(stamp.seconds * 1_000_000 + stamp.nanos // 1000), ()


def grace_of(request: authz_pb2.UpdateEntryRequest) -> timedelta | None:
    """The rotation's `previous_token_grace` (None when unset). Seconds are clamped to what a
    timedelta holds; the use case refuses anything past 7 days or below 0."""
    if not request.HasField("previous_token_grace"):
        return None
    span = request.previous_token_grace
    seconds = max(min(span.seconds, _GRACE_CLAMP), -_GRACE_CLAMP)
    return timedelta(seconds=seconds, microseconds=span.nanos // 1000)


def audit_filter(
    request: authz_pb2.ListAuditEventsRequest,
) -> tuple[AuditFilter, tuple[FieldViolation, ...]]:
    """ListAuditEvents' filters, and the violations of unreadable times (reported once the
    caller is authorized, as `optional_time` says)."""
    since, bad_since = optional_time(request, "since", "since")
    until, bad_until = optional_time(request, "until", "until")
    wanted = AuditFilter(request.entry_id, request.actor_entry_id, since, until)
    return wanted, (*bad_since, *bad_until)


def audit_message(event: AuditEvent) -> authz_pb2.AuditEvent:
    """An audit event as `authz.v1.AuditEvent`."""
    record = event.record
    message = authz_pb2.AuditEvent(
        sequence=event.sequence,
        actor_entry_id=record.actor_entry_id,
        actor_subject=record.actor_subject,
        rpc=record.rpc,
        entry_id=record.entry_id,
        changes=[
            authz_pb2.FieldChange(field=field, before=before, after=after)
            for field, before, after in record.changes
        ],
        code=record.code,
        peer=record.peer,
        user_agent=record.user_agent,
        previous_hash=event.previous_hash,
        hash=event.hash,
    )
    _set_time(message.time, record.time)
    return message


def entry_message(entry: Entry, now: datetime) -> authz_pb2.Entry:
    """The public view of an entry: everything but its verifier and lookup tag."""
    message = authz_pb2.Entry(
        id=entry.id,
        subject=entry.subject,
        description=entry.description,
        access_restrictions=restriction_messages(entry.restrictions),
        unrestricted=entry.unrestricted,
        state=entry.state(now).name,
        etag=entry.etag,
        revoke_reason=entry.revoke_reason,
    )
    _set_time(message.create_time, entry.create_time)
    _set_time(message.update_time, entry.update_time)
    if entry.revoke_time is not None:
        _set_time(message.revoke_time, entry.revoke_time)
    if entry.expire_time is not None:
        _set_time(message.expire_time, entry.expire_time)
    if entry.last_used_time is not None:
        _set_time(message.last_used_time, entry.last_used_time)
    if (
        entry.previous_expire_time is not None
        and entry.previous_live(now)
        and entry.state(now) is State.ACTIVE
    ):  # only while the replaced token works: a revoked or expired entry's never does
        _set_time(message.previous_token_expire_time, entry.previous_expire_time)
    return message


def restriction_messages(restrictions: Sequence[Restriction]) -> list[authz_pb2.AccessRestriction]:
    """Restrictions as `authz.v1.AccessRestriction` messages."""
    return [
        authz_pb2.AccessRestriction(
            plugin=r.plugin, permissions=list(r.permissions), actions=[a.name for a in r.actions]
        )
        for r in restrictions
    ]


def _set_time(stamp: timestamp_pb2.Timestamp, when: datetime) -> None:
    seconds, micros = divmod(to_micros(when), 1_000_000)
    stamp.seconds = seconds
    stamp.nanos = micros * 1000
