"""In-memory stand-ins for the ports the use cases need: an entry store and a token hasher.

`InMemoryStore` keeps the semantics of `SqliteFile` (the contract suite in
`tests/integration/test_store_contract.py` runs against both, each behind `ThreadedStore` as
the server runs them), so unit tests of the use cases learn what the real store would do,
without a file. Tests set up and inspect it directly, and hand `memory_port(store)` to the
use cases.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from authz_service.adapters.threaded_store import ThreadedStore
from authz_service.core.audit import AuditEvent, AuditFilter, AuditRecord, chain_hash
from authz_service.core.changes import Change, ChangeKind, Changes, ClaimChanged, Event
from authz_service.core.errors import Aborted, AlreadyExists, NotFound
from authz_service.core.model import Entry, State
from authz_service.core.ports import Cursor


def memory_port(store: InMemoryStore | None = None) -> ThreadedStore:
    """The `EntryStore` port over an in-memory store, with threads as the server's has."""
    return ThreadedStore(store if store is not None else InMemoryStore())


class InMemoryStore:
    """A blocking store in a dict (see `ThreadedStore`). Thread-safe: it is called from the
    store's reader and writer threads, and from tests."""

    def __init__(self) -> None:
        self._fingerprint: str | None = None
        self._audit: list[AuditEvent] = []
        self._entries: dict[str, Entry] = {}
        self._retired: list[tuple[int, str]] = []  # (lookup tag, verifier)
        self._events: list[Event] = []
        self._lock = threading.Lock()
        # Moves at every write, as `PRAGMA data_version` does for another connection's commit.
        self._version = 0
        self.closed = False

    def version(self) -> int:
        """Moves at every write (record_use included)."""
        with self._lock:
            return self._version

    def head(self) -> int:
        """The newest event's revision."""
        with self._lock:
            return self._events[-1].revision if self._events else 0

    def changes(self, after: int) -> Changes:
        """Every event past `after`, and the entries they name now."""
        with self._lock:
            events = tuple(e for e in self._events if e.revision > after)
            return Changes(events, {e.entry_id: self._entries[e.entry_id] for e in events})

    def events(self) -> list[Event]:
        """Every event appended so far, oldest first."""
        with self._lock:
            return list(self._events)

    def add(self, entry: Entry, change: Change | None = None) -> Event:
        """Insert a new entry; AlreadyExists if its id, or its subject among unrevoked entries,
        is taken (a revoked entry may share a subject, as the partial unique index allows)."""
        change = change or Change()
        with self._lock:
            self._hold(change)
            taken = entry.id in self._entries or (
                entry.revoke_time is None and self._unrevoked(entry.subject) is not None
            )
            if taken:
                raise AlreadyExists("subject: an unrevoked entry already has this subject")
            self._entries[entry.id] = entry
            return self._append(entry, ChangeKind.CREATED, change)

    def get(self, entry_id: str) -> Entry:
        """The entry with this id; NotFound if there is none."""
        with self._lock:
            try:
                return self._entries[entry_id]
            except KeyError:
                raise NotFound(entry_id) from None

    def find_subject(self, subject: str) -> Entry | None:
        """The unrevoked entry with this subject, if any."""
        with self._lock:
            return self._unrevoked(subject)

    def find_tag(self, tag: int) -> list[Entry]:
        """Every entry, revoked ones included, whose token or previous token has this tag."""
        with self._lock:
            return [
                e for e in self._entries.values() if tag in {e.lookup_tag, e.previous_lookup_tag}
            ]

    def replace(self, entry: Entry, change: Change | None = None) -> Event:
        """Write `entry` over revision `entry.revision - 1`; NotFound or Aborted otherwise.

        Every field but `last_used_time` (owned by `record_use`) and the token (owned by
        `rotate`) is written, as the SQLite store does. A write that would leave two unrevoked
        entries with one subject raises AlreadyExists (as the SQLite unique index does).
        """
        kind = ChangeKind.REVOKED if entry.revoke_time is not None else ChangeKind.UPDATED
        return self._write_over(entry, kind, change or Change())

    def rotate(self, entry: Entry, change: Change | None = None) -> Event:
        """`replace` with the entry's new token; the old verifier is retired."""
        return self._write_over(entry, ChangeKind.ROTATED, change or Change())

    def _write_over(self, entry: Entry, kind: ChangeKind, change: Change) -> Event:
        rotate = kind is ChangeKind.ROTATED
        with self._lock:
            self._hold(change)
            current = self._entries.get(entry.id)
            if current is None:
                raise NotFound(entry.id)
            if current.revision != entry.revision - 1:
                raise Aborted("etag: the entry changed since it was read; read it again")
            holder = self._unrevoked(entry.subject) if entry.revoke_time is None else None
            if holder is not None and holder.id != entry.id:
                raise AlreadyExists("subject: an unrevoked entry already has this subject")
            if rotate:
                self._retired.append((current.lookup_tag, current.verifier))
            else:
                entry = replace(entry, verifier=current.verifier, lookup_tag=current.lookup_tag)
            self._entries[entry.id] = replace(entry, last_used_time=current.last_used_time)
            return self._append(entry, kind, change)

    def _hold(self, change: Change) -> None:
        """As the SQLite store does in its transaction: the guard, then the claim."""
        if change.guard is not None:
            change.guard(self._entries.get(change.actor_id) if change.actor_id else None)
        claim = change.claim
        if claim is not None:
            stored = [e.verifier for e in self._entries.values() if e.lookup_tag == claim.tag]
            stored += [verifier for tag, verifier in self._retired if tag == claim.tag]
            if any(verifier not in claim.checked for verifier in stored):
                raise ClaimChanged

    def _append(self, entry: Entry, kind: ChangeKind, change: Change) -> Event:
        if change.audit is not None:
            self._append_audit(change.audit)
        event = Event(
            len(self._events) + 1, entry.id, kind, change.actor_id, change.fields, entry.update_time
        )
        self._events.append(event)
        self._version += 1
        return event

    def all_tags(self) -> set[int]:
        """The lookup tag of every entry, revoked ones included."""
        with self._lock:
            tags = {e.lookup_tag for e in self._entries.values()}
            return tags | {
                e.previous_lookup_tag
                for e in self._entries.values()
                if e.previous_lookup_tag is not None
            }

    def find_retired(self, tag: int) -> list[str]:
        """Verifiers of rotated-away tokens with this lookup tag."""
        with self._lock:
            return [verifier for retired_tag, verifier in self._retired if retired_tag == tag]

    def replace_verifier(self, entry_id: str, old: str, new: str) -> None:
        """Swap the verifier if it is still `old`; silently nothing otherwise."""
        with self._lock:
            current = self._entries.get(entry_id)
            if current is not None and current.verifier == old:
                self._entries[entry_id] = replace(current, verifier=new)
                self._version += 1

    def list_entries(self, after: Cursor | None, limit: int, include_revoked: bool) -> list[Entry]:
        """Up to `limit` entries ordered by (create_time, id), strictly after `after`."""
        with self._lock:
            ordered = sorted(self._entries.values(), key=lambda e: (e.create_time, e.id))
        return [
            e
            for e in ordered
            if (after is None or (e.create_time, e.id) > after)
            and (include_revoked or e.revoke_time is None)
        ][:limit]

    def record_use(self, last_used: Mapping[str, datetime]) -> None:
        """Move `last_used_time` forward (never back); unknown ids are ignored."""
        with self._lock:
            for entry_id, when in last_used.items():
                current = self._entries.get(entry_id)
                if current is None:
                    continue
                if current.last_used_time is None or when > current.last_used_time:
                    self._entries[entry_id] = replace(current, last_used_time=when)
            self._version += 1

    def count_by_state(self, now: datetime) -> dict[State, int]:
        """Entries by state at `now`."""
        counts = dict.fromkeys(State, 0)
        with self._lock:
            for entry in self._entries.values():
                counts[entry.state(now)] += 1
        return counts

    def _append_audit(self, record: AuditRecord) -> AuditEvent:
        sequence = len(self._audit) + 1
        previous = self._audit[-1].hash if self._audit else ""
        event = AuditEvent(sequence, record, previous, chain_hash(previous, sequence, record))
        self._audit.append(event)
        return event

    def record_audit(self, record: AuditRecord) -> AuditEvent:
        with self._lock:
            return self._append_audit(record)

    def list_audit(self, after: int, limit: int, wanted: AuditFilter) -> list[AuditEvent]:
        with self._lock:
            found = [
                event
                for event in self._audit
                if event.sequence > after and _wanted(event.record, wanted)
            ]
        return found[:limit]

    def audit(self) -> list[AuditEvent]:
        """Every audit event so far, oldest first (for tests)."""
        with self._lock:
            return list(self._audit)

    def key_fingerprint(self) -> str | None:
        return self._fingerprint

    def keep_key_fingerprint(self, fingerprint: str) -> str:
        with self._lock:
            if self._fingerprint is None:
                self._fingerprint = fingerprint
            return self._fingerprint

    def holds_entries(self) -> bool:
        return bool(self._entries)

    def close(self) -> None:
        """Nothing to release; remembered so tests can see it was called."""
        self.closed = True

    def snapshot(self) -> tuple[dict[str, Entry], list[tuple[int, str]]]:
        """A copy of every stored entry by id and of the retired verifiers, to assert that a
        refused call wrote nothing."""
        with self._lock:
            return dict(self._entries), list(self._retired)

    def _unrevoked(self, subject: str) -> Entry | None:
        return next(
            (e for e in self._entries.values() if e.subject == subject and e.revoke_time is None),
            None,
        )


