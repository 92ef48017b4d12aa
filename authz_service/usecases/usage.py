"""When each entry was last used: noted by Check in memory, written to the store in batches."""

from __future__ import annotations

from datetime import UTC, datetime

from authz_service.core.ports import EntryStore


class UsageRecorder:
    """The latest use of each entry since the last flush (seconds since the epoch).

    Check writes `times[entry_id] = now` itself: a dict store is the cheapest note there is.
    Every process flushes its own; the store keeps the latest of all of them.
    """

    def __init__(self, store: EntryStore) -> None:
        self._store = store
        self.times: dict[str, float] = {}

    def last_used(self, entry_id: str) -> datetime | None:
        """The latest use of an entry that is not yet written to the store."""
        seen = self.times.get(entry_id)
        return None if seen is None else datetime.fromtimestamp(seen, UTC)

    async def flush(self) -> None:
        """Write the `last_used_time` of recently used entries to the store, in one batch."""
        if not self.times:
            return
        batch = dict(self.times)
        self.times.clear()  # the same dict: Check holds it
        await self._store.record_use(
            {entry_id: datetime.fromtimestamp(ts, UTC) for entry_id, ts in batch.items()}
        )
