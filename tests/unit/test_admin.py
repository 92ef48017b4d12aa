"""The admin use cases over the in-memory fakes: who may call them, what they change, and that
a refused call changes nothing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from admin_world import (
    ADMIN_CALLS,
    ANY_CATALOG,
    KEY,
    OTHER_TOKEN,
    ROOT,
    ROOT_TOKEN,
    T0,
    TOKEN,
    WAIT_SECONDS,
    World,
    Worlds,
    admin_call,
    assert_names_no_secret,
    fields_of,
    refused,
    run,
    until,
)
from authz_service.api.convert import entry_message
from authz_service.core.changes import Change, ChangeKind, Event
from authz_service.core.decision import Decision
from authz_service.core.errors import (
    Aborted,
    AlreadyExists,
    AuthzError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from authz_service.core.model import (
    BOOTSTRAP_SUBJECT,
    FULL_ADMIN_RESTRICTION,
    Action,
    AdminPermission,
    Entry,
    Restriction,
    State,
    new_etag,
    to_micros,
)
from authz_service.core.rules import RestrictionInput
from authz_service.core.tokens import lookup_tag
from authz_service.usecases import Admin, EntryChange, NewEntry
from authz_service.usecases.admin import PAGE_BYTES, Bootstrap, listed_size
from authz_service.usecases.claims import MAX_CLAIMS_WAITING
from fakes import FakeHasher, InMemoryStore

# Authorization


@pytest.mark.parametrize("call", ADMIN_CALLS)
def test_an_admin_call_without_authorization_metadata_is_unauthenticated(
    world: World, call: str
) -> None:
    run(refused(world, admin_call(world, call, ""), Unauthenticated))


@pytest.mark.parametrize("call", ADMIN_CALLS)
def test_an_admin_call_with_an_unknown_token_is_unauthenticated_without_echoing_it(
    world: World, call: str
) -> None:
    error = run(refused(world, admin_call(world, call, f"Bearer {OTHER_TOKEN}"), Unauthenticated))
    assert "unknown_token" in str(error)
    assert_names_no_secret(str(error), OTHER_TOKEN)


@pytest.mark.parametrize("authorization", ["Basic cm9vdDpyb290", ROOT_TOKEN, "Bearer short"])
def test_a_malformed_authorization_value_is_unauthenticated(
    world: World, authorization: str
) -> None:
    error = run(refused(world, admin_call(world, "get", authorization), Unauthenticated))
    assert "malformed" in str(error)


def test_a_revoked_admin_token_is_unauthenticated_on_its_next_call(world: World) -> None:
    other = world.seed(OTHER_TOKEN, "other-admin", (FULL_ADMIN_RESTRICTION,))

    async def scenario() -> Unauthenticated:
        await world.admin.get(f"Bearer {OTHER_TOKEN}", other.id)  # warm in the cache
        await world.admin.revoke(ROOT, other.id, "")
        call = world.admin.get(f"Bearer {OTHER_TOKEN}", other.id)
        return await refused(world, call, Unauthenticated)

    assert "revoked" in str(run(scenario()))


def test_an_expired_admin_token_is_unauthenticated(world: World) -> None:
    world.seed(
        OTHER_TOKEN,
        "temp-admin",
        (FULL_ADMIN_RESTRICTION,),
        expire_time=T0 - timedelta(seconds=1),
    )
    error = run(refused(world, admin_call(world, "list", f"Bearer {OTHER_TOKEN}"), Unauthenticated))
    assert "expired" in str(error)


def test_a_read_only_admin_can_get_and_list_but_not_write(world: World) -> None:
    assert world.root is not None
    reader = world.seed(
        OTHER_TOKEN, "auditor", (Restriction("authz", (AdminPermission.READ.value,)),)
    )
    as_reader = f"Bearer {OTHER_TOKEN}"

    async def scenario() -> None:
        assert (await world.admin.get(as_reader, reader.id)).subject == "auditor"
        listed, _ = await world.admin.list(as_reader, 10, "", include_revoked=False)
        assert {e.subject for e in listed} == {"root-admin", "auditor"}
        for call, permission in [
            ("create", "authz.entry.create"),
            ("update", "authz.entry.update"),
            ("revoke", "authz.entry.revoke"),
        ]:
            error = await refused(world, admin_call(world, call, as_reader), PermissionDenied)
            assert permission in str(error)

    run(scenario())


def test_an_unrestricted_entry_never_gets_admin_rights(world: World) -> None:
    world.seed(OTHER_TOKEN, "everything", unrestricted=True)
    as_unrestricted = f"Bearer {OTHER_TOKEN}"

    async def scenario() -> None:
        assert (await world.check(OTHER_TOKEN, "scaffolder")).allowed
        for call in ADMIN_CALLS:
            await refused(world, admin_call(world, call, as_unrestricted), PermissionDenied)

    run(scenario())


def test_an_unrestricted_entry_holds_only_the_admin_permissions_it_lists_under_authz(
    world: World,
) -> None:
    world.seed(
        OTHER_TOKEN,
        "everything-and-audit",
        (Restriction("authz", (AdminPermission.READ.value,)),),
        unrestricted=True,
    )
    as_auditor = f"Bearer {OTHER_TOKEN}"

    async def scenario() -> None:
        listed, _ = await world.admin.list(as_auditor, 10, "", include_revoked=False)
        assert len(listed) == 2
        await refused(world, admin_call(world, "create", as_auditor), PermissionDenied)

    run(scenario())


def test_an_admin_holds_only_the_admin_permissions_it_lists(world: World) -> None:
    world.seed(OTHER_TOKEN, "creator", (Restriction("authz", (AdminPermission.CREATE.value,)),))
    as_creator = f"Bearer {OTHER_TOKEN}"

    async def scenario() -> Entry:
        created = await world.admin.create(
            as_creator, NewEntry("made-by-creator", TOKEN, restrictions=[ANY_CATALOG])
        )
        for call in ("get", "list", "update", "revoke"):
            await refused(world, admin_call(world, call, as_creator), PermissionDenied)
        return created

    assert run(scenario()).subject == "made-by-creator"


def test_an_admin_restriction_that_lists_actions_needs_the_action_of_the_call(
    world: World,
) -> None:
    world.seed(OTHER_TOKEN, "reader-by-action", (Restriction("authz", (), (Action.READ,)),))
    as_reader = f"Bearer {OTHER_TOKEN}"

    async def scenario() -> None:
        listed, _ = await world.admin.list(as_reader, 10, "", include_revoked=False)
        assert len(listed) == 2
        error = await refused(world, admin_call(world, "create", as_reader), PermissionDenied)
        assert "authz.entry.create" in str(error)

    run(scenario())


def test_narrowing_an_admins_own_rights_takes_effect_on_its_next_call(world: World) -> None:
    assert world.root is not None
    root = world.root

    async def scenario() -> None:
        await world.admin.update(
            ROOT,
            EntryChange(
                root.id,
                root.etag,
                ["access_restrictions"],
                restrictions=[RestrictionInput("authz", ["authz.entry.read"])],
            ),
        )
        await refused(world, admin_call(world, "create", ROOT), PermissionDenied)
        listed, _ = await world.admin.list(ROOT, 10, "", include_revoked=False)
        assert len(listed) == 1

    run(scenario())


# No escalation among admins

CREATOR_TOKEN = "creator-admin-token-0004"
AS_CREATOR = f"Bearer {CREATOR_TOKEN}"
UPDATER_TOKEN = "updater-admin-token-0005"
AS_UPDATER = f"Bearer {UPDATER_TOKEN}"
FULL_ADMIN = RestrictionInput("authz", [p.value for p in AdminPermission])


def only(*permissions: AdminPermission) -> tuple[Restriction, ...]:
    return (Restriction("authz", tuple(p.value for p in permissions)),)


@pytest.mark.parametrize(
    "granted",
    [
        FULL_ADMIN,
        RestrictionInput("authz"),  # no permissions: all of them
        RestrictionInput("authz", ["authz.entry.create", "authz.entry.read"]),
        RestrictionInput("authz", ["authz.entry.create"], []),  # the creator's, any action
    ],
    ids=["all-four", "any-permission", "one-more", "every-action"],
)
def test_an_admin_cannot_create_an_entry_with_authz_rights_it_does_not_hold(
    world: World, granted: RestrictionInput
) -> None:
    world.seed(
        CREATOR_TOKEN,
        "creator",
        (Restriction("authz", (AdminPermission.CREATE.value,), (Action.CREATE,)),),
    )
    new = NewEntry("would-be-root", TOKEN, restrictions=[ANY_CATALOG, granted])

    async def scenario() -> PermissionDenied:
        error = await refused(world, world.admin.create(AS_CREATOR, new), PermissionDenied)
        assert (await world.check(TOKEN, "authz")).reason == "unknown_token"
        return error

    error = run(scenario())
    assert "authz rights it holds" in str(error)
    assert_names_no_secret(str(error), TOKEN, CREATOR_TOKEN)


def test_an_admin_may_grant_the_authz_rights_it_holds(world: World) -> None:
    world.seed(CREATOR_TOKEN, "creator", only(AdminPermission.CREATE, AdminPermission.READ))
    granted = RestrictionInput("authz", ["authz.entry.read"], [int(Action.READ)])

    async def scenario() -> Decision:
        await world.admin.create(AS_CREATOR, NewEntry("reader", TOKEN, restrictions=[granted]))
        return await world.checker.check(TOKEN, "", "authz", "authz.entry.read", 2)

    assert run(scenario()).allowed


def test_a_full_admin_may_grant_full_rights_however_spelled(world: World) -> None:
    async def scenario() -> None:
        await world.create("second-root", TOKEN, restrictions=[RestrictionInput("authz")])
        await world.create("third-root", OTHER_TOKEN, restrictions=[FULL_ADMIN])

    run(scenario())


def test_an_admin_cannot_widen_its_own_entry(world: World) -> None:
    own = world.seed(UPDATER_TOKEN, "updater", only(AdminPermission.UPDATE))
    change = EntryChange(own.id, own.etag, ["access_restrictions"], restrictions=[FULL_ADMIN])

    async def scenario() -> None:
        await refused(world, world.admin.update(AS_UPDATER, change), PermissionDenied)
        decision = await world.checker.check(UPDATER_TOKEN, "", "authz", "authz.entry.create", 1)
        assert decision.reason == "permission_not_allowed"

    run(scenario())


def test_an_admin_cannot_widen_another_entry_past_its_own_rights(world: World) -> None:
    world.seed(UPDATER_TOKEN, "updater", only(AdminPermission.UPDATE))
    target = world.seed(TOKEN, "plain", (Restriction("catalog"),))
    change = EntryChange(
        target.id, target.etag, ["access_restrictions"], restrictions=[ANY_CATALOG, FULL_ADMIN]
    )
    run(refused(world, world.admin.update(AS_UPDATER, change), PermissionDenied))


@pytest.mark.parametrize("call", ["describe", "narrow", "rotate", "expire", "revoke"])
def test_an_admin_cannot_touch_an_entry_holding_rights_it_lacks(world: World, call: str) -> None:
    assert world.root is not None
    root = world.root
    world.seed(
        UPDATER_TOKEN,
        "updater",
        only(AdminPermission.UPDATE, AdminPermission.REVOKE, AdminPermission.READ),
    )
    changes = {
        "describe": EntryChange(root.id, root.etag, ["description"], description="mine now"),
        "narrow": EntryChange(
            root.id, root.etag, ["access_restrictions"], restrictions=[ANY_CATALOG]
        ),
        "rotate": EntryChange(root.id, root.etag, new_token="attacker-knows-this-1"),
        "expire": EntryChange(
            root.id, root.etag, ["expire_time"], expire_time=T0 + timedelta(hours=1)
        ),
    }

    async def scenario() -> PermissionDenied:
        if call == "revoke":
            attempt = world.admin.revoke(AS_UPDATER, root.id, "taking over")
        else:
            attempt = world.admin.update(AS_UPDATER, changes[call])
        error = await refused(world, attempt, PermissionDenied)
        assert (await world.checker.check(ROOT_TOKEN, "", "authz", "authz.entry.create", 1)).allowed
        return error

    error = run(scenario())
    assert "authz.entry.create" in str(error)
    assert_names_no_secret(str(error), "attacker-knows-this-1", UPDATER_TOKEN)


def test_an_admin_may_change_entries_within_its_rights_and_its_own(world: World) -> None:
    own = world.seed(UPDATER_TOKEN, "updater", only(AdminPermission.UPDATE, AdminPermission.READ))
    peer = world.seed(TOKEN, "peer", only(AdminPermission.READ))

    async def scenario() -> Decision:
        await world.admin.update(
            AS_UPDATER, EntryChange(peer.id, peer.etag, ["description"], description="ok")
        )
        await world.admin.update(
            AS_UPDATER,
            EntryChange(
                own.id,
                own.etag,
                ["access_restrictions"],
                restrictions=[RestrictionInput("authz", ["authz.entry.update"])],
            ),
        )
        return await world.checker.check(UPDATER_TOKEN, "", "authz", "authz.entry.read", 2)

    assert run(scenario()).reason == "permission_not_allowed"


class HeldHashes:
    """Once `hold()` is called, new verifiers wait: `entered` is set when a hash starts, which
    then waits for `gate` (set it to let every hash go on)."""

    def __init__(self, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered, self.gate = threading.Event(), threading.Event()
        self._world, self._monkeypatch = world, monkeypatch

    def hold(self) -> None:
        real_hash = self._world.hasher.hash

        def held_hash(token: str) -> str:
            self.entered.set()
            assert self.gate.wait(10)
            return real_hash(token)

        self._monkeypatch.setattr(self._world.hasher, "hash", held_hash)


@pytest.fixture
def held_hashes(world: World, monkeypatch: pytest.MonkeyPatch) -> HeldHashes:
    return HeldHashes(world, monkeypatch)


def take_away(store: InMemoryStore, entry_id: str, how: str, now: datetime) -> None:
    """Revoke an admin, narrow it to reading, or rotate its token away, straight in the store:
    as another process's admin call would, with nothing telling this process's Checker but the
    store's events."""
    current = store.get(entry_id)
    if how == "rotated":
        token = "rotated-admin-token-0001"
        changed = replace(
            current, verifier=FakeHasher().hash(token), lookup_tag=lookup_tag(KEY, token)
        )
        store.rotate(
            replace(changed, update_time=now, revision=current.revision + 1, etag=new_etag())
        )
        return
    if how == "revoked":
        changed = replace(current, revoke_time=now, revoke_reason="left the team")
    else:
        changed = replace(current, restrictions=only(AdminPermission.READ))
    store.replace(replace(changed, update_time=now, revision=current.revision + 1, etag=new_etag()))


