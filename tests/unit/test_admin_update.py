"""Updating entries: masked field changes, rotation, and what an update refuses."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from admin_world import (
    KEY,
    OTHER_TOKEN,
    ROOT,
    T0,
    TOKEN,
    InterleavingStore,
    World,
    Worlds,
    assert_names_no_secret,
    fields_of,
    refused,
    run,
)
from authz_service.core.decision import Decision
from authz_service.core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from authz_service.core.model import Action, Entry, Restriction
from authz_service.core.rules import RestrictionInput
from authz_service.core.tokens import lookup_tag
from authz_service.usecases import EntryChange

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
