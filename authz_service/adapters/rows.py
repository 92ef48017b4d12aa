"""The rows both stores keep (SQLite and PostgreSQL share one schema): how an entry and an
event are written as columns and read back, and the two steps every write's transaction takes
(`hold`: the guard and the claim still hold; `append`: the event).

Statements use `?` placeholders; the PostgreSQL store translates them (none of its SQL holds a
literal `?`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from authz_service.core.audit import AuditEvent, AuditFilter, AuditRecord, chain_hash
from authz_service.core.changes import Change, ChangeKind, ClaimChanged, Event
from authz_service.core.errors import Aborted, NotFound
from authz_service.core.model import Action, Entry, Restriction, from_micros, to_micros

COLUMNS = (
    "id, subject, description, restrictions, unrestricted, verifier, lookup_tag, create_time,"
    " update_time, revision, expire_time, revoke_time, revoke_reason, last_used_time, etag,"
    " previous_verifier, previous_lookup_tag, previous_expire_time"
)
EVENT_COLUMNS = "revision, entry_id, kind, actor_id, fields, time"
AUDIT_COLUMNS = (
    "sequence, time, actor_entry_id, actor_subject, rpc, entry_id, changes, code, peer,"
    " user_agent, previous_hash, hash"
)


class Rows(Protocol):
    """A cursor's answer (sqlite3's and psycopg's both)."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


# Runs one statement in the write's transaction.
Execute = Callable[[str, Sequence[Any]], Rows]


def hold(execute: Execute, change: Change) -> None:
    """Inside a write's transaction: refuse it unless its guard and its claim still hold."""
    if change.guard is not None:
        actor = None
        if change.actor_id:
            rows = execute(f"SELECT {COLUMNS} FROM entries WHERE id = ?", [change.actor_id])  # noqa: S608 (columns are ours)
            found = rows.fetchone()
            actor = None if found is None else entry_from_row(found)
        change.guard(actor)
    claim = change.claim
    if claim is not None:
        stored = execute(
            "SELECT verifier FROM entries WHERE lookup_tag = ?"
            " UNION ALL SELECT verifier FROM retired_tokens WHERE lookup_tag = ?",
            [claim.tag, claim.tag],
        ).fetchall()
        if any(verifier not in claim.checked for (verifier,) in stored):
            raise ClaimChanged


def write_over(execute: Execute, entry: Entry, kind: ChangeKind, change: Change) -> Event:
    """Inside a write's transaction: `entry` over revision `entry.revision - 1` (compare and
    set), its event appended; NotFound or Aborted (the transaction to be rolled back) otherwise.

    `last_used_time` is left alone (`record_use` owns it), and so is the token unless `kind`
    is a rotation (a rehash may have replaced the verifier since `entry` was read), which
    retires the old verifier.
    """
    rotate = kind is ChangeKind.ROTATED
    row = entry_row(entry)
    entry_id = row.pop("id")
    del row["last_used_time"]
    if not rotate:
        del row["verifier"], row["lookup_tag"]
    hold(execute, change)
    if rotate:
        execute(
            "INSERT INTO retired_tokens (entry_id, lookup_tag, verifier, retire_time)"
            " SELECT id, lookup_tag, verifier, ? FROM entries WHERE id = ? AND revision = ?",
            [row["update_time"], entry_id, entry.revision - 1],
        )
    assignments = ", ".join(f"{column} = ?" for column in row)
    updated = execute(
        f"UPDATE entries SET {assignments} WHERE id = ? AND revision = ?",  # noqa: S608 (column names are ours)
        [*row.values(), entry_id, entry.revision - 1],
    )
    if updated.rowcount == 1:
        return append(execute, entry, kind, change)
    if execute("SELECT 1 FROM entries WHERE id = ?", [entry_id]).fetchone() is None:
        raise NotFound(entry_id)
    raise Aborted("etag: the entry changed since it was read; read it again")


def append(execute: Execute, entry: Entry, kind: ChangeKind, change: Change) -> Event:
    """Append the write's event, and its audit record if it has one, in its transaction."""
    if change.audit is not None:
        append_audit(execute, change.audit)
    (revision,) = execute(
        "INSERT INTO events (entry_id, kind, actor_id, fields, time) VALUES (?, ?, ?, ?, ?)"
        " RETURNING revision",
        [
            entry.id,
            kind.value,
            change.actor_id,
            json.dumps(change.fields),
            to_micros(entry.update_time),
        ],
    ).fetchone()
    return Event(revision, entry.id, kind, change.actor_id, change.fields, entry.update_time)


def event_from_row(row: tuple[Any, ...]) -> Event:
    revision, entry_id, kind, actor_id, fields, when = row
    return Event(
        revision, entry_id, ChangeKind(kind), actor_id, tuple(json.loads(fields)), from_micros(when)
    )


