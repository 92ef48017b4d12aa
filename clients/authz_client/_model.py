"""Plain, typed values the client returns, and their translation from `authz.v1` messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from authz.v1 import authz_pb2

from ._errors import FieldViolation, InvalidArgument

ACTIONS = ("create", "read", "update", "delete")


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Check's answer. `allowed` is the decision; `reason` says why not (empty on allow)."""

    allowed: bool
    http_status: int
    reason: str
    subject: str = ""
    entry_id: str = ""
    code: int = 0

    @property
    def outcome(self) -> str:
        """`reason`, or "ok" on allow: the `reason` label of the server's `authz_checks_total`."""
        return self.reason or "ok"


@dataclass(frozen=True, slots=True)
class Restriction:
    """What a token may reach in one plugin; empty permissions or actions mean any.

    Actions are the lowercase names `create`, `read`, `update`, `delete`.
    """

    plugin: str
    permissions: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()

    def __str__(self) -> str:
        """The compact form `plugin:perm1,perm2:action1,action2` (see `Restriction.parse`)."""
        text = ":".join((self.plugin, ",".join(self.permissions), ",".join(self.actions)))
        return text.rstrip(":")

    @classmethod
    def parse(cls, text: str) -> Restriction:
        """Read the compact form: `catalog`, `catalog:catalog.entity.read`,
        `catalog:catalog.entity.read:read`, or `catalog::read,update` (any permission).

        Raises ValueError for an unknown action or too many parts; the server checks the rest.
        """
        parts = text.split(":")
        if len(parts) > 3:
            raise ValueError(f"{text!r}: expected PLUGIN[:PERMISSIONS[:ACTIONS]]")
        plugin = parts[0]
        permissions = tuple(p for p in (parts[1] if len(parts) > 1 else "").split(",") if p)
        actions = tuple(a.lower() for a in (parts[2] if len(parts) > 2 else "").split(",") if a)
        unknown = [a for a in actions if a not in ACTIONS]
        if unknown:
            raise ValueError(f"{text!r}: unknown action {unknown[0]!r}; use {', '.join(ACTIONS)}")
        return cls(plugin, permissions, actions)


@dataclass(frozen=True, slots=True)
class Entry:
    """An entry as admins see it: everything but the token, which no one can read back."""

    id: str
    subject: str
    description: str
    restrictions: tuple[Restriction, ...]
    unrestricted: bool
    state: str
    etag: str
    create_time: datetime | None = None
    update_time: datetime | None = None
    revoke_time: datetime | None = None
    expire_time: datetime | None = None
    last_used_time: datetime | None = None
    revoke_reason: str = ""
    # Set while the token a rotation replaced still works (its grace): until then.
    previous_token_expire_time: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with stable keys; timestamps in ISO 8601 UTC, or null."""
        return {
            "id": self.id,
            "subject": self.subject,
            "description": self.description,
            "state": self.state,
            "unrestricted": self.unrestricted,
            "access_restrictions": [
                {"plugin": r.plugin, "permissions": list(r.permissions), "actions": list(r.actions)}
                for r in self.restrictions
            ],
            "create_time": iso(self.create_time),
            "update_time": iso(self.update_time),
            "expire_time": iso(self.expire_time),
            "revoke_time": iso(self.revoke_time),
            "revoke_reason": self.revoke_reason,
            "last_used_time": iso(self.last_used_time),
            "previous_token_expire_time": iso(self.previous_token_expire_time),
            "etag": self.etag,
        }


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field an admin write changed, as text: its value before and after ("" for none)."""

    field: str
    before: str
    after: str


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One event of the audit log: an admin write, or an admin call refused to a caller the
    server knew. Events are hash-chained: `hash` covers `previous_hash` and the event's own
    fields (see `verify_audit_chain`)."""

    sequence: int
    time: datetime
    actor_entry_id: str  # "" for the server's own bootstrap
    actor_subject: str
    rpc: str  # the method name, e.g. "UpdateEntry"
    entry_id: str  # the entry written to, or that would have been ("" when none)
    changes: tuple[FieldChange, ...]
    code: int  # google.rpc.Code of the outcome: 0 OK, 7 PERMISSION_DENIED
    peer: str
    user_agent: str
    previous_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field; `time` exactly as the chain hashes it."""
        return {
            "sequence": self.sequence,
            "time": exact_time(self.time),
            "actor_entry_id": self.actor_entry_id,
            "actor_subject": self.actor_subject,
            "rpc": self.rpc,
            "entry_id": self.entry_id,
            "changes": [
                {"field": c.field, "before": c.before, "after": c.after} for c in self.changes
            ],
            "code": self.code,
            "peer": self.peer,
            "user_agent": self.user_agent,
            "previous_hash": self.previous_hash,
            "hash": self.hash,
        }


