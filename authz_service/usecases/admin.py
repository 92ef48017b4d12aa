"""The admin use cases: create, update (and rotate), revoke, get and list entries.

Every call first authenticates its caller with the same Check path backend services use, asking
the reserved plugin `authz` for the call's permission. Writes run on a single writer thread so
an fsync never stalls the event loop, and each one refreshes the Check cache before it returns.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from authz_service.core.decision import UNAUTHENTICATED, Decision
from authz_service.core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    invalid,
)
from authz_service.core.model import (
    ADMIN_PLUGIN,
    BOOTSTRAP_SUBJECT,
    FULL_ADMIN_RESTRICTION,
    AdminPermission,
    Entry,
    Restriction,
    State,
    from_micros,
    new_etag,
    to_micros,
)
from authz_service.core.ports import Cursor, EntryStore, Hasher
from authz_service.core.rights import ADMIN_ACTIONS, AdminRight, admin_rights, missing_rights
from authz_service.core.rules import (
    DESCRIPTION_MAX_CHARS,
    MAX_MASK_PATHS,
    REVOKE_REASON_MAX_CHARS,
    RestrictionInput,
    Violations,
    parse_scope,
    subject_problem,
    text_problem,
    token_problem,
)
from authz_service.core.tokens import lookup_tag

from .check import Checker

# The subject of the admin whose call is being served, set once its token is accepted; read
# by the access log. Each gRPC call runs in its own task, so each has its own value.
acting_admin: contextvars.ContextVar[str] = contextvars.ContextVar("acting_admin", default="")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# A page's entries stop short of this many bytes (an estimate of their encoded size), well
# inside a default client's 4 MiB message limit; the largest valid entry is about 530 KB.
PAGE_BYTES = 1 << 20
_LIST_BATCH = 32
UPDATABLE_PATHS = ("description", "access_restrictions", "unrestricted", "expire_time")
# Creates and rotations waiting for the token lock at once; more are UNAVAILABLE.
MAX_CLAIMS_WAITING = 64


@dataclass(frozen=True, slots=True)
class _Acting:
    """The admin a write is made for: its entry, the permission the call needs, its rights."""

    entry_id: str
    permission: AdminPermission
    held: frozenset[AdminRight]


@dataclass(frozen=True, slots=True)
class NewEntry:
    """CreateEntry's input, as plain values."""

    subject: str
    token: str
    description: str = ""
    restrictions: Sequence[RestrictionInput] = ()
    unrestricted: bool = False
    expire_time: datetime | None = None
    # Fields the API could not read into plain values (an out-of-range timestamp): reported
    # with the other bad fields, after the caller is authorized.
    unreadable: Sequence[FieldViolation] = ()


@dataclass(frozen=True, slots=True)
class EntryChange:
    """UpdateEntry's input: which fields to change (`paths`), their new values, the etag."""

    entry_id: str
    etag: str
    paths: Sequence[str] = ()
    description: str = ""
    restrictions: Sequence[RestrictionInput] = ()
    unrestricted: bool = False
    expire_time: datetime | None = None
    new_token: str = ""
    # As NewEntry's, reported only for a field the update mask names.
    unreadable: Sequence[FieldViolation] = ()


