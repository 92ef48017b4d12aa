"""The admin use cases' test world over the in-memory fakes: a store, a hasher, a Checker and
an Admin sharing one settable clock, with the helpers the admin tests share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from authz_service.adapters.threaded_store import ThreadedStore
from authz_service.core.changes import Change, Event
from authz_service.core.decision import Decision
from authz_service.core.errors import (
    AuthzError,
    InvalidArgument,
)
from authz_service.core.model import (
    FULL_ADMIN_RESTRICTION,
    AdminPermission,
    Entry,
    Restriction,
)
from authz_service.core.rules import RestrictionInput
from authz_service.core.tokens import lookup_tag
from authz_service.usecases import Admin, Checker, EntryChange, NewEntry
from fakes import FakeHasher, InMemoryStore, memory_port

KEY = bytes(range(32))
T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
ROOT_TOKEN = "root-admin-token-0001"
ROOT = f"Bearer {ROOT_TOKEN}"
TOKEN = "catalog-sync-token-0002"
OTHER_TOKEN = "scaffolder-token-0003"
ANY_CATALOG = RestrictionInput("catalog")
ADMIN_CALLS = ["create", "update", "revoke", "get", "list"]
WAIT_SECONDS = 10

T = TypeVar("T")
E = TypeVar("E", bound=AuthzError)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Yield to the loop (and the store's threads) until `condition()` holds."""
    for _ in range(WAIT_SECONDS * 100):
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"timed out waiting until {what}")


class Clock:
    """The admin clock: a settable UTC datetime."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class World:
    """One process of the service: its store port, Checker and Admin, over a blocking store
    that other processes (other worlds) may share."""

    store: InMemoryStore
    hasher: FakeHasher
    checker: Checker
    admin: Admin
    clock: Clock
    port: ThreadedStore
    root: Entry | None = None

    def seed(
        self,
        token: str,
        subject: str,
        restrictions: tuple[Restriction, ...] = (),
        *,
        unrestricted: bool = False,
        expire_time: datetime | None = None,
    ) -> Entry:
        """An entry put straight into the store, past the admin API (for callers' tokens)."""
        created = self.clock() - timedelta(days=1)
        entry = Entry(
            id=f"id-{subject}",
            subject=subject,
            description="seeded",
            restrictions=restrictions,
            unrestricted=unrestricted,
            verifier=self.hasher.hash(token),
            lookup_tag=lookup_tag(KEY, token),
            create_time=created,
            update_time=created,
            expire_time=expire_time,
        )
        self.store.add(entry)
        return entry

    async def check(self, token: str, plugin: str = "catalog") -> Decision:
        return await self.checker.check(token, "", plugin, "", 0)

    async def create(self, subject: str, token: str, **fields: Any) -> Entry:
        return await self.create_as(ROOT, subject, token, **fields)

    async def create_as(self, authorization: str, subject: str, token: str, **fields: Any) -> Entry:
        fields.setdefault("restrictions", [ANY_CATALOG])
        return await self.admin.create(authorization, NewEntry(subject, token, **fields))


class Worlds:
    """Opens processes (worlds), each with its own store port, hash pool, Checker and Admin,
    and closes them all at the end of the test."""

    def __init__(self) -> None:
        self._opened: list[tuple[ThreadedStore, ThreadPoolExecutor]] = []

    def open(
        self,
        store: InMemoryStore | None = None,
        *,
        clock: Clock | None = None,
        hasher: FakeHasher | None = None,
    ) -> World:
        """A started process over `store` (a new one by default) with the root admin in it."""
        store = InMemoryStore() if store is None else store
        hasher = FakeHasher() if hasher is None else hasher
        the_clock = Clock(T0) if clock is None else clock
        hash_pool = ThreadPoolExecutor(2, thread_name_prefix="test-hash")
        port = memory_port(store)
        self._opened.append((port, hash_pool))
        checker = Checker(
            port, hasher, KEY, hash_pool, hash_workers=2, clock=lambda: the_clock().timestamp()
        )
        admin = Admin(port, hasher, checker, key=KEY, clock=the_clock)
        world = World(store, hasher, checker, admin, the_clock, port)
        world.root = store.find_subject("root-admin") or world.seed(
            ROOT_TOKEN, "root-admin", (FULL_ADMIN_RESTRICTION,)
        )
        run(checker.start())
        return world

    def close(self) -> None:
        for port, hash_pool in reversed(self._opened):
            port.close()
            hash_pool.shutdown(wait=True)


@pytest.fixture
def worlds() -> Iterator[Worlds]:
    opened = Worlds()
    yield opened
    opened.close()


@pytest.fixture
def world(worlds: Worlds) -> World:
    return worlds.open()


async def refused(world: World, call: Awaitable[object], error: type[E]) -> E:
    """Await `call`, expect `error`, and check that the store did not change: no entry, no
    retired verifier, no event."""
    before, events = world.store.snapshot(), world.store.events()
    with pytest.raises(error) as caught:
        await call
    assert world.store.snapshot() == before, "a refused call changed the store"
    assert world.store.events() == events, "a refused call appended an event"
    return caught.value


def fields_of(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.violations]


def assert_names_no_secret(message: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in message


def admin_call(world: World, name: str, authorization: str) -> Coroutine[Any, Any, object]:
    assert world.root is not None
    target = world.root
    match name:
        case "create":
            return world.admin.create(
                authorization, NewEntry("new-subject", TOKEN, restrictions=[ANY_CATALOG])
            )
        case "update":
            return world.admin.update(
                authorization,
                EntryChange(target.id, target.etag, ["description"], description="changed"),
            )
        case "revoke":
            return world.admin.revoke(authorization, target.id, "no longer needed")
        case "get":
            return world.admin.get(authorization, target.id)
        case _:
            return world.admin.list(authorization, 10, "", include_revoked=True)


# An admin other than root, and the helpers, that several admin test files share.

UPDATER_TOKEN = "updater-admin-token-0005"
AS_UPDATER = f"Bearer {UPDATER_TOKEN}"


def only(*permissions: AdminPermission) -> tuple[Restriction, ...]:
    return (Restriction("authz", tuple(p.value for p in permissions)),)


class InterleavingStore(InMemoryStore):
    """Lets a test commit another process's write at a chosen moment: `after_get[id]` runs just
    after the next read of that entry, `before_write` as the next write starts (before its
    transaction, so before its guard and its claim are checked)."""

    def __init__(self) -> None:
        super().__init__()
        self.after_get: dict[str, Callable[[], object]] = {}
        self.before_write: Callable[[], object] | None = None

    def get(self, entry_id: str) -> Entry:
        entry = super().get(entry_id)
        action = self.after_get.pop(entry_id, None)
        if action is not None:
            action()
        return entry

    def add(self, entry: Entry, change: Change | None = None) -> Event:
        self._interleave()
        return super().add(entry, change)

    def replace(self, entry: Entry, change: Change | None = None) -> Event:
        self._interleave()
        return super().replace(entry, change)

    def rotate(self, entry: Entry, change: Change | None = None) -> Event:
        self._interleave()
        return super().rotate(entry, change)

    def _interleave(self) -> None:
        action, self.before_write = self.before_write, None
        if action is not None:
            action()
