"""The Check use case over the in-memory fakes and real thread pools: the verified-token cache,
single flight, invalidation through the store's event log (in one process and across two),
usage tracking and rehashing."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from authz_service.adapters.threaded_store import ThreadedStore
from authz_service.core.changes import Changes, Event
from authz_service.core.decision import Decision
from authz_service.core.errors import InvalidArgument, Unavailable
from authz_service.core.model import Action, Entry, Restriction
from authz_service.core.tokens import TokenDigests, lookup_tag
from authz_service.usecases import Checker
from fakes import FakeHasher, InMemoryStore, memory_port

KEY = bytes(range(32))
NOW = 1_750_000_000.25  # seconds since the epoch, exact in binary
TOKEN = "catalog-sync-token-0001"
OTHER_TOKEN = "scaffolder-token-0002"
# A token no entry ever holds: checking it makes a Checker catch up with the store's events,
# and touches nothing else.
NOBODY = "never-issued-token-0009"
CATALOG_READ = (Restriction("catalog", ("catalog.entity.read",), (Action.READ,)),)
# Generous bound on waiting for a worker thread; a passing test never comes near it.
WAIT_SECONDS = 10.0

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Clock:
    """A settable clock in seconds since the epoch, as the Checker reads time."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class GatedHasher(FakeHasher):
    """A FakeHasher whose verify announces itself and then waits for the test to let it go."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Semaphore(0)
        self.gate = threading.Event()

    def verify(self, verifier: str, token: str) -> bool:
        self.entered.release()
        self.gate.wait(WAIT_SECONDS)
        return super().verify(verifier, token)

    async def wait_for_verify(self) -> None:
        entered = await asyncio.to_thread(self.entered.acquire, True, WAIT_SECONDS)
        assert entered, "no verify started"


@dataclass
class Process:
    """One server process: its own port on the shared store (with its own threads, as each
    process has its own connections) and the Checker over it."""

    port: ThreadedStore
    checker: Checker


@dataclass
class World:
    store: InMemoryStore
    hasher: FakeHasher
    hash_pool: ThreadPoolExecutor
    clock: Clock
    ports: list[ThreadedStore] = field(default_factory=list)

    def process(self, cache_size: int = 100) -> Process:
        """A started Checker over a port of its own on `store`."""
        port = memory_port(self.store)
        self.ports.append(port)
        checker = Checker(
            port,
            self.hasher,
            KEY,
            self.hash_pool,
            hash_workers=4,  # the pool's threads
            cache_size=cache_size,
            clock=self.clock,
        )
        run(checker.start())
        return Process(port, checker)

    def checker(self, cache_size: int = 100) -> Checker:
        return self.process(cache_size).checker

    def entry(
        self,
        token: str,
        subject: str = "catalog-sync",
        *,
        restrictions: tuple[Restriction, ...] = CATALOG_READ,
        unrestricted: bool = False,
        expire_time: datetime | None = None,
        tag: int | None = None,
    ) -> Entry:
        created = datetime.fromtimestamp(NOW - 3600, UTC)
        return Entry(
            id=f"id-{subject}",
            subject=subject,
            description="",
            restrictions=restrictions,
            unrestricted=unrestricted,
            verifier=self.hasher.hash(token),
            lookup_tag=tag if tag is not None else tag_of(token),
            create_time=created,
            update_time=created,
            expire_time=expire_time,
        )

    def add(self, token: str, subject: str = "catalog-sync", **fields: Any) -> Entry:
        """Create an entry in the store (which appends its event), as any writer would."""
        entry = self.entry(token, subject, **fields)
        self.store.add(entry)
        return entry

    def rotated(self, entry: Entry, token: str) -> Entry:
        """`entry`'s next revision, holding `token` instead."""
        return replace(
            entry,
            verifier=self.hasher.hash(token),
            lookup_tag=tag_of(token),
            revision=entry.revision + 1,
        )


def tag_of(token: str) -> int:
    return lookup_tag(KEY, token)


def digest_of(token: str) -> bytes:
    """The key under which a Checker remembers `token` (verified or wrong)."""
    return TokenDigests(KEY).cache_key(token)


def revoked(entry: Entry) -> Entry:
    """`entry`'s next revision, revoked now."""
    return replace(entry, revoke_time=datetime.fromtimestamp(NOW, UTC), revision=entry.revision + 1)


def narrowed(entry: Entry) -> Entry:
    """`entry`'s next revision, allowed the scaffolder plugin only."""
    return replace(entry, restrictions=(Restriction("scaffolder"),), revision=entry.revision + 1)


@functools.cache
def same_tag_tokens() -> tuple[str, str]:
    """Two valid tokens whose lookup tags (4 bytes) are equal: found by brute force, about
    2**16 tries by the birthday bound."""
    seen: dict[int, str] = {}
    n = 0
    while True:
        token = f"same-tag-token-{n:08d}"
        earlier = seen.setdefault(tag_of(token), token)
        if earlier != token:
            return earlier, token
        n += 1