@pytest.mark.parametrize("where", ["here", "elsewhere"])
@pytest.mark.parametrize("taken_away", ["revoked", "narrowed"])
def test_an_admin_revoked_or_narrowed_while_its_create_waits_writes_nothing(
    world: World, held_hashes: HeldHashes, taken_away: str, where: str
) -> None:
    creator = world.seed(CREATOR_TOKEN, "creator", only(AdminPermission.CREATE))
    held_hashes.hold()
    entered, gate = held_hashes.entered, held_hashes.gate
    new = NewEntry("made-too-late", TOKEN, restrictions=[ANY_CATALOG])

    async def scenario() -> AuthzError:
        await world.admin.list(ROOT, 1, "", include_revoked=False)  # root's token, verified
        waiting = asyncio.create_task(world.admin.create(AS_CREATOR, new))
        assert await asyncio.to_thread(entered.wait, WAIT_SECONDS)  # it waits for a verifier
        if where == "elsewhere":
            take_away(world.store, creator.id, taken_away, world.clock())
        elif taken_away == "revoked":
            await world.admin.revoke(ROOT, creator.id, "left the team")
        else:
            current = world.store.get(creator.id)
            await world.admin.update(
                ROOT,
                EntryChange(
                    current.id,
                    current.etag,
                    ["access_restrictions"],
                    restrictions=[RestrictionInput("authz", ["authz.entry.read"])],
                ),
            )
        events = world.store.events()
        gate.set()
        with pytest.raises((Unauthenticated, PermissionDenied)) as raised:
            await waiting
        assert world.store.events() == events, "the refused create appended an event"
        return raised.value

    error = run(scenario())
    expected = Unauthenticated if taken_away == "revoked" else PermissionDenied
    assert isinstance(error, expected)
    assert world.store.find_subject("made-too-late") is None
    assert world.store.find_tag(lookup_tag(KEY, TOKEN)) == []


def claims_waiting(admin: Admin) -> int:
    """How many creates and rotations hold or wait for the claim lock (a private count: no
    public one tells that a task has reached the lock rather than a store read before it)."""
    return admin._claims._waiting


def test_creates_beyond_the_waiting_bound_are_unavailable_and_change_nothing(
    world: World, held_hashes: HeldHashes
) -> None:
    held_hashes.hold()
    entered, gate = held_hashes.entered, held_hashes.gate

    async def scenario() -> list[Entry]:
        await world.admin.list(ROOT, 1, "", include_revoked=False)  # root's token, verified
        waiting = [
            asyncio.create_task(world.create(f"burst-{n}", f"burst-token-{n:04d}"))
            for n in range(MAX_CLAIMS_WAITING)
        ]
        assert await asyncio.to_thread(entered.wait, WAIT_SECONDS)
        await until(lambda: claims_waiting(world.admin) == MAX_CLAIMS_WAITING, "every create waits")
        await refused(world, world.create("one-too-many", "one-too-many-token"), Unavailable)
        gate.set()
        return await asyncio.gather(*waiting)

    assert len(run(scenario())) == MAX_CLAIMS_WAITING
    assert world.store.find_subject("one-too-many") is None


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


