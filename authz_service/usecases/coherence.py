"""Cross-process coherence: this process's caches follow the store's event log.

Check asks the store's change feed whether anything was committed since it last caught up (on
SQLite, a read of the WAL index's header in shared memory: no I/O, no thread hop) before it
trusts its cache; when something was, it applies the events past the last revision it applied
first. An admin write applies its own event before it returns. So once any process's admin RPC
returns, every process answers by it on its very next Check (DESIGN section 8).

Where processes do not share a machine (PostgreSQL replicas), the store also tells each one
when events were committed (`watch`): the follower then catches up at once, without waiting for
a Check, and acknowledges the revision it applied; a write returns once every other live
replica has (`settle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from authz_service.core.errors import AuthzError, Unavailable
from authz_service.core.ports import EntryStore

from .cache import TokenCache

log = logging.getLogger("authz_service.coherence")

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
        self._acknowledged = 0
        self._reading: asyncio.Task[None] | None = None
        self._following: asyncio.Task[None] | None = None
        self._told = False

    async def start(self) -> None:
        """Load the known tags and the newest revision, before the first Check."""
        seen = self.version()
        self.applied = await self._store.head()
        self._cache.known_tags |= await self._store.all_tags()
        self.seen = seen
        loop = asyncio.get_running_loop()

        def told() -> None:  # on the store's thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to follow
                loop.call_soon_threadsafe(self._follow)

        self._store.watch(told)

    def _follow(self) -> None:
        """Catch up and acknowledge, one round at a time: notices that come during a round
        make one more round after it."""
        self._told = True
        following = self._following
        if following is None or following.done():
            following = self._following = asyncio.ensure_future(self._follow_told())
            following.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _follow_told(self) -> None:
        while self._told:
            self._told = False
            try:
                await self.catch_up()
                if self.applied > self._acknowledged:
                    applied = self.applied
                    await self._store.acknowledge(applied)
                    self._acknowledged = applied
            except AuthzError as exc:  # the store is away: its next notice (a reconnect) retries
                log.warning("could not follow the event log: %s", exc)
                return

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
