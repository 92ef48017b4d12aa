"""The bootstrap admin: created once for the configured token, and never changed from here."""

from __future__ import annotations

from datetime import timedelta

import pytest

from admin_world import (
    ANY_CATALOG,
    ROOT,
    ROOT_TOKEN,
    T0,
    TOKEN,
    World,
    admin_call,
    assert_names_no_secret,
    fields_of,
    refused,
    run,
)
from authz_service.core.errors import InvalidArgument, PermissionDenied, Unauthenticated
from authz_service.core.model import BOOTSTRAP_SUBJECT, FULL_ADMIN_RESTRICTION, Entry
from authz_service.core.rules import RestrictionInput
from authz_service.usecases import EntryChange, NewEntry
from authz_service.usecases.admin import Bootstrap


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