@pytest.mark.parametrize("taken_away", ["revoked", "narrowed", "rotated"])
@pytest.mark.parametrize("write", ["create", "update", "rotate", "revoke"])
def test_a_write_committed_after_its_admin_was_taken_away_elsewhere_writes_nothing(
    worlds: Worlds, write: str, taken_away: str
) -> None:
    store = InterleavingStore()
    world = worlds.open(store)
    acting = world.seed(UPDATER_TOKEN, "second-admin", (FULL_ADMIN_RESTRICTION,))
    target = world.seed(TOKEN, "plain", (Restriction("catalog"),))
    calls = {
        "create": lambda: world.admin.create(
            AS_UPDATER, NewEntry("made-too-late", "made-too-late-token", restrictions=[ANY_CATALOG])
        ),
        "update": lambda: world.admin.update(
            AS_UPDATER, EntryChange(target.id, target.etag, ["description"], description="late")
        ),
        "rotate": lambda: world.admin.update(
            AS_UPDATER, EntryChange(target.id, target.etag, new_token="rotated-too-late-token")
        ),
        "revoke": lambda: world.admin.revoke(AS_UPDATER, target.id, "too late"),
    }

    async def scenario() -> AuthzError:
        assert (await world.admin.get(AS_UPDATER, target.id)) == target  # its token, verified
        # Another process takes the admin's rights away after every check of this call but the
        # one inside the write's transaction, and this process's cache has not seen it.
        store.before_write = lambda: take_away(store, acting.id, taken_away, world.clock())
        with pytest.raises((Unauthenticated, PermissionDenied)) as raised:
            await calls[write]()
        assert store.before_write is None, "the call never reached its write"
        return raised.value

    error = run(scenario())
    expected = PermissionDenied if taken_away == "narrowed" else Unauthenticated
    assert isinstance(error, expected)
    assert store.get(target.id) == target
    assert store.find_subject("made-too-late") is None
    assert store.find_retired(target.lookup_tag) == []
    assert [(e.entry_id, e.actor_id) for e in store.events()[-1:]] == [(acting.id, "")]
    # The take-away itself is in force on this process's next call.
    again = EntryChange(target.id, target.etag, ["description"], description="again")
    run(refused(world, world.admin.update(AS_UPDATER, again), expected))


def test_an_admin_without_authz_rights_of_its_own_can_revoke_plain_entries_only(
    world: World,
) -> None:
    world.seed(UPDATER_TOKEN, "revoker", only(AdminPermission.REVOKE))
    plain = world.seed(TOKEN, "plain", (Restriction("catalog"),))
    reader = world.seed(OTHER_TOKEN, "reader", only(AdminPermission.READ))

    async def scenario() -> None:
        revoked = await world.admin.revoke(AS_UPDATER, plain.id, "done")
        assert revoked.revoke_time is not None
        await refused(world, world.admin.revoke(AS_UPDATER, reader.id, "no"), PermissionDenied)

    run(scenario())


# Create


def test_create_stores_the_entry_and_its_token_works_at_once(world: World) -> None:
    expires = T0 + timedelta(days=30)

    async def scenario() -> tuple[Entry, Decision]:
        created = await world.admin.create(
            ROOT,
            NewEntry(
                "catalog-sync",
                TOKEN,
                description="syncs the catalog",
                restrictions=[RestrictionInput("catalog", ["catalog.entity.read"], [2])],
                expire_time=expires,
            ),
        )
        return created, await world.checker.check(
            TOKEN, "", "catalog", "catalog.entity.read", Action.READ
        )

    created, decision = run(scenario())
    assert world.store.get(created.id) == created
    assert (created.subject, created.description, created.unrestricted) == (
        "catalog-sync",
        "syncs the catalog",
        False,
    )
    assert created.restrictions == (
        Restriction("catalog", ("catalog.entity.read",), (Action.READ,)),
    )
    assert (created.create_time, created.update_time, created.expire_time) == (T0, T0, expires)
    assert (created.state(T0), created.revoke_time) == (State.ACTIVE, None)
    assert len(created.etag) >= 16
    assert TOKEN not in created.verifier
    assert world.hasher.verify(created.verifier, TOKEN)
    assert decision.allowed
    assert (decision.subject, decision.entry_id) == ("catalog-sync", created.id)


def test_an_unrestricted_entry_can_be_created_without_restrictions(world: World) -> None:
    created = run(world.create("everything", TOKEN, restrictions=[], unrestricted=True))
    assert created.unrestricted
    assert created.restrictions == ()
    assert run(world.check(TOKEN, "anything-at-all")).allowed


def test_create_reports_every_bad_field_at_once_and_echoes_no_token(world: World) -> None:
    bad_token = "bad tok"
    new = NewEntry(
        subject="has space",
        token=bad_token,
        description="two\nlines",
        restrictions=[
            RestrictionInput("Catalog", ["not..a.permission"], [7]),
            RestrictionInput("authz", ["authz.entry.delete"]),
        ],
        expire_time=T0,
    )
    error = run(refused(world, world.admin.create(ROOT, new), InvalidArgument))
    assert set(fields_of(error)) == {
        "subject",
        "token",
        "description",
        "access_restrictions[0].plugin",
        "access_restrictions[0].permissions[0]",
        "access_restrictions[0].actions[0]",
        "access_restrictions[1].permissions[0]",
        "expire_time",
    }
    assert_names_no_secret(str(error), bad_token)
    assert world.hasher.hash_calls == 1  # only the seeded root; no work for a bad request


@pytest.mark.parametrize(
    ("restrictions", "unrestricted"),
    [
        ([], False),
        ([ANY_CATALOG, RestrictionInput("catalog", ["catalog.entity.read"])], False),
        ([ANY_CATALOG], True),
    ],
    ids=["none-and-not-unrestricted", "one-plugin-twice", "unrestricted-beside-a-plugin"],
)
def test_create_refuses_a_scope_that_breaks_least_privilege(
    world: World, restrictions: list[RestrictionInput], unrestricted: bool
) -> None:
    new = NewEntry("scoped", TOKEN, restrictions=restrictions, unrestricted=unrestricted)
    error = run(refused(world, world.admin.create(ROOT, new), InvalidArgument))
    assert fields_of(error) == ["access_restrictions"]


def test_create_refuses_a_subject_an_unrevoked_entry_has_without_naming_it(
    world: World,
) -> None:
    async def scenario() -> tuple[Entry, AlreadyExists]:
        first = await world.create("catalog-sync", TOKEN)
        error = await refused(world, world.create("catalog-sync", OTHER_TOKEN), AlreadyExists)
        return first, error

    first, error = run(scenario())
    assert "subject" in str(error)
    assert_names_no_secret(str(error), first.id, TOKEN, OTHER_TOKEN)


def test_create_refuses_a_token_another_entry_holds_without_naming_it(world: World) -> None:
    async def scenario() -> tuple[Entry, AlreadyExists]:
        first = await world.create("catalog-sync", TOKEN)
        error = await refused(world, world.create("other-job", TOKEN), AlreadyExists)
        return first, error

    first, error = run(scenario())
    assert str(error).startswith("token:")
    assert_names_no_secret(str(error), first.id, first.subject, TOKEN)


def test_create_refuses_the_token_of_a_revoked_entry(world: World) -> None:
    async def scenario() -> AlreadyExists:
        first = await world.create("catalog-sync", TOKEN)
        await world.admin.revoke(ROOT, first.id, "leaked")
        return await refused(world, world.create("catalog-sync-2", TOKEN), AlreadyExists)

    error = run(scenario())
    assert_names_no_secret(str(error), TOKEN)
    assert run(world.check(TOKEN)).reason == "revoked"


def test_the_subject_of_a_revoked_entry_can_be_used_again(world: World) -> None:
    async def scenario() -> tuple[Entry, Entry]:
        first = await world.create("catalog-sync", TOKEN)
        await world.admin.revoke(ROOT, first.id, "")
        return first, await world.create("catalog-sync", OTHER_TOKEN)

    first, second = run(scenario())
    assert second.id != first.id
    assert world.store.find_subject("catalog-sync") == second
    assert world.store.get(first.id).revoke_time is not None