class Admin:
    """The admin use cases, over a store, a hasher and the Check cache they keep fresh."""

    def __init__(
        self,
        store: EntryStore,
        hasher: Hasher,
        checker: Checker,
        *,
        key: bytes,
        write_pool: Executor,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._checker = checker
        self._key = key
        self._page_key = hmac.new(key, b"authz page token", hashlib.sha256).digest()
        # argon2 work shares Check's turns by caller: an admin's waits behind no one's burst.
        self._hashing = checker.hash_queue
        self._write_pool = write_pool
        self._clock = clock
        # Serializes "is this token free? then take it" across creates and rotations.
        self._token_lock = asyncio.Lock()
        self._claims_waiting = 0

    async def authorize(
        self, authorization: str, permission: AdminPermission, peer: str = ""
    ) -> Decision:
        """Check's ALLOW for the admin presenting `authorization`, if it holds `permission`.

        `peer` (the client's address) is whose turn any argon2 work here takes, in every call.
        """
        if not authorization:
            raise Unauthenticated("admin calls need 'authorization: Bearer <token>' metadata")
        decision = await self._checker.check(
            "",
            authorization,
            ADMIN_PLUGIN,
            permission.value,
            ADMIN_ACTIONS[permission],
            caller=lambda: peer,
        )
        if decision.allowed:
            acting_admin.set(decision.subject)
            return decision
        if decision.code == UNAUTHENTICATED:
            raise Unauthenticated(f"admin token rejected: {decision.reason}")
        raise PermissionDenied(f"this admin token does not grant {permission.value}")

    async def _authorize_writer(
        self, authorization: str, permission: AdminPermission, peer: str
    ) -> _Acting:
        """`authorize`, then the `authz` rights the admin holds: all it may grant or act on."""
        decision = await self.authorize(authorization, permission, peer)
        held = admin_rights(self._get(decision.entry_id).restrictions)
        return _Acting(decision.entry_id, permission, held)

    async def create(self, authorization: str, new: NewEntry, *, peer: str = "") -> Entry:
        """Create an entry for a new token; the token itself is kept only as a verifier."""
        acting = await self._authorize_writer(authorization, AdminPermission.CREATE, peer)
        now = self._clock()
        found = Violations(new.unreadable)
        found.check("subject", subject_problem(new.subject))
        found.check("token", token_problem(new.token))
        found.check("description", text_problem(new.description, DESCRIPTION_MAX_CHARS))
        restrictions = parse_scope(new.restrictions, new.unrestricted, found)
        found.check("expire_time", _future_problem(new.expire_time, now))
        found.raise_if_any()
        _may_grant(acting.held, restrictions)
        if self._store.find_subject(new.subject) is not None:
            raise AlreadyExists("subject: an unrevoked entry already has this subject")
        async with self._claiming():
            verifier, tag = await self._claim(new.token, "token", peer)
            entry = Entry(
                id=str(uuid.uuid4()),
                subject=new.subject,
                description=new.description,
                restrictions=restrictions,
                unrestricted=new.unrestricted,
                verifier=verifier,
                lookup_tag=tag,
                create_time=now,
                update_time=now,
                expire_time=new.expire_time,
            )
            await self._commit(
                self._store.add, entry, partial(self._checker.token_added, new.token), acting
            )
        return entry

    async def update(self, authorization: str, change: EntryChange, *, peer: str = "") -> Entry:
        """Change the fields named by `change.paths`, and rotate the token if one is given."""
        acting = await self._authorize_writer(authorization, AdminPermission.UPDATE, peer)
        found = Violations()
        found.check("entry.id", None if change.entry_id else "is required")
        found.check("etag", None if change.etag else "is required (read the entry first)")
        if len(change.paths) > MAX_MASK_PATHS:
            found.check("update_mask.paths", f"must name at most {MAX_MASK_PATHS} paths")
        for i, path in enumerate(change.paths[:MAX_MASK_PATHS]):
            if path not in UPDATABLE_PATHS:
                found.check(
                    f"update_mask.paths[{i}]", "must be one of " + ", ".join(UPDATABLE_PATHS)
                )
        if not change.paths and not change.new_token:
            found.check("update_mask", "must name a field to change, unless new_token is set")
        if change.new_token:
            found.check("new_token", token_problem(change.new_token))
        found.raise_if_any()
        current = self._get(change.entry_id)
        _may_act_on(acting.held, current)
        if current.revoke_time is not None:
            raise FailedPrecondition("a revoked entry cannot be updated")
        if change.etag != current.etag:
            raise Aborted("etag: the entry changed since it was read; read it again")
        now = self._clock()
        paths = set(change.paths)
        unrestricted = change.unrestricted if "unrestricted" in paths else current.unrestricted
        restrictions = current.restrictions
        if "description" in paths:
            found.check(
                "entry.description", text_problem(change.description, DESCRIPTION_MAX_CHARS)
            )
        if paths & {"access_restrictions", "unrestricted"}:
            raws = (
                change.restrictions
                if "access_restrictions" in paths
                else [
                    RestrictionInput(r.plugin, r.permissions, r.actions)
                    for r in current.restrictions
                ]
            )
            restrictions = parse_scope(raws, unrestricted, found, "entry.access_restrictions")
        _check_masked(found, change.unreadable, paths)
        if "expire_time" in paths:
            found.check("entry.expire_time", _future_problem(change.expire_time, now))
        found.raise_if_any()
        _may_grant(acting.held, restrictions)
        updated = replace(
            current,
            description=change.description if "description" in paths else current.description,
            restrictions=restrictions,
            unrestricted=unrestricted,
            expire_time=change.expire_time if "expire_time" in paths else current.expire_time,
            update_time=now,
            revision=current.revision + 1,
            etag=new_etag(),
        )
        if not change.new_token:
            await self._commit(
                self._store.replace,
                updated,
                partial(self._checker.refresh, updated),
                acting,
                current,
            )
            return self._with_usage(updated)
        async with self._claiming():
            verifier, tag = await self._claim(change.new_token, "new_token", peer)
            updated = replace(updated, verifier=verifier, lookup_tag=tag)
            await self._commit(
                self._store.rotate,
                updated,
                partial(self._checker.rotated, updated.id, change.new_token),
                acting,
                current,
            )
        return self._with_usage(updated)

    async def revoke(
        self, authorization: str, entry_id: str, reason: str, *, peer: str = ""
    ) -> Entry:
        """Revoke an entry at once; revoking a revoked entry changes nothing."""
        acting = await self._authorize_writer(authorization, AdminPermission.REVOKE, peer)
        found = Violations()
        found.check("id", None if entry_id else "is required")
        found.check("reason", text_problem(reason, REVOKE_REASON_MAX_CHARS))
        found.raise_if_any()
        while True:
            current = self._get(entry_id)
            _may_act_on(acting.held, current)
            if current.revoke_time is not None:
                # Heals the cache should an earlier revoke have been cut short before it could.
                self._checker.refresh(current)
                return self._with_usage(current)
            now = self._clock()
            revoked = replace(
                current,
                revoke_time=now,
                revoke_reason=reason,
                update_time=now,
                revision=current.revision + 1,
                etag=new_etag(),
            )
            try:
                await self._commit(
                    self._store.replace,
                    revoked,
                    partial(self._checker.refresh, revoked),
                    acting,
                    current,
                )
            except Aborted:
                continue  # another admin wrote meanwhile: revoke what is there now
            return self._with_usage(revoked)

    async def get(self, authorization: str, entry_id: str, *, peer: str = "") -> Entry:
        """One entry, with its latest use."""
        await self.authorize(authorization, AdminPermission.READ, peer)
        if not entry_id:
            raise invalid("id", "is required")
        return self._with_usage(self._get(entry_id))

    async def list(
        self,
        authorization: str,
        page_size: int,
        page_token: str,
        include_revoked: bool,
        *,
        peer: str = "",
    ) -> tuple[list[Entry], str]:
        """A page of entries in creation order, and the token of the next page ("" at the end)."""
        await self.authorize(authorization, AdminPermission.READ, peer)
        if page_size < 0:
            raise invalid("page_size", "must not be negative")
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = self._read_page_token(page_token) if page_token else None
        page: list[Entry] = []
        size = 0
        more = False
        # Read in small batches, so a page of large entries stops at PAGE_BYTES without all of
        # `limit` being read first; one entry past the page tells whether another follows.
        while not more:
            wanted = min(limit + 1 - len(page), _LIST_BATCH)
            batch = self._store.list_entries(after, wanted, include_revoked)
            for entry in batch:
                size += listed_size(entry)
                if len(page) == limit or (page and size > PAGE_BYTES):
                    more = True
                    break
                page.append(entry)
            if len(batch) < wanted:
                break
            after = (batch[-1].create_time, batch[-1].id)
        last = page[-1] if page else None
        next_token = self._page_token((last.create_time, last.id)) if more and last else ""
        return [self._with_usage(e) for e in page], next_token

    async def ensure_bootstrap_admin(self, token: str) -> Entry:
        """Make sure `bootstrap-admin` exists, is active and holds full `authz` rights for token."""
        problem = token_problem(token)
        if problem is not None:
            raise invalid("bootstrap token", problem)
        now = self._clock()
        current = self._store.find_subject(BOOTSTRAP_SUBJECT)
        async with self._token_lock:
            holder = await self._holder(token, "")
            if holder is not None and (current is None or holder.id != current.id):
                raise AlreadyExists("bootstrap token: another entry already holds this token")
            if holder is None and await self._retired(token, ""):
                raise AlreadyExists(
                    "bootstrap token: this token was rotated away; choose a new one"
                )
            rights = tuple(
                r for r in (current.restrictions if current else ()) if r.plugin != ADMIN_PLUGIN
            )
            rights = (*rights, FULL_ADMIN_RESTRICTION)
            if current is None:
                verifier, tag = await self._claim(token, "bootstrap token", "")
                entry = Entry(
                    id=str(uuid.uuid4()),
                    subject=BOOTSTRAP_SUBJECT,
                    description="created from the bootstrap token",
                    restrictions=rights,
                    unrestricted=False,
                    verifier=verifier,
                    lookup_tag=tag,
                    create_time=now,
                    update_time=now,
                )
                await self._commit(
                    self._store.add, entry, partial(self._checker.token_added, token)
                )
                return entry
            updated = replace(
                current,
                restrictions=rights,
                expire_time=None,
                update_time=now,
                revision=current.revision + 1,
                etag=new_etag(),
            )
            write, then = self._store.replace, partial(self._checker.forget, updated.id)
            if holder is None:
                verifier, tag = await self._claim(token, "bootstrap token", "")
                updated = replace(updated, verifier=verifier, lookup_tag=tag)
                write, then = self._store.rotate, partial(self._checker.rotated, updated.id, token)
            elif updated.restrictions == current.restrictions and current.expire_time is None:
                return current
            await self._commit(write, updated, then)
            return updated

    def _get(self, entry_id: str) -> Entry:
        try:
            return self._store.get(entry_id)
        except NotFound:
            raise NotFound("no entry has this id") from None

    def _with_usage(self, entry: Entry) -> Entry:
        pending = self._checker.last_used(entry.id)
        if pending is None or (entry.last_used_time and entry.last_used_time >= pending):
            return entry
        return replace(entry, last_used_time=pending)

    async def _holder(self, token: str, peer: str) -> Entry | None:
        """The entry, revoked or not, whose token this is; one argon2 verify per tag match."""
        tag = lookup_tag(self._key, token)
        for entry in self._store.find_tag(tag):
            if await self._hashing.run(peer, self._hasher.verify, entry.verifier, token):
                return entry
        return None

    async def _retired(self, token: str, peer: str) -> bool:
        """Whether `token` was once an entry's and was rotated away."""
        tag = lookup_tag(self._key, token)
        for verifier in self._store.find_retired(tag):
            if await self._hashing.run(peer, self._hasher.verify, verifier, token):
                return True
        return False

    async def _claim(self, token: str, field: str, peer: str) -> tuple[str, int]:
        """A verifier and tag for a token no entry holds; AlreadyExists (naming no entry) else.

        Tokens of revoked entries and rotated-away tokens are refused too: a token that was
        taken out of service must never work again.
        """
        if await self._holder(token, peer) is not None or await self._retired(token, peer):
            raise AlreadyExists(f"{field}: already in use or retired (tokens are never reused)")
        verifier = await self._hashing.run(peer, self._hasher.hash, token)
        tag = lookup_tag(self._key, token)
        self._checker.expect_tag(tag)  # before the write: no moment when Check could miss it
        return verifier, tag

    @contextlib.asynccontextmanager
    async def _claiming(self) -> AsyncIterator[None]:
        """The token lock, for a create or a rotation; Unavailable when too many wait for it
        (every admin's creates and rotations take turns on it)."""
        if self._claims_waiting >= MAX_CLAIMS_WAITING:
            raise Unavailable("too many creates and rotations are in progress; retry shortly")
        self._claims_waiting += 1
        try:
            async with self._token_lock:
                yield
        finally:
            self._claims_waiting -= 1

    async def _commit(
        self,
        write: Callable[[Entry], None],
        entry: Entry,
        then: Callable[[], None],
        acting: _Acting | None = None,
        target: Entry | None = None,
    ) -> None:
        """Write `entry` on the writer thread, then bring the Check cache up to date (`then`).

        With `acting`, the writer thread first reads the acting admin's entry again: an admin
        revoked or narrowed while its call waited (for the token lock, for argon2) writes
        nothing once that revoke or narrowing has returned, since both ran on this one thread.

        The two run as one shielded task: a call cancelled by its client or its deadline while
        the write runs must still update the cache once the write commits, or a token revoked
        or rotated away would stay allowed from the cache.
        """

        def write_as_acting(entry: Entry) -> None:
            if acting is not None:
                self._still_allowed(acting, entry, target)
            write(entry)

        async def unit() -> None:
            await asyncio.get_running_loop().run_in_executor(
                self._write_pool, write_as_acting, entry
            )
            then()

        task = asyncio.ensure_future(unit())
        # Retrieve the outcome even when the caller is gone, so it is never "never retrieved".
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        await asyncio.shield(task)

    def _still_allowed(self, acting: _Acting, entry: Entry, target: Entry | None) -> None:
        """Unauthenticated or PermissionDenied unless the acting admin, as stored now, may still
        make this write (on the writer thread, just before it)."""
        actor = self._store.get(acting.entry_id)
        state = actor.state(self._clock())
        if state is not State.ACTIVE:
            raise Unauthenticated(f"admin token rejected: {state.name.lower()}")
        held = admin_rights(actor.restrictions)
        if (acting.permission, ADMIN_ACTIONS[acting.permission]) not in held:
            raise PermissionDenied(f"this admin token does not grant {acting.permission.value}")
        if target is not None:
            _may_act_on(held, target)
        _may_grant(held, entry.restrictions)

    def _page_token(self, cursor: Cursor) -> str:
        payload = json.dumps([to_micros(cursor[0]), cursor[1]]).encode()
        mac = hmac.new(self._page_key, payload, hashlib.sha256).digest()[:16]
        return _b64(payload) + "." + _b64(mac)

    def _read_page_token(self, page_token: str) -> Cursor:
        try:
            micros, entry_id = _as_cursor(self._signed_payload(page_token))
        except ValueError:
            raise invalid(
                "page_token", "was not issued by this server; start without one"
            ) from None
        return from_micros(micros), entry_id

    def _signed_payload(self, page_token: str) -> Any:
        payload_part, mac_part = page_token.split(".")
        payload, mac = _unb64(payload_part), _unb64(mac_part)
        expected = hmac.new(self._page_key, payload, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, expected):
            raise ValueError("bad signature")
        return json.loads(payload)


def listed_size(entry: Entry) -> int:
    """About how many bytes `entry` takes in a response (an upper estimate: every string with
    its tag and length, and a fixed allowance for the ids, times and flags)."""
    size = 256 + len(entry.subject) + len(entry.description) * 4 + len(entry.revoke_reason) * 4
    for restriction in entry.restrictions:
        size += 8 + len(restriction.plugin) + 2 * len(restriction.actions)
        size += sum(3 + len(p) for p in restriction.permissions)
    return size


def _may_grant(held: frozenset[AdminRight], restrictions: Sequence[Restriction]) -> None:
    """PermissionDenied unless the admin holds every `authz` right `restrictions` grant."""
    missing = missing_rights(held, admin_rights(restrictions))
    if missing:
        raise PermissionDenied(
            f"access_restrictions: an admin grants only the authz rights it holds; "
            f"this one lacks {missing}"
        )


def _may_act_on(held: frozenset[AdminRight], target: Entry) -> None:
    """PermissionDenied unless the admin holds every `authz` right the target entry holds."""
    missing = missing_rights(held, admin_rights(target.restrictions))
    if missing:
        raise PermissionDenied(
            f"this entry holds authz rights this admin lacks ({missing}): "
            "only an admin holding all of them may change it"
        )


def _check_masked(found: Violations, unreadable: Sequence[FieldViolation], paths: set[str]) -> None:
    """Record the unreadable fields of an update's entry that its mask names: like every
    other field of the entry, one outside the mask is ignored."""
    for violation in unreadable:
        if violation.field.removeprefix("entry.") in paths:
            found.check(violation.field, violation.description)


def _future_problem(when: datetime | None, now: datetime) -> str | None:
    if when is not None and when <= now:
        return "must be in the future"
    return None


def _as_cursor(value: Any) -> tuple[int, str]:
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int)
        and isinstance(value[1], str)
    ):
        return value[0], value[1]
    raise ValueError


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise ValueError from None
