"""The Check use case: from a presented token to a decision, in microseconds when warm.

A warm token costs one keyed SHA-256 and a few dict lookups. A cold one costs the rest of its
HMAC lookup tag, a store query and one argon2 verify per candidate entry, run in a thread pool
off the event loop; concurrent cold checks of the same token share one verify (single flight).
A token whose tag matches nothing costs no argon2 work at all, and no store query when the tags
are known.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime

from authz_service.core.decision import (
    DENY_MALFORMED,
    DENY_UNKNOWN_TOKEN,
    Decision,
    Policy,
    bearer_token,
    decide,
)
from authz_service.core.errors import invalid
from authz_service.core.model import Action, Entry
from authz_service.core.ports import EntryStore, Hasher
from authz_service.core.rules import (
    TOKEN_MAX_BYTES,
    action_problem,
    permission_problem,
    plugin_problem,
    token_problem,
)
from authz_service.core.tokens import TokenDigests

from .hashing import HashQueue
from .timing import Durations

log = logging.getLogger("authz_service.check")

# Who is asking: a client's address, computed only when a check needs argon2 work, which is
# taken in turns by caller (HashQueue).
Caller = Callable[[], str]

DEFAULT_CACHE_SIZE = 10_000
_MAX_REMEMBERED_NAMES = 4096
# Action enum numbers to the core's Action; 0 (unspecified) means the request names none.
_ACTIONS: tuple[Action | None, ...] = (None, *Action)
_MAX_ACTION = len(_ACTIONS) - 1
# Upper bounds (seconds) of the argon2 verification histogram: the target is 20-60 ms.
ARGON2_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)
# Upper bounds (seconds) of the Check latency histogram: warm checks take microseconds, cold
# ones an argon2 verify (tens of milliseconds) plus any wait for a free hashing thread.
CHECK_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.001,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
_now = time.perf_counter


class Checker:
    """Answers Check and keeps the cache of verified tokens consistent with admin writes.

    Admin use cases call `refresh` or `forget` after a write commits and before they return,
    which is what makes revocation take effect on the very next Check.
    """

    def __init__(
        self,
        store: EntryStore,
        hasher: Hasher,
        key: bytes,
        hash_pool: Executor,
        write_pool: Executor,
        *,
        hash_workers: int = 1,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
        known_tags: set[int] | None = None,
    ) -> None:
        self._store = store
        # Every lookup tag in the store, when this process is the store's only writer (the
        # server locks its database): a tag not in it is a miss without a store query. Admin
        # calls add a new token's tag with `expect_tag` before its entry is written.
        self._known_tags = known_tags
        self._hasher = hasher
        digests = TokenDigests(key)
        self._cache_key = digests.cache_key
        self._tag_of = digests.tag_of
        # argon2 work, Check's and the admin calls', on `hash_workers` threads of `hash_pool`.
        self.hash_queue = HashQueue(hash_pool, hash_workers)
        self._write_pool = write_pool
        self._cache_size = cache_size
        self._clock = clock
        # digest -> compiled policy; insertion order doubles as eviction order.
        self._cache: dict[bytes, Policy] = {}
        self._digests_of: dict[str, set[bytes]] = {}
        # The verifies in flight, and the ids of the entries each one read: a write to one of
        # those entries drops the flight (see _invalidate), and a dropped flight lands nothing.
        self._inflight: dict[bytes, asyncio.Task[Policy | None]] = {}
        self._flight_entries: dict[bytes, frozenset[str]] = {}
        # Digests of wrong tokens whose tag matched some entry: replayed, each would cost an
        # argon2 verify per request. Bounded; a token leaves it when an entry takes it.
        self._failed: dict[bytes, None] = {}
        self._last_used: dict[str, float] = {}
        self._valid_plugins: set[str] = set()
        self._valid_permissions: set[str] = set()
        # Plain counters, read by the metrics collector at scrape time (cheaper than
        # prometheus-client on the hot path). `answers` counts by reason; "" is ALLOW.
        self.answers: dict[str, int] = {}
        self.argon2_verifications = 0
        self.argon2_seconds = Durations(ARGON2_BUCKETS)
        self.tag_misses = 0
        # Each answered Check's time in this process, from call to decision.
        self.check_seconds = Durations(CHECK_BUCKETS)
        # Checks whose token was (not) in the cache of verified tokens.
        self.cache_hits = 0
        self.cache_misses = 0

    async def check(  # noqa: PLR0917 (positional: a keyword costs every Check, callgrind)
        self,
        token: str,
        authorization: str,
        plugin: str,
        permission: str,
        action: int,
        caller: Caller = lambda: "",
    ) -> Decision:
        """Decide whether the token (raw, or in an Authorization value) may do this.

        This is the hot path: a warm token costs one keyed SHA-256 and a few dict lookups.
        Names seen valid before skip the regexes, and nothing here awaits unless it is cold.
        `caller` names who asks, for the turns of argon2 work, and is called only then.
        """
        started = _now()
        if plugin not in self._valid_plugins or (
            permission and permission not in self._valid_permissions
        ):
            self._admit_names(plugin, permission)
        if not 0 <= action <= _MAX_ACTION:
            raise invalid("action", action_problem(action) or "")
        if token and not authorization and len(token) <= TOKEN_MAX_BYTES:
            presented = token
        else:
            credential = bearer_token(token, authorization)
            if isinstance(credential, Decision):
                return self._counted(credential, started)
            presented = credential
        digest = self._cache_key(presented)
        policy = self._cache.get(digest)
        if policy is not None:
            self.cache_hits += 1
        else:
            self.cache_misses += 1
            # Only tokens that once matched an entry are cached, so the format check can wait
            # until here: warm checks skip it.
            if token_problem(presented) is not None:
                return self._counted(DENY_MALFORMED, started)
            if digest in self._failed:
                return self._counted(DENY_UNKNOWN_TOKEN, started)
            tag = self._tag_of(digest)
            known = self._known_tags
            if known is not None and tag not in known:
                # The common wrong token: answered here, with no store query, no task and no
                # await. (The set only grows, so no verify of this token can be in flight.)
                self.tag_misses += 1
                return self._counted(DENY_UNKNOWN_TOKEN, started)
            policy = await self._resolve(digest, presented, tag, caller)
            if policy is None:
                return self._counted(DENY_UNKNOWN_TOKEN, started)
        now = self._clock()
        decision = decide(policy, plugin, permission, _ACTIONS[action], now)
        if decision.http_status != 401:
            self._last_used[policy.entry_id] = now
        answers = self.answers
        answers[decision.reason] = answers.get(decision.reason, 0) + 1
        self.check_seconds.observe(_now() - started)
        return decision

    def _counted(self, decision: Decision, started: float) -> Decision:
        answers = self.answers
        answers[decision.reason] = answers.get(decision.reason, 0) + 1
        self.check_seconds.observe(_now() - started)
        return decision

    def _admit_names(self, plugin: str, permission: str) -> None:
        """Validate names not seen before; remember valid ones (bounded) to skip the regexes."""
        problem = plugin_problem(plugin)
        if problem is not None:
            raise invalid("plugin", problem)
        if permission:
            problem = permission_problem(permission)
            if problem is not None:
                raise invalid("permission", problem)
        for seen, name in ((self._valid_plugins, plugin), (self._valid_permissions, permission)):
            if len(seen) >= _MAX_REMEMBERED_NAMES:
                seen.clear()
            if name:
                seen.add(name)

    def refresh(self, entry: Entry) -> None:
        """Make cached tokens of `entry` follow its new state (after update or revoke)."""
        self._invalidate(entry.id)
        digests = self._digests_of.get(entry.id)
        if digests:
            policy = Policy.of(entry)
            for digest in digests:
                self._cache[digest] = policy

    def forget(self, entry_id: str) -> None:
        """Drop every cached token of an entry (after its token was rotated)."""
        self._invalidate(entry_id)
        for digest in self._digests_of.pop(entry_id, ()):
            self._cache.pop(digest, None)

    def rotated(self, entry_id: str, token: str) -> None:
        """An entry's token was replaced by `token`: `forget` the old, `token_added` the new."""
        self.forget(entry_id)
        self.token_added(token)

    def last_used(self, entry_id: str) -> datetime | None:
        """The latest use of an entry that is not yet written to the store."""
        seen = self._last_used.get(entry_id)
        return None if seen is None else datetime.fromtimestamp(seen, UTC)

    async def flush_usage(self) -> None:
        """Write the `last_used_time` of recently used entries to the store, in one batch."""
        if not self._last_used:
            return
        batch, self._last_used = self._last_used, {}
        times = {eid: datetime.fromtimestamp(ts, UTC) for eid, ts in batch.items()}
        await asyncio.get_running_loop().run_in_executor(
            self._write_pool, self._store.record_use, times
        )

    @property
    def cache_size(self) -> int:
        """How many verified tokens the cache holds now."""
        return len(self._cache)

    def expect_tag(self, tag: int) -> None:
        """A token with this lookup tag is about to be written: let Check look it up."""
        if self._known_tags is not None:
            self._known_tags.add(tag)

    def token_added(self, token: str) -> None:
        """`token` became an entry's (create, rotate): no longer known to be wrong.

        Only this token: a write makes no other wrong token right, so the others stay
        remembered, and a replayed burst of them costs no argon2 work again.
        """
        digest = self._cache_key(token)
        self._failed.pop(digest, None)
        # A verify of it in flight read the entries before the write: it must not land.
        self._inflight.pop(digest, None)
        self._flight_entries.pop(digest, None)

    def _invalidate(self, entry_id: str) -> None:
        """Drop the verifies in flight that read this entry before its write: checks arriving
        from now on read the store afresh, and those verifies cache nothing. Only those: a
        write to one entry leaves every other token's first verify to land."""
        stale = [d for d, read in self._flight_entries.items() if entry_id in read]
        for digest in stale:
            del self._flight_entries[digest]
            self._inflight.pop(digest, None)

    async def _resolve(self, digest: bytes, token: str, tag: int, caller: Caller) -> Policy | None:
        flight = self._inflight.get(digest)
        if flight is None:
            # The store is read here, before any task exists: a tag that matches nothing is
            # answered without scheduling anything.
            candidates = self._store.find_tag(tag)
            if not candidates:
                self.tag_misses += 1
                return None
            flight = asyncio.create_task(self._verify(digest, token, candidates, caller()))
            self._inflight[digest] = flight
            self._flight_entries[digest] = frozenset(e.id for e in candidates)
            flight.add_done_callback(lambda done: self._land(digest, done))
        # shield: a caller that gives up (deadline) must not cancel the others' verify.
        return await asyncio.shield(flight)

    def _land(self, digest: bytes, flight: asyncio.Task[Policy | None]) -> None:
        if self._inflight.get(digest) is flight:
            del self._inflight[digest]
            del self._flight_entries[digest]

    async def _verify(
        self, digest: bytes, token: str, candidates: list[Entry], caller: str
    ) -> Policy | None:
        """Verify `token` against each candidate in turn. The answer is cached (a match) or
        remembered (no match) only while this flight is still the one in flight for the token:
        a write to one of the candidates, or one that took this token, drops it."""
        # Unrevoked entries first: a match there ends the search soonest.
        for entry in sorted(candidates, key=lambda e: e.revoke_time is not None):
            self.argon2_verifications += 1
            matched, seconds = await self.hash_queue.run(
                caller, self._timed_verify, entry.verifier, token
            )
            self.argon2_seconds.observe(seconds)
            if matched:
                policy = Policy.of(entry)
                if self._inflight.get(digest) is asyncio.current_task():
                    self._remember(digest, policy)
                if entry.revoke_time is None and self._hasher.needs_rehash(entry.verifier):
                    await self._rehash(entry, token, caller)
                return policy
        if self._inflight.get(digest) is asyncio.current_task():
            if len(self._failed) >= self._cache_size:
                del self._failed[next(iter(self._failed))]
            self._failed[digest] = None
        return None

    def _timed_verify(self, verifier: str, token: str) -> tuple[bool, float]:
        # Timed in the pool's thread: the verify itself, not its wait for a free thread.
        started = time.perf_counter()
        matched = self._hasher.verify(verifier, token)
        return matched, time.perf_counter() - started

    def _remember(self, digest: bytes, policy: Policy) -> None:
        if len(self._cache) >= self._cache_size:
            oldest = next(iter(self._cache))
            evicted = self._cache.pop(oldest)
            siblings = self._digests_of.get(evicted.entry_id)
            if siblings is not None:
                siblings.discard(oldest)
                if not siblings:
                    del self._digests_of[evicted.entry_id]
        self._cache[digest] = policy
        self._digests_of.setdefault(policy.entry_id, set()).add(digest)

    async def _rehash(self, entry: Entry, token: str, caller: str) -> None:
        """Store a verifier with the current parameters: best effort, it never fails a Check."""
        try:
            stronger = await self.hash_queue.run(caller, self._hasher.hash, token)
            await asyncio.get_running_loop().run_in_executor(
                self._write_pool, self._store.replace_verifier, entry.id, entry.verifier, stronger
            )
        except Exception as exc:  # noqa: BLE001 (logged; the old verifier still works)
            log.warning(
                "could not store a stronger verifier for entry %s (%s); kept the old one",
                entry.id,
                type(exc).__name__,
            )