def test_two_concurrent_creates_with_one_token_let_exactly_one_through(world: World) -> None:
    async def scenario() -> tuple[Entry | BaseException, ...]:
        return await asyncio.gather(
            world.create("job-a", TOKEN), world.create("job-b", TOKEN), return_exceptions=True
        )

    outcomes = run(scenario())
    created = [o for o in outcomes if isinstance(o, Entry)]
    assert len(created) == 1
    assert [type(o) for o in outcomes if not isinstance(o, Entry)] == [AlreadyExists]
    holders = [
        e for e in world.store.snapshot()[0].values() if world.hasher.verify(e.verifier, TOKEN)
    ]
    assert holders == created


def test_two_concurrent_creates_with_one_subject_let_exactly_one_through(world: World) -> None:
    async def scenario() -> tuple[Entry | BaseException, ...]:
        return await asyncio.gather(
            world.create("job", TOKEN), world.create("job", OTHER_TOKEN), return_exceptions=True
        )

    outcomes = run(scenario())
    created = [o for o in outcomes if isinstance(o, Entry)]
    assert len(created) == 1
    assert [type(o) for o in outcomes if not isinstance(o, Entry)] == [AlreadyExists]
    assert world.store.find_subject("job") == created[0]


# Update


def test_update_changes_only_the_fields_the_mask_names(world: World) -> None:
    async def scenario() -> tuple[Entry, Entry]:
        created = await world.create("catalog-sync", TOKEN, description="old words")
        world.clock.advance(60)
        updated = await world.admin.update(
            ROOT,
            EntryChange(
                created.id,
                created.etag,
                ["description"],
                description="new words",
                restrictions=[RestrictionInput("scaffolder")],
                unrestricted=True,
                expire_time=T0 + timedelta(days=1),
            ),
        )
        return created, updated

    created, updated = run(scenario())
    assert updated == replace(
        created,
        description="new words",
        update_time=T0 + timedelta(seconds=60),
        revision=2,
        etag=updated.etag,
    )
    assert updated.etag not in {"", created.etag}
    assert world.store.get(created.id) == updated


def test_update_of_each_maskable_field_takes_effect(world: World) -> None:
    expires = T0 + timedelta(hours=1)

    async def scenario() -> Entry:
        created = await world.create("catalog-sync", TOKEN)
        return await world.admin.update(
            ROOT,
            EntryChange(
                created.id,
                created.etag,
                ["access_restrictions", "expire_time", "description"],
                description="",
                restrictions=[RestrictionInput("scaffolder", [], [1, 4])],
                expire_time=expires,
            ),
        )

    updated = run(scenario())
    assert updated.restrictions == (Restriction("scaffolder", (), (Action.CREATE, Action.DELETE)),)
    assert (updated.expire_time, updated.description) == (expires, "")
    assert world.store.get(updated.id) == updated


def test_a_scope_update_applies_to_the_next_check_without_a_verify(world: World) -> None:
    async def scenario() -> tuple[Decision, Decision]:
        created = await world.create("catalog-sync", TOKEN)
        assert (await world.check(TOKEN)).allowed
        verifies = world.hasher.verify_calls
        await world.admin.update(
            ROOT,
            EntryChange(
                created.id,
                created.etag,
                ["access_restrictions"],
                restrictions=[RestrictionInput("scaffolder")],
            ),
        )
        catalog, scaffolder = await world.check(TOKEN), await world.check(TOKEN, "scaffolder")
        assert world.hasher.verify_calls == verifies
        return catalog, scaffolder

    catalog, scaffolder = run(scenario())
    assert (catalog.http_status, catalog.reason) == (403, "plugin_not_allowed")
    assert scaffolder.allowed


def test_setting_an_expire_time_applies_to_the_cached_token(world: World) -> None:
    async def scenario() -> Decision:
        created = await world.create("catalog-sync", TOKEN)
        assert (await world.check(TOKEN)).allowed
        await world.admin.update(
            ROOT,
            EntryChange(
                created.id, created.etag, ["expire_time"], expire_time=T0 + timedelta(minutes=5)
            ),
        )
        world.clock.advance(300)
        return await world.check(TOKEN)

    assert run(scenario()).reason == "expired"


@pytest.mark.parametrize(
    ("paths", "field"),
    [
        (["subject"], "update_mask.paths[0]"),
        (["description", "verifier"], "update_mask.paths[1]"),
        (["Description"], "update_mask.paths[0]"),
        (["etag"], "update_mask.paths[0]"),
    ],
)
def test_an_unknown_mask_path_is_invalid_argument_naming_its_index(
    world: World, paths: list[str], field: str
) -> None:
    async def scenario() -> InvalidArgument:
        created = await world.create("catalog-sync", TOKEN)
        change = EntryChange(created.id, created.etag, paths, description="x")
        return await refused(world, world.admin.update(ROOT, change), InvalidArgument)

    assert fields_of(run(scenario())) == [field]


def test_an_update_naming_no_field_and_no_new_token_is_invalid(world: World) -> None:
    async def scenario() -> InvalidArgument:
        created = await world.create("catalog-sync", TOKEN)
        change = EntryChange(created.id, created.etag, [])
        return await refused(world, world.admin.update(ROOT, change), InvalidArgument)

    assert fields_of(run(scenario())) == ["update_mask"]


def test_an_update_without_id_or_etag_is_invalid_naming_both(world: World) -> None:
    change = EntryChange("", "", ["description"], description="x")
    error = run(refused(world, world.admin.update(ROOT, change), InvalidArgument))
    assert set(fields_of(error)) == {"entry.id", "etag"}


def test_bad_new_values_are_invalid_argument_under_entry(world: World) -> None:
    async def scenario() -> InvalidArgument:
        created = await world.create("catalog-sync", TOKEN)
        change = EntryChange(
            created.id,
            created.etag,
            ["description", "expire_time", "access_restrictions"],
            description="bell\a",
            expire_time=T0 - timedelta(seconds=1),
            restrictions=[],
        )
        return await refused(world, world.admin.update(ROOT, change), InvalidArgument)

    assert set(fields_of(run(scenario()))) == {
        "entry.description",
        "entry.expire_time",
        "entry.access_restrictions",
    }


def test_clearing_unrestricted_on_an_entry_without_restrictions_is_invalid(world: World) -> None:
    async def scenario() -> InvalidArgument:
        created = await world.create("everything", TOKEN, restrictions=[], unrestricted=True)
        change = EntryChange(created.id, created.etag, ["unrestricted"], unrestricted=False)
        return await refused(world, world.admin.update(ROOT, change), InvalidArgument)

    assert fields_of(run(scenario())) == ["entry.access_restrictions"]


def test_an_update_with_a_stale_etag_is_aborted(world: World) -> None:
    async def scenario() -> None:
        created = await world.create("catalog-sync", TOKEN)
        await world.admin.update(
            ROOT, EntryChange(created.id, created.etag, ["description"], description="first")
        )
        stale = EntryChange(created.id, created.etag, ["description"], description="second")
        await refused(world, world.admin.update(ROOT, stale), Aborted)
        assert world.store.get(created.id).description == "first"

    run(scenario())


def test_an_update_of_a_revoked_entry_is_a_failed_precondition(world: World) -> None:
    async def scenario() -> None:
        created = await world.create("catalog-sync", TOKEN)
        revoked = await world.admin.revoke(ROOT, created.id, "")
        change = EntryChange(revoked.id, revoked.etag, ["description"], description="x")
        await refused(world, world.admin.update(ROOT, change), FailedPrecondition)
        rotate = EntryChange(revoked.id, revoked.etag, new_token=OTHER_TOKEN)
        await refused(world, world.admin.update(ROOT, rotate), FailedPrecondition)

    run(scenario())


def test_an_update_of_an_unknown_entry_is_not_found(world: World) -> None:
    change = EntryChange("no-such-id", "r1", ["description"], description="x")
    run(refused(world, world.admin.update(ROOT, change), NotFound))


def test_rotation_denies_the_old_token_at_once_and_allows_the_new_one(world: World) -> None:
    async def scenario() -> tuple[Entry, Entry, Decision, Decision]:
        created = await world.create("catalog-sync", TOKEN)
        assert (await world.check(TOKEN)).allowed  # the old token is warm in the cache
        rotated = await world.admin.update(
            ROOT, EntryChange(created.id, created.etag, new_token=OTHER_TOKEN)
        )
        return created, rotated, await world.check(TOKEN), await world.check(OTHER_TOKEN)

    created, rotated, old, new = run(scenario())
    assert old.reason == "unknown_token"
    assert new.allowed
    assert new.entry_id == created.id
    assert rotated.revision == created.revision + 1
    assert rotated.verifier != created.verifier
    assert rotated.lookup_tag == lookup_tag(KEY, OTHER_TOKEN)
    assert OTHER_TOKEN not in rotated.verifier
    # The response shows the use the check recorded; the store gets it at the next flush.
    assert rotated.last_used_time is not None
    assert replace(world.store.get(created.id), last_used_time=rotated.last_used_time) == rotated
    assert replace(rotated, verifier=created.verifier, lookup_tag=created.lookup_tag) == replace(
        created, revision=2, last_used_time=rotated.last_used_time, etag=rotated.etag
    )
    assert rotated.etag != created.etag


