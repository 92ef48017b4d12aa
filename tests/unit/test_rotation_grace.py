"""Rotation with a grace period (DESIGN section 9): the replaced token keeps working, with the
entry's current scope, until the grace ends, and then is `unknown_token` with no admin call."""

from __future__ import annotations

from datetime import timedelta

import pytest

from admin_world import (
    ANY_CATALOG,
    OTHER_TOKEN,
    ROOT,
    T0,
    TOKEN,
    World,
    fields_of,
    refused,
    run,
)
from authz_service.api.convert import entry_message
from authz_service.core.errors import AlreadyExists, InvalidArgument
from authz_service.core.model import Entry
from authz_service.core.rules import RestrictionInput
from authz_service.usecases import EntryChange

NEXT_TOKEN = "catalog-sync-token-next-0004"
HOUR = timedelta(hours=1)


async def _rotate(world: World, entry: Entry, token: str, grace: timedelta | None) -> Entry:
    return await world.admin.update(
        ROOT, EntryChange(entry.id, entry.etag, [], new_token=token, previous_token_grace=grace)
    )


async def _answers(world: World, *tokens: str, plugin: str = "catalog") -> list[str]:
    return [(await world.check(token, plugin)).reason or "ALLOW" for token in tokens]


def test_during_the_grace_both_tokens_allow_and_after_it_the_old_one_is_unknown(
    world: World,
) -> None:
    async def scenario() -> list[list[str]]:
        created = await world.create("catalog-sync", TOKEN)
        assert await _answers(world, TOKEN) == ["ALLOW"]  # warm in the cache
        rotated = await _rotate(world, created, OTHER_TOKEN, HOUR)
        assert rotated.previous_expire_time == T0 + HOUR
        during = await _answers(world, TOKEN, OTHER_TOKEN)
        world.clock.advance(3599)
        last_second = await _answers(world, TOKEN, OTHER_TOKEN)
        world.clock.advance(1)
        after = await _answers(world, TOKEN, OTHER_TOKEN)
        return [during, last_second, after]

    assert run(scenario()) == [
        ["ALLOW", "ALLOW"],
        ["ALLOW", "ALLOW"],
        ["unknown_token", "ALLOW"],
    ]


def test_the_old_token_has_the_entry_s_current_scope_during_its_grace(world: World) -> None:
    async def scenario() -> list[str]:
        created = await world.create("catalog-sync", TOKEN)
        rotated = await _rotate(world, created, OTHER_TOKEN, HOUR)
        await _answers(world, TOKEN)  # the old token cached under its grace
        await world.admin.update(
            ROOT,
            EntryChange(
                rotated.id,
                rotated.etag,
                ["access_restrictions"],
                restrictions=[RestrictionInput("scaffolder")],
            ),
        )
        during = [
            *await _answers(world, TOKEN, OTHER_TOKEN),
            *await _answers(world, TOKEN, plugin="scaffolder"),
        ]
        world.clock.advance(3600)  # the narrowing did not extend the old token's grace
        return [*during, *await _answers(world, TOKEN, OTHER_TOKEN, plugin="scaffolder")]

    assert run(scenario()) == [
        "plugin_not_allowed",
        "plugin_not_allowed",
        "ALLOW",
        "unknown_token",
        "ALLOW",
    ]


def test_revoking_the_entry_ends_both_tokens_at_once(world: World) -> None:
    async def scenario() -> list[str]:
        created = await world.create("catalog-sync", TOKEN)
        rotated = await _rotate(world, created, OTHER_TOKEN, HOUR)
        await _answers(world, TOKEN, OTHER_TOKEN)
        await world.admin.revoke(ROOT, rotated.id, "compromised")
        return await _answers(world, TOKEN, OTHER_TOKEN)

    assert run(scenario()) == ["revoked", "revoked"]


def test_a_second_rotation_during_a_grace_ends_the_first_one(world: World) -> None:
    async def scenario() -> list[str]:
        created = await world.create("catalog-sync", TOKEN)
        rotated = await _rotate(world, created, OTHER_TOKEN, HOUR)
        await _answers(world, TOKEN)
        await _rotate(world, rotated, NEXT_TOKEN, HOUR)
        return await _answers(world, TOKEN, OTHER_TOKEN, NEXT_TOKEN)

    assert run(scenario()) == ["unknown_token", "ALLOW", "ALLOW"]


def test_a_rotation_without_grace_denies_the_old_token_at_once(world: World) -> None:
    async def scenario() -> tuple[Entry, list[str]]:
        created = await world.create("catalog-sync", TOKEN)
        await _answers(world, TOKEN)
        rotated = await _rotate(world, created, OTHER_TOKEN, timedelta(0))
        return rotated, await _answers(world, TOKEN, OTHER_TOKEN)

    rotated, answers = run(scenario())
    assert answers == ["unknown_token", "ALLOW"]
    assert rotated.previous_expire_time is None


def test_a_token_in_its_grace_cannot_be_taken_by_another_entry(world: World) -> None:
    async def scenario() -> None:
        created = await world.create("catalog-sync", TOKEN)
        await _rotate(world, created, OTHER_TOKEN, HOUR)
        await refused(world, world.create("thief", TOKEN), AlreadyExists)
        world.clock.advance(2 * 3600)
        await refused(world, world.create("thief", TOKEN), AlreadyExists)

    run(scenario())


def test_get_and_list_show_when_the_previous_token_stops_working(world: World) -> None:
    async def scenario() -> Entry:
        created = await world.create("catalog-sync", TOKEN)
        rotated = await _rotate(world, created, OTHER_TOKEN, HOUR)
        return await world.admin.get(ROOT, rotated.id)

    entry = run(scenario())
    shown = entry_message(entry, T0)
    assert shown.previous_token_expire_time.ToDatetime().isoformat() == "2025-06-01T10:00:00"
    assert not entry_message(entry, T0 + 2 * HOUR).HasField("previous_token_expire_time")


@pytest.mark.parametrize(
    ("grace", "new_token", "says"),
    [
        (timedelta(days=7, seconds=1), OTHER_TOKEN, "must be at most 7d"),
        (-HOUR, OTHER_TOKEN, "must not be negative"),
        (HOUR, "", "needs new_token"),
    ],
)
def test_a_grace_out_of_bounds_is_invalid_and_changes_nothing(
    world: World, grace: timedelta, new_token: str, says: str
) -> None:
    async def scenario() -> InvalidArgument:
        created = await world.create("catalog-sync", TOKEN)
        before = world.store.snapshot()
        change = EntryChange(
            created.id,
            created.etag,
            [] if new_token else ["description"],
            description="x",
            new_token=new_token,
            previous_token_grace=grace,
        )
        error = await refused(world, world.admin.update(ROOT, change), InvalidArgument)
        assert world.store.snapshot() == before
        return error

    error = run(scenario())
    assert fields_of(error) == ["previous_token_grace"]
    assert says in str(error)


def test_a_grace_past_the_entry_s_expiry_is_invalid(world: World) -> None:
    async def scenario() -> InvalidArgument:
        created = await world.create(
            "catalog-sync", TOKEN, restrictions=[ANY_CATALOG], expire_time=T0 + 2 * HOUR
        )
        change = EntryChange(
            created.id, created.etag, [], new_token=OTHER_TOKEN, previous_token_grace=3 * HOUR
        )
        return await refused(world, world.admin.update(ROOT, change), InvalidArgument)

    error = run(scenario())
    assert fields_of(error) == ["previous_token_grace"]
    assert "must end by the entry's expiry" in str(error)
    assert "at most 2h from now" in str(error)
