"""The audit log (DESIGN section 9): who changed what, when and from where, hash-chained.

Every admin write records an `AuditRecord` in its own transaction, and so does every admin
call refused to an authenticated admin (PERMISSION_DENIED). The store numbers the records and
chains them: each event's hash is SHA-256 over the previous event's hash and the event's
canonical bytes, so an edited or deleted event breaks the chain. Values are recorded for the
fields a write changed, before and after, as JSON; a token or a verifier never is (a rotation
records only that the token changed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .model import Entry, Restriction

# The server's own writes (the bootstrap) name this RPC and no actor.
BOOTSTRAP_RPC = "(bootstrap)"
PERMISSION_DENIED = 7  # google.rpc.Code


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What one admin call recorded, before the store numbers and chains it."""

    time: datetime
    actor_entry_id: str
    actor_subject: str
    rpc: str
    entry_id: str
    # (field, before, after), each value JSON.
    changes: tuple[tuple[str, str, str], ...]
    code: int
    peer: str
    user_agent: str


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit events a listing wants: "" and None mean any."""

    entry_id: str = ""
    actor_entry_id: str = ""
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """An `AuditRecord` as stored: its place in the chain and its hashes (lowercase hex)."""

    sequence: int
    record: AuditRecord
    previous_hash: str
    hash: str


def canonical_bytes(sequence: int, record: AuditRecord) -> bytes:
    """The bytes an event's hash covers (docs/api.md, "The audit log", says exactly how)."""
    return json.dumps(
        {
            "sequence": sequence,
            "time": record.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor_entry_id": record.actor_entry_id,
            "actor_subject": record.actor_subject,
            "rpc": record.rpc,
            "entry_id": record.entry_id,
            "changes": [list(change) for change in record.changes],
            "code": record.code,
            "peer": record.peer,
            "user_agent": record.user_agent,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")


def chain_hash(previous_hash: str, sequence: int, record: AuditRecord) -> str:
    """The hash of the event `sequence` holding `record`, after the one hashed `previous_hash`."""
    digest = hashlib.sha256(previous_hash.encode("ascii") + b"\n")
    digest.update(canonical_bytes(sequence, record))
    return digest.hexdigest()


def field_changes(
    before: Entry | None, after: Entry, fields: Sequence[str]
) -> tuple[tuple[str, str, str], ...]:
    """The values of `fields` before and after a write, as JSON (null where there was none)."""
    changes = []
    for name in fields:
        if name == "token":  # never a token or a verifier: only that a new one was given
            changes.append((name, "null", json.dumps("(new token)")))
            continue
        was = "null" if before is None else _value(before, name)
        changes.append((name, was, _value(after, name)))
    return tuple(changes)


def _value(entry: Entry, name: str) -> str:
    """One field's value as JSON."""
    value: object
    if name == "access_restrictions":
        value = [_restriction(r) for r in entry.restrictions]
    elif name == "previous_token_expire_time":
        value = _time(entry.previous_expire_time)
    elif name in {"expire_time", "revoke_time", "create_time"}:
        value = _time(getattr(entry, name))
    else:
        value = getattr(entry, name)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _restriction(restriction: Restriction) -> dict[str, object]:
    return {
        "plugin": restriction.plugin,
        "permissions": list(restriction.permissions),
        "actions": [action.name for action in restriction.actions],
    }


def _time(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
