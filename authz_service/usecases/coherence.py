"""Cross-process coherence: this process's caches follow the store's event log.

Check asks the store's change feed whether anything was committed since it last caught up (on
SQLite, a read of the WAL index's header in shared memory: no I/O, no thread hop) before it
trusts its cache; when something was, it applies the events past the last revision it applied
first. An admin write applies its own event before it returns. So once any process's admin RPC
returns, every process answers by it on its very next Check (DESIGN section 8).
"""

from __future__ import annotations

import asyncio

from authz_service.core.errors import Unavailable
from authz_service.core.ports import EntryStore

from .cache import TokenCache

# Reads of the event log a write waits through for its own event; every read sees every
# committed event, so two are always enough, and more means the store is broken.
_REACH_READS = 8


class Follower:
    """Applies the store's events to a `TokenCache`, once each, in revision order."""

    def __init__(self, store: EntryStore, cache: TokenCache) -> None:
        self._store = store
        self._cache = cache
        # Check compares `version()` with `seen` before trusting the cache: `seen` is the
        # feed's version as it was before the last catch-up read the events.
        self.version = store.version
        self.seen: object = None
        self.applied = 0
        self._reading: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the known tags and the newest revision, before the first Check."""
        seen = self.version()
        self.applied = await self._store.head()
        self._cache.known_tags |= await self._store.all_tags()
        self.seen = seen

    async def catch_up(self) -> None:
        """Apply every event committed before this call; concurrent callers share one read."""
        while self.version() != self.seen:
            await self._read_once()

    async def reach(self, revision: int) -> None:
        """Apply events up to at least `revision` (a write's own, which committed)."""
        for _ in range(_REACH_READS):
            if self.applied >= revision:
                return
            await self._read_once()
        if self.applied < revision:
            raise Unavailable(
                f"the write committed, but this server could not read its event (revision"
                f" {revision}) back; read the entry to see it"
            )

    async def _read_once(self) -> None:
        reading = self._reading
        if reading is None or reading.done():
            reading = self._reading = asyncio.ensure_future(self._read())
            # Retrieved even when every caller gave up, so it is never "never retrieved".
            reading.add_done_callback(lambda done: done.cancelled() or done.exception())
        # shield: one caller's deadline must not cancel the others' catch-up.
        await asyncio.shield(reading)

    async def _read(self) -> None:
        seen = self.version()  # before the read: a commit after it is read next time
        while True:
            changes = await self._store.changes(self.applied)
            self._cache.apply(changes)
            if changes.events:
                self.applied = changes.events[-1].revision
            if not changes.more:
                break
        self.seen = seen