def make_world(hasher: FakeHasher) -> Iterator[World]:
    hash_pool = ThreadPoolExecutor(4, thread_name_prefix="test-hash")
    world = World(InMemoryStore(), hasher, hash_pool, Clock())
    try:
        yield world
    finally:
        if isinstance(hasher, GatedHasher):
            hasher.gate.set()  # never leave a worker blocked, even when a test failed
        hash_pool.shutdown(wait=True)
        for port in world.ports:
            port.close()


@pytest.fixture
def world() -> Iterator[World]:
    yield from make_world(FakeHasher())


@pytest.fixture
def gated() -> Iterator[World]:
    yield from make_world(GatedHasher())


async def read_catalog(checker: Checker, token: str = TOKEN) -> Decision:
    return await checker.check(token, "", "catalog", "catalog.entity.read", Action.READ)


def allowed_as(decision: Decision, entry: Entry) -> bool:
    return decision.allowed and (decision.subject, decision.entry_id) == (entry.subject, entry.id)


async def catch_up_by_checking(checker: Checker, store: InMemoryStore) -> None:
    """Make `checker` apply every event in `store` the way any Check does, with a token that
    matches nothing (so no flight is touched)."""
    assert (await read_catalog(checker, NOBODY)).reason == "unknown_token"
    assert checker.follower.applied == store.head()


async def admin_writes(process: Process, write: Coroutine[Any, Any, Event]) -> Event:
    """A write through `process`'s own port, applied to its own cache before it returns, as
    its Admin does."""
    event = await write
    await process.checker.follower.reach(event.revision)
    return event


# The cache


def test_a_cold_check_verifies_once_and_the_warm_check_after_it_not_again(world: World) -> None:
    entry = world.add(TOKEN)
    checker = world.checker()

    async def scenario() -> tuple[Decision, Decision]:
        return await read_catalog(checker), await read_catalog(checker)

    cold, warm = run(scenario())
    assert allowed_as(cold, entry)
    assert warm == cold
    assert (cold.code, cold.http_status, cold.reason) == (0, 200, "")
    assert world.hasher.verify_calls == 1
    assert checker.counters.argon2_verifications == 1
    assert len(checker.tokens) == 1


def test_the_authorization_header_form_shares_the_cache_entry_of_the_raw_token(
    world: World,
) -> None:
    entry = world.add(TOKEN)
    checker = world.checker()

    async def scenario() -> list[Decision]:
        return [
            await read_catalog(checker),
            await checker.check("", f"Bearer {TOKEN}", "catalog", "", Action.READ),
            await checker.check("", f"bEaReR   {TOKEN}", "catalog", "", Action.READ),
        ]

    assert all(allowed_as(d, entry) for d in run(scenario()))
    assert world.hasher.verify_calls == 1


def test_a_token_whose_tag_matches_nothing_costs_no_verification(world: World) -> None:
    world.add(TOKEN)
    checker = world.checker()

    async def scenario() -> list[Decision]:
        return [await read_catalog(checker, OTHER_TOKEN) for _ in range(3)]

    decisions = run(scenario())
    assert {(d.allowed, d.code, d.http_status, d.reason) for d in decisions} == {
        (False, 16, 401, "unknown_token")
    }
    assert world.hasher.verify_calls == 0
    assert checker.counters.argon2_verifications == 0
    assert checker.counters.tag_misses == 3
    assert len(checker.tokens) == 0


