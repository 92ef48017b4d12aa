"""`EntryStore` over a blocking store: reads on a few reader threads, writes on one writer thread.

A blocking store (the SQLite file, the tests' in-memory store) does its work on whatever
thread calls it. This adapter owns those threads, so the use cases await the store and the
event loop never waits for a disk: reads run concurrently, writes one at a time in the order
they were made, the change feed's reads on a thread of their own, and an fsync never stalls a
Check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol, TypeVar

from authz_service.core.audit import AuditEvent, AuditFilter, AuditRecord
from authz_service.core.changes import Change, Changes, Event
from authz_service.core.model import Entry, State
from authz_service.core.ports import Cursor

T = TypeVar("T")
READER_THREADS = 2


class BlockingStore(Protocol):
    """The store's work, done on the calling thread: `EntryStore` without the awaits."""

    def version(self) -> object: ...
    def head(self) -> int: ...
    def changes(self, after: int) -> Changes: ...
    def add(self, entry: Entry, change: Change | None = None) -> Event: ...
    def get(self, entry_id: str) -> Entry: ...
    def find_subject(self, subject: str) -> Entry | None: ...
    def find_tag(self, tag: int) -> list[Entry]: ...
    def all_tags(self) -> set[int]: ...
    def replace(self, entry: Entry, change: Change | None = None) -> Event: ...
    def rotate(self, entry: Entry, change: Change | None = None) -> Event: ...
    def find_retired(self, tag: int) -> list[str]: ...
    def replace_verifier(self, entry_id: str, old: str, new: str) -> None: ...
    def list_entries(
        self, after: Cursor | None, limit: int, include_revoked: bool
    ) -> list[Entry]: ...
    def record_use(self, last_used: Mapping[str, datetime]) -> None: ...
    def count_by_state(self, now: datetime) -> dict[State, int]: ...
    def record_audit(self, record: AuditRecord) -> AuditEvent: ...
    def list_audit(self, after: int, limit: int, wanted: AuditFilter) -> list[AuditEvent]: ...
    def key_fingerprint(self) -> str | None: ...
    def keep_key_fingerprint(self, fingerprint: str) -> str: ...
    def holds_entries(self) -> bool: ...
    def close(self) -> None: ...


class ThreadedStore:
    """`EntryStore` on `blocking`, with threads of its own."""

    def __init__(self, blocking: BlockingStore, *, readers: int = READER_THREADS) -> None:
        self.blocking = blocking
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="store-reader")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        # The change feed's reads have a thread of their own: Checks waiting for a catch-up
        # never queue behind a long listing or a burst of cold lookups.
        self._feed = ThreadPoolExecutor(1, thread_name_prefix="store-feed")
        # On the caller's thread: the feed's version is the cheap question Check asks.
        self.version = blocking.version

    async def head(self) -> int:
        return await self._run(self._feed, self.blocking.head)

    def problem(self) -> str | None:
        """Why this process must not report SERVING now (one line), or None."""
        return None

    def watch(self, on_events: Callable[[], object]) -> None:
        """Nothing to watch: every process on this store asks `version()` before it trusts
        its cache (one machine, one file)."""

    async def acknowledge(self, revision: int) -> None:
        """Nobody waits for this process's acknowledgements (see `watch`)."""

    async def settle(self, revision: int) -> None:
        """Every process sees `revision` on its next Check already (see `watch`)."""

    async def changes(self, after: int) -> Changes:
        return await self._run(self._feed, self.blocking.changes, after)

    async def add(self, entry: Entry, change: Change | None = None) -> Event:
        return await self._write(self.blocking.add, entry, change)

    async def get(self, entry_id: str) -> Entry:
        return await self._read(self.blocking.get, entry_id)

    async def find_subject(self, subject: str) -> Entry | None:
        return await self._read(self.blocking.find_subject, subject)

    async def find_tag(self, tag: int) -> list[Entry]:
        return await self._read(self.blocking.find_tag, tag)

    async def all_tags(self) -> set[int]:
        return await self._read(self.blocking.all_tags)

    async def replace(self, entry: Entry, change: Change | None = None) -> Event:
        return await self._write(self.blocking.replace, entry, change)

    async def rotate(self, entry: Entry, change: Change | None = None) -> Event:
        return await self._write(self.blocking.rotate, entry, change)

    async def find_retired(self, tag: int) -> list[str]:
        return await self._read(self.blocking.find_retired, tag)

    async def replace_verifier(self, entry_id: str, old: str, new: str) -> None:
        await self._write(self.blocking.replace_verifier, entry_id, old, new)

    async def list_entries(
        self, after: Cursor | None, limit: int, include_revoked: bool
    ) -> list[Entry]:
        return await self._read(self.blocking.list_entries, after, limit, include_revoked)

    async def record_use(self, last_used: Mapping[str, datetime]) -> None:
        await self._write(self.blocking.record_use, last_used)

    async def count_by_state(self, now: datetime) -> dict[State, int]:
        return await self._read(self.blocking.count_by_state, now)

    async def record_audit(self, record: AuditRecord) -> AuditEvent:
        return await self._write(self.blocking.record_audit, record)

    async def list_audit(self, after: int, limit: int, wanted: AuditFilter) -> list[AuditEvent]:
        return await self._read(self.blocking.list_audit, after, limit, wanted)

    async def key_fingerprint(self) -> str | None:
        return await self._read(self.blocking.key_fingerprint)

    async def keep_key_fingerprint(self, fingerprint: str) -> str:
        return await self._write(self.blocking.keep_key_fingerprint, fingerprint)

    async def holds_entries(self) -> bool:
        return await self._read(self.blocking.holds_entries)

    def close(self) -> None:
        """Let queued writes finish, then close the blocking store."""
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._feed.shutdown(wait=True)
        self.blocking.close()

    async def _read(self, work: Callable[..., T], *args: Any) -> T:
        return await self._run(self._readers, work, *args)

    async def _write(self, work: Callable[..., T], *args: Any) -> T:
        return await self._run(self._writer, work, *args)

    @staticmethod
    async def _run(threads: ThreadPoolExecutor, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(threads, work, *args)
