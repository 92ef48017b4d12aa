"""The interfaces the use cases need from the outside world: storage and token hashing.

Adapters implement them (SQLite and argon2 today, PostgreSQL later); tests use in-memory fakes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from .model import Entry, State

# Where a listing resumes: the (create_time, id) of the last entry already returned.
Cursor = tuple[datetime, str]


class EntryStore(Protocol):
    """Durable storage of entries. Every write is durable when the method returns."""

    def add(self, entry: Entry) -> None:
        """Insert a new entry; AlreadyExists if an unrevoked entry has its subject."""

    def get(self, entry_id: str) -> Entry:
        """The entry with this id; NotFound if there is none."""

    def find_subject(self, subject: str) -> Entry | None:
        """The unrevoked entry with this subject, if any."""

    def find_tag(self, tag: int) -> list[Entry]:
        """Every entry, revoked ones included, whose token has this lookup tag."""

    def all_tags(self) -> set[int]:
        """The lookup tag of every entry, revoked ones included."""

    def replace(self, entry: Entry) -> None:
        """Write `entry` over revision `entry.revision - 1`; Aborted if it moved on meanwhile.

        The token (verifier and lookup tag) is left as stored: only `rotate` changes it.
        """

    def rotate(self, entry: Entry) -> None:
        """`replace`, with the entry's new token; the old verifier is retired in the same write."""

    def find_retired(self, tag: int) -> list[str]:
        """The verifiers of rotated-away tokens with this lookup tag."""

    def replace_verifier(self, entry_id: str, old: str, new: str) -> None:
        """Swap a verifier for a stronger one of the same token, if it is still `old`."""

    def list_entries(self, after: Cursor | None, limit: int, include_revoked: bool) -> list[Entry]:
        """Up to `limit` entries in creation order, after `after`."""

    def record_use(self, last_used: Mapping[str, datetime]) -> None:
        """Set `last_used_time` of the given entries (a batch; not a revision change)."""

    def count_by_state(self, now: datetime) -> dict[State, int]:
        """How many entries are ACTIVE, REVOKED and EXPIRED at `now` (every state present)."""

    def close(self) -> None:
        """Release the store's connections."""


class Hasher(Protocol):
    """Makes and checks token verifiers (salted, slow hashes; never the token)."""

    def hash(self, token: str) -> str:
        """A new verifier for `token`."""

    def verify(self, verifier: str, token: str) -> bool:
        """Whether `token` matches `verifier`, in constant time."""

    def needs_rehash(self, verifier: str) -> bool:
        """Whether `verifier` was made with weaker parameters than the current ones."""