def test_rotation_with_a_mask_changes_both_token_and_fields(world: World) -> None:
    async def scenario() -> Entry:
        created = await world.create("catalog-sync", TOKEN)
        return await world.admin.update(
            ROOT,
            EntryChange(
                created.id,
                created.etag,
                ["description"],
                description="rotated after the leak",
                new_token=OTHER_TOKEN,
            ),
        )

    rotated = run(scenario())
    assert rotated.description == "rotated after the leak"
    assert run(world.check(OTHER_TOKEN)).allowed
    assert run(world.check(TOKEN)).reason == "unknown_token"


def test_rotation_to_a_token_another_entry_holds_is_refused_and_keeps_the_old_token(
    world: World,
) -> None:
    async def scenario() -> tuple[Entry, AlreadyExists]:
        created = await world.create("catalog-sync", TOKEN)
        other = await world.create("scaffolder-job", OTHER_TOKEN)
        change = EntryChange(created.id, created.etag, new_token=OTHER_TOKEN)
        error = await refused(world, world.admin.update(ROOT, change), AlreadyExists)
        assert (await world.check(TOKEN)).entry_id == created.id
        assert (await world.check(OTHER_TOKEN)).entry_id == other.id
        return other, error

    other, error = run(scenario())
    assert str(error).startswith("new_token:")
    assert_names_no_secret(str(error), other.id, other.subject, TOKEN, OTHER_TOKEN)


def test_rotation_to_the_current_token_is_refused(world: World) -> None:
    async def scenario() -> None:
        created = await world.create("catalog-sync", TOKEN)
        change = EntryChange(created.id, created.etag, new_token=TOKEN)
        error = await refused(world, world.admin.update(ROOT, change), AlreadyExists)
        assert_names_no_secret(str(error), TOKEN)

    run(scenario())


def test_rotation_to_a_malformed_token_is_invalid_without_echoing_it(world: World) -> None:
    async def scenario() -> InvalidArgument:
        created = await world.create("catalog-sync", TOKEN)
        change = EntryChange(created.id, created.etag, new_token="new token with spaces")
        return await refused(world, world.admin.update(ROOT, change), InvalidArgument)

    error = run(scenario())
    assert fields_of(error) == ["new_token"]
    assert_names_no_secret(str(error), "new token with spaces")


# Revoke


def test_created_and_rotated_tokens_are_found_by_a_checker_that_started_without_their_tags(
    world: World,
) -> None:
    # Started before they existed, the checker answers a token with an unknown tag from memory
    # alone: the events of the create and the rotation must teach it the new tags.
    tags = world.checker.tokens.known_tags
    assert lookup_tag(KEY, TOKEN) not in tags
    assert lookup_tag(KEY, OTHER_TOKEN) not in tags

    async def scenario() -> tuple[Decision, Decision, Decision]:
        created = await world.create("catalog-sync", TOKEN)
        first = await world.check(TOKEN)
        await world.admin.update(ROOT, EntryChange(created.id, created.etag, new_token=OTHER_TOKEN))
        return first, await world.check(OTHER_TOKEN), await world.check(TOKEN)

    first, rotated, old = run(scenario())
    assert first.allowed
    assert rotated.allowed
    assert old.reason == "unknown_token"


