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
            "etag": self.etag,
        }


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
