"""The interfaces the use cases need from the outside world: storage and token hashing.

Adapters implement them (SQLite, PostgreSQL and argon2); tests use in-memory fakes.
The store is awaited: an adapter owns its connections and the threads (or the event loop
sessions) that use them, and the use cases never block on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol

from .audit import AuditEvent, AuditFilter, AuditRecord
from .changes import Change, Changes, Event
from .model import Entry, State

# Where a listing resumes: the (create_time, id) of the last entry already returned.
Cursor = tuple[datetime, str]


class ChangeFeed(Protocol):
    """How a process learns what other processes wrote: the store's event log."""

    def version(self) -> object:
        """A value (compared with `!=`) that differs from its last one once anything was
        committed since, by any process.

        Cheap (no thread hop, no I/O, well under a microsecond): Check asks it before it
        trusts its cache.
        """

    async def head(self) -> int:
        """The revision of the newest event (0 when there is none)."""

    async def changes(self, after: int) -> Changes:
        """The events past revision `after`, oldest first, and the entries they name now."""

    def watch(self, on_events: Callable[[], object]) -> None:
        """Call `on_events` (from any thread) whenever events may have been committed, where
        the store can tell (PostgreSQL's notifications); a store whose every process asks
        `version()` before each Check never calls it."""

    async def acknowledge(self, revision: int) -> None:
        """Tell the writers waiting in `settle` that this process applied up to `revision`."""

    async def settle(self, revision: int) -> None:
        """Return once every other live process has applied `revision` (acknowledged it) or
        can no longer answer from its cache (its lease ran out); Unavailable past that."""

    def problem(self) -> str | None:
        """Why this process must not report SERVING now (one line), or None."""


class EntryStore(ChangeFeed, Protocol):
    """Durable storage of entries. Every write is durable when it returns, and appends its
    event in the same transaction."""

    async def add(self, entry: Entry, change: Change | None = None) -> Event:
        """Insert a new entry; AlreadyExists if an unrevoked entry has its subject."""

    async def get(self, entry_id: str) -> Entry:
        """The entry with this id; NotFound if there is none."""

    async def find_subject(self, subject: str) -> Entry | None:
        """The unrevoked entry with this subject, if any."""

    async def find_tag(self, tag: int) -> list[Entry]:
        """Every entry, revoked ones included, whose token has this lookup tag."""

    async def all_tags(self) -> set[int]:
        """The lookup tag of every entry, revoked ones included."""

    async def replace(self, entry: Entry, change: Change | None = None) -> Event:
        """Write `entry` over revision `entry.revision - 1`; Aborted if it moved on meanwhile.

        The token (verifier and lookup tag) is left as stored: only `rotate` changes it. The
        event says `revoked` when `entry` is revoked, `updated` otherwise.
        """

    async def rotate(self, entry: Entry, change: Change | None = None) -> Event:
        """`replace`, with the entry's new token; the old verifier is retired in the same write."""

    async def find_retired(self, tag: int) -> list[str]:
        """The verifiers of rotated-away tokens with this lookup tag."""

    async def replace_verifier(self, entry_id: str, old: str, new: str) -> None:
        """Swap a verifier for a stronger one of the same token, if it is still `old`."""

    async def list_entries(
        self, after: Cursor | None, limit: int, include_revoked: bool
    ) -> list[Entry]:
        """Up to `limit` entries in creation order, after `after`."""

    async def record_use(self, last_used: Mapping[str, datetime]) -> None:
        """Set `last_used_time` of the given entries (a batch; no event, not a revision)."""

    async def count_by_state(self, now: datetime) -> dict[State, int]:
        """How many entries are ACTIVE, REVOKED and EXPIRED at `now` (every state present)."""

    async def record_audit(self, record: AuditRecord) -> AuditEvent:
        """Append an audit record that goes with no write (an admin call refused)."""

    async def list_audit(self, after: int, limit: int, wanted: AuditFilter) -> list[AuditEvent]:
        """Up to `limit` audit events past sequence `after` that `wanted` wants, oldest first."""

    async def key_fingerprint(self) -> str | None:
        """The fingerprint of the server key this database belongs to (None: none kept)."""

    async def keep_key_fingerprint(self, fingerprint: str) -> str:
        """Keep `fingerprint` unless one is kept already; the one kept now."""

    async def holds_entries(self) -> bool:
        """Whether any entry exists, revoked ones included."""

    def close(self) -> None:
        """Finish queued work and release the store's connections and threads."""


class Hasher(Protocol):
    """Makes and checks token verifiers (salted, slow hashes; never the token)."""

    def hash(self, token: str) -> str:
        """A new verifier for `token`."""

    def verify(self, verifier: str, token: str) -> bool:
        """Whether `token` matches `verifier`, in constant time."""

    def needs_rehash(self, verifier: str) -> bool:
        """Whether `verifier` was made with weaker parameters than the current ones."""
