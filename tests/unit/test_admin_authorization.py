"""Who may call the admin use cases: no token, an unknown, malformed, revoked or expired
one, and an admin holding only some of the admin permissions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from admin_world import (
    ADMIN_CALLS,
    ANY_CATALOG,
    OTHER_TOKEN,
    ROOT,
    ROOT_TOKEN,
    T0,
    TOKEN,
    World,
    admin_call,
    assert_names_no_secret,
    refused,
    run,
)
from authz_service.core.errors import PermissionDenied, Unauthenticated
from authz_service.core.model import (
    FULL_ADMIN_RESTRICTION,
    Action,
    AdminPermission,
    Entry,
    Restriction,
)
from authz_service.core.rules import RestrictionInput
from authz_service.usecases import EntryChange, NewEntry


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