def test_a_revoke_cancelled_mid_write_still_denies_the_next_check(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    real_replace = world.store.replace

    def held_replace(entry: Entry, change: Change | None = None) -> Event:
        started.set()
        assert release.wait(WAIT_SECONDS)
        return real_replace(entry, change)

    async def scenario() -> tuple[Decision, Decision]:
        created = await world.create("catalog-sync", TOKEN)
        assert (await world.check(TOKEN)).allowed  # now cached
        verifies, head = world.hasher.verify_calls, world.store.head()
        # Hold the revoke's write on the writer thread, and cancel the call while it runs.
        monkeypatch.setattr(world.store, "replace", held_replace)
        revoking = asyncio.create_task(world.admin.revoke(ROOT, created.id, "leaked"))
        assert await asyncio.to_thread(started.wait, WAIT_SECONDS)
        revoking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await revoking
        assert world.checker.follower.applied == head
        release.set()
        # The shielded write commits, and its event is applied to this process's cache with
        # no Check asking: the next Check finds nothing new in the store and trusts the cache.
        await until(lambda: world.checker.follower.applied > head, "the revoke is applied")
        assert [e.kind for e in world.store.events()[head:]] == [ChangeKind.REVOKED]
        assert world.store.get(created.id).revoke_time is not None
        assert world.store.version() == world.checker.follower.seen
        decisions = await world.check(TOKEN), await world.check(TOKEN)
        assert world.hasher.verify_calls == verifies
        return decisions

    first, second = run(scenario())
    assert (first.allowed, first.reason) == (False, "revoked")
    assert second.reason == "revoked"


def test_revoke_denies_the_token_on_the_very_next_check(world: World) -> None:
    async def scenario() -> tuple[Entry, Entry, Decision]:
        created = await world.create("catalog-sync", TOKEN)
        assert (await world.check(TOKEN)).allowed
        verifies = world.hasher.verify_calls
        world.clock.advance(10)
        revoked = await world.admin.revoke(ROOT, created.id, "leaked in a log")
        decision = await world.check(TOKEN)
        assert world.hasher.verify_calls == verifies  # answered from the refreshed cache
        return created, revoked, decision

    created, revoked, decision = run(scenario())
    assert (decision.allowed, decision.http_status, decision.reason) == (False, 401, "revoked")
    assert revoked == replace(
        created,
        revoke_time=T0 + timedelta(seconds=10),
        revoke_reason="leaked in a log",
        update_time=T0 + timedelta(seconds=10),
        revision=2,
        last_used_time=revoked.last_used_time,
        etag=revoked.etag,
    )
    assert revoked.etag != created.etag
    assert revoked.last_used_time is not None  # the check before the revoke, shown at once
    assert revoked.state(world.clock()) == State.REVOKED
    assert replace(world.store.get(created.id), last_used_time=revoked.last_used_time) == revoked


def test_revoking_a_revoked_entry_changes_nothing(world: World) -> None:
    async def scenario() -> tuple[Entry, Entry]:
        created = await world.create("catalog-sync", TOKEN)
        first = await world.admin.revoke(ROOT, created.id, "first reason")
        before = world.store.snapshot()
        world.clock.advance(60)
        again = await world.admin.revoke(ROOT, created.id, "second reason")
        assert world.store.snapshot() == before
        return first, again

    first, again = run(scenario())
    assert again == first
    assert again.revoke_reason == "first reason"


def test_revoking_an_unknown_entry_is_not_found(world: World) -> None:
    error = run(refused(world, world.admin.revoke(ROOT, "no-such-id", ""), NotFound))
    assert "no-such-id" not in str(error)


def test_a_revoke_without_id_or_with_a_bad_reason_is_invalid(world: World) -> None:
    error = run(refused(world, world.admin.revoke(ROOT, "", "line\nbreak"), InvalidArgument))
    assert set(fields_of(error)) == {"id", "reason"}
    assert fields_of(
        run(refused(world, world.admin.revoke(ROOT, "some-id", "r" * 513), InvalidArgument))
    ) == ["reason"]


def test_revoked_entries_stay_readable_and_listable_for_audit(world: World) -> None:
    async def scenario() -> tuple[Entry, Entry, list[Entry], list[Entry]]:
        created = await world.create("catalog-sync", TOKEN)
        revoked = await world.admin.revoke(ROOT, created.id, "")
        got = await world.admin.get(ROOT, created.id)
        active, _ = await world.admin.list(ROOT, 10, "", include_revoked=False)
        everything, _ = await world.admin.list(ROOT, 10, "", include_revoked=True)
        return revoked, got, active, everything

    revoked, got, active, everything = run(scenario())
    assert got == revoked
    assert revoked.id not in {e.id for e in active}
    assert revoked in everything


# Get


def test_get_returns_the_entry_with_a_use_not_yet_flushed(world: World) -> None:
    async def scenario() -> tuple[Entry, Entry, Entry]:
        created = await world.create("catalog-sync", TOKEN)
        before_use = await world.admin.get(ROOT, created.id)
        world.clock.advance(42)
        await world.check(TOKEN)
        return created, before_use, await world.admin.get(ROOT, created.id)

    created, before_use, after_use = run(scenario())
    assert before_use == created
    assert after_use.last_used_time == T0 + timedelta(seconds=42)
    assert world.store.get(created.id).last_used_time is None  # not flushed yet


def test_get_of_an_unknown_id_is_not_found_and_of_no_id_invalid(world: World) -> None:
    run(refused(world, world.admin.get(ROOT, "no-such-id"), NotFound))
    error = run(refused(world, world.admin.get(ROOT, ""), InvalidArgument))
    assert fields_of(error) == ["id"]


# List


def list_all(world: World, page_size: int, include_revoked: bool) -> list[list[Entry]]:
    async def pages() -> list[list[Entry]]:
        found: list[list[Entry]] = []
        token = ""
        while True:
            page, token = await world.admin.list(ROOT, page_size, token, include_revoked)
            found.append(page)
            if not token:
                return found

    return run(pages())


def create_many(world: World, count: int) -> list[Entry]:
    async def scenario() -> list[Entry]:
        created = []
        for n in range(count):
            if n % 3 == 0:  # some entries share a creation time: ids break the tie
                world.clock.advance(1)
            created.append(await world.create(f"job-{n}", f"job-token-{n:04d}"))
        return created

    return run(scenario())


def test_listing_pages_through_every_entry_once_in_creation_order(world: World) -> None:
    assert world.root is not None
    created = create_many(world, 7)
    pages = list_all(world, 3, include_revoked=False)
    assert [len(p) for p in pages] == [3, 3, 2]
    listed = [e.id for page in pages for e in page]
    expected = sorted([world.root, *created], key=lambda e: (e.create_time, e.id))
    assert listed == [e.id for e in expected]
    assert [e.create_time for page in pages for e in page] == [e.create_time for e in expected]


def test_a_page_exactly_filled_by_the_last_entries_ends_the_listing(world: World) -> None:
    create_many(world, 5)
    pages = list_all(world, 3, include_revoked=False)
    assert [len(p) for p in pages] == [3, 3]


def test_listing_without_revoked_entries_skips_them_across_pages(world: World) -> None:
    created = create_many(world, 6)
    for entry in created[::2]:
        run(world.admin.revoke(ROOT, entry.id, ""))
    assert world.root is not None
    active = [e.id for page in list_all(world, 2, include_revoked=False) for e in page]
    everything = [e.id for page in list_all(world, 2, include_revoked=True) for e in page]
    assert sorted(active) == sorted([world.root.id, *(e.id for e in created[1::2])])
    assert sorted(everything) == sorted([world.root.id, *(e.id for e in created)])


def test_a_page_size_of_zero_means_the_default(world: World) -> None:
    create_many(world, 4)
    page, next_token = run(world.admin.list(ROOT, 0, "", include_revoked=False))
    assert len(page) == 5
    assert next_token == ""


def test_a_negative_page_size_is_invalid(world: World) -> None:
    error = run(
        refused(world, world.admin.list(ROOT, -1, "", include_revoked=False), InvalidArgument)
    )
    assert fields_of(error) == ["page_size"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_page_tokens(real: str) -> list[str]:
    payload, mac = real.split(".")
    cursor = json.dumps([to_micros(T0), "id-root-admin"]).encode()
    wrong_key = hmac.new(b"another server's key", b"authz page token", hashlib.sha256).digest()
    return [
        "garbage",
        "a.b",
        "a.b.c",
        ".",
        "é.é",
        "e30.e30",
        _b64(cursor) + "." + mac,  # a cursor of the caller's choosing under a real signature
        _b64(cursor) + "." + _b64(hmac.new(wrong_key, cursor, hashlib.sha256).digest()[:16]),
        payload + "." + mac[:-2],
        payload + "." + mac + "AA",
        real + ".",
        payload,
    ]


def test_a_forged_or_garbage_page_token_is_invalid_argument(world: World) -> None:
    create_many(world, 4)
    _, real = run(world.admin.list(ROOT, 2, "", include_revoked=False))
    assert real

    async def scenario() -> None:
        for forged in forged_page_tokens(real):
            error = await refused(
                world, world.admin.list(ROOT, 2, forged, include_revoked=False), InvalidArgument
            )
            assert fields_of(error) == ["page_token"], forged

    run(scenario())


def test_a_page_token_is_accepted_again_and_resumes_at_the_same_place(world: World) -> None:
    create_many(world, 4)

    async def scenario() -> tuple[list[Entry], list[Entry]]:
        _, token = await world.admin.list(ROOT, 2, "", include_revoked=False)
        first, _ = await world.admin.list(ROOT, 2, token, include_revoked=False)
        again, _ = await world.admin.list(ROOT, 2, token, include_revoked=False)
        return first, again

    first, again = run(scenario())
    assert first == again
    assert len(first) == 2


# Bootstrap admin


def test_ensure_bootstrap_admin_creates_a_full_admin_for_the_token(world: World) -> None:
    bootstrap_token = "bootstrap-token-0004"

    async def scenario() -> Bootstrap:
        made = await world.admin.ensure_bootstrap_admin(bootstrap_token)
        as_bootstrap = f"Bearer {bootstrap_token}"
        created = await world.admin.create(
            as_bootstrap, NewEntry("made-by-bootstrap", TOKEN, restrictions=[ANY_CATALOG])
        )
        await world.admin.update(
            as_bootstrap, EntryChange(created.id, created.etag, ["description"], description="x")
        )
        await world.admin.get(as_bootstrap, created.id)
        await world.admin.revoke(as_bootstrap, created.id, "")
        return made

    made = run(scenario())
    entry = made.entry
    assert entry is not None
    assert not made.warning
    assert made.said.startswith(f"bootstrap-admin created (entry {entry.id})")
    assert entry.subject == BOOTSTRAP_SUBJECT
    assert entry.restrictions == (FULL_ADMIN_RESTRICTION,)
    assert not entry.unrestricted
    assert world.store.find_subject(BOOTSTRAP_SUBJECT) == entry
    assert bootstrap_token not in entry.verifier
    assert bootstrap_token not in made.said


def test_ensure_bootstrap_admin_with_the_same_token_again_changes_nothing(world: World) -> None:
    bootstrap_token = "bootstrap-token-0004"

    async def scenario() -> tuple[Bootstrap, Bootstrap]:
        first = await world.admin.ensure_bootstrap_admin(bootstrap_token)
        before = world.store.snapshot()
        again = await world.admin.ensure_bootstrap_admin(bootstrap_token)
        assert world.store.snapshot() == before
        return first, again

    first, again = run(scenario())
    assert again.entry == first.entry
    assert not again.warning
    assert "holds the bootstrap token; left as it is" in again.said


def test_ensure_bootstrap_admin_with_a_new_token_ignores_it_and_keeps_the_old_one(
    world: World,
) -> None:
    old_token, new_token = "bootstrap-token-0004", "bootstrap-token-0005"

    async def scenario() -> Bootstrap:
        await world.admin.ensure_bootstrap_admin(old_token)
        before = world.store.snapshot()
        ignored = await world.admin.ensure_bootstrap_admin(new_token)
        assert world.store.snapshot() == before
        await world.admin.list(f"Bearer {old_token}", 10, "", False)
        await refused(world, admin_call(world, "list", f"Bearer {new_token}"), Unauthenticated)
        return ignored

    ignored = run(scenario())
    assert ignored.warning
    assert "exists with another token, and is never changed from here" in ignored.said
    assert_names_no_secret(ignored.said, old_token, new_token)


def test_ensure_bootstrap_admin_never_widens_or_extends_a_narrowed_bootstrap_admin(
    world: World,
) -> None:
    bootstrap_token = "bootstrap-token-0004"

    async def scenario() -> tuple[Entry, Bootstrap]:
        first = await world.admin.ensure_bootstrap_admin(bootstrap_token)
        assert first.entry is not None
        narrowed = await world.admin.update(
            ROOT,
            EntryChange(
                first.entry.id,
                first.entry.etag,
                ["access_restrictions", "expire_time"],
                restrictions=[
                    RestrictionInput("authz", ["authz.entry.read"]),
                    RestrictionInput("catalog"),
                ],
                expire_time=T0 + timedelta(hours=1),
            ),
        )
        again = await world.admin.ensure_bootstrap_admin(bootstrap_token)
        await refused(
            world,
            world.admin.create(
                f"Bearer {bootstrap_token}", NewEntry("proof", TOKEN, restrictions=[ANY_CATALOG])
            ),
            PermissionDenied,
        )
        return narrowed, again

    narrowed, again = run(scenario())
    assert again.entry is not None
    assert world.store.get(again.entry.id) == narrowed
    assert narrowed.expire_time == T0 + timedelta(hours=1)


def test_ensure_bootstrap_admin_ignores_a_token_another_entry_holds(world: World) -> None:
    ignored = run(world.admin.ensure_bootstrap_admin(ROOT_TOKEN))
    assert ignored.warning
    assert ignored.entry is None
    assert "the token of another entry (id-root-admin)" in ignored.said  # for the operator
    assert_names_no_secret(ignored.said, ROOT_TOKEN)
    assert world.store.find_subject(BOOTSTRAP_SUBJECT) is None


def test_ensure_bootstrap_admin_ignores_the_token_of_a_revoked_bootstrap_admin(
    world: World,
) -> None:
    bootstrap_token = "bootstrap-token-0004"

    async def scenario() -> Bootstrap:
        first = await world.admin.ensure_bootstrap_admin(bootstrap_token)
        assert first.entry is not None
        await world.admin.revoke(ROOT, first.entry.id, "rotating the bootstrap secret")
        return await world.admin.ensure_bootstrap_admin(bootstrap_token)

    ignored = run(scenario())
    assert ignored.warning
    assert "the token of a revoked entry" in ignored.said
    assert world.store.find_subject(BOOTSTRAP_SUBJECT) is None


def test_ensure_bootstrap_admin_ignores_a_token_rotated_away(world: World) -> None:
    bootstrap_token = "bootstrap-token-0004"

    async def scenario() -> Bootstrap:
        first = await world.admin.ensure_bootstrap_admin(bootstrap_token)
        assert first.entry is not None
        await world.admin.update(
            ROOT, EntryChange(first.entry.id, first.entry.etag, [], new_token="bootstrap-new-0006")
        )
        return await world.admin.ensure_bootstrap_admin(bootstrap_token)

    ignored = run(scenario())
    assert ignored.warning
    assert ignored.entry is not None  # the rotated entry is still bootstrap-admin
    assert "exists with another token" in ignored.said


@pytest.mark.parametrize("token", ["", "short", "has white space"])
def test_ensure_bootstrap_admin_refuses_a_malformed_token_without_echoing_it(
    world: World, token: str
) -> None:
    error = run(refused(world, world.admin.ensure_bootstrap_admin(token), InvalidArgument))
    assert fields_of(error) == ["bootstrap token"]
    if token:
        assert_names_no_secret(str(error), token)


# Usage recorded while an admin write is in flight


def test_a_use_recorded_while_an_update_is_in_flight_survives_the_update(
    worlds: Worlds,
) -> None:
    store = InterleavingStore()
    world = worlds.open(store)
    used_at = T0 + timedelta(minutes=5)

    async def scenario() -> Entry:
        created = await world.create("catalog-sync", TOKEN)
        # The usage flusher commits this use just after the update has read the entry.
        store.after_get[created.id] = lambda: store.record_use({created.id: used_at})
        await world.admin.update(
            ROOT, EntryChange(created.id, created.etag, ["description"], description="x")
        )
        assert created.id not in store.after_get, "the update never read the entry"
        return await world.admin.get(ROOT, created.id)

    got = run(scenario())
    assert got.description == "x"
    assert store.get(got.id).last_used_time == used_at


# Pages bounded by bytes


def large_restrictions(n: int) -> tuple[Restriction, ...]:
    return tuple(
        Restriction(
            f"p{n}-{r}".ljust(64, "x"),
            tuple(f"perm.n{n}r{r}p{p}".ljust(128, "x") for p in range(64)),
        )
        for r in range(64)
    )


def test_a_listed_size_is_never_below_the_encoded_size(world: World) -> None:
    small = world.seed(TOKEN, "small", (Restriction("catalog"),))
    large = replace(
        world.seed(OTHER_TOKEN, "large", large_restrictions(0)),
        description="é" * 1024,
        revoke_reason="r" * 512,
        revoke_time=T0,
        expire_time=T0,
        last_used_time=T0,
    )
    for entry in (small, large):
        assert listed_size(entry) >= entry_message(entry, T0).ByteSize()


def test_a_page_of_large_entries_stops_at_the_byte_bound_and_the_next_resumes(
    world: World,
) -> None:
    for n in range(12):
        world.seed(f"large-entry-token-{n:04d}", f"large-{n}", large_restrictions(n))

    async def scenario() -> list[list[Entry]]:
        pages, token = [], ""
        while True:
            page, token = await world.admin.list(ROOT, 1000, token, include_revoked=False)
            pages.append(page)
            if not token:
                return pages

    pages = run(scenario())
    assert len(pages) > 1
    for page in pages:
        assert page
        assert len(page) == 1 or sum(listed_size(e) for e in page) <= PAGE_BYTES
    listed = [e.subject for page in pages for e in page]
    assert sorted(listed) == sorted(["root-admin", *(f"large-{n}" for n in range(12))])


# Two processes over one store

RACE_ROUNDS = 20


class MeetingHasher(FakeHasher):
    """A FakeHasher whose new verifiers, while `meeting` is set, wait there for the other
    process's: both racing calls have checked the store before either one writes."""

    meeting: threading.Barrier | None = None

    def hash(self, token: str) -> str:
        meeting = self.meeting
        if meeting is not None:
            meeting.wait()
        return super().hash(token)


@pytest.fixture
def pair(worlds: Worlds) -> tuple[World, World]:
    """Two processes, each with its own store port, hasher, Checker and Admin, over one store
    (as two servers over one SQLite file), with one clock."""
    first = worlds.open(hasher=MeetingHasher())
    return first, worlds.open(first.store, clock=first.clock, hasher=MeetingHasher())


def meet(a: World, b: World, forced: bool) -> None:
    """Make the next hash of each process wait for the other's (`forced`), or let them run."""
    barrier = threading.Barrier(2, timeout=WAIT_SECONDS) if forced else None
    for world in (a, b):
        assert isinstance(world.hasher, MeetingHasher)
        world.hasher.meeting = barrier


async def one_wins(*calls: Awaitable[Entry]) -> Entry:
    """Run the calls at once: exactly one returns, every other raises AlreadyExists."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    won = [o for o in outcomes if isinstance(o, Entry)]
    assert len(won) == 1, outcomes
    assert [type(o) for o in outcomes if not isinstance(o, Entry)] == [AlreadyExists], outcomes
    return won[0]


def holders_of(world: World, token: str) -> list[str]:
    """The ids of the stored entries whose verifier is this token's."""
    return [
        e.id for e in world.store.snapshot()[0].values() if world.hasher.verify(e.verifier, token)
    ]


def test_two_processes_creating_one_token_at_once_let_exactly_one_through(
    pair: tuple[World, World],
) -> None:
    a, b = pair

    async def scenario() -> None:
        for n in range(RACE_ROUNDS):
            token = f"raced-token-{n:04d}"
            head = a.store.head()
            meet(a, b, forced=n % 2 == 0)  # every other round, both check before either writes
            winner = await one_wins(a.create(f"job-a-{n}", token), b.create(f"job-b-{n}", token))
            meet(a, b, forced=False)
            assert holders_of(a, token) == [winner.id]
            assert [e.entry_id for e in a.store.events()[head:]] == [winner.id]
            assert (await a.check(token)).entry_id == winner.id
            assert (await b.check(token)).entry_id == winner.id

    run(scenario())


def test_two_processes_creating_one_subject_at_once_let_exactly_one_through(
    pair: tuple[World, World],
) -> None:
    a, b = pair

    async def scenario() -> None:
        for n in range(RACE_ROUNDS):
            subject, tokens = f"job-{n}", (f"subject-race-a-{n:04d}", f"subject-race-b-{n:04d}")
            head = a.store.head()
            meet(a, b, forced=n % 2 == 0)
            winner = await one_wins(a.create(subject, tokens[0]), b.create(subject, tokens[1]))
            meet(a, b, forced=False)
            assert a.store.find_subject(subject) == winner
            assert [e.entry_id for e in a.store.events()[head:]] == [winner.id]
            won, lost = tokens if a.hasher.verify(winner.verifier, tokens[0]) else tokens[::-1]
            assert holders_of(a, lost) == []
            for world in (a, b):
                assert (await world.check(won)).entry_id == winner.id
                assert (await world.check(lost)).reason == "unknown_token"

    run(scenario())


def test_a_rotation_and_a_create_taking_one_token_at_once_let_exactly_one_through(
    pair: tuple[World, World],
) -> None:
    a, b = pair

    async def scenario() -> None:
        for n in range(RACE_ROUNDS):
            old, token = f"old-token-{n:04d}", f"new-token-{n:04d}"
            target = await a.create(f"rotated-{n}", old)
            head = a.store.head()
            meet(a, b, forced=n % 2 == 0)
            winner = await one_wins(
                a.admin.update(ROOT, EntryChange(target.id, target.etag, new_token=token)),
                b.create(f"taker-{n}", token),
            )
            meet(a, b, forced=False)
            assert holders_of(a, token) == [winner.id]
            assert [e.entry_id for e in a.store.events()[head:]] == [winner.id]
            rotated = winner.id == target.id
            assert (a.store.get(target.id).verifier == target.verifier) is not rotated
            for world in (a, b):
                assert (await world.check(token)).entry_id == winner.id
                old_decision = await world.check(old)
                if rotated:
                    assert old_decision.reason == "unknown_token"
                else:
                    assert old_decision.entry_id == target.id

    run(scenario())


def test_a_create_on_one_process_is_allowed_by_the_others_very_next_check(
    pair: tuple[World, World],
) -> None:
    a, b = pair

    async def scenario() -> tuple[Entry, Decision, Decision]:
        before = await b.check(TOKEN)  # a tag B does not know: answered from memory alone
        created = await a.create("catalog-sync", TOKEN)
        return created, before, await b.check(TOKEN)

    created, before, after = run(scenario())
    assert before.reason == "unknown_token"
    assert after.allowed
    assert (after.subject, after.entry_id) == ("catalog-sync", created.id)


def test_a_revoke_on_one_process_is_denied_by_the_others_very_next_check(
    pair: tuple[World, World],
) -> None:
    a, b = pair

    async def scenario() -> Decision:
        created = await a.create("catalog-sync", TOKEN)
        assert (await b.check(TOKEN)).allowed  # now cached on B
        verifies = b.hasher.verify_calls
        await a.admin.revoke(ROOT, created.id, "leaked")
        decision = await b.check(TOKEN)
        assert b.hasher.verify_calls == verifies  # B's cache followed the revoke's event
        return decision

    decision = run(scenario())
    assert (decision.allowed, decision.http_status, decision.reason) == (False, 401, "revoked")


def test_narrowed_restrictions_on_one_process_are_in_force_on_the_others_very_next_check(
    pair: tuple[World, World],
) -> None:
    a, b = pair

    async def scenario() -> tuple[Decision, Decision]:
        created = await a.create("catalog-sync", TOKEN, restrictions=[ANY_CATALOG])
        assert (await b.check(TOKEN)).allowed  # now cached on B
        verifies = b.hasher.verify_calls
        await a.admin.update(
            ROOT,
            EntryChange(
                created.id,
                created.etag,
                ["access_restrictions"],
                restrictions=[RestrictionInput("catalog", ["catalog.entity.read"])],
            ),
        )
        narrowed = await b.checker.check(TOKEN, "", "catalog", "catalog.entity.delete", 0)
        still = await b.checker.check(TOKEN, "", "catalog", "catalog.entity.read", 0)
        assert b.hasher.verify_calls == verifies
        return narrowed, still

    narrowed, still = run(scenario())
    assert (narrowed.http_status, narrowed.reason) == (403, "permission_not_allowed")
    assert still.allowed


def test_a_rotation_on_one_process_moves_the_others_very_next_check_to_the_new_token(
    pair: tuple[World, World],
) -> None:
    a, b = pair

    async def scenario() -> tuple[Decision, Decision]:
        created = await a.create("catalog-sync", TOKEN)
        assert (await b.check(TOKEN)).allowed  # the old token, cached on B
        await a.admin.update(ROOT, EntryChange(created.id, created.etag, new_token=OTHER_TOKEN))
        return await b.check(TOKEN), await b.check(OTHER_TOKEN)

    old, new = run(scenario())
    assert old.reason == "unknown_token"
    assert new.allowed


def test_an_admin_revoked_on_one_process_is_refused_on_the_others_next_call(
    pair: tuple[World, World],
) -> None:
    a, b = pair
    other = a.seed(OTHER_TOKEN, "other-admin", (FULL_ADMIN_RESTRICTION,))
    as_other = f"Bearer {OTHER_TOKEN}"

    async def scenario() -> Unauthenticated:
        await b.admin.get(as_other, other.id)  # warm in B's cache
        await a.admin.revoke(ROOT, other.id, "left the team")
        return await refused(b, b.create_as(as_other, "made-by-revoked", TOKEN), Unauthenticated)

    assert "revoked" in str(run(scenario()))


# The event log


def appended(world: World, head: int) -> list[tuple[ChangeKind, str, str]]:
    """(kind, entry id, actor id) of each event past revision `head`."""
    events = world.store.events()
    assert [e.revision for e in events[head:]] == list(range(head + 1, len(events) + 1))
    return [(e.kind, e.entry_id, e.actor_id) for e in events[head:]]


def test_every_admin_write_appends_one_event_naming_its_kind_entry_and_actor(
    world: World,
) -> None:
    assert world.root is not None
    root = world.root
    second = world.seed(UPDATER_TOKEN, "second-admin", (FULL_ADMIN_RESTRICTION,))

    async def scenario() -> None:
        head = world.store.head()
        created = await world.admin.create(
            AS_UPDATER, NewEntry("catalog-sync", TOKEN, restrictions=[ANY_CATALOG])
        )
        assert appended(world, head) == [(ChangeKind.CREATED, created.id, second.id)]
        assert world.store.events()[-1].fields == (
            "subject",
            "description",
            "access_restrictions",
            "unrestricted",
        )
        world.clock.advance(10)
        head = world.store.head()
        updated = await world.admin.update(
            ROOT, EntryChange(created.id, created.etag, ["description"], description="x")
        )
        assert appended(world, head) == [(ChangeKind.UPDATED, created.id, root.id)]
        assert world.store.events()[-1].fields == ("description",)
        assert world.store.events()[-1].time == world.clock()
        head = world.store.head()
        rotated = await world.admin.update(
            AS_UPDATER,
            EntryChange(
                updated.id,
                updated.etag,
                ["expire_time"],
                expire_time=T0 + timedelta(days=1),
                new_token=OTHER_TOKEN,
            ),
        )
        assert appended(world, head) == [(ChangeKind.ROTATED, created.id, second.id)]
        assert world.store.events()[-1].fields == ("expire_time", "token")
        head = world.store.head()
        await world.admin.revoke(ROOT, rotated.id, "done")
        assert appended(world, head) == [(ChangeKind.REVOKED, created.id, root.id)]
        assert world.store.events()[-1].fields == ("revoke_time", "revoke_reason")
        head = world.store.head()
        await world.admin.revoke(ROOT, rotated.id, "again")  # already revoked: no write
        assert appended(world, head) == []

    run(scenario())


def test_the_bootstrap_admin_appends_one_event_with_no_actor(world: World) -> None:
    async def scenario() -> None:
        head = world.store.head()
        entry = (await world.admin.ensure_bootstrap_admin("bootstrap-token-0004")).entry
        assert entry is not None
        assert appended(world, head) == [(ChangeKind.CREATED, entry.id, "")]
        head = world.store.head()
        await world.admin.ensure_bootstrap_admin("bootstrap-token-0004")  # nothing to change
        assert appended(world, head) == []

    run(scenario())


@pytest.mark.parametrize(
    "write",
    [
        "bad-create",
        "bad-update",
        "bad-revoke",
        "denied-create",
        "denied-update",
        "denied-revoke",
        "stale-update",
        "stale-rotation",
        "taken-subject",
        "taken-token",
    ],
)
def test_a_refused_write_appends_no_event(world: World, write: str) -> None:
    world.seed(UPDATER_TOKEN, "reader", only(AdminPermission.READ))

    async def scenario() -> None:
        created = await world.create("catalog-sync", TOKEN)
        current = await world.admin.update(
            ROOT, EntryChange(created.id, created.etag, ["description"], description="moved on")
        )
        stale = created.etag
        attempts: dict[str, tuple[Callable[[], Awaitable[object]], type[AuthzError]]] = {
            "bad-create": (lambda: world.create("has space", "new-token-0009"), InvalidArgument),
            "bad-update": (
                lambda: world.admin.update(
                    ROOT, EntryChange(current.id, current.etag, ["description"], description="\n")
                ),
                InvalidArgument,
            ),
            "bad-revoke": (
                lambda: world.admin.revoke(ROOT, current.id, "r" * 513),
                InvalidArgument,
            ),
            "denied-create": (
                lambda: world.create_as(AS_UPDATER, "by-reader", "new-token-0009"),
                PermissionDenied,
            ),
            "denied-update": (
                lambda: world.admin.update(
                    AS_UPDATER,
                    EntryChange(current.id, current.etag, ["description"], description="no"),
                ),
                PermissionDenied,
            ),
            "denied-revoke": (
                lambda: world.admin.revoke(AS_UPDATER, current.id, "no"),
                PermissionDenied,
            ),
            "stale-update": (
                lambda: world.admin.update(
                    ROOT, EntryChange(current.id, stale, ["description"], description="late")
                ),
                Aborted,
            ),
            "stale-rotation": (
                lambda: world.admin.update(
                    ROOT, EntryChange(current.id, stale, new_token="new-token-0009")
                ),
                Aborted,
            ),
            "taken-subject": (
                lambda: world.create("catalog-sync", "new-token-0009"),
                AlreadyExists,
            ),
            "taken-token": (lambda: world.create("other-job", TOKEN), AlreadyExists),
        }
        call, error = attempts[write]
        head = world.store.head()
        await refused(world, call(), error)  # no entry, no retired verifier, no event changed
        assert world.store.head() == head

    run(scenario())
