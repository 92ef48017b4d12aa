"""The event log's vocabulary: what an admin write records, and what other processes read back.

Every admin write appends one `Event` in the same transaction as the change. Each process
applies the events past the last revision it applied to its caches before it trusts them
(DESIGN section 8), so the log is the one source from which every process learns what changed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from .audit import AuditRecord
from .model import Entry


class ChangeKind(enum.StrEnum):
    """What a write did to its entry."""

    CREATED = "created"
    UPDATED = "updated"
    ROTATED = "rotated"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Claim:
    """The token a create or a rotation takes, as the store can check it at commit time: its
    lookup tag, and every verifier with that tag that the caller already found not to be it.

    The store commits only while the verifiers stored under the tag (entries' and retired
    tokens') are all among `checked`; otherwise it raises `ClaimChanged`, and the caller
    verifies the newcomers and tries again. So of two processes taking one token at once,
    exactly one succeeds, and the database never holds anything that verifies a guess cheaply.
    """

    tag: int
    checked: frozenset[str] = frozenset()


# Runs inside the write's transaction with the acting admin's entry as stored then (None when
# there is none); it raises to refuse the write. This is how "the admin may still do this"
# holds at commit time even when another process revoked or narrowed it meanwhile.
Guard = Callable[[Entry | None], None]


@dataclass(frozen=True, slots=True)
class Change:
    """What a write records with itself, and what must still hold when it commits."""

    # The acting admin's entry id ("" for the bootstrap and for writes no admin made).
    actor_id: str = ""
    # The entry fields the write set (for the audit log; never a token or a verifier).
    fields: tuple[str, ...] = ()
    claim: Claim | None = None
    guard: Guard | None = field(default=None, compare=False)
    # The audit log's record of the call, appended and chained in the same transaction.
    audit: AuditRecord | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Event:
    """One appended event. Revisions strictly increase and are never reused."""

    revision: int
    entry_id: str
    kind: ChangeKind
    actor_id: str
    fields: tuple[str, ...]
    time: datetime


@dataclass(frozen=True, slots=True)
class Changes:
    """Events past some revision, oldest first, with the current state of every entry they name.

    `more` says the store cut the batch short: read again after `events[-1].revision`.
    """

    events: tuple[Event, ...] = ()
    entries: Mapping[str, Entry] = field(default_factory=dict)
    more: bool = False


class ClaimChanged(Exception):
    """A create or rotation found new verifiers under its token's tag at commit time."""