class CountingStore(InMemoryStore):
    """Records every read a Checker can make of the store, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def head(self) -> int:
        self.reads.append("head")
        return super().head()

    def changes(self, after: int) -> Changes:
        self.reads.append("changes")
        return super().changes(after)

    def all_tags(self) -> set[int]:
        self.reads.append("all_tags")
        return super().all_tags()

    def find_tag(self, tag: int) -> list[Entry]:
        self.reads.append("find_tag")
        return super().find_tag(tag)

    def get(self, entry_id: str) -> Entry:
        self.reads.append("get")
        return super().get(entry_id)

    def find_retired(self, tag: int) -> list[str]:
        self.reads.append("find_retired")
        return super().find_retired(tag)


def test_start_reads_the_tags_and_the_head_and_a_tag_miss_then_queries_nothing(
    world: World,
) -> None:
    store = world.store = CountingStore()
    entry = world.add(TOKEN)
    checker = world.checker()
    assert sorted(store.reads) == ["all_tags", "head"]
    store.reads.clear()

    async def scenario() -> tuple[Decision, Decision]:
        return await read_catalog(checker, OTHER_TOKEN), await read_catalog(checker, TOKEN)

    wrong, right = run(scenario())
    assert wrong.reason == "unknown_token"
    assert allowed_as(right, entry)
    assert store.reads == ["find_tag"]  # only for the token whose tag is known
    assert checker.counters.tag_misses == 1


def test_a_warm_check_when_nothing_was_written_does_not_read_the_store(world: World) -> None:
    store = world.store = CountingStore()
    entry = world.add(TOKEN)
    world.add(OTHER_TOKEN, "other-entry")
    checker = world.checker()

    async def scenario() -> list[str]:
        assert allowed_as(await read_catalog(checker), entry)  # cold: reads the store
        store.reads.clear()
        for _ in range(20):
            assert allowed_as(await read_catalog(checker), entry)
        warm = list(store.reads)
        # A write to the store (another entry's): the next check reads the feed, once.
        other = store.get("id-other-entry")
        store.replace(replace(other, description="touched", revision=other.revision + 1))
        store.reads.clear()
        assert allowed_as(await read_catalog(checker), entry)
        return [*warm, "--- after a write ---", *store.reads]

    assert run(scenario()) == ["--- after a write ---", "changes"]
    assert world.hasher.verify_calls == 1
    assert checker.counters.cache_hits == 21


def test_a_tag_unknown_a_moment_ago_is_found_on_the_next_check_after_the_create(
    world: World,
) -> None:
    checker = world.checker()
    assert run(read_catalog(checker, TOKEN)).reason == "unknown_token"
    assert tag_of(TOKEN) not in checker.tokens.known_tags
    entry = world.add(TOKEN)  # written behind the checker's back, as another process would
    assert allowed_as(run(read_catalog(checker, TOKEN)), entry)
    assert checker.counters.tag_misses == 1


def test_a_token_whose_tag_collides_with_an_entry_is_denied_after_one_verify(
    world: World,
) -> None:
    # Force a tag collision: an entry stored under the tag of a token it does not hold.
    world.add(TOKEN, tag=tag_of(OTHER_TOKEN))
    checker = world.checker()

    decision = run(read_catalog(checker, OTHER_TOKEN))
    assert decision.reason == "unknown_token"
    assert world.hasher.verify_calls == 1
    assert checker.counters.tag_misses == 0
    assert len(checker.tokens) == 0


def test_a_replayed_wrong_token_with_a_colliding_tag_costs_one_verify_in_all(
    world: World,
) -> None:
    world.add(TOKEN, tag=tag_of(OTHER_TOKEN))
    checker = world.checker()

    async def replay() -> list[str]:
        return [(await read_catalog(checker, OTHER_TOKEN)).reason for _ in range(5)]

    assert run(replay()) == ["unknown_token"] * 5
    assert world.hasher.verify_calls == 1


def test_a_token_known_to_be_wrong_is_verified_again_once_an_entry_is_created(
    world: World,
) -> None:
    world.add(TOKEN, tag=tag_of(OTHER_TOKEN))
    checker = world.checker()
    assert run(read_catalog(checker, OTHER_TOKEN)).reason == "unknown_token"
    assert digest_of(OTHER_TOKEN) in checker.tokens.failed
    world.add(OTHER_TOKEN, "late-comer")  # its event names the tag, and so the wrong token
    decision = run(read_catalog(checker, OTHER_TOKEN))
    assert (decision.allowed, decision.subject) == (True, "late-comer")


def test_tokens_known_to_be_wrong_stay_known_across_admin_writes(world: World) -> None:
    held = world.add(TOKEN, tag=tag_of(OTHER_TOKEN))
    checker = world.checker()
    wrong = [f"{OTHER_TOKEN}-{i}" for i in range(3)]
    for token in wrong:
        world.add(f"collides-{token}", f"colliding-{token}", tag=tag_of(token))

    async def burst() -> list[str]:
        return [(await read_catalog(checker, token)).reason for token in wrong]

    assert run(burst()) == ["unknown_token"] * 3
    verified = world.hasher.verify_calls
    written = len(world.store.events())
    # Every kind of write: an update, a rotation, a revoke, and a create of another token.
    changed = replace(held, description="changed", revision=held.revision + 1)
    world.store.replace(changed)
    moved = world.rotated(changed, "a-brand-new-token-1")
    world.store.rotate(moved)
    world.store.replace(revoked(moved))
    world.add("created-meanwhile-1", "created-meanwhile")
    assert run(burst()) == ["unknown_token"] * 3
    assert checker.follower.applied == written + 4  # the burst saw all four writes
    assert world.hasher.verify_calls == verified, "a replayed burst cost argon2 work again"


def test_a_write_to_another_entry_lets_a_first_verify_in_flight_be_cached(gated: World) -> None:
    gated.add(TOKEN)
    other = gated.add(OTHER_TOKEN, "other-entry")
    checker = gated.checker()
    hasher = gated.hasher
    assert isinstance(hasher, GatedHasher)

    async def scenario() -> Decision:
        first = asyncio.create_task(read_catalog(checker))
        await hasher.wait_for_verify()
        # An admin writes to another entry, again and again (a revoke too), and the checker
        # applies each write while the first verify is still running.
        for n in range(3):
            now = gated.store.get(other.id)
            touched = replace(now, description=f"write {n}", revision=now.revision + 1)
            gated.store.replace(revoked(now) if n == 2 else touched)
            await catch_up_by_checking(checker, gated.store)
        hasher.gate.set()
        await first
        return await read_catalog(checker)

    assert run(scenario()).allowed
    assert hasher.verify_calls == 1, "the first verify was thrown away by an unrelated write"


@pytest.mark.parametrize("field", ["token", "authorization"])
def test_an_over_long_credential_is_malformed_before_it_is_hashed(world: World, field: str) -> None:
    checker = world.checker()
    huge = "a" * 4_000_000
    credential = {"token": huge, "authorization": ""}
    if field == "authorization":
        credential = {"token": "", "authorization": f"Bearer {huge}"}
    decision = run(
        checker.check(credential["token"], credential["authorization"], "catalog", "", 0)
    )
    assert decision.reason == "malformed"
    assert checker.counters.cache_misses == 0  # answered before the cache, so before any hashing


@pytest.mark.parametrize("applied", ["after-the-verify", "during-the-verify"])
def test_a_wrong_token_in_flight_when_an_entry_takes_it_is_not_remembered_as_wrong(
    gated: World, applied: str
) -> None:
    gated.add(TOKEN, tag=tag_of(OTHER_TOKEN))
    checker = gated.checker()
    hasher = gated.hasher
    assert isinstance(hasher, GatedHasher)

    async def scenario() -> tuple[Decision, Decision]:
        before = asyncio.create_task(read_catalog(checker, OTHER_TOKEN))
        await hasher.wait_for_verify()
        gated.add(OTHER_TOKEN, "late-comer")
        if applied == "during-the-verify":
            # The create is applied while the verify runs: the flight is dropped, so it
            # remembers nothing when it lands.
            await catch_up_by_checking(checker, gated.store)
        hasher.gate.set()
        started_before = await before
        if applied == "during-the-verify":
            assert digest_of(OTHER_TOKEN) not in checker.tokens.failed
        return started_before, await read_catalog(checker, OTHER_TOKEN)

    started_before, after = run(scenario())
    assert started_before.reason == "unknown_token"
    assert (after.allowed, after.subject) == (True, "late-comer")


def test_a_valid_first_check_waits_for_one_verify_of_another_callers_burst(
    gated: World,
) -> None:
    gated.add(TOKEN, "valid")
    wrong = [f"colliding-wrong-token-{i}" for i in range(30)]
    for token in wrong:
        gated.add(f"holder-of-{token}", f"holder-{token}", tag=tag_of(token))
    checker = gated.checker()
    hasher = gated.hasher
    assert isinstance(hasher, GatedHasher)
    finished: list[str] = []

    async def check(token: str, caller: str) -> None:
        await checker.check(token, "", "catalog", "", 0, caller=lambda: caller)
        finished.append(token)

    async def scenario() -> None:
        burst = [asyncio.create_task(check(t, "ipv4:10.6.6.6")) for t in wrong]
        await hasher.wait_for_verify()
        valid = asyncio.create_task(check(TOKEN, "ipv4:10.0.0.7"))
        await asyncio.sleep(0.01)
        hasher.gate.set()
        await asyncio.gather(valid, *burst)

    run(scenario())
    # Four workers held four of the burst's verifies; the valid one took the second turn
    # after them (in one queue it would have waited for all thirty).
    assert finished.index(TOKEN) < 10


def test_among_entries_sharing_a_tag_the_one_whose_verifier_matches_wins(world: World) -> None:
    world.add(OTHER_TOKEN, "impostor", tag=tag_of(TOKEN))
    holder = world.add(TOKEN, "holder")
    checker = world.checker()

    assert allowed_as(run(read_catalog(checker)), holder)
    assert 1 <= world.hasher.verify_calls <= 2


def test_fifty_concurrent_cold_checks_of_one_token_cost_exactly_one_verify(world: World) -> None:
    entry = world.add(TOKEN)
    checker = world.checker()

    async def scenario() -> list[Decision]:
        return await asyncio.gather(*(read_catalog(checker) for _ in range(50)))

    decisions = run(scenario())
    assert len(decisions) == 50
    assert all(allowed_as(d, entry) for d in decisions)
    assert world.hasher.verify_calls == 1
    assert checker.counters.argon2_verifications == 1


class SlowTagStore(InMemoryStore):
    """Every tag query after the first waits until the test lets it go: a store read that is
    slower than the verify of a check that read the store just before it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.held = threading.Semaphore(0)
        self._queries = 0
        self._count_lock = threading.Lock()

    def find_tag(self, tag: int) -> list[Entry]:
        with self._count_lock:
            self._queries += 1
            later = self._queries > 1
        if later:
            self.held.release()
            self.release.wait(WAIT_SECONDS)
        return super().find_tag(tag)


