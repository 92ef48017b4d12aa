"""Creating entries: what is stored, what is refused, and that a refused create changes nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from admin_world import (
    ANY_CATALOG,
    OTHER_TOKEN,
    ROOT,
    T0,
    TOKEN,
    World,
    assert_names_no_secret,
    fields_of,
    refused,
    run,
)
from authz_service.core.decision import Decision
from authz_service.core.errors import AlreadyExists, InvalidArgument
from authz_service.core.model import Action, Entry, Restriction, State, new_etag
from authz_service.core.rules import RestrictionInput
from authz_service.usecases import NewEntry


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


def test_etags_are_hex_so_a_command_line_never_takes_one_for_a_flag() -> None:
    etags = {new_etag() for _ in range(2000)}
    assert len(etags) == 2000
    assert all(len(etag) == 24 and set(etag) <= set("0123456789abcdef") for etag in etags)
