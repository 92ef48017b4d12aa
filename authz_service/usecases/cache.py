"""What a process remembers about tokens, and how the event log keeps it true.

Three memories, all keyed by a token's full HMAC (never the token, never persisted): verified
tokens and the policy each one has now, wrong tokens whose tag matched some entry (replayed,
each would cost an argon2 verify), and the lookup tags the store holds (a tag outside them is
a miss with no store query). Plus the verifies in flight, and what each one read: a write to
one of those entries, or one that gives out a token with the flight's tag, drops it, and a
dropped flight lands nothing.

`apply` brings all of it up to date with events from the store's change feed, whichever
process wrote them (see `coherence.Follower`).
"""

from __future__ import annotations

import asyncio

from authz_service.core.changes import ChangeKind, Changes
from authz_service.core.decision import Policy


class TokenCache:
    """The verified-token cache, the wrong-token memory, the known tags and the flights."""

    def __init__(self, size: int) -> None:
        self.size = size
        # digest -> compiled policy; insertion order doubles as eviction order.
        self.verified: dict[bytes, Policy] = {}
        self._digests_of: dict[str, set[bytes]] = {}
        # digest -> lookup tag of wrong tokens; and by tag, to forget them when a write hands
        # out a token with that tag (the write names the tag, never the token).
        self.failed: dict[bytes, int] = {}
        self._failed_by_tag: dict[int, set[bytes]] = {}
        # Every lookup tag in the store, revoked and retired ones included.
        self.known_tags: set[int] = set()
        self.inflight: dict[bytes, asyncio.Task[Policy | None]] = {}
        # digest -> (tag, ids of the candidate entries) each flight read.
        self._flight_reads: dict[bytes, tuple[int, frozenset[str]]] = {}

    def __len__(self) -> int:
        return len(self.verified)

    def remember(self, digest: bytes, policy: Policy) -> None:
        """Cache a verified token's policy, evicting the oldest when full."""
        if len(self.verified) >= self.size:
            oldest = next(iter(self.verified))
            evicted = self.verified.pop(oldest)
            siblings = self._digests_of.get(evicted.entry_id)
            if siblings is not None:
                siblings.discard(oldest)
                if not siblings:
                    del self._digests_of[evicted.entry_id]
        self.verified[digest] = policy
        self._digests_of.setdefault(policy.entry_id, set()).add(digest)

    def remember_wrong(self, digest: bytes, tag: int) -> None:
        """Remember a token that matched no entry of its tag, evicting the oldest when full."""
        if len(self.failed) >= self.size:
            oldest = next(iter(self.failed))
            self._forget_wrong(oldest, self.failed.pop(oldest))
        self.failed[digest] = tag
        self._failed_by_tag.setdefault(tag, set()).add(digest)

    def fly(
        self, digest: bytes, tag: int, read: frozenset[str], flight: asyncio.Task[Policy | None]
    ) -> None:
        """Record a verify in flight and the entries it read."""
        self.inflight[digest] = flight
        self._flight_reads[digest] = (tag, read)

    def landed(self, digest: bytes, flight: asyncio.Task[Policy | None]) -> None:
        """A flight ended: forget it, unless a newer one took its place."""
        if self.inflight.get(digest) is flight:
            del self.inflight[digest]
            del self._flight_reads[digest]

    def flying(self, digest: bytes) -> bool:
        """Whether `asyncio.current_task()` is still the flight for `digest` (not dropped)."""
        return self.inflight.get(digest) is asyncio.current_task()

    def apply(self, changes: Changes) -> None:
        """Bring every memory up to date with these events (from any process's writes)."""
        for event in changes.events:
            entry = changes.entries.get(event.entry_id)
            gave_token = event.kind in {ChangeKind.CREATED, ChangeKind.ROTATED}
            tag = entry.lookup_tag if gave_token and entry is not None else None
            self._drop_flights(event.entry_id, tag)
            if tag is not None:
                # A token with this tag became an entry's: no longer known to be wrong, and
                # Check must look the tag up. (Which token, the event cannot say: every wrong
                # token with the tag is forgotten, the others stay.)
                self.known_tags.add(tag)
                for digest in self._failed_by_tag.pop(tag, ()):
                    self.failed.pop(digest, None)
            if event.kind is ChangeKind.ROTATED or entry is None:
                for digest in self._digests_of.pop(event.entry_id, ()):
                    self.verified.pop(digest, None)
            else:
                digests = self._digests_of.get(entry.id)
                if digests:
                    current = Policy.of(entry)
                    for digest in digests:
                        # A previous token (in its grace) keeps its own end.
                        previous = self.verified[digest].previous
                        self.verified[digest] = (
                            Policy.of(entry, previous=True) if previous else current
                        )

    def _drop_flights(self, entry_id: str, tag: int | None) -> None:
        """Drop the verifies in flight that read this entry, or (for a new token) looked up its
        tag, before the write: checks from now on read the store afresh, and those verifies
        cache nothing. Only those: every other token's first verify still lands."""
        stale = [
            digest
            for digest, (flight_tag, read) in self._flight_reads.items()
            if entry_id in read or flight_tag == tag
        ]
        for digest in stale:
            del self._flight_reads[digest]
            self.inflight.pop(digest, None)

    def _forget_wrong(self, digest: bytes, tag: int) -> None:
        siblings = self._failed_by_tag.get(tag)
        if siblings is not None:
            siblings.discard(digest)
            if not siblings:
                del self._failed_by_tag[tag]