class FakeHasher:
    """`Hasher` that is fast but keeps the shape of the real one.

    Verifiers look like `fake$v<version>$<salt>$<sha256(salt + token)>`: salted (two hashes of
    one token differ), never the token, and checkable without the token's plaintext. Raising
    `version` makes older verifiers report `needs_rehash`, as raising argon2 parameters does.
    """

    def __init__(self, version: int = 1) -> None:
        self.version = version
        self._salts = itertools.count(1)
        self._lock = threading.Lock()
        self._verify_calls = 0
        self._hash_calls = 0

    @property
    def verify_calls(self) -> int:
        """How many times `verify` ran (the stand-in for argon2 work)."""
        with self._lock:
            return self._verify_calls

    @property
    def hash_calls(self) -> int:
        """How many verifiers `hash` made."""
        with self._lock:
            return self._hash_calls

    def hash(self, token: str) -> str:
        """A new salted verifier for `token`."""
        with self._lock:
            self._hash_calls += 1
            salt = f"{next(self._salts):08x}"
        return f"fake$v{self.version}${salt}${_digest(salt, token)}"

    def verify(self, verifier: str, token: str) -> bool:
        """Whether `token` matches `verifier`; malformed verifiers match nothing."""
        with self._lock:
            self._verify_calls += 1
        parts = verifier.split("$")
        if len(parts) != 4 or parts[0] != "fake":
            return False
        return hmac.compare_digest(parts[3], _digest(parts[2], token))

    def needs_rehash(self, verifier: str) -> bool:
        """Whether `verifier` was made at an older `version` than the current one."""
        return not verifier.startswith(f"fake$v{self.version}$")


def _digest(salt: str, token: str) -> str:
    return hashlib.sha256((salt + token).encode("utf-8", "surrogatepass")).hexdigest()


def _wanted(record: AuditRecord, wanted: AuditFilter) -> bool:
    return (
        (not wanted.entry_id or record.entry_id == wanted.entry_id)
        and (not wanted.actor_entry_id or record.actor_entry_id == wanted.actor_entry_id)
        and (wanted.since is None or record.time >= wanted.since)
        and (wanted.until is None or record.time < wanted.until)
    )
