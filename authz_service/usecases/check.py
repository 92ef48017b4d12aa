"""The Check use case: from a presented token to a decision, in microseconds when warm.

A warm token costs one keyed SHA-256, one question to the store's change feed and a few dict
lookups. A cold one costs the rest of its HMAC lookup tag, a store query and one argon2 verify
per candidate entry, run in a thread pool off the event loop; concurrent cold checks of the
same token share one verify (single flight). A token whose tag matches nothing costs no argon2
work and no store query at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
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

from .cache import TokenCache
from .coherence import Follower
from .hashing import HashQueue
from .timing import Durations
from .usage import UsageRecorder

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


@dataclass
class CheckCounters:
    """Plain counters, read by the metrics collector at scrape time (cheaper than
    prometheus-client on the hot path)."""

    # Answers by reason; "" is ALLOW.
    answers: dict[str, int] = field(default_factory=dict)
    argon2_verifications: int = 0
    argon2_seconds: Durations = field(default_factory=lambda: Durations(ARGON2_BUCKETS))
    # Tokens whose tag matched no entry (answered with no argon2 work).
    tag_misses: int = 0
    # Each answered Check's time in this process, from call to decision.
    check_seconds: Durations = field(default_factory=lambda: Durations(CHECK_BUCKETS))
    # Checks whose token was (not) in the cache of verified tokens.
    cache_hits: int = 0
    cache_misses: int = 0


class Checker:
    """Answers Check from the token cache, which follows the store's event log.

    Before it trusts the cache, every Check asks the change feed whether anything was committed
    since the cache last caught up, and catches up first when something was: a write on any
    process is in force on the very next Check (see `coherence`).
    """

    def __init__(
        self,
        store: EntryStore,
        hasher: Hasher,
        key: bytes,
        hash_pool: Executor,
        *,
        hash_workers: int = 1,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._hasher = hasher
        digests = TokenDigests(key)
        self._cache_key = digests.cache_key
        self._tag_of = digests.tag_of
        # argon2 work, Check's and the admin calls', on `hash_workers` threads of `hash_pool`.
        self.hash_queue = HashQueue(hash_pool, hash_workers)
        self._clock = clock
        self.tokens = TokenCache(cache_size)
        self.follower = Follower(store, self.tokens)
        self.usage = UsageRecorder(store)
        self.counters = CheckCounters()
        # The hot path's own references to what it touches on every call.
        self._verified = self.tokens.verified
        self._failed = self.tokens.failed
        self._known_tags = self.tokens.known_tags
        self._version = store.version
        self._last_used = self.usage.times
        self._answers = self.counters.answers
        self._check_seconds = self.counters.check_seconds
        self._valid_plugins: set[str] = set()
        self._valid_permissions: set[str] = set()

    async def start(self) -> None:
        """Read the store's tags and newest revision: call once, before the first Check."""
        await self.follower.start()

    async def check(  # noqa: PLR0912, PLR0917 (one function: a call costs every Check, callgrind)
        self,
        token: str,
        authorization: str,
        plugin: str,
        permission: str,
        action: int,
        caller: Caller = lambda: "",
    ) -> Decision:
        """Decide whether the token (raw, or in an Authorization value) may do this.

        This is the hot path: a warm token costs one keyed SHA-256, one look at the change
        feed's version and a few dict lookups. Names seen valid before skip the regexes, and
        nothing here awaits unless it is cold or another write landed. `caller` names who
        asks, for the turns of argon2 work, and is called only then.
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
        if self._version() != self.follower.seen:
            # Another write committed (here or in another process): apply it first.
            await self.follower.catch_up()
        digest = self._cache_key(presented)
        policy = self._verified.get(digest)
        if policy is not None:
            self.counters.cache_hits += 1
        else:
            self.counters.cache_misses += 1
            # Only tokens that once matched an entry are cached, so the format check can wait
            # until here: warm checks skip it.
            if token_problem(presented) is not None:
                return self._counted(DENY_MALFORMED, started)
            if digest in self._failed:
                return self._counted(DENY_UNKNOWN_TOKEN, started)
            tag = self._tag_of(digest)
            if tag not in self._known_tags:
                # The common wrong token: answered here, with no store query, no task and no
                # await. (A write that gives out this tag drops any verify in flight.)
                self.counters.tag_misses += 1
                return self._counted(DENY_UNKNOWN_TOKEN, started)
            policy = await self._resolve(digest, presented, tag, caller)
            if policy is None:
                return self._counted(DENY_UNKNOWN_TOKEN, started)
        now = self._clock()
        decision = decide(policy, plugin, permission, _ACTIONS[action], now)
        if decision.http_status != 401:
            self._last_used[policy.entry_id] = now
        answers = self._answers
        answers[decision.reason] = answers.get(decision.reason, 0) + 1
        self._check_seconds.observe(_now() - started)
        return decision

    def identify(self, authorization: str) -> tuple[str, str] | None:
        """The entry id and subject of an Authorization value's token, when this process
        has verified it already (a token refused PERMISSION_DENIED has been): else None."""
        token = bearer_token("", authorization) if authorization else ""
        if not isinstance(token, str) or not token:
            return None
        policy = self._verified.get(self._cache_key(token))
        return None if policy is None else (policy.entry_id, policy.subject)

    def _counted(self, decision: Decision, started: float) -> Decision:
        answers = self._answers
        answers[decision.reason] = answers.get(decision.reason, 0) + 1
        self._check_seconds.observe(_now() - started)
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

    async def _resolve(self, digest: bytes, token: str, tag: int, caller: Caller) -> Policy | None:
        tokens = self.tokens
        flight = tokens.inflight.get(digest)
        while flight is None:
            applied = self.follower.applied
            candidates = await self._store.find_tag(tag)
            flight = tokens.inflight.get(digest)  # another check may have started one meanwhile
            if flight is not None:
                break
            if self.follower.applied != applied:
                # Events were applied while the store was read: they could not drop a flight
                # that did not exist yet, so read again rather than verify against old rows.
                continue
            # Another check's verify may have started and landed while the store was read.
            cached = tokens.verified.get(digest)
            if cached is not None:
                return cached
            if digest in tokens.failed:
                return None
            if not candidates:
                self.counters.tag_misses += 1
                return None
            flight = asyncio.create_task(self._verify(digest, token, tag, candidates, caller()))
            tokens.fly(digest, tag, frozenset(e.id for e in candidates), flight)
            flight.add_done_callback(lambda done: tokens.landed(digest, done))
        # shield: a caller that gives up (deadline) must not cancel the others' verify.
        return await asyncio.shield(flight)

    async def _verify(
        self, digest: bytes, token: str, tag: int, candidates: list[Entry], caller: str
    ) -> Policy | None:
        """Verify `token` against each candidate in turn. The answer is cached (a match) or
        remembered (no match) only while this flight is still the one in flight for the token:
        a write to one of the candidates, or one that gave out a token with this tag, drops it."""
        # Unrevoked entries first: a match there ends the search soonest. A candidate is an
        # entry whose token has this tag, or whose previous token (in its grace) has.
        now = datetime.fromtimestamp(self._clock(), UTC)
        tried = [
            (entry, previous)
            for entry in sorted(candidates, key=lambda e: e.revoke_time is not None)
            for previous in (False, True)
            if _has_token_tagged(entry, tag, previous=previous, now=now)
        ]
        for entry, previous in tried:
            verifier = entry.previous_verifier if previous else entry.verifier
            self.counters.argon2_verifications += 1
            matched, seconds = await self.hash_queue.run(
                caller, self._timed_verify, verifier, token
            )
            self.counters.argon2_seconds.observe(seconds)
            if matched:
                policy = Policy.of(entry, previous=previous)
                if self.tokens.flying(digest):
                    self.tokens.remember(digest, policy)
                if (
                    not previous
                    and entry.revoke_time is None
                    and self._hasher.needs_rehash(entry.verifier)
                ):
                    await self._rehash(entry, token, caller)
                return policy
        if self.tokens.flying(digest):
            self.tokens.remember_wrong(digest, tag)
        return None

    def _timed_verify(self, verifier: str, token: str) -> tuple[bool, float]:
        # Timed in the pool's thread: the verify itself, not its wait for a free thread.
        started = time.perf_counter()
        matched = self._hasher.verify(verifier, token)
        return matched, time.perf_counter() - started

    async def _rehash(self, entry: Entry, token: str, caller: str) -> None:
        """Store a verifier with the current parameters: best effort, it never fails a Check."""
        try:
            stronger = await self.hash_queue.run(caller, self._hasher.hash, token)
            await self._store.replace_verifier(entry.id, entry.verifier, stronger)
        except Exception as exc:  # noqa: BLE001 (logged; the old verifier still works)
            log.warning(
                "could not store a stronger verifier for entry %s (%s); kept the old one",
                entry.id,
                type(exc).__name__,
            )


def _has_token_tagged(entry: Entry, tag: int, *, previous: bool, now: datetime) -> bool:
    """Whether the entry's token (or, with `previous`, its previous token, still in its grace)
    has this lookup tag: only those are worth an argon2 verify."""
    if previous:
        return entry.previous_lookup_tag == tag and entry.previous_live(now)
    return entry.lookup_tag == tag