def exact_time(when: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC, always six digits of microseconds: the form the
    audit chain hashes."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso(when: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, or None."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def entry_from_message(message: authz_pb2.Entry) -> Entry:
    """The plain Entry for an `authz.v1.Entry`."""
    return Entry(
        id=message.id,
        subject=message.subject,
        description=message.description,
        restrictions=tuple(
            Restriction(
                r.plugin,
                tuple(r.permissions),
                tuple(authz_pb2.Action.Name(a).lower() for a in r.actions if a in (1, 2, 3, 4)),
            )
            for r in message.access_restrictions
        ),
        unrestricted=message.unrestricted,
        state=authz_pb2.State.Name(message.state).lower(),
        etag=message.etag,
        create_time=_time(message, "create_time"),
        update_time=_time(message, "update_time"),
        revoke_time=_time(message, "revoke_time"),
        expire_time=_time(message, "expire_time"),
        last_used_time=_time(message, "last_used_time"),
        revoke_reason=message.revoke_reason,
        previous_token_expire_time=_time(message, "previous_token_expire_time"),
    )


def audit_event_from_message(message: authz_pb2.AuditEvent) -> AuditEvent:
    """The plain AuditEvent for an `authz.v1.AuditEvent`."""
    return AuditEvent(
        sequence=message.sequence,
        time=message.time.ToDatetime(tzinfo=UTC),
        actor_entry_id=message.actor_entry_id,
        actor_subject=message.actor_subject,
        rpc=message.rpc,
        entry_id=message.entry_id,
        changes=tuple(FieldChange(c.field, c.before, c.after) for c in message.changes),
        code=message.code,
        peer=message.peer,
        user_agent=message.user_agent,
        previous_hash=message.previous_hash,
        hash=message.hash,
    )


def restriction_messages(restrictions: Sequence[Restriction]) -> list[authz_pb2.AccessRestriction]:
    """`authz.v1.AccessRestriction` messages for plain restrictions."""
    return [
        authz_pb2.AccessRestriction(
            plugin=r.plugin,
            permissions=list(r.permissions),
            actions=[a.upper() for a in r.actions],  # enum names
        )
        for r in restrictions
    ]


def action_number(action: str | None) -> int:
    """The `authz.v1.Action` number for an action name (0 for None); InvalidArgument, before
    anything is sent, for a name that is not one."""
    if not action:
        return 0
    if action.lower() not in ACTIONS:
        problem = f"unknown action {action!r}; use {', '.join(ACTIONS)}"
        raise InvalidArgument(f"action: {problem}", (FieldViolation("action", problem),))
    return authz_pb2.Action.Value(action.upper())


def check_result(response: authz_pb2.CheckResponse) -> CheckResult:
    """The plain CheckResult for a CheckResponse."""
    return CheckResult(
        allowed=response.decision == authz_pb2.ALLOW,
        http_status=response.http_status,
        reason=response.reason,
        subject=response.subject,
        entry_id=response.entry_id,
        code=response.code,
    )


def timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp for an aware datetime."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when.astimezone(UTC))
    return stamp


def _time(message: authz_pb2.Entry, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=UTC)
