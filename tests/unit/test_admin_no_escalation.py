"""No escalation among admins: an admin grants, widens and touches only what its own rights
cover, even when those rights are taken away while its call is under way."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from admin_world import (
    ANY_CATALOG,
    AS_UPDATER,
    KEY,
    OTHER_TOKEN,
    ROOT,
    ROOT_TOKEN,
    T0,
    TOKEN,
    UPDATER_TOKEN,
    WAIT_SECONDS,
    InterleavingStore,
    World,
    Worlds,
    assert_names_no_secret,
    only,
    refused,
    run,
    until,
)
from authz_service.core.decision import Decision
from authz_service.core.errors import AuthzError, PermissionDenied, Unauthenticated, Unavailable
from authz_service.core.model import (
    FULL_ADMIN_RESTRICTION,
    Action,
    AdminPermission,
    Entry,
    Restriction,
    new_etag,
)
from authz_service.core.rules import RestrictionInput
from authz_service.core.tokens import lookup_tag
from authz_service.usecases import Admin, EntryChange, NewEntry
from authz_service.usecases.claims import MAX_CLAIMS_WAITING
from fakes import FakeHasher, InMemoryStore

CREATOR_TOKEN = "creator-admin-token-0004"
AS_CREATOR = f"Bearer {CREATOR_TOKEN}"
FULL_ADMIN = RestrictionInput("authz", [p.value for p in AdminPermission])


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