@pytest.mark.parametrize("token", [TOKEN, OTHER_TOKEN], ids=["right-token", "wrong-token"])
def test_a_cold_check_whose_store_read_outlasts_another_checks_verify_costs_no_second_verify(
    world: World, token: str
) -> None:
    store = world.store = SlowTagStore()
    world.add(TOKEN, tag=tag_of(OTHER_TOKEN) if token == OTHER_TOKEN else None)
    checker = world.checker()

    async def scenario() -> list[Decision]:
        checks = [asyncio.create_task(read_catalog(checker, token)) for _ in range(2)]
        entered = await asyncio.to_thread(store.held.acquire, True, WAIT_SECONDS)
        assert entered, "no second tag query started"
        done, _ = await asyncio.wait(checks, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1  # one check read, verified and answered; the other still reads
        store.release.set()
        return list(await asyncio.gather(*checks))

    first, second = run(scenario())
    assert first == second
    assert first.allowed is (token == TOKEN)
    assert world.hasher.verify_calls == 1


def test_a_caller_that_gives_up_does_not_cancel_the_verify_others_wait_for(gated: World) -> None:
    entry = gated.add(TOKEN)
    checker = gated.checker()
    hasher = gated.hasher
    assert isinstance(hasher, GatedHasher)

    async def scenario() -> Decision:
        impatient = asyncio.create_task(read_catalog(checker))
        patient = asyncio.create_task(read_catalog(checker))
        await hasher.wait_for_verify()
        impatient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await impatient
        hasher.gate.set()
        return await patient

    assert allowed_as(run(scenario()), entry)
    assert hasher.verify_calls == 1
    assert len(checker.tokens) == 1


def test_the_cache_holds_at_most_cache_size_tokens_and_evicts_the_oldest(world: World) -> None:
    tokens = [f"token-number-{n:04d}" for n in range(3)]
    for n, token in enumerate(tokens):
        world.add(token, f"subject-{n}")
    checker = world.checker(cache_size=2)

    async def scenario() -> None:
        for token in tokens:
            assert (await read_catalog(checker, token)).allowed
        assert len(checker.tokens) == 2
        assert world.hasher.verify_calls == 3
        # The newest two are warm...
        await read_catalog(checker, tokens[2])
        await read_catalog(checker, tokens[1])
        assert world.hasher.verify_calls == 3
        # ...the oldest was evicted and costs a verify again.
        assert (await read_catalog(checker, tokens[0])).allowed
        assert world.hasher.verify_calls == 4
        assert len(checker.tokens) == 2

    run(scenario())


def test_an_update_does_not_bring_an_evicted_token_back_into_the_cache(world: World) -> None:
    first = world.add(TOKEN, "first")
    world.add(OTHER_TOKEN, "second")
    checker = world.checker(cache_size=1)

    async def scenario() -> None:
        await read_catalog(checker, TOKEN)
        await read_catalog(checker, OTHER_TOKEN)  # evicts the first token
        world.store.replace(replace(first, description="touched", revision=first.revision + 1))
        assert (await read_catalog(checker, OTHER_TOKEN)).allowed  # warm; applies the update
        assert checker.follower.applied == world.store.head()
        assert len(checker.tokens) == 1
        assert world.hasher.verify_calls == 2
        await read_catalog(checker, TOKEN)

    run(scenario())
    assert world.hasher.verify_calls == 3


# Invalidation: every write reaches the Checker through the store's event log


def test_a_revoke_in_the_store_makes_the_very_next_check_say_revoked_without_a_verify(
    world: World,
) -> None:
    entry = world.add(TOKEN)
    checker = world.checker()

    async def scenario() -> Decision:
        assert (await read_catalog(checker)).allowed
        world.store.replace(revoked(entry))
        return await read_catalog(checker)

    decision = run(scenario())
    assert (decision.allowed, decision.code, decision.http_status, decision.reason) == (
        False,
        16,
        401,
        "revoked",
    )
    assert (decision.subject, decision.entry_id) == ("", "")
    assert world.hasher.verify_calls == 1


def test_a_scope_change_in_the_store_applies_to_the_cached_token_at_once(world: World) -> None:
    entry = world.add(TOKEN)
    checker = world.checker()

    async def scenario() -> tuple[Decision, Decision]:
        await read_catalog(checker)
        world.store.replace(narrowed(entry))
        scaffolder = await checker.check(TOKEN, "", "scaffolder", "", 0)
        return await read_catalog(checker), scaffolder

    catalog, scaffolder = run(scenario())
    assert (catalog.code, catalog.http_status, catalog.reason) == (7, 403, "plugin_not_allowed")
    assert allowed_as(scaffolder, entry)
    assert world.hasher.verify_calls == 1


def test_a_rotation_in_the_store_makes_the_old_token_unknown_and_the_new_one_work(
    world: World,
) -> None:
    entry = world.add(TOKEN)
    checker = world.checker()
    new_token = "rotated-token-0003"

    async def scenario() -> tuple[Decision, Decision]:
        assert (await read_catalog(checker)).allowed
        world.store.rotate(world.rotated(entry, new_token))
        return await read_catalog(checker, TOKEN), await read_catalog(checker, new_token)

    old, new = run(scenario())
    assert old.reason == "unknown_token"
    assert allowed_as(new, entry)
    assert checker.counters.tag_misses == 1  # the old token's tag now matches nothing
    assert world.hasher.verify_calls == 2  # the first check, and the new token's


def test_a_verify_in_flight_when_a_revoke_is_applied_is_not_cached(gated: World) -> None:
    entry = gated.add(TOKEN)
    checker = gated.checker()
    hasher = gated.hasher
    assert isinstance(hasher, GatedHasher)

    async def scenario() -> tuple[Decision, Decision]:
        before = asyncio.create_task(read_catalog(checker))
        await hasher.wait_for_verify()  # it has read the store and is verifying
        gated.store.replace(revoked(entry))
        await catch_up_by_checking(checker, gated.store)  # the revoke lands mid-verify
        hasher.gate.set()
        started_before_revoke = await before
        assert len(checker.tokens) == 0
        return started_before_revoke, await read_catalog(checker)

    started_before_revoke, after = run(scenario())
    # The check that began before the revoke may answer from what it read...
    assert started_before_revoke.allowed
    # ...but its answer was not kept: the next check read the store again.
    assert after.reason == "revoked"
    assert hasher.verify_calls == 2


def test_a_verify_that_lands_before_a_revoke_is_applied_is_corrected_by_the_next_check(
    gated: World,
) -> None:
    entry = gated.add(TOKEN)
    checker = gated.checker()
    hasher = gated.hasher
    assert isinstance(hasher, GatedHasher)

    async def scenario() -> tuple[Decision, Decision]:
        before = asyncio.create_task(read_catalog(checker))
        await hasher.wait_for_verify()
        gated.store.replace(revoked(entry))  # committed, but no check has seen it yet
        hasher.gate.set()
        return await before, await read_catalog(checker)

    started_before_revoke, after = run(scenario())
    assert started_before_revoke.allowed
    assert after.reason == "revoked"
    assert hasher.verify_calls == 1  # the cached policy was replaced by the revoked one


def test_a_check_arriving_after_a_revoke_does_not_join_the_verify_in_flight(
    gated: World,
) -> None:
    entry = gated.add(TOKEN)
    checker = gated.checker()
    hasher = gated.hasher
    assert isinstance(hasher, GatedHasher)

    async def scenario() -> tuple[Decision, Decision]:
        before = asyncio.create_task(read_catalog(checker))
        await hasher.wait_for_verify()
        gated.store.replace(revoked(entry))
        after = asyncio.create_task(read_catalog(checker))
        await hasher.wait_for_verify()  # a second, fresh verify of the revoked entry
        hasher.gate.set()
        return await before, await after

    started_before_revoke, after = run(scenario())
    assert started_before_revoke.allowed
    assert after.reason == "revoked"
    assert hasher.verify_calls == 2


# Two processes over one store: what one's admin writes, the other answers by on its next check


def test_a_token_cached_in_another_process_is_revoked_there_on_its_very_next_check(
    world: World,
) -> None:
    entry = world.add(TOKEN)
    a, b = world.process(), world.process()

    async def scenario() -> Decision:
        assert allowed_as(await read_catalog(a.checker), entry)
        assert allowed_as(await read_catalog(b.checker), entry)
        assert allowed_as(await read_catalog(b.checker), entry)  # warm in b
        await admin_writes(a, a.port.replace(revoked(entry)))
        return await read_catalog(b.checker)

    decision = run(scenario())
    assert (decision.allowed, decision.http_status, decision.reason) == (False, 401, "revoked")
    assert b.checker.counters.cache_hits == 2  # answered from b's cache, by the new policy
    assert world.hasher.verify_calls == 2  # one cold check in each process, none after


def test_a_token_cached_in_another_process_is_narrowed_there_on_its_very_next_check(
    world: World,
) -> None:
    entry = world.add(TOKEN)
    a, b = world.process(), world.process()

    async def scenario() -> tuple[Decision, Decision]:
        assert allowed_as(await read_catalog(a.checker), entry)
        assert allowed_as(await read_catalog(b.checker), entry)
        await admin_writes(a, a.port.replace(narrowed(entry)))
        catalog = await read_catalog(b.checker)
        return catalog, await b.checker.check(TOKEN, "", "scaffolder", "", 0)

    catalog, scaffolder = run(scenario())
    assert (catalog.http_status, catalog.reason) == (403, "plugin_not_allowed")
    assert allowed_as(scaffolder, entry)
    assert world.hasher.verify_calls == 2


def test_a_rotation_in_another_process_makes_the_old_token_unknown_and_the_new_one_work_here(
    world: World,
) -> None:
    entry = world.add(TOKEN)
    a, b = world.process(), world.process()
    new_token = "rotated-token-0003"

    async def scenario() -> tuple[Decision, Decision]:
        assert allowed_as(await read_catalog(a.checker), entry)
        assert allowed_as(await read_catalog(b.checker), entry)
        await admin_writes(a, a.port.rotate(world.rotated(entry, new_token)))
        old = await read_catalog(b.checker, TOKEN)
        return old, await read_catalog(b.checker, new_token)

    old, new = run(scenario())
    assert old.reason == "unknown_token"
    assert allowed_as(new, entry)
    assert world.hasher.verify_calls == 3  # a's and b's first checks, and b's of the new token


def test_a_token_another_process_remembered_as_wrong_works_there_once_an_entry_holds_it(
    world: World,
) -> None:
    first, second = same_tag_tokens()
    assert first != second
    assert tag_of(first) == tag_of(second)
    world.add(first, "first-holder")
    a, b = world.process(), world.process()

    async def scenario() -> tuple[list[str], Decision]:
        wrong = [(await read_catalog(b.checker, second)).reason for _ in range(3)]
        assert digest_of(second) in b.checker.tokens.failed
        assert world.hasher.verify_calls == 1  # remembered as wrong: replays cost nothing
        await admin_writes(a, a.port.add(world.entry(second, "second-holder")))
        return wrong, await read_catalog(b.checker, second)

    wrong, decision = run(scenario())
    assert wrong == ["unknown_token"] * 3
    assert allowed_as(decision, world.store.get("id-second-holder"))


def test_a_remembered_wrong_token_works_in_another_process_once_an_entry_holds_exactly_it(
    world: World,
) -> None:
    world.add(TOKEN, tag=tag_of(OTHER_TOKEN))
    a, b = world.process(), world.process()

    async def scenario() -> Decision:
        assert (await read_catalog(b.checker, OTHER_TOKEN)).reason == "unknown_token"
        assert digest_of(OTHER_TOKEN) in b.checker.tokens.failed
        await admin_writes(a, a.port.add(world.entry(OTHER_TOKEN, "late-comer")))
        return await read_catalog(b.checker, OTHER_TOKEN)

    decision = run(scenario())
    assert allowed_as(decision, world.store.get("id-late-comer"))


# Malformed and invalid requests


@pytest.mark.parametrize(
    ("token", "authorization", "reason"),
    [
        ("short", "", "malformed"),
        ("has white space", "", "malformed"),
        ("tab\tinside-token", "", "malformed"),
        ("x" * 513, "", "malformed"),
        ("", "Basic dXNlcjpwYXNz", "malformed"),
        ("", "Bearer", "malformed"),
        ("", "Bearer    ", "malformed"),
        ("", "Bearer short", "malformed"),
        ("", f"Token {TOKEN}", "malformed"),
        ("", "", "missing_token"),
    ],
)
def test_a_malformed_or_missing_token_is_denied_without_any_lookup(
    world: World, token: str, authorization: str, reason: str
) -> None:
    world.add(TOKEN)
    checker = world.checker()
    decision = run(checker.check(token, authorization, "catalog", "", 0))
    assert (decision.allowed, decision.code, decision.http_status, decision.reason) == (
        False,
        16,
        401,
        reason,
    )
    assert world.hasher.verify_calls == 0
    assert checker.counters.tag_misses == 0


@pytest.mark.parametrize(
    ("plugin", "permission", "action", "field"),
    [
        ("", "", 0, "plugin"),
        ("Catalog", "", 0, "plugin"),
        ("catalog plugin", "", 0, "plugin"),
        ("catalog", "catalog..read", 0, "permission"),
        ("catalog", "catalog.entity.read ", 0, "permission"),
        ("catalog", "", 9, "action"),
        ("catalog", "", -1, "action"),
    ],
)
def test_an_invalid_plugin_permission_or_action_raises_invalid_argument_naming_it(
    world: World, plugin: str, permission: str, action: int, field: str
) -> None:
    world.add(TOKEN)
    checker = world.checker()
    with pytest.raises(InvalidArgument) as caught:
        run(checker.check(TOKEN, "", plugin, permission, action))
    assert [v.field for v in caught.value.violations] == [field]
    assert TOKEN not in str(caught.value)
    assert world.hasher.verify_calls == 0
    assert checker.counters.tag_misses == 0


def test_a_request_with_both_token_and_authorization_is_invalid(world: World) -> None:
    world.add(TOKEN)
    checker = world.checker()
    with pytest.raises(InvalidArgument) as caught:
        run(checker.check(TOKEN, f"Bearer {TOKEN}", "catalog", "", 0))
    assert [v.field for v in caught.value.violations] == ["authorization"]
    assert TOKEN not in str(caught.value)
    assert world.hasher.verify_calls == 0


def test_a_store_failure_reaches_the_caller_and_the_next_check_tries_again(
    world: World,
) -> None:
    entry = world.add(TOKEN)
    checker = world.checker()
    real_find_tag = world.store.find_tag
    failures = iter([Unavailable("database is busy")])

    def flaky_find_tag(tag: int) -> list[Entry]:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_find_tag(tag)

    world.store.find_tag = flaky_find_tag  # type: ignore[method-assign]

    async def scenario() -> Decision:
        with pytest.raises(Unavailable):
            await read_catalog(checker)
        assert len(checker.tokens) == 0
        return await read_catalog(checker)

    assert allowed_as(run(scenario()), entry)
    assert world.hasher.verify_calls == 1


# Expiry


def test_a_cached_token_stops_working_when_its_entry_expires(world: World) -> None:
    expires = datetime.fromtimestamp(NOW + 60, UTC)
    entry = world.add(TOKEN, expire_time=expires)
    checker = world.checker()

    async def scenario() -> tuple[Decision, Decision]:
        world.clock.now = NOW + 59.999999
        just_before = await read_catalog(checker)
        world.clock.now = NOW + 60
        return just_before, await read_catalog(checker)

    just_before, at_expiry = run(scenario())
    assert allowed_as(just_before, entry)
    assert (at_expiry.code, at_expiry.http_status, at_expiry.reason) == (16, 401, "expired")
    assert world.hasher.verify_calls == 1


# Usage tracking


def test_an_allowed_check_is_recorded_as_a_use_and_flushed_to_the_store(world: World) -> None:
    entry = world.add(TOKEN)
    checker = world.checker()
    used_at = datetime.fromtimestamp(NOW, UTC)

    async def scenario() -> None:
        await read_catalog(checker)
        assert checker.usage.last_used(entry.id) == used_at
        assert world.store.get(entry.id).last_used_time is None
        await checker.usage.flush()

    run(scenario())
    assert world.store.get(entry.id).last_used_time == used_at
    assert world.store.get(entry.id).revision == entry.revision
    assert checker.usage.last_used(entry.id) is None  # nothing pending any more


def test_the_latest_of_several_uses_is_the_one_flushed(world: World) -> None:
    entry = world.add(TOKEN)
    checker = world.checker()

    async def scenario() -> None:
        await read_catalog(checker)
        world.clock.now = NOW + 30
        await read_catalog(checker)
        await checker.usage.flush()

    run(scenario())
    assert world.store.get(entry.id).last_used_time == datetime.fromtimestamp(NOW + 30, UTC)


def test_a_scope_denial_counts_as_a_use_but_an_authentication_denial_does_not(
    world: World,
) -> None:
    scoped = world.add(TOKEN, "scoped")
    revoked = world.add(OTHER_TOKEN, "revoked")
    world.store.replace(
        replace(revoked, revoke_time=datetime.fromtimestamp(NOW - 1, UTC), revision=2)
    )
    checker = world.checker()

    async def scenario() -> tuple[Decision, Decision]:
        denied_scope = await checker.check(TOKEN, "", "scaffolder", "", 0)
        denied_revoked = await checker.check(OTHER_TOKEN, "", "catalog", "", 0)
        await checker.usage.flush()
        return denied_scope, denied_revoked

    denied_scope, denied_revoked = run(scenario())
    assert (denied_scope.http_status, denied_scope.reason) == (403, "plugin_not_allowed")
    assert (denied_revoked.http_status, denied_revoked.reason) == (401, "revoked")
    assert world.store.get(scoped.id).last_used_time == datetime.fromtimestamp(NOW, UTC)
    assert world.store.get(revoked.id).last_used_time is None


def test_flushing_with_nothing_pending_writes_nothing(world: World) -> None:
    entry = world.add(TOKEN)
    checker = world.checker()
    run(checker.usage.flush())
    assert world.store.snapshot() == ({entry.id: entry}, [])


# Rehashing


def test_a_verifier_made_with_weaker_parameters_is_replaced_after_a_successful_check(
    world: World,
) -> None:
    entry = world.add(TOKEN)
    world.hasher.version = 2  # raise the parameters after the entry was made
    checker = world.checker()

    assert allowed_as(run(read_catalog(checker)), entry)
    stored = world.store.get(entry.id)
    assert stored.verifier != entry.verifier
    assert stored.verifier.startswith("fake$v2$")
    assert not world.hasher.needs_rehash(stored.verifier)
    assert world.hasher.verify(stored.verifier, TOKEN)
    assert stored.revision == entry.revision


def test_a_rehash_that_cannot_be_stored_does_not_fail_the_check(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    entry = world.add(TOKEN)
    world.hasher.version = 2
    checker = world.checker()

    def disk_full(*_: object) -> None:
        raise Unavailable("database write failed: database or disk is full")

    monkeypatch.setattr(world.store, "replace_verifier", disk_full)
    assert allowed_as(run(read_catalog(checker)), entry)
    assert allowed_as(run(read_catalog(checker)), entry)  # and cached as usual
    assert world.store.get(entry.id).verifier == entry.verifier
    assert "could not store a stronger verifier" in caplog.text
    assert TOKEN not in caplog.text


def test_a_verifier_with_current_parameters_is_left_alone(world: World) -> None:
    entry = world.add(TOKEN)
    checker = world.checker()
    run(read_catalog(checker))
    assert world.store.get(entry.id).verifier == entry.verifier
    assert world.hasher.hash_calls == 1  # only the one that made the entry


def test_a_revoked_entry_is_not_rehashed(world: World) -> None:
    entry = world.add(TOKEN)
    revoked = replace(entry, revoke_time=datetime.fromtimestamp(NOW - 1, UTC), revision=2)
    world.store.replace(revoked)
    world.hasher.version = 2
    checker = world.checker()

    assert run(read_catalog(checker)).reason == "revoked"
    assert world.store.get(entry.id).verifier == entry.verifier
