"""The admin use cases: create, update (and rotate), revoke, get and list entries.

Every call first authenticates its caller with the same Check path backend services use, asking
the reserved plugin `authz` for the call's permission. Each write appends its event in its own
transaction, and applies that event to this process's Check cache before it returns; other
processes apply it on their next Check (see `coherence`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

from authz_service.core.audit import (
    BOOTSTRAP_RPC,
    PERMISSION_DENIED,
    AuditEvent,
    AuditFilter,
    AuditRecord,
    field_changes,
)
from authz_service.core.changes import Change, Claim, Event
from authz_service.core.decision import UNAUTHENTICATED, Decision
from authz_service.core.errors import (
    Aborted,
    AlreadyExists,
    AuthzError,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    PermissionDenied,
    Unauthenticated,
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
    new_etag,
)
from authz_service.core.ports import EntryStore, Hasher
from authz_service.core.rights import ADMIN_ACTIONS, AdminRight, admin_rights, missing_rights
from authz_service.core.rules import (
    DESCRIPTION_MAX_CHARS,
    MAX_GRACE,
    MAX_MASK_PATHS,
    REVOKE_REASON_MAX_CHARS,
    RestrictionInput,
    Violations,
    parse_scope,
    subject_problem,
    text_problem,
    token_problem,
)

from .check import Checker
from .claims import TokenClaims
from .pages import PageTokens

log = logging.getLogger("authz_service.admin")
T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# A page's entries stop short of this many bytes (an estimate of their encoded size), well
# inside a default client's 4 MiB message limit; the largest valid entry is about 530 KB.
PAGE_BYTES = 1 << 20
_LIST_BATCH = 32
UPDATABLE_PATHS = ("description", "access_restrictions", "unrestricted", "expire_time")


@dataclass(frozen=True, slots=True)
class _Acting:
    """The admin a write is made for: its entry, the permission the call needs, its rights."""

    entry_id: str
    permission: AdminPermission
    held: frozenset[AdminRight]
    # The lookup tag of the admin's token when the call was authorized: a rotation of that
    # token changes it (but for one chance in 2**32), and refuses the write at commit time.
    tag: int
    subject: str
    call: Call


@dataclass(frozen=True, slots=True)
class Call:
    """Which admin RPC this is and who sent it, for the audit log."""

    rpc: str
    # The caller's host (whose turn argon2 work takes) and, for the audit log, its address.
    peer: str = ""
    user_agent: str = ""
    address: str = ""


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
    # With new_token: how long the replaced token keeps working (None or 0: not at all).
    previous_token_grace: timedelta | None = None
    # As NewEntry's, reported only for a field the update mask names.
    unreadable: Sequence[FieldViolation] = ()


@dataclass(frozen=True)
class Bootstrap:
    """What the bootstrap token did at start: the line to log, and the entry if there is one."""

    entry: Entry | None
    said: str
    warning: bool = False


class Admin:
    """The admin use cases, over a store, a hasher and the Check cache they keep fresh."""

    def __init__(
        self,
        store: EntryStore,
        hasher: Hasher,
        checker: Checker,
        *,
        key: bytes,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._checker = checker
        self._follower = checker.follower
        self._usage = checker.usage
        # argon2 work shares Check's turns by caller: an admin's waits behind no one's burst.
        self._claims = TokenClaims(store, hasher, checker.hash_queue, key)
        self._pages = PageTokens(key)
        self._clock = clock

    def identify(self, authorization: str) -> tuple[str, str] | None:
        """The entry id and subject of `authorization`'s token, once it was verified."""
        return self._checker.identify(authorization)

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
            return decision
        if decision.code == UNAUTHENTICATED:
            raise Unauthenticated(f"admin token rejected: {decision.reason}")
        raise PermissionDenied(f"this admin token does not grant {permission.value}")

    async def _authorize_writer(
        self, authorization: str, permission: AdminPermission, call: Call
    ) -> _Acting:
        """`authorize`, then the `authz` rights the admin holds: all it may grant or act on."""
        decision = await self.authorize(authorization, permission, call.peer)
        actor = await self._get(decision.entry_id)
        return _Acting(
            decision.entry_id,
            permission,
            admin_rights(actor.restrictions),
            actor.lookup_tag,
            actor.subject,
            call,
        )

    async def create(
        self,
        authorization: str,
        new: NewEntry,
        *,
        peer: str = "",
        user_agent: str = "",
        address: str = "",
    ) -> Entry:
        """Create an entry for a new token; the token itself is kept only as a verifier."""
        call = Call("CreateEntry", peer, user_agent, address)
        return await self._refusals_audited(
            authorization, "", call, self._create(authorization, new, call)
        )

    async def _create(self, authorization: str, new: NewEntry, call: Call) -> Entry:
        acting = await self._authorize_writer(authorization, AdminPermission.CREATE, call)
        peer = call.peer
        now = self._clock()
        found = Violations(new.unreadable)
        found.check("subject", subject_problem(new.subject))
        found.check("token", token_problem(new.token))
        found.check("description", text_problem(new.description, DESCRIPTION_MAX_CHARS))
        restrictions = parse_scope(new.restrictions, new.unrestricted, found)
        found.check("expire_time", _future_problem(new.expire_time, now))
        found.raise_if_any()
        _may_grant(acting.held, restrictions)
        if await self._store.find_subject(new.subject) is not None:
            raise AlreadyExists("subject: an unrevoked entry already has this subject")
        fields: tuple[str, ...] = ("subject", "description", "access_restrictions", "unrestricted")
        fields += ("expire_time",) if new.expire_time is not None else ()

        async def add(verifier: str, claim: Claim) -> Entry:
            entry = Entry(
                id=str(uuid.uuid4()),
                subject=new.subject,
                description=new.description,
                restrictions=restrictions,
                unrestricted=new.unrestricted,
                verifier=verifier,
                lookup_tag=claim.tag,
                create_time=now,
                update_time=now,
                expire_time=new.expire_time,
            )
            change = self._change(acting, entry, None, fields, claim)
            await self._commit(partial(self._store.add, entry, change))
            return entry

        return await self._claims.take(new.token, "token", peer, add)

    async def update(
        self,
        authorization: str,
        change: EntryChange,
        *,
        peer: str = "",
        user_agent: str = "",
        address: str = "",
    ) -> Entry:
        """Change the fields named by `change.paths`, and rotate the token if one is given."""
        call = Call("UpdateEntry", peer, user_agent, address)
        return await self._refusals_audited(
            authorization, change.entry_id, call, self._update(authorization, change, call)
        )

    async def _update(self, authorization: str, change: EntryChange, call: Call) -> Entry:
        acting = await self._authorize_writer(authorization, AdminPermission.UPDATE, call)
        peer = call.peer
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
        grace = change.previous_token_grace or timedelta(0)
        found.check("previous_token_grace", _grace_problem(grace, change.new_token))
        found.raise_if_any()
        current = await self._get(change.entry_id)
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
        expires = change.expire_time if "expire_time" in paths else current.expire_time
        if grace and expires is not None and now + grace > expires:
            found.check(
                "previous_token_grace",
                f"must end by the entry's expiry ({expires.isoformat()}): at most"
                f" {_duration(expires - now)} from now",
            )
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
        fields = tuple(p for p in UPDATABLE_PATHS if p in paths)
        if not change.new_token:
            written = self._change(acting, updated, current, fields)
            await self._commit(partial(self._store.replace, updated, written))
            return self._with_usage(updated)

        # The replaced token keeps working for the grace, if one is given; any earlier grace
        # ends here (at most two tokens live per entry).
        previous = replace(
            updated,
            previous_verifier=current.verifier if grace else "",
            previous_lookup_tag=current.lookup_tag if grace else None,
            previous_expire_time=now + grace if grace else None,
        )
        rotated_fields = (*fields, "token", *(("previous_token_expire_time",) if grace else ()))

        async def rotate(verifier: str, claim: Claim) -> Entry:
            rotated = replace(previous, verifier=verifier, lookup_tag=claim.tag)
            written = self._change(acting, rotated, current, rotated_fields, claim)
            await self._commit(partial(self._store.rotate, rotated, written))
            return rotated

        return self._with_usage(
            await self._claims.take(change.new_token, "new_token", peer, rotate)
        )

    async def revoke(
        self,
        authorization: str,
        entry_id: str,
        reason: str,
        *,
        peer: str = "",
        user_agent: str = "",
        address: str = "",
    ) -> Entry:
        """Revoke an entry at once; revoking a revoked entry changes nothing."""
        call = Call("RevokeEntry", peer, user_agent, address)
        return await self._refusals_audited(
            authorization, entry_id, call, self._revoke(authorization, entry_id, reason, call)
        )

    async def _revoke(self, authorization: str, entry_id: str, reason: str, call: Call) -> Entry:
        acting = await self._authorize_writer(authorization, AdminPermission.REVOKE, call)
        found = Violations()
        found.check("id", None if entry_id else "is required")
        found.check("reason", text_problem(reason, REVOKE_REASON_MAX_CHARS))
        found.raise_if_any()
        while True:
            current = await self._get(entry_id)
            _may_act_on(acting.held, current)
            if current.revoke_time is not None:
                # Another process's revoke may not be applied here yet: it is before we answer.
                await self._follower.catch_up()
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
            written = self._change(acting, revoked, current, ("revoke_time", "revoke_reason"))
            try:
                await self._commit(partial(self._store.replace, revoked, written))
            except Aborted:
                continue  # another admin wrote meanwhile: revoke what is there now
            return self._with_usage(revoked)

    async def get(
        self,
        authorization: str,
        entry_id: str,
        *,
        peer: str = "",
        user_agent: str = "",
        address: str = "",
    ) -> Entry:
        """One entry, with its latest use."""
        call = Call("GetEntry", peer, user_agent, address)
        await self._refusals_audited(
            authorization, entry_id, call, self.authorize(authorization, AdminPermission.READ, peer)
        )
        if not entry_id:
            raise invalid("id", "is required")
        return self._with_usage(await self._get(entry_id))

    async def list(
        self,
        authorization: str,
        page_size: int,
        page_token: str,
        include_revoked: bool,
        *,
        peer: str = "",
        user_agent: str = "",
        address: str = "",
    ) -> tuple[list[Entry], str]:
        """A page of entries in creation order, and the token of the next page ("" at the end)."""
        call = Call("ListEntries", peer, user_agent, address)
        await self._refusals_audited(
            authorization, "", call, self.authorize(authorization, AdminPermission.READ, peer)
        )
        if page_size < 0:
            raise invalid("page_size", "must not be negative")
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = self._pages.read(page_token) if page_token else None
        page: list[Entry] = []
        size = 0
        more = False
        # Read in small batches, so a page of large entries stops at PAGE_BYTES without all of
        # `limit` being read first; one entry past the page tells whether another follows.
        while not more:
            wanted = min(limit + 1 - len(page), _LIST_BATCH)
            batch = await self._store.list_entries(after, wanted, include_revoked)
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
        next_token = self._pages.issue((last.create_time, last.id)) if more and last else ""
        return [self._with_usage(e) for e in page], next_token

    async def list_audit(
        self,
        authorization: str,
        wanted: AuditFilter,
        page_size: int,
        page_token: str,
        *,
        unreadable: Sequence[FieldViolation] = (),
        peer: str = "",
        user_agent: str = "",
        address: str = "",
    ) -> tuple[Sequence[AuditEvent], str]:
        """A page of audit events, oldest first, and the next page's token ("" at the end)."""
        call = Call("ListAuditEvents", peer, user_agent, address)
        await self._refusals_audited(
            authorization, "", call, self.authorize(authorization, AdminPermission.AUDIT_READ, peer)
        )
        found = Violations(unreadable)
        found.check("page_size", "must not be negative" if page_size < 0 else None)
        if wanted.since and wanted.until and wanted.until <= wanted.since:
            found.check("until", "must be after since")
        found.raise_if_any()
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = self._pages.read_sequence(page_token) if page_token else 0
        events = await self._store.list_audit(after, limit + 1, wanted)
        more = len(events) > limit
        page = events[:limit]
        return page, self._pages.issue_sequence(page[-1].sequence) if more else ""

    async def ensure_bootstrap_admin(self, token: str) -> Bootstrap:
        """Create `bootstrap-admin` for `token` when no unrevoked entry has that subject.

        An existing one is left exactly as it is (never widened, narrowed, extended or
        rotated from here), and a token that is another entry's, was revoked or was rotated
        away is ignored: a retired token never comes back. The outcome says which, in the one
        line the server logs; only a malformed token refuses (INVALID_ARGUMENT).
        """
        problem = token_problem(token)
        if problem is not None:
            raise invalid("bootstrap token", problem)
        try:
            return await self._ensure_bootstrap_admin(token)
        except AlreadyExists:
            # Another process made it at the same moment: this one finds it now.
            return await self._ensure_bootstrap_admin(token)

    async def _ensure_bootstrap_admin(self, token: str) -> Bootstrap:
        now = self._clock()
        current = await self._store.find_subject(BOOTSTRAP_SUBJECT)
        holder = await self._claims.holder(token, "")
        if current is not None:
            if holder is not None and holder.id == current.id:
                return Bootstrap(
                    current,
                    f"bootstrap-admin (entry {current.id}) holds the bootstrap token;"
                    " left as it is",
                )
            return Bootstrap(
                current,
                f"bootstrap token ignored: bootstrap-admin (entry {current.id}) exists with"
                " another token, and is never changed from here; remove the bootstrap token"
                " from the settings",
                warning=True,
            )
        if holder is not None:
            held = "a revoked entry" if holder.revoke_time is not None else "another entry"
            return Bootstrap(
                None,
                f"bootstrap token ignored: it is the token of {held} ({holder.id}), and a"
                " token never serves two entries; remove it from the settings",
                warning=True,
            )
        if await self._claims.retired(token, ""):
            return Bootstrap(
                None,
                "bootstrap token ignored: it was rotated away, and a retired token never comes"
                " back; remove it from the settings",
                warning=True,
            )

        async def add(verifier: str, claim: Claim) -> Entry:
            entry = Entry(
                id=str(uuid.uuid4()),
                subject=BOOTSTRAP_SUBJECT,
                description="created from the bootstrap token",
                restrictions=(FULL_ADMIN_RESTRICTION,),
                unrestricted=False,
                verifier=verifier,
                lookup_tag=claim.tag,
                create_time=now,
                update_time=now,
            )
            fields = ("subject", "description", "access_restrictions")
            audit = AuditRecord(
                time=now,
                actor_entry_id="",
                actor_subject="",
                rpc=BOOTSTRAP_RPC,
                entry_id=entry.id,
                changes=field_changes(None, entry, fields),
                code=0,
                peer="",
                user_agent="",
            )
            written = Change(fields=fields, claim=claim, audit=audit)
            await self._commit(partial(self._store.add, entry, written))
            return entry

        created = await self._claims.take(token, "bootstrap token", "", add)
        return Bootstrap(
            created,
            f"bootstrap-admin created (entry {created.id}) for the bootstrap token; remove the"
            " token from the settings once its admins exist",
        )

    async def _get(self, entry_id: str) -> Entry:
        try:
            return await self._store.get(entry_id)
        except NotFound:
            raise NotFound("no entry has this id") from None

    def _with_usage(self, entry: Entry) -> Entry:
        pending = self._usage.last_used(entry.id)
        if pending is None or (entry.last_used_time and entry.last_used_time >= pending):
            return entry
        return replace(entry, last_used_time=pending)

    def _change(
        self,
        acting: _Acting,
        entry: Entry,
        target: Entry | None,
        fields: tuple[str, ...],
        claim: Claim | None = None,
    ) -> Change:
        """The write's event and audit record, with a guard that rechecks the acting admin at
        commit time."""
        audit = AuditRecord(
            time=entry.update_time,
            actor_entry_id=acting.entry_id,
            actor_subject=acting.subject,
            rpc=acting.call.rpc,
            entry_id=entry.id,
            changes=field_changes(target, entry, fields),
            code=0,
            peer=acting.call.address or acting.call.peer,
            user_agent=acting.call.user_agent,
        )
        return Change(
            actor_id=acting.entry_id,
            fields=fields,
            claim=claim,
            guard=partial(self._still_allowed, acting, entry, target),
            audit=audit,
        )

    async def _refusals_audited(
        self, authorization: str, target: str, call: Call, work: Awaitable[T]
    ) -> T:
        """`work`; when it refuses an authenticated admin (PERMISSION_DENIED), the refusal
        goes to the audit log first (an unauthenticated caller's is only counted and logged)."""
        try:
            return await work
        except PermissionDenied:
            actor = self._checker.identify(authorization)
            record = AuditRecord(
                time=self._clock(),
                actor_entry_id=actor[0] if actor else "",
                actor_subject=actor[1] if actor else "",
                rpc=call.rpc,
                entry_id=target,
                changes=(),
                code=PERMISSION_DENIED,
                peer=call.address or call.peer,
                user_agent=call.user_agent,
            )
            try:
                await self._store.record_audit(record)
            except AuthzError as exc:  # the refusal stands; the log line says what was lost
                log.warning("could not record a refused %s in the audit log: %s", call.rpc, exc)
            raise

    async def _commit(self, write: Callable[[], Awaitable[Event]]) -> Event:
        """Make the write, then apply its event (and any before it) to this process's Check
        cache.

        The write's guard first reads the acting admin's entry again inside its transaction:
        an admin revoked or narrowed while its call waited (for the claim lock, for argon2)
        writes nothing once that revoke or narrowing has returned, on any process.

        The two run as one shielded task: a call cancelled by its client or its deadline while
        the write runs must still update the cache once the write commits, or a token revoked
        or rotated away would stay allowed from the cache.
        """

        async def unit() -> Event:
            event = await write()
            await self._follower.reach(event.revision)
            # Replicas on other machines: until each has applied it (or its lease ran out).
            await self._store.settle(event.revision)
            return event

        task = asyncio.ensure_future(unit())
        # Retrieve the outcome even when the caller is gone, so it is never "never retrieved".
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(task)

    def _still_allowed(
        self, acting: _Acting, entry: Entry, target: Entry | None, actor: Entry | None
    ) -> None:
        """Unauthenticated or PermissionDenied unless the acting admin, as stored at commit
        time (`actor`), may still make this write. Runs inside the write's transaction."""
        if actor is None or actor.lookup_tag != acting.tag:  # gone, or its token rotated away
            raise Unauthenticated("admin token rejected: unknown_token")
        state = actor.state(self._clock())
        if state is not State.ACTIVE:
            raise Unauthenticated(f"admin token rejected: {state.name.lower()}")
        held = admin_rights(actor.restrictions)
        if (acting.permission, ADMIN_ACTIONS[acting.permission]) not in held:
            raise PermissionDenied(f"this admin token does not grant {acting.permission.value}")
        if target is not None:
            _may_act_on(held, target)
        _may_grant(held, entry.restrictions)


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


def _grace_problem(grace: timedelta, new_token: str) -> str | None:
    if not grace:
        return None
    if not new_token:
        return "needs new_token: a grace period belongs to a rotation"
    if grace < timedelta(0):
        return "must not be negative"
    if grace > MAX_GRACE:
        return f"must be at most {_duration(MAX_GRACE)}"
    return None


def _duration(span: timedelta) -> str:
    """A span as the admin client writes one: 7d, 36h, 90m, 45s."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _future_problem(when: datetime | None, now: datetime) -> str | None:
    if when is not None and when <= now:
        return "must be in the future"
    return None