def entry_row(entry: Entry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "subject": entry.subject,
        "description": entry.description,
        "restrictions": json.dumps(
            [
                {
                    "plugin": r.plugin,
                    "permissions": list(r.permissions),
                    "actions": [a.name.lower() for a in r.actions],
                }
                for r in entry.restrictions
            ]
        ),
        "unrestricted": int(entry.unrestricted),
        "verifier": entry.verifier,
        "lookup_tag": entry.lookup_tag,
        "create_time": to_micros(entry.create_time),
        "update_time": to_micros(entry.update_time),
        "revision": entry.revision,
        "expire_time": _micros(entry.expire_time),
        "revoke_time": _micros(entry.revoke_time),
        "revoke_reason": entry.revoke_reason,
        "last_used_time": _micros(entry.last_used_time),
        "etag": entry.etag,
        "previous_verifier": entry.previous_verifier,
        "previous_lookup_tag": entry.previous_lookup_tag,
        "previous_expire_time": _micros(entry.previous_expire_time),
    }


def entry_from_row(row: tuple[Any, ...]) -> Entry:
    (
        entry_id,
        subject,
        description,
        restrictions,
        unrestricted,
        verifier,
        tag,
        created,
        updated,
        revision,
        expires,
        revoked,
        revoke_reason,
        last_used,
        etag,
        previous_verifier,
        previous_tag,
        previous_expires,
    ) = row
    return Entry(
        id=entry_id,
        subject=subject,
        description=description,
        restrictions=tuple(
            Restriction(
                r["plugin"],
                tuple(r["permissions"]),
                tuple(Action[a.upper()] for a in r["actions"]),
            )
            for r in json.loads(restrictions)
        ),
        unrestricted=bool(unrestricted),
        verifier=verifier,
        lookup_tag=tag,
        create_time=from_micros(created),
        update_time=from_micros(updated),
        revision=revision,
        expire_time=_datetime(expires),
        revoke_time=_datetime(revoked),
        revoke_reason=revoke_reason,
        last_used_time=_datetime(last_used),
        etag=etag,
        previous_verifier=previous_verifier,
        previous_lookup_tag=previous_tag,
        previous_expire_time=_datetime(previous_expires),
    )


def _micros(when: datetime | None) -> int | None:
    return None if when is None else to_micros(when)


def _datetime(micros: int | None) -> datetime | None:
    return None if micros is None else from_micros(micros)


def append_audit(execute: Execute, record: AuditRecord) -> AuditEvent:
    """Number `record` after the newest audit event and chain it, in the caller's transaction
    (which holds the store's write lock: no other append comes in between)."""
    last = execute("SELECT sequence, hash FROM audit_events ORDER BY sequence DESC LIMIT 1", ())
    newest = last.fetchone()
    sequence, previous = (1, "") if newest is None else (int(newest[0]) + 1, str(newest[1]))
    event = AuditEvent(sequence, record, previous, chain_hash(previous, sequence, record))
    execute(
        f"INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 (columns are ours)
        [
            sequence,
            to_micros(record.time),
            record.actor_entry_id,
            record.actor_subject,
            record.rpc,
            record.entry_id,
            json.dumps([list(change) for change in record.changes], ensure_ascii=False),
            record.code,
            record.peer,
            record.user_agent,
            previous,
            event.hash,
        ],
    )
    return event


def audit_query(after: int, limit: int, wanted: AuditFilter) -> tuple[str, list[Any]]:
    """The SELECT (with `?` placeholders) of up to `limit` audit events past `after`, oldest
    first, that `wanted` wants."""
    where, params = ["sequence > ?"], list[Any]([after])
    if wanted.entry_id:
        where.append("entry_id = ?")
        params.append(wanted.entry_id)
    if wanted.actor_entry_id:
        where.append("actor_entry_id = ?")
        params.append(wanted.actor_entry_id)
    if wanted.since is not None:
        where.append("time >= ?")
        params.append(to_micros(wanted.since))
    if wanted.until is not None:
        where.append("time < ?")
        params.append(to_micros(wanted.until))
    clause = " AND ".join(where)
    return (
        f"SELECT {AUDIT_COLUMNS} FROM audit_events WHERE {clause} ORDER BY sequence LIMIT ?",  # noqa: S608 (clauses are ours)
        [*params, limit],
    )


def audit_from_row(row: Sequence[Any]) -> AuditEvent:
    (
        sequence,
        when,
        actor_id,
        actor_subject,
        rpc,
        entry_id,
        changes,
        code,
        peer,
        agent,
        previous,
        digest,
    ) = row
    record = AuditRecord(
        time=from_micros(when),
        actor_entry_id=actor_id,
        actor_subject=actor_subject,
        rpc=rpc,
        entry_id=entry_id,
        changes=tuple((field, before, after) for field, before, after in json.loads(changes)),
        code=code,
        peer=peer,
        user_agent=agent,
    )
    return AuditEvent(int(sequence), record, previous, digest)


def listing_clause(
    after: tuple[datetime, str] | None, limit: int, include_revoked: bool
) -> tuple[str, tuple[Any, ...]]:
    """The WHERE/ORDER/LIMIT (with `?` placeholders) of up to `limit` entries in creation
    order after the cursor `after`, revoked ones only when asked for."""
    where: list[str] = []
    params: list[Any] = []
    if after is not None:
        where.append("(create_time, id) > (?, ?)")
        params += [to_micros(after[0]), after[1]]
    if not include_revoked:
        where.append("revoke_time IS NULL")
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    return f"{clause} ORDER BY create_time, id LIMIT ?", (*params, limit)
