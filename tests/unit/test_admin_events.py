"""The event log: every admin write appends one event naming its kind, entry and actor; a
refused write appends none."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from admin_world import (
    ANY_CATALOG,
    AS_UPDATER,
    OTHER_TOKEN,
    ROOT,
    T0,
    TOKEN,
    UPDATER_TOKEN,
    World,
    only,
    refused,
    run,
)
from authz_service.core.changes import ChangeKind
from authz_service.core.errors import (
    Aborted,
    AlreadyExists,
    AuthzError,
    InvalidArgument,
    PermissionDenied,
)
from authz_service.core.model import FULL_ADMIN_RESTRICTION, AdminPermission
from authz_service.usecases import EntryChange, NewEntry


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
